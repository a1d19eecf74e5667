"""Hostile clients and careless operators against a live server with default limits (issue: Reliability 2).

Every attack runs while a probe sends a normal gRPC and a normal REST predict every 100 ms and an RSS sampler
watches the server. Each test asserts: the server is alive, every probe answered correctly within 1 s, peak
RSS stayed below the RSS before the attack + 512 MiB, and no loaded version was unloaded.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from tests.server_util import REPO, ServerProcess, listening, serving, wait_for
from tests.test_grpc_integration import _status, predict_request


X = np.array([[1.0], [2.0]], np.float32)
RSS_MARGIN_KB = 512 * 1024


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _available(srv) -> dict[str, set[int]]:
    return {m: {v for v, (state, _) in _status(srv.grpc_target, m).items() if state == "AVAILABLE"}
            for m in ("linear", "mlp")}


class Probe:
    """Normal traffic (in another process: tests/hostile_probe.py) and the server's peak RSS while an
    attack runs. The peak is the kernel's VmHWM after resetting it through /proc/PID/clear_refs."""

    def __init__(self, srv, expected: np.ndarray):
        self.srv = srv
        self.expected = expected
        self.summary: dict = {}

    def __enter__(self):
        pid = self.srv.proc.pid
        self.fresh_kb = _rss_kb(pid)
        self.before = _available(self.srv)
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile_probe", self.srv.grpc_target, self.srv.rest_url,
             json.dumps(X.tolist()), json.dumps(self.expected.tolist())],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert self.proc.stdout.readline().strip() == "ready"
        self.rounds(2)  # a few answers before the attack starts
        return self

    def rounds(self, n: int) -> None:
        """Wait until the probe has finished `n` more rounds (one gRPC and one REST predict each)."""
        for _ in range(n):
            line = self.proc.stdout.readline()
            while line and not line.startswith("round "):
                line = self.proc.stdout.readline()
            assert line, "the probe ended early"

    def __exit__(self, *exc):
        self.rounds(2)  # and a few after it
        out, _ = self.proc.communicate("", timeout=30)
        self.summary = json.loads(out.strip().splitlines()[-1])
        self.peak_kb = _hwm_kb(self.srv.proc.pid) if self.srv.proc.poll() is None else 0

    def check(self, srv, rollover: bool = False) -> None:
        assert srv.proc.poll() is None, "server died"
        assert self.summary["failures"] == [], self.summary["failures"][:5]
        assert self.summary["answered"] >= 4, f"the probe got only {self.summary['answered']} answers in"
        grown = self.peak_kb - self.fresh_kb
        print(f"\n[hostile] {os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}: RSS before "
              f"{self.fresh_kb / 1024:.0f} MiB, peak +{grown / 1024:.0f} MiB, probe {self.summary['answered']} "
              f"answers, slowest {self.summary['slowest'] * 1000:.0f} ms")
        assert grown < RSS_MARGIN_KB, f"peak RSS grew by {grown / 1024:.0f} MiB"
        after = _available(srv)
        if rollover:  # a newer version may have replaced one, but every model kept serving
            assert all(after[m] for m in after), after
        else:
            assert after == self.before, (self.before, after)


def _hwm_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def hostile(zoo, tmp_path_factory):
    """Default limits, except shorter REST timeouts and connection cap so the tests stay short."""
    base, trained = zoo
    root = tmp_path_factory.mktemp("hostile")
    for m in ("linear", "mlp"):
        (root / m).mkdir()
        shutil.copytree(base / m / "1", root / m / "1")
    cfg = root / "models.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "linear" base_path: "{root}/linear" model_platform: '
                   f'"tensorflow" }} config {{ name: "mlp" base_path: "{root}/mlp" model_platform: "tensorflow" }} }}')
    mon = root / "monitoring.config"
    mon.write_text('prometheus_config { enable: true path: "/metrics" }')
    expected = np.asarray(trained["linear"].model.predict(X, verbose=0))
    with serving([f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=1",
                  f"--monitoring_config_file={mon}", "--rest_api_header_timeout_seconds=2",
                  "--rest_api_body_timeout_seconds=3", "--rest_api_idle_timeout_seconds=2",
                  "--rest_api_max_connections=200"]) as srv:
        srv.root, srv.expected = root, expected
        yield srv


# ------------------------------------------------------------------------------------------- memory

def _bomb(decompressed: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = b'{"instances": [' + b" " * (1 << 20)
    parts = [c.compress(head)]
    block = b" " * (1 << 20)
    for _ in range(decompressed >> 20):
        parts.append(c.compress(block))
    parts.append(c.compress(b"]}") + c.flush())
    return b"".join(parts)


def test_gzip_bomb_is_stopped_at_the_limit(hostile):
    bomb = _bomb(1 << 30)  # 1 MiB on the wire, 1 GiB inflated
    assert len(bomb) < 2 << 20
    with Probe(hostile, hostile.expected) as probe:
        for _ in range(3):
            r = requests.post(hostile.rest_url + "/v1/models/linear:predict", data=bomb,
                              headers={"Content-Encoding": "gzip"}, timeout=60)
            assert r.status_code == 429, r.text[:300]
            assert "bytes" in r.json()["error"]
    probe.check(hostile)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(hostile.grpc_target, options=[("grpc.max_send_message_length", -1)]))
    zeros = _raw_predict("linear", {"x": tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape={"dim": [{"size": 150 << 20}, {"size": 1}]},
        tensor_content=bytes(600 << 20))})  # the same over gRPC: ~600 KB gzip-compressed, 600 MiB inflated
    with Probe(hostile, hostile.expected) as probe:
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(zeros, timeout=60, compression=grpc.Compression.Gzip)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    probe.check(hostile)
    ok = requests.post(hostile.rest_url + "/v1/models/linear:predict", data=gzip.compress(b'{"instances": [[1.0]]}'),
                       headers={"Content-Encoding": "gzip"}, timeout=10)
    assert ok.status_code == 200, ok.text


def test_large_json_body_is_admitted_by_budget_not_by_growing(hostile):
    row = b"[" + b",".join([b"1"] * 10) + b"]"
    body = b'{"instances": [' + b",".join([row] * 2_500_000) + b"]}"  # 55 MB of valid JSON
    with Probe(hostile, hostile.expected) as probe:
        results = []

        def send():
            results.append(requests.post(hostile.rest_url + "/v1/models/mlp:predict", data=body, timeout=120))

        threads = [threading.Thread(target=send) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    probe.check(hostile)
    for r in results:
        assert r.status_code == 429, r.text[:300]
        assert "--request_memory_budget_bytes" in r.json()["error"]


def _raw_predict(model: str, inputs: dict[str, tensor_pb2.TensorProto]) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(v)
    return req


def _declared(shape: list[int], dtype=types_pb2.DT_FLOAT) -> tensor_pb2.TensorProto:
    p = tensor_pb2.TensorProto(dtype=dtype)
    for d in shape:
        p.tensor_shape.dim.add().size = d
    return p


def test_declared_shapes_cost_nothing_before_they_are_checked(hostile):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(hostile.grpc_target))
    cases = [
        # ~20 bytes declaring 2 GiB of floats with no values
        (_raw_predict("linear", {"x": _declared([2**29 - 1])}), {grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                                  grpc.StatusCode.INVALID_ARGUMENT}, "bytes"),
        # three unknown inputs of 1 GiB each: refused by name, nothing decoded
        (_raw_predict("linear", {f"bogus{i}": _declared([2**28]) for i in range(3)}),
         {grpc.StatusCode.INVALID_ARGUMENT}, "bogus"),
        # a model that is not loaded: NOT_FOUND before decoding
        (_raw_predict("nope", {"x": _declared([2**28])}), {grpc.StatusCode.NOT_FOUND}, "nope"),
        # a big real payload for a model that is not loaded
        (_raw_predict("nope", {"x": tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape={"dim": [{"size": 12 << 20}]},
            tensor_content=bytes(48 << 20))}), {grpc.StatusCode.NOT_FOUND}, "nope"),
    ]
    with Probe(hostile, hostile.expected) as probe:
        for _ in range(3):
            for req, codes, needle in cases:
                with pytest.raises(grpc.RpcError) as e:
                    stub.Predict(req, timeout=30)
                assert e.value.code() in codes, (e.value.code(), e.value.details())
                assert needle in e.value.details()
    probe.check(hostile)


def test_grpc_messages_beyond_the_limit_are_refused_unbuffered(hostile):
    """200 MiB: beyond --grpc_max_receive_message_bytes (64 MiB), refused by gRPC before it is buffered."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(hostile.grpc_target, options=[("grpc.max_send_message_length", -1)]))
    big = _raw_predict("linear", {"x": tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape={"dim": [{"size": 50 << 20}, {"size": 1}]},
        tensor_content=bytes(200 << 20))})
    with Probe(hostile, hostile.expected) as probe:
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(big, timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    probe.check(hostile)


def test_invented_model_names_do_not_grow_metrics(hostile):
    before = len(requests.get(hostile.rest_url + "/metrics", timeout=5).content)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(hostile.grpc_target))
    with requests.Session() as s:
        for i in range(300):
            name = f"m{i}-" + "x" * 2000
            s.post(f"{hostile.rest_url}/v1/models/{name}:predict", data=b'{"instances": [1]}', timeout=5)
            try:
                stub.Predict(predict_request(name, {"x": X}), timeout=5)
            except grpc.RpcError:
                pass
    text = requests.get(hostile.rest_url + "/metrics", timeout=5).text
    assert "xxxxxxxx" not in text
    assert len(text) < before + 20_000, (before, len(text))


# ------------------------------------------------------------------------------------------- connections

def _recv_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except (socket.timeout, ConnectionResetError):
        return out


def test_body_is_not_read_before_routing(hostile):
    """A 400 MiB POST to a route without a body is answered at once, without the server reading it."""
    with Probe(hostile, hostile.expected) as probe:
        for path in ("/healthz", "/nowhere", "/v1/models/linear:predict"):
            with socket.create_connection(("127.0.0.1", hostile.rest_port)) as s:
                length = 400 << 20
                s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
                          + b"[" * 1000)
                t0 = time.monotonic()
                reply = _recv_all(s, 5)
                assert time.monotonic() - t0 < 3
                status = int(reply.split(b" ", 2)[1])
                assert status in (404, 429), reply[:200]
    probe.check(hostile)


def test_slowloris_and_header_bombs_are_cut_off(hostile):
    with Probe(hostile, hostile.expected) as probe:
        slow = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", hostile.rest_port))
            s.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\n")
            slow.append(s)
        bomb = socket.create_connection(("127.0.0.1", hostile.rest_port))
        bomb.sendall(b"GET /v1/models/linear HTTP/1.1\r\n")
        try:
            for _ in range(200):  # 20 MiB of headers
                bomb.sendall(b"X-Junk: " + b"j" * (100 << 10) + b"\r\n")
        except OSError:
            pass
        reply = _recv_all(bomb, 5)
        assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
        t0 = time.monotonic()
        closed = 0
        while time.monotonic() - t0 < 6 and closed < len(slow):  # 1 byte/s: the header timer (2 s) must fire
            for s in slow:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            time.sleep(1)
            closed = sum(1 for s in slow if _closed(s))
        assert closed == len(slow), f"{closed}/{len(slow)} slowloris connections closed"
        for s in slow:
            s.close()
        bomb.close()
    probe.check(hostile)


def test_stalled_bodies_and_idle_keep_alive_connections_are_closed(hostile):
    with Probe(hostile, hostile.expected) as probe:
        with socket.create_connection(("127.0.0.1", hostile.rest_port)) as stalled:
            stalled.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                            b'{"instances"')  # 12 of 100 bytes, then nothing
            t0 = time.monotonic()
            reply = _recv_all(stalled, 10)
            assert reply.startswith(b"HTTP/1.1 408") and b"--rest_api_body_timeout_seconds" in reply, reply[:200]
            assert time.monotonic() - t0 < 8
        with socket.create_connection(("127.0.0.1", hostile.rest_port)) as keep_alive:
            # a second request on a kept-alive connection stalls in its body while the timer armed for the
            # first one's head (2 s from connect) is still pending: the body's own limit (3 s) applies
            keep_alive.sendall(b"GET /v1/models/linear HTTP/1.1\r\nHost: x\r\n\r\n")
            keep_alive.settimeout(10)
            first = b""
            while b"AVAILABLE" not in first:  # the status answer, which may come in several reads
                chunk = keep_alive.recv(65536)
                if not chunk:
                    break
                first += chunk
            assert b"AVAILABLE" in first, first[:200]
            time.sleep(1.2)
            keep_alive.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                               b"\r\n{")
            t0 = time.monotonic()
            reply = _recv_all(keep_alive, 10)
            took = time.monotonic() - t0
            assert reply.startswith(b"HTTP/1.1 408") and b"--rest_api_body_timeout_seconds" in reply, reply[:200]
            assert 2.5 < took < 8, took
        with socket.create_connection(("127.0.0.1", hostile.rest_port)) as idle:
            idle.sendall(b"GET /v1/models/linear HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.monotonic()
            reply = _recv_all(idle, 10)  # the answer, then the close after the 2 s idle timeout
            assert b"AVAILABLE" in reply and time.monotonic() - t0 < 8
    probe.check(hostile)


def _closed(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        data = s.recv(65536)
        return data == b"" or data.startswith(b"HTTP/1.1 408")
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def test_idle_connection_flood_keeps_serving(hostile):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    conns = []
    with Probe(hostile, hostile.expected) as probe:
        for _ in range(1500):  # far beyond --rest_api_max_connections=200
            try:
                conns.append(socket.create_connection(("127.0.0.1", hostile.rest_port), timeout=2))
            except OSError:
                break
        probe.rounds(5)  # the probe keeps being answered while every connection is held
    for c in conns:
        c.close()
    assert len(conns) >= 1000
    probe.check(hostile)
    open_fds = len(os.listdir(f"/proc/{hostile.proc.pid}/fd"))
    assert open_fds < 600, open_fds


# ------------------------------------------------------------------------------------------- operators

def test_writes_into_served_version_directories_unload_nothing(hostile):
    v1 = hostile.root / "linear" / "1"
    extra = v1 / "assets.extra"
    extra.mkdir(exist_ok=True)
    log = extra / "agent.log"
    with Probe(hostile, hostile.expected) as probe:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:
            os.utime(v1 / "saved_model.pb")
            with open(log, "a") as f:
                f.write("backup agent was here\n")
            for p in v1.rglob("*"):
                os.chmod(p, p.stat().st_mode)
            time.sleep(0.2)
    probe.check(hostile)
    assert set(_status(hostile.grpc_target, "linear")) == {1}


def test_corrupt_model_reload_under_traffic_stalls_nothing(hostile, zoo):
    base, _ = zoo
    bad = hostile.root / "broken"
    (bad / "1" / "variables").mkdir(parents=True)
    (bad / "1" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    (bad / "1" / "variables" / "variables.index").write_bytes(b"nor this")
    (bad / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(b"nor this")
    old = time.time() - 60
    for p in [bad / "1", *(bad / "1").rglob("*")]:
        os.utime(p, (old, old))
    text = (hostile.root / "models.config").read_text()
    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    broken = cfg.model_config_list.config.add(name="broken", base_path=str(bad), model_platform="tensorflow")
    assert broken
    models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(hostile.grpc_target))
    with Probe(hostile, hostile.expected) as probe:
        answers: list = []

        def reload():
            t0 = time.monotonic()
            try:
                models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=cfg), timeout=120)
                answers.append(("OK", time.monotonic() - t0))
            except grpc.RpcError as e:
                answers.append((e.code().name, time.monotonic() - t0, e.details()))

        threads = [threading.Thread(target=reload) for _ in range(3)]
        for t in threads:
            t.start()
        # polling of the other models goes on meanwhile: a new version of mlp is picked up
        shutil.copytree(base / "mlp" / "2", hostile.root / "mlp" / ".incoming-2")
        (hostile.root / "mlp" / ".incoming-2").rename(hostile.root / "mlp" / "2")
        wait_for(lambda: _status(hostile.grpc_target, "mlp").get(2, ("",))[0] == "AVAILABLE", timeout=20,
                 what="mlp v2 loaded while a broken model is being reloaded")
        for t in threads:
            t.join(30)
        assert len(answers) == 3, answers
        assert all(a[1] < 20 for a in answers), answers
        assert any(a[0] == "UNKNOWN" and "broken" in a[2] for a in answers), answers
    probe.check(hostile, rollover=True)
    # the broken model is fixed in place: polling picks it up without another reload
    shutil.rmtree(bad / "1")
    shutil.copytree(base / "linear" / "1", bad / ".incoming-2")
    (bad / ".incoming-2").rename(bad / "2")
    wait_for(lambda: _status(hostile.grpc_target, "broken").get(2, ("",))[0] == "AVAILABLE", timeout=20,
             what="the repaired model loaded")
    shutil.rmtree(hostile.root / "mlp" / "2")
    wait_for(lambda: _available(hostile)["mlp"] == {1}, timeout=20, what="mlp back on version 1")


# ------------------------------------------------------------------------------------------- bad input → 400

def test_numbers_and_urls_that_used_to_answer_500(hostile):
    url = hostile.rest_url + "/v1/models/linear:predict"
    for body, needle in ((b'{"instances": [' + b"9" * 5000 + b"]}", "Number too big"),
                         (b'{"instances": [' + b"9" * 400 + b"]}", "Number too big"),
                         (b'{"instances": [1e400]}', "Number too big")):
        r = requests.post(url, data=body, timeout=10)
        assert r.status_code == 400 and needle in r.json()["error"], (r.status_code, r.text[:200])
    r = requests.post(hostile.rest_url + "/v1/models/linear/versions/" + "9" * 5000 + ":predict", data=b"{}",
                      timeout=10)
    assert r.status_code == 400
    r = requests.get(hostile.rest_url + "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                                         "Sec-WebSocket-Version": "13",
                                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
                     timeout=10)
    assert r.status_code == 404
    with socket.create_connection(("127.0.0.1", hostile.rest_port)) as s:  # a raw path: clients would encode it
        s.sendall(b"GET /<script>alert(1)</script> HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = _recv_all(s, 5)
    assert reply.startswith(b"HTTP/1.1 404") and b"<script>" not in reply and b"&lt;script&gt;" in reply, reply


# ------------------------------------------------------------------------------------------- signals

def _tgkill(pid: int, tid: int, sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(234, pid, tid, sig) != 0:  # SYS_tgkill on x86_64
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="tgkill syscall number is x86_64's")
def test_sigterm_to_a_non_main_thread_is_handled(zoo):
    base, _ = zoo
    srv = ServerProcess(["--model_name=linear", f"--model_base_path={base}/linear",
                         "--shutdown_grace_period_seconds=2"])
    srv.wait_ready()
    tids = [int(t) for t in os.listdir(f"/proc/{srv.proc.pid}/task") if int(t) != srv.proc.pid]
    assert tids
    _tgkill(srv.proc.pid, tids[len(tids) // 2], signal.SIGTERM)
    try:
        assert srv.proc.wait(10) == 0
    finally:
        srv.stop()
    assert "shut down cleanly" in srv.log_text()


def test_grace_period_is_enforced_and_cut_requests_get_503(zoo, tmp_path):
    base, _ = zoo
    hold = tmp_path / "batching.config"  # every request waits 30 s for its batch to fill
    hold.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 30000000 }\n"
                    "num_batch_threads { value: 1 }\n")
    mon = tmp_path / "monitoring.config"
    mon.write_text('prometheus_config { enable: true path: "/metrics" }')
    srv = ServerProcess(["--model_name=linear", f"--model_base_path={base}/linear", "--enable_batching",
                         f"--batching_parameters_file={hold}", "--enable_model_warmup=false",
                         "--shutdown_grace_period_seconds=2", f"--monitoring_config_file={mon}"])
    srv.wait_ready()
    results: list = []

    def call():
        try:
            r = requests.post(srv.rest_url + "/v1/models/linear:predict", json={"instances": [[1.0]]}, timeout=60)
            results.append((r.status_code, r.text))
        except requests.RequestException as e:
            results.append((0, str(e)))

    t = threading.Thread(target=call)
    t.start()
    in_flight = ':tensorflow_serving_bundle:requests_in_flight{entrypoint="REST"} 1\n'
    wait_for(lambda: in_flight in requests.get(srv.rest_url + "/metrics", timeout=5).text, 30,
             what="the request in flight")
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(15)
    finally:
        srv.stop()
    took = time.monotonic() - t0
    t.join(10)
    assert took < 2 + 4, f"exited {took:.1f}s after SIGTERM with a 2 s grace period"
    assert results and results[0][0] == 503, results
    assert "grace period" in results[0][1]



# ------------------------------------------------------------------------------------------- exposure

def test_admin_api_restricted_to_the_unix_socket_and_ports_bound_to_loopback(zoo, tmp_path):
    base, _ = zoo
    sock = tmp_path / "grpc.sock"
    srv = ServerProcess(["--model_name=linear", f"--model_base_path={base}/linear", f"--grpc_socket_path={sock}",
                         "--model_config_reload_api=unix_socket_only", "--grpc_bind_address=127.0.0.1",
                         "--rest_api_bind_address=127.0.0.1"])
    try:
        srv.wait_ready()
        assert listening(srv.proc.pid) == {f"127.0.0.1:{srv.grpc_port}", f"127.0.0.1:{srv.rest_port}"}
        cfg = model_server_config_pb2.ModelServerConfig()
        cfg.model_config_list.config.add(name="linear", base_path=f"{base}/linear", model_platform="tensorflow")
        req = model_management_pb2.ReloadConfigRequest(config=cfg)
        tcp = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(srv.grpc_target))
        with pytest.raises(grpc.RpcError) as e:
            tcp.HandleReloadConfigRequest(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "unix socket" in e.value.details()
        local = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"unix:{sock}"))
        assert local.HandleReloadConfigRequest(req, timeout=30).status.error_code == 0
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target))
        assert stub.Predict(predict_request("linear", {"x": X}), timeout=10).model_spec.version.value == 1
    finally:
        srv.stop()
    off = ServerProcess(["--model_name=linear", f"--model_base_path={base}/linear",
                         "--model_config_reload_api=disabled"], rest=False)
    try:
        off.wait_ready()
        with pytest.raises(grpc.RpcError) as e:
            model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(off.grpc_target)) \
                .HandleReloadConfigRequest(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "disabled" in e.value.details()
    finally:
        off.stop()
