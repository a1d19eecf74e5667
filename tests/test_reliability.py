"""Hostile input, hostile model directories, overload, shutdown and config faults against live servers.
The long versions run in `make soak` (tests/soak.py); these are the fast ones `make test` runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from tests.inprocess import InProcessServer
from tests.server_util import ServerProcess, wait_for, watch_statuses
from tests.test_grpc_integration import Traffic, _copy_version, _status, predict_request

X10 = np.ones((1, 10), np.float32)


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------------------- hostile requests

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                      st.text(max_size=20), st.fixed_dictionaries({"b64": st.text(max_size=12)}))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(["x", "instances", "inputs", "b64", "a", "age",
                                                                     "signature_name", "examples", "context"]),
                                                    children, max_size=4)), max_leaves=25)
bodies = st.one_of(
    st.binary(max_size=200),
    json_value.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.builds(lambda key, v: json.dumps({key: v}).encode(),
              st.sampled_from(["instances", "inputs", "examples"]), json_value),
    st.integers(1, 3000).map(lambda n: b'{"instances": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(1, 3000).map(lambda n: b'{"inputs": ' + b"[" * n),
)
paths = st.sampled_from(["/v1/models/mlp:predict", "/v1/models/census:predict", "/v1/models/census:classify",
                         "/v1/models/census:regress", "/v1/models/mlp/labels/canary:predict",
                         "/v1/models/mlp/versions/7:predict", "/v1/models/nope:predict", "/v1/models/mlp:explode"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=paths, body=bodies)
def test_fuzz_rest_never_500_and_always_json_errors(demo_server, path, body):
    r = requests.post(demo_server.rest_url + path, data=body, timeout=30)
    assert r.status_code in (200, 400, 404, 501), (r.status_code, r.text[:500])
    if r.status_code != 200:
        err = r.json()["error"]
        assert isinstance(err, str) and err


dtypes = st.integers(-3, 30)
dims = st.lists(st.integers(-5, 2**40), max_size=4)


@st.composite
def tensor_protos(draw):
    p = tensor_pb2.TensorProto(dtype=draw(dtypes))
    for d in draw(dims):
        p.tensor_shape.dim.add().size = d
    choice = draw(st.integers(0, 3))
    if choice == 0:
        p.tensor_content = draw(st.binary(max_size=64))
    elif choice == 1:
        p.float_val.extend(draw(st.lists(st.floats(width=32, allow_nan=True), max_size=8)))
    elif choice == 2:
        p.string_val.extend(draw(st.lists(st.binary(max_size=8), max_size=4)))
    else:
        p.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
    return p


_STUBS: dict = {}


def _stub(target: str):
    if target not in _STUBS:
        _STUBS[target] = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    return _STUBS[target]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=st.sampled_from(["mlp", "census", "linear"]), name=st.sampled_from(["x", "age", "inputs", "zzz"]),
       proto=tensor_protos())
def test_fuzz_grpc_answers_client_errors(demo_server, model, name, proto):
    stub = _stub(demo_server.grpc_target)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs[name].CopyFrom(proto)
    try:
        stub.Predict(req, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED), (e.code(), e.details())
        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # only the memory budget may refuse a valid request
            assert "--request_memory_budget_bytes" in e.details(), e.details()
        assert e.details()


def test_server_survives_fuzzing_with_bounded_memory(demo_server):
    if getattr(demo_server, "external", False):
        pytest.skip("needs the server's pid")
    before = rss_kb(demo_server.proc.pid)
    for i in range(300):  # big-but-valid and big-and-invalid bodies, repeatedly
        body = b'{"instances": [' + b",".join([b"[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]"] * 2000) + b"]}"
        if i % 2:
            body = body[:-10]
        requests.post(demo_server.rest_url + "/v1/models/mlp:predict", data=body, timeout=30)
    after = rss_kb(demo_server.proc.pid)
    assert demo_server.proc.poll() is None
    assert after - before < 300 * 1024, f"RSS grew by {(after - before) / 1024:.0f} MiB"


def test_garbage_on_both_ports_is_harmless(demo_server):
    if getattr(demo_server, "external", False):
        pytest.skip("loopback ports of our own server only")
    rng = np.random.default_rng(0)
    for port in (demo_server.grpc_port, demo_server.rest_port):
        for n in (1, 17, 4096, 100_000):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(rng.bytes(n))
                    s.settimeout(2)
                    s.recv(1024)
                except OSError:
                    pass
    r = requests.get(demo_server.rest_url + "/v1/models/mlp")
    assert r.status_code == 200
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(demo_server.grpc_target))
    assert stub.Predict(predict_request("mlp", {"x": X10})).model_spec.version.value == 2


def test_huge_declared_shape_is_refused_without_allocating(demo_server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(demo_server.grpc_target))
    req = predict_request("mlp", {"x": X10})
    req.inputs["x"].ClearField("tensor_content")
    del req.inputs["x"].float_val[:]
    req.inputs["x"].tensor_shape.dim[0].size = 2**40
    try:
        resp = stub.Predict(req)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in e.details(), e.details()
    else:
        pytest.fail(f"accepted {req.inputs['x']}: {resp}")


# ------------------------------------------------------------------------------------------- limits and overload

@pytest.fixture
def limited_server(zoo):
    base, _ = zoo
    srv = InProcessServer(["--model_name=mlp", f"--model_base_path={base}/mlp", "--max_inflight_requests=2",
                           "--rest_api_max_request_bytes=100000",
                           "--grpc_channel_arguments=grpc.max_receive_message_length=100000"])
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_request_size_limits_answer_clearly(limited_server):
    srv = limited_server
    big = b'{"instances": [' + b",".join([b"[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]"] * 5000) + b"]}"
    r = requests.post(srv.rest_url + "/v1/models/mlp:predict", data=big)
    assert r.status_code == 429
    assert r.json()["error"].startswith(f"Request body of {len(big)} bytes exceeds the limit of 100000 bytes")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(predict_request("mlp", {"x": np.ones((5000, 10), np.float32)}))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Predict(predict_request("mlp", {"x": X10})).model_spec.version.value == 2


def test_overload_is_refused_quickly_not_queued(limited_server):
    srv = limited_server
    body = b'{"instances": ' + (b"[" + b",".join([b"[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]"] * 1500) + b"]") + b"}"
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def one():
        t0 = time.perf_counter()
        r = requests.post(srv.rest_url + "/v1/models/mlp:predict", data=body, timeout=60)
        with lock:
            results.append((r.status_code, time.perf_counter() - t0, r.text[:200]))

    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [c for c, _, _ in results]
    assert set(codes) <= {200, 503}, results
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    refused = [txt for c, _, txt in results if c == 503]
    assert all("Server is overloaded" in txt for txt in refused)  # refused by the limit, not by a queue


# ------------------------------------------------------------------------------------------- shutdown

def _in_flight(srv, entrypoint: str) -> float:
    text = requests.get(srv.rest_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f':tensorflow_serving_bundle:requests_in_flight{{entrypoint="{entrypoint}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_sigterm_during_start_up_exits_cleanly_and_at_once(zoo):
    """A SIGTERM that arrives while the server is still importing and loading (a rollout that gives up, a
    supervisor stopping its workers) ends it with status 0 at once, not by the default action (-15)."""
    base, _ = zoo
    srv = ServerProcess(["--model_name=mlp", f"--model_base_path={base}/mlp"], rest=False)

    def handles_sigterm() -> bool:  # the server's handler is in (SigCgt has SIGTERM): inside start-up now
        assert srv.alive(), srv.log_text()[-2000:]
        caught = next(ln for ln in open(f"/proc/{srv.proc.pid}/status") if ln.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))

    wait_for(handles_sigterm, 60, 0.01, "the SIGTERM handler")
    assert "Running gRPC ModelServer" not in srv.log_text()  # still starting
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0, srv.log_text()[-2000:]
    assert time.monotonic() - t0 < 15
    assert "during start-up: exiting before serving" in srv.log_text()


def test_sigterm_drains_in_flight_requests_and_exits_zero(zoo, tmp_path):
    base, _ = zoo
    mon = tmp_path / "monitoring.config"
    mon.write_text('prometheus_config { enable: true path: "/metrics" }')
    # a 3 s batch timeout keeps every request in flight long enough to be caught by the SIGTERM
    hold = tmp_path / "batching.config"
    hold.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 3000000 }\n"
                    "num_batch_threads { value: 1 }\n")
    srv = ServerProcess(["--model_name=mlp", f"--model_base_path={base}/mlp", "--enable_grpc_healthcheck_service",
                         f"--monitoring_config_file={mon}", "--enable_batching", f"--batching_parameters_file={hold}",
                         "--enable_model_warmup=false"])
    srv.wait_ready()
    ch = grpc.insecure_channel(srv.grpc_target, options=[("grpc.max_send_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="PredictionService"))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    big = predict_request("mlp", {"x": np.ones((3, 10), np.float32)})
    outcomes: list = []

    def call():
        try:
            outcomes.append(stub.Predict(big, timeout=60).outputs["y"].tensor_shape.dim[0].size)
        except grpc.RpcError as e:
            outcomes.append(e.code())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: _in_flight(srv, "GRPC") >= 4, interval=0.01, what="all four requests in flight")
    srv.proc.send_signal(signal.SIGTERM)
    statuses = watch_statuses(watch)
    for t in threads:
        t.join()
    assert srv.proc.wait(60) == 0
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses  # readiness went false before the exit
    assert outcomes == [3] * 4, outcomes  # every in-flight request finished
    assert "shut down cleanly" in srv.log_text()


# ------------------------------------------------------------------------------------------- model directories

@pytest.fixture
def dir_server(zoo, tmp_path):
    base, _ = zoo
    root = tmp_path / "models"
    model_dir = root / "mlp"
    model_dir.mkdir(parents=True)
    shutil.copytree(base / "mlp" / "1", model_dir / "1")
    (model_dir / "tmp").mkdir()
    (model_dir / "v3").mkdir()
    (model_dir / "README").write_text("not a version")
    srv = InProcessServer(["--model_name=mlp", f"--model_base_path={model_dir}", "--file_system_poll_wait_seconds=1",
                           "--max_num_load_retries=0"], rest=False)
    srv.model_dir, srv.zoo_base = model_dir, base
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_deleted_version_and_vanishing_base_path_keep_serving(dir_server):
    srv = dir_server
    with Traffic(srv.grpc_target, "mlp", {"x": X10}) as traffic:
        _copy_version(srv.zoo_base / "mlp" / "2", srv.model_dir, 2)
        wait_for(lambda: traffic.by_version.get(2, 0) > 10, what="traffic on v2")
        shutil.rmtree(srv.model_dir / "2")  # the serving version is deleted: back to v1, no failed request
        wait_for(lambda: _status(srv.grpc_target, "mlp").get(2, ("",))[0] == "END", what="v2 unloaded")
        n = traffic.by_version.get(1, 0)
        wait_for(lambda: traffic.by_version.get(1, 0) > n + 10, what="traffic back on v1")
        away = srv.model_dir.with_name("mlp-away")
        srv.model_dir.rename(away)  # the whole base path disappears ...
        n = traffic.total()
        wait_for(lambda: traffic.total() > n + 50, what="serving without a base path")
        assert _status(srv.grpc_target, "mlp")[1][0] == "AVAILABLE"
        away.rename(srv.model_dir)  # ... and comes back with a new version
        _copy_version(srv.zoo_base / "mlp" / "2", srv.model_dir, 3)
        wait_for(lambda: traffic.by_version.get(3, 0) > 10, what="traffic on v3")
    assert traffic.failures == []
    assert set(_status(srv.grpc_target, "mlp")) == {1, 2, 3}  # tmp, v3-dir and README were never versions


def test_swaps_under_load_fail_no_request(dir_server):
    srv = dir_server
    with Traffic(srv.grpc_target, "mlp", {"x": X10}) as t1, Traffic(srv.grpc_target, "mlp", {"x": X10}) as t2:
        for v in range(2, 7):
            _copy_version(srv.zoo_base / "mlp" / ("2" if v % 2 else "1"), srv.model_dir, v)
            wait_for(lambda: t1.by_version.get(v, 0) > 5 and t2.by_version.get(v, 0) > 5, what=f"traffic on v{v}")
    assert t1.failures == [] and t2.failures == []
    states = _status(srv.grpc_target, "mlp")
    assert states[6][0] == "AVAILABLE" and all(states[v][0] == "END" for v in range(1, 6))


# ------------------------------------------------------------------------------------------- config faults

def test_config_faults_are_rejected_and_the_previous_config_keeps_serving(dir_server, tmp_path):
    srv = dir_server
    good = text_format.Parse(f'model_config_list {{ config {{ name: "mlp" base_path: "{srv.model_dir}" '
                             'model_platform: "tensorflow" } }', model_server_config_pb2.ModelServerConfig())
    bad_path = text_format.Parse(f'model_config_list {{ config {{ name: "mlp" base_path: "{srv.model_dir}" '
                                 'model_platform: "tensorflow" } config { name: "ghost" base_path: '
                                 f'"{tmp_path}/no/such/dir" model_platform: "tensorflow" }} }}',
                                 model_server_config_pb2.ModelServerConfig())
    bad_label = model_server_config_pb2.ModelServerConfig()
    bad_label.CopyFrom(good)
    bad_label.model_config_list.config[0].version_labels["stable"] = 42
    with grpc.insecure_channel(srv.grpc_target) as ch:
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        for cfg, code, message in (
            (bad_path, grpc.StatusCode.INVALID_ARGUMENT,
             f"Could not find base path {tmp_path}/no/such/dir for servable ghost with error NOT_FOUND: "
             f"{tmp_path}/no/such/dir not found"),
            (bad_label, grpc.StatusCode.FAILED_PRECONDITION,
             "Request to assign label to version 42 of model mlp, which is not currently available for inference"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=cfg), timeout=30)
            assert (e.value.code(), e.value.details()) == (code, message)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            assert stub.Predict(predict_request("mlp", {"x": X10})).model_spec.version.value == 1
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(predict_request("ghost", {"x": X10}))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_permission_denied_version_is_reported(dir_server):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    srv = dir_server
    d = srv.model_dir / ".incoming-9"
    shutil.copytree(srv.zoo_base / "mlp" / "2", d)
    os.chmod(d / "saved_model.pb", 0)
    d.rename(srv.model_dir / "9")
    wait_for(lambda: _status(srv.grpc_target, "mlp").get(9, ("",))[0] == "END")
    assert _status(srv.grpc_target, "mlp")[9][1]
