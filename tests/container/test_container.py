"""The container tier: the compose stack (and the image on its own) under a real Docker engine.

Runs after the whole integration suite has run against the same compose service (`make test-docker`).
The tests that stop or kill the container come last in this file, in this order.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tfsb.client import GrpcClient
from tfsb.client.rollout import read_config, set_labels
from tests.server_util import Background, free_port, wait_for

pytestmark = pytest.mark.container

X10 = np.ones((1, 10), np.float32)


def _state(client: GrpcClient, model: str, version: int) -> str:
    return {s["version"]: s["state"] for s in client.status(model)}.get(version, "")


def _health(container) -> str:
    container.reload()
    return (container.attrs["State"].get("Health") or {}).get("Status", "none")


class _Traffic(Background):
    """Client threads predicting in a loop; every answer other than OK is recorded."""

    def __init__(self, target: str, model: str, inputs: dict, threads: int = 2, stop_on_unavailable=False):
        self.client = GrpcClient(target, timeout=30, retries=0)
        self.model, self.inputs = model, inputs
        self.ok = 0
        self.versions: dict[int, int] = {}
        self.failures: list[str] = []
        self.refused = 0
        self.stop_on_unavailable = stop_on_unavailable
        self.signalled = threading.Event()  # set by the test when it sends SIGTERM
        super().__init__()
        for _ in range(threads):
            self.spawn(self._run)

    def _run(self):
        from tfsb.client.base import ServingClientError

        while not self.stopping():
            try:
                self.client.predict(self.model, self.inputs)
                self.ok += 1
            except ServingClientError as e:
                if self.stop_on_unavailable and self.signalled.is_set() and e.code in ("UNAVAILABLE", "CANCELLED"):
                    # sent after SIGTERM: the listener was closed (UNAVAILABLE) or the call raced the server's
                    # GOAWAY (CANCELLED before any handler ran); the client may retry elsewhere
                    self.refused += 1
                    return
                self.failures.append(f"{e.code}: {e.message}"[:200])
                if self.signalled.is_set():
                    return


EMBEDDED_IMAGE = "tf-serving-bundle-embedded:local"
# what the dev lock has and the runtime image must not: test runners, browsers, plotting, bench peers
TEST_PACKAGES = ("pytest", "hypothesis", "playwright", "schemathesis", "matplotlib", "kubernetes_validate",
                 "fastapi", "openapi_spec_validator", "tensorflow_text", "docker", "uv")


def test_embedded_image_is_runtime_only_and_at_most_2_gb(docker_client):
    """`make docker-bootstrap` builds the embedded image from the runtime lock: ≤ 2.0 GB, no test or bench
    package inside, TensorFlow's CPU build, and the server and client importable from any directory."""
    try:
        image = docker_client.images.get(EMBEDDED_IMAGE)
    except Exception as e:  # noqa: BLE001 - docker.errors.ImageNotFound and friends
        pytest.skip(f"{EMBEDDED_IMAGE} is not built here ({type(e).__name__}); `make docker-bootstrap` builds it")
    size = image.attrs["Size"]
    print(f"\n{EMBEDDED_IMAGE}: {size / 1e9:.2f} GB")
    assert size <= 2.0e9, f"the embedded image is {size / 1e9:.2f} GB (> 2.0 GB)"
    probe = ("import importlib.util, importlib.metadata as md, json; "
             f"found = [m for m in {TEST_PACKAGES!r} if importlib.util.find_spec(m)]; "
             "dists = sorted(d.metadata['Name'].lower().replace('_', '-') for d in md.distributions()); "
             "import tfsb.server.config, tfsb.client; "
             "print(json.dumps({'found': found, 'dists': dists}))")
    out = docker_client.containers.run(EMBEDDED_IMAGE, ["-c", probe], entrypoint="python", working_dir="/tmp",
                                       remove=True, environment={"TF_CPP_MIN_LOG_LEVEL": "3"})
    import json

    got = json.loads(out.decode().strip().splitlines()[-1])
    assert got["found"] == [], f"test/bench packages in the runtime image: {got['found']}"
    assert "tensorflow-cpu" in got["dists"] and "tensorflow" not in got["dists"]
    assert not {"pytest", "pip-tools", "uv"} & set(got["dists"])


def test_compose_service_is_healthy_by_its_config_driven_check(stack):
    assert _health(stack.container) == "healthy"
    code, out = stack.container.exec_run(["bash", "/healthcheck.sh"])
    assert code == 0, out


def test_version_rollover_in_the_mounted_volume_under_traffic(stack):
    base = Path(stack.models) / "linear"
    new = max(int(p.name) for p in base.iterdir() if p.name.isdigit()) + 1
    client = GrpcClient(stack.grpc_target)
    try:
        with _Traffic(stack.grpc_target, "linear", {"x": np.ones((1, 1), np.float32)}) as traffic:
            tmp = base / f".incoming-{new}"
            shutil.copytree(base / "1", tmp)
            tmp.rename(base / str(new))  # publish atomically, as export/ does
            wait_for(lambda: _state(client, "linear", new) == "AVAILABLE", timeout=60, what=f"linear v{new}")
            n = traffic.ok
            wait_for(lambda: traffic.ok > n + 20, timeout=30, what="traffic on the new version")
        assert traffic.failures == [], traffic.failures[:5]
        assert _state(client, "linear", 1) == "END"  # latest{1}: the old version was unloaded
    finally:
        shutil.rmtree(base / str(new), ignore_errors=True)
    wait_for(lambda: _state(client, "linear", 1) == "AVAILABLE", timeout=60, what="linear back on v1")


def test_label_switch_through_config_reload_with_the_rollout_tool(stack):
    cfg_path = Path(stack.config_dir) / "models.config"
    client = GrpcClient(stack.grpc_target)
    before = client.predict("mlp", {"x": X10}, label="stable")["y"]
    with _Traffic(stack.grpc_target, "mlp", {"x": X10}) as traffic:
        set_labels(cfg_path, client, "mlp", {"stable": 2, "canary": 1})
        assert read_config(cfg_path).model_config_list.config[1].version_labels["stable"] == 2
        time.sleep(6)  # one config-file poll (5 s) inside the container sees the same file: nothing reverts
    assert traffic.failures == [], traffic.failures[:5]
    after = client.predict("mlp", {"x": X10}, label="stable")["y"]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, client.predict("mlp", {"x": X10}, version=2)["y"])
    set_labels(cfg_path, client, "mlp", {"stable": 1, "canary": 2})


def _own_model(root: Path) -> Path:
    """A model that is not from the demo zoo: a tf.Module with its own signature, saved by TensorFlow."""
    import tensorflow as tf

    class Scale(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def serve(self, features):
            return {"scaled": features * 3.0}

    m = Scale()
    path = root / "triple" / "7"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return root


@pytest.mark.parametrize("how", ["env", "args"])
def test_users_own_model_in_single_model_mode_passes_the_healthcheck(stack, docker_client, tmp_path, how):
    """MODEL_NAME=triple, or `--model_name=triple --model_base_path=...` arguments (the official image accepts
    both; the healthcheck reads the server's command line, last flag wins)."""
    root = _own_model(tmp_path / "models")
    rest = free_port()
    kw = ({"environment": {"MODEL_NAME": "triple"}} if how == "env" else
          {"command": ["--model_name=triple", "--model_base_path=/models/triple"]})
    c = docker_client.containers.run(stack.image, detach=True, **kw,
                                     volumes={str(root): {"bind": "/models", "mode": "ro"},
                                              str(Path(__file__).resolve().parents[2] / "docker" / "healthcheck.sh"):
                                                  {"bind": "/healthcheck.sh", "mode": "ro"}},
                                     ports={"8501/tcp": ("127.0.0.1", rest)},
                                     healthcheck={"test": ["CMD", "bash", "/healthcheck.sh"], "interval": 1_000_000_000,
                                                  "retries": 120, "timeout": 3_000_000_000})
    try:
        wait_for(lambda: _health(c) == "healthy", timeout=120, interval=1, what="own model healthy")
        r = requests.post(f"http://127.0.0.1:{rest}/v1/models/triple:predict",
                          json={"instances": [[1.0, 2.0, 3.0]]}, timeout=10)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], [[3.0, 6.0, 9.0]])
    finally:
        print(c.logs(tail=20).decode(errors="replace"))
        c.remove(force=True)


def test_users_own_models_served_by_the_compose_stack_pass_the_healthcheck(stack, tmp_path):
    """The unchanged compose file, pointed at a user's model directory and config: healthy, and it answers."""
    from tests.container.stack import REPO, compose

    root = _own_model(tmp_path / "models")
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "models.config").write_text('model_config_list { config { name: "triple" base_path: "/models/triple" '
                                       'model_platform: "tensorflow" } }\n')
    for name in ("batching.config", "monitoring.config"):
        shutil.copy(REPO / "config" / name, cfg / name)
    os.chmod(cfg, 0o755)
    rest = free_port()
    env = {"TFS_IMAGE": stack.image, "MODELS_DIR": str(root), "CONFIG_DIR": str(cfg),
           "GRPC_PORT": str(free_port()), "REST_PORT": str(rest)}
    try:
        r = compose("up", "-d", "--wait", "--wait-timeout", "180", "tfserving", env=env, check=False,
                    project="tfsb-own-model")
        assert r.returncode == 0, r.stdout + compose("logs", "--tail", "40", env=env, check=False,
                                                     project="tfsb-own-model").stdout
        resp = requests.post(f"http://127.0.0.1:{rest}/v1/models/triple:predict",
                             json={"instances": [[1.0, 2.0, 3.0]]}, timeout=10)
        assert resp.status_code == 200, resp.text
        np.testing.assert_allclose(resp.json()["predictions"], [[3.0, 6.0, 9.0]])
    finally:
        compose("down", "-t", "20", env=env, check=False, project="tfsb-own-model")


def test_restart_policy_brings_the_server_back_after_it_is_killed(stack):
    c = stack.container
    c.reload()
    restarts = c.attrs["RestartCount"]
    os.kill(c.attrs["State"]["Pid"], signal.SIGKILL)  # the server process dies (not a `docker stop`)
    wait_for(lambda: (c.reload(), c.attrs["RestartCount"])[1] > restarts, timeout=60, what="a restart")
    wait_for(lambda: _health(c) == "healthy", timeout=180, interval=1, what="healthy after the restart")
    client = GrpcClient(stack.grpc_target, retries=5)
    assert client.predict("mlp", {"x": X10}, label="stable")["y"].shape == (1, 1)


def test_docker_stop_drains_in_flight_requests(stack):
    """`docker stop` sends SIGTERM: requests already accepted all complete; new ones find the port closed."""
    c = stack.container
    x = np.random.default_rng(0).random((64, 10), dtype=np.float32)
    with _Traffic(stack.grpc_target, "mlp", {"x": x}, threads=8, stop_on_unavailable=True) as traffic:
        wait_for(lambda: traffic.ok > 50, timeout=60, what="traffic before the stop")
        t0 = time.monotonic()
        traffic.signalled.set()
        c.stop(timeout=25)
        took = time.monotonic() - t0
        wait_for(lambda: all(not t.is_alive() for t in traffic._threads), timeout=60, what="clients done")
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 0, c.logs(tail=30)
    assert took < 25, f"docker stop took {took:.1f}s (SIGKILL would have been needed)"
    assert traffic.failures == [], traffic.failures[:5]
    assert b"shut down cleanly" in c.logs(tail=50) or "tensorflow/serving" in stack.image
    print(f"docker stop under traffic: {traffic.ok} OK, 0 failed, {traffic.refused} refused after SIGTERM, "
          f"stop took {took:.1f}s")

