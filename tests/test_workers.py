"""`--num_server_processes=2`: two worker processes on the same ports behind a supervisor, acting as one server
— reloads through either reach both, metrics are merged, a killed worker comes back, SIGTERM drains all."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from google.protobuf import text_format

from tfsb.client import GrpcClient
from tfsb.server.config import ModelServerConfig
from tests.server_util import ServerProcess, listening_ports, serving, wait_for



def _children(pid: int) -> list[int]:
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    return out


def _listens_on(pid: int, port: int) -> bool:
    return port in listening_ports(pid)


@pytest.fixture(scope="module")
def pair(zoo, tmp_path_factory):
    base, _ = zoo
    root = tmp_path_factory.mktemp("workers")
    cfg = root / "models.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "mlp" base_path: "{base / "mlp"}" '
                   f'model_platform: "tensorflow" model_version_policy {{ all {{}} }} }} }}\n')
    mon = root / "monitoring.config"
    mon.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    with serving([f"--model_config_file={cfg}", "--num_server_processes=2", f"--monitoring_config_file={mon}",
                  "--file_system_poll_wait_seconds=1"]) as srv:
        wait_for(lambda: len(_children(srv.proc.pid)) == 2 and all(
            _listens_on(c, srv.grpc_port) and _listens_on(c, srv.rest_port) for c in _children(srv.proc.pid)),
            timeout=120, what="both workers listening on both ports")
        srv.base = base
        yield srv


def test_both_workers_serve_the_same_ports_and_metrics_are_merged(pair):
    pids = _children(pair.proc.pid)
    assert len(pids) == 2 and all(_listens_on(p, pair.grpc_port) and _listens_on(p, pair.rest_port) for p in pids)
    x = {"instances": np.ones((1, 10)).tolist()}
    before = _request_count(pair)
    for _ in range(20):  # a new connection each time: the kernel spreads them over the workers
        assert requests.post(f"{pair.rest_url}/v1/models/mlp:predict", json=x,
                             headers={"Connection": "close"}).status_code == 200
    assert _request_count(pair) - before == 20


def _request_count(pair) -> int:
    text = requests.get(f"{pair.rest_url}/metrics", headers={"Connection": "close"}).text
    lines = [ln for ln in text.splitlines()
             if ln.startswith(':tensorflow:serving:request_count{model_name="mlp",status="OK"}')]
    return int(float(lines[0].rsplit(" ", 1)[1])) if lines else 0


def _answers(pair, n: int = 16) -> set:
    """What fresh channels (spread by the kernel over both workers) get for each label and the added model."""
    x = np.ones((2, 10), np.float32)
    answers = set()
    for _ in range(n):
        with GrpcClient(pair.grpc_target, retries=0) as c:
            answers.add((c.predict("mlp", {"x": x}, label="stable")["y"].tobytes(),
                         c.predict("mlp", {"x": x}, label="canary")["y"].tobytes(),
                         c.metadata("mlp", label="canary")["version"],
                         c.predict("linear", {"x": np.ones((1, 1), np.float32)})["y"].tobytes()))
    return answers


def test_reload_through_one_worker_reaches_all(pair):
    cfg = text_format.Parse(
        f'model_config_list {{ config {{ name: "mlp" base_path: "{pair.base / "mlp"}" model_platform: "tensorflow" '
        f'model_version_policy {{ specific {{ versions: 1 versions: 2 }} }} '
        f'version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }} '
        f'config {{ name: "linear" base_path: "{pair.base / "linear"}" model_platform: "tensorflow" }} }}',
        ModelServerConfig())
    with GrpcClient(pair.grpc_target, retries=0) as c:
        c.reload_config(cfg)
    answers = _answers(pair)
    assert len(answers) == 1  # every worker knows the labels and the added model
    stable, canary, version, _ = answers.pop()
    assert stable != canary and version == 2
    pair.reloaded = _answers(pair, 1)


def test_a_killed_worker_is_restarted_on_the_reloaded_config(pair):
    """The replacement opens its ports only after it applied the config its siblings serve (the reload
    above: labels, and a model the start-up file does not name), never the start-up file's."""
    victim = _children(pair.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(_children(pair.proc.pid)) == 2 and victim not in _children(pair.proc.pid)
             and all(_listens_on(c, pair.grpc_port) for c in _children(pair.proc.pid)),
             timeout=120, interval=0.02, what="the worker restarted and listening")
    assert _answers(pair, 24) == pair.reloaded  # at once: no NOT_FOUND, no unknown label, no old version
    for _ in range(8):
        assert requests.post(f"{pair.rest_url}/v1/models/mlp:predict", json={"instances": [[1.0] * 10]},
                             headers={"Connection": "close"}).status_code == 200


def test_workers_die_with_a_killed_supervisor_and_leave_nothing(zoo):
    """kill -9 of the supervisor: its workers stop within about a second (no orphan keeps serving the old
    config on the shared ports), the control directory is removed, and a new server can take the ports."""
    base, _ = zoo
    srv = ServerProcess(["--model_name=mlp", f"--model_base_path={base / 'mlp'}", "--num_server_processes=2"])
    srv.wait_ready()
    wait_for(lambda: len(_children(srv.proc.pid)) == 2 and all(
        _listens_on(c, srv.grpc_port) for c in _children(srv.proc.pid)), timeout=120, what="two workers")
    workers = _children(srv.proc.pid)
    control = {Path(_environ(p)["TFSB_CONTROL_DIR"]) for p in workers}
    assert len(control) == 1
    control_dir = control.pop()
    assert control_dir.is_dir()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    t0 = time.monotonic()
    wait_for(lambda: not any(_running(p) for p in workers), timeout=15, interval=0.05, what="the orphans gone")
    gone_after = time.monotonic() - t0
    print(f"\nworkers gone {gone_after:.2f}s after kill -9 of their supervisor")
    assert gone_after < 5, gone_after  # ~1 s: a parent-death signal and a 0.5 s drain
    wait_for(lambda: not control_dir.exists(), timeout=10, what="the control directory removed")
    with socket.socket() as s:  # the ports are free again
        s.bind(("127.0.0.1", srv.grpc_port))


def test_a_start_up_refuses_ports_held_by_processes_that_are_not_its_workers(tmp_path):
    """A listener with SO_REUSEPORT on the port (an orphan of another server, any other process): the
    supervisor refuses like TF Serving's port-in-use error instead of silently sharing the port with it."""
    import subprocess
    import sys

    from tests.server_util import REPO, free_port

    port = free_port()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("0.0.0.0", port))
        squatter.listen()
        r = subprocess.run([sys.executable, "-m", "tfsb.server", f"--port={port}", "--model_name=m",
                            f"--model_base_path={tmp_path}", "--num_server_processes=2"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 255, r.stdout + r.stderr
    assert "Failed to start server. Error: INVALID_ARGUMENT: Failed to BuildAndStart gRPC server" in r.stdout
    assert "worker 0 started" not in r.stderr


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(kv.decode(errors="replace").split("=", 1) for kv in raw if b"=" in kv)


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_sigterm_stops_every_worker(zoo, tmp_path):
    base, _ = zoo
    srv = ServerProcess(["--model_name=mlp", f"--model_base_path={base / 'mlp'}", "--num_server_processes=2"],
                        rest=False)
    srv.wait_ready()
    wait_for(lambda: len(_children(srv.proc.pid)) == 2, timeout=120, what="two workers")
    workers = _children(srv.proc.pid)
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 25
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_start_up_error_stops_every_worker_with_its_code(tmp_path):
    """Every worker fails the same way (here: a unix socket N processes cannot share): the supervisor exits
    with the workers' code instead of restarting them forever."""
    import subprocess
    import sys

    from tests.server_util import REPO, free_port

    r = subprocess.run([sys.executable, "-m", "tfsb.server", f"--port={free_port()}", "--model_name=m",
                        f"--model_base_path={tmp_path}", "--num_server_processes=2",
                        f"--grpc_socket_path={tmp_path / 'grpc.sock'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 255
    assert "cannot be shared by --num_server_processes=2" in r.stdout


def test_a_traffic_config_put_to_one_worker_reaches_all(pair):
    """PUT /api/traffic lands on one worker; the others follow it (the control directory), so a split label
    answers on every connection and the evidence is the whole server's from any worker."""
    doc = {"models": {"mlp": {"split": {"label": "rollout", "weights": {"1": 50, "2": 50}}}}}
    close = {"Connection": "close"}  # a new connection each time: the kernel spreads them over the workers
    r = requests.put(f"{pair.rest_url}/api/traffic", json=doc, headers=close, timeout=10)
    assert r.status_code == 200, r.text
    digest = r.json()["digest"]
    try:
        wait_for(lambda: all(requests.get(f"{pair.rest_url}/api/traffic", headers=close, timeout=10).json()["digest"]
                             == digest for _ in range(10)), timeout=10, what="every worker on the new config")
        x = {"instances": np.ones((1, 10)).tolist()}
        versions = []
        for _ in range(40):
            r = requests.post(f"{pair.rest_url}/v1/models/mlp/labels/rollout:predict", json=x, headers=close,
                              timeout=10)
            assert r.status_code == 200, r.text
            versions.append(int(r.headers["x-tf-serving-model-version"]))
        assert set(versions) == {1, 2}
        readings = requests.get(f"{pair.rest_url}/api/traffic", headers=close, timeout=10).json()["readings"]
        assert sum(v["requests"] for v in readings["mlp"]["live"].values()) >= 40  # both workers' counts
    finally:
        requests.put(f"{pair.rest_url}/api/traffic", json={"models": {}}, headers=close, timeout=10)
