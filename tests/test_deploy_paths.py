"""Reliability 3: what operators and deployment tools do to a running server (restores, symlink swaps of
git-sync and the kubelet, renames) must never change or interrupt the version it serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.inprocess import InProcessServer
from tests.server_util import wait_for
from tests.test_grpc_integration import predict_request

X10 = np.ones((1, 10), np.float32)
MODELS = ("plain", "gitsync", "kubelet")


class Every50ms:
    """One client predicting each model in turn every 50 ms; counts answers, failures and wrong versions."""

    def __init__(self, target: str, expected: dict[str, int]):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.expected = expected
        self.requests = self.failures = self.wrong = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.05):
            model = list(self.expected)[i % len(self.expected)]
            i += 1
            self.requests += 1
            try:
                v = self._stub.Predict(predict_request(model, {"x": X10}), timeout=10).model_spec.version.value
                self.wrong += v != self.expected[model]
            except grpc.RpcError as e:
                self.failures += 1
                self.errors.append(f"{model}: {e.code().name}: {e.details()}")

    def counts(self) -> tuple[int, int, int]:
        return self.requests, self.failures, self.wrong

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)
        self._channel.close()


def sh(cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, shell=True, cwd=cwd, check=True)


# Each swap, as the operator or tool does it, in the shell. `root` holds the three base paths: `plain` (a
# directory), `gitsync` (a symlink to a checkout, swapped atomically), `kubelet` (`1 -> ..data/1`,
# `..data -> ..<stamp>`, the atomic writer of ConfigMap/projected volumes and init-container syncs).
SWAPS = {
    "restore model dir (rm -rf + cp -r)": "rm -rf plain && cp -r ../backup/plain plain",
    "restore version dir (rm -rf + cp -r)": "rm -rf plain/1 && cp -r ../backup/plain/1 plain/1",
    "whole base path deleted and restored": "cd .. && rm -rf root && cp -r backup root",
    "git-sync symlink swap": "n=$(( $(readlink gitsync | tr -dc 0-9) + 1 )); cp -r $(readlink gitsync) rev-$n "
                             "&& ln -s rev-$n gitsync.new && mv -T gitsync.new gitsync && rm -rf rev-$((n - 1))",
    "kubelet ..data swap": "cd kubelet && n=$(( $(readlink ..data | tr -dc 0-9) + 1 )); old=$(readlink ..data); "
                           "cp -r $old ..t$n && ln -s ..t$n ..data_tmp && mv -T ..data_tmp ..data && rm -rf $old",
    "model dir renamed away and back": "mv plain plain.away && mv plain.away plain",
    "version dir renamed away and back": "mv plain/1 plain/.1.away && mv plain/.1.away plain/1",
    "restore by rsync --delete": "rsync -a --delete ../backup/plain/ plain/ 2>/dev/null || "
                                 "(rm -rf plain && cp -r ../backup/plain plain)",
}


@pytest.fixture
def deploy_root(zoo, tmp_path):
    base, _ = zoo
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(base / "mlp" / "1", root / "plain" / "1")
    shutil.copytree(base / "mlp" / "1", root / "rev-0" / "1")
    os.symlink("rev-0", root / "gitsync")
    shutil.copytree(base / "mlp" / "1", root / "kubelet" / "..t0" / "1")
    os.symlink("..t0", root / "kubelet" / "..data")
    os.symlink("..data/1", root / "kubelet" / "1")
    old = 1_600_000_000  # settled long ago: served at start-up
    for p in root.rglob("*"):
        os.utime(p, (old, old), follow_symlinks=False)
    shutil.copytree(root, tmp_path / "backup", symlinks=True)
    cfg = tmp_path / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n' for m in MODELS) + "}\n")
    return root, cfg


def test_swapped_files_under_served_versions_fail_no_request(deploy_root):
    """Every deploy-path pattern under predicts every 50 ms: 0 failures, 0 wrong versions, no reload."""
    root, cfg = deploy_root
    srv = InProcessServer([f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=1"], rest=False)
    srv.wait_ready()
    try:
        registry = srv.server.registry
        servables = {m: [id(r.servable) for r in registry.model(m).status()] for m in MODELS}
        table = []
        with Every50ms(srv.grpc_target, {m: 1 for m in MODELS}) as traffic:
            for name, cmd in SWAPS.items():
                before = traffic.counts()
                sh(cmd, root)
                # at least three filesystem polls (1 s) after the swap: 60 answers at 50 ms
                wait_for(lambda: traffic.requests >= before[0] + 60, timeout=60, what=f"traffic after {name}")
                after = traffic.counts()
                table.append((name, *(a - b for a, b in zip(after, before))))
        print("\nscenario | requests | failures | wrong-version answers")
        for row in table:
            print(" | ".join(map(str, row)))
        assert traffic.errors == [], traffic.errors[:5]
        assert all(row[2] == 0 and row[3] == 0 for row in table), table
        assert {m: [id(r.servable) for r in registry.model(m).status()] for m in MODELS} == servables
        assert "unloaded" not in srv.log_text()
        assert srv.log_text().count("AVAILABLE (loaded in") == len(MODELS)  # each version loaded once
    finally:
        srv.stop()


def test_healthcheck_reads_what_the_server_was_started_with(zoo, tmp_path):
    """docker/healthcheck.sh takes the model and the REST port from the server's command line, last flag
    wins (the official image's entrypoint passes --model_name=${MODEL_NAME} before the user's arguments),
    not from MODEL_NAME alone: a server started with --model_name=X arguments becomes healthy."""
    from tests.server_util import REPO, ServerProcess

    base, _ = zoo
    srv = ServerProcess(["--model_name=model", f"--model_base_path={base / 'mlp'}", "--model_name=mlp"])
    srv.wait_ready()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MODEL_NAME", "REST_PORT", "TFS_CONFIG")}

        def check(**extra) -> int:
            return subprocess.run(["bash", str(REPO / "docker" / "healthcheck.sh")], timeout=30,
                                  env={**env, "HEALTHCHECK_PID": str(srv.proc.pid), **extra}).returncode

        assert check() == 0
        assert check(MODEL_NAME="model") == 0  # the command line wins over the environment
        ghost = tmp_path / "ghost.config"
        ghost.write_text('model_config_list {\n  # name: "mlp" (a comment, not a model)\n'
                         '  config { name: "ghost" base_path: "/models/ghost" model_platform: "tensorflow" }\n}\n')
        assert check(TFS_CONFIG=str(ghost)) == 1  # a model the server does not have: unhealthy
        ghost.write_text(ghost.read_text().replace('name: "ghost"', 'name: "mlp"'))
        assert check(TFS_CONFIG=str(ghost)) == 0
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------- labels: one source

def test_a_label_change_survives_re_renders_and_keeps_the_template_as_it_was(zoo, tmp_path):
    """`label promote` on the rendered config (`make serve`'s run/models.config) edits its template too, only
    in the model's entry: a re-render (`make render-config`, `make serve`) no longer undoes it."""
    import difflib
    import time

    from tests.conftest import REPO
    from tests.inprocess import run_main

    base, _ = zoo
    template = tmp_path / "config" / "models.config"
    template.parent.mkdir()
    template.write_text((REPO / "config" / "models.config").read_text())
    rendered = tmp_path / "run" / "models.config"

    def render():
        r = run_main("tfsb.export.serve_config", ["--models", str(base), "--template", str(template), "--out",
                                             str(rendered)])
        assert r.returncode == 0, r.stderr

    render()
    before = template.read_text()
    srv = InProcessServer([f"--model_config_file={rendered}", "--model_config_file_poll_wait_seconds=1",
                           "--allow_version_labels_for_unavailable_models", "--prefer_tflite_model=true"], rest=False)
    srv.wait_ready()
    try:
        from tfsb.client import GrpcClient

        with GrpcClient(srv.grpc_target, retries=0) as c:
            wait_for(lambda: {s["version"] for s in c.status("mlp") if s["state"] == "AVAILABLE"} == {1, 2},
                     what="both mlp versions loaded")  # start-up waits for the first one only
            assert c.metadata("mlp", label="stable")["version"] == 1
            r = run_main("tfsb.client", ["--grpc-target", srv.grpc_target, "label", "promote", "mlp", "canary", "stable",
                                     "--config", str(rendered)])
            assert r.returncode == 0, r.stdout + r.stderr
            assert c.metadata("mlp", label="stable")["version"] == 2
            changed = [ln for ln in difflib.unified_diff(before.splitlines(), template.read_text().splitlines(),
                                                         lineterm="", n=0) if ln[:1] in "+-"]
            assert changed == ["--- ", "+++ ", '-    version_labels { key: "stable" value: 1 }',
                               '+    version_labels { key: "stable" value: 2 }'], changed
            render()  # make render-config / make stop; make serve
            assert 'version_labels { key: "stable" value: 2 }' in rendered.read_text()
            deadline = time.monotonic() + 3  # three config polls of the server: stable stays on 2
            while time.monotonic() < deadline:
                assert c.metadata("mlp", label="stable")["version"] == 2
    finally:
        srv.stop()


def test_the_label_tool_refuses_a_generated_config_whose_labels_would_be_lost(tmp_path):
    from tfsb.client.base import ServingClientError
    from tfsb.client.rollout import config_files
    from tfsb.wire.config_text import GENERATED_FROM, RENDERED_FROM

    cfg = tmp_path / "models.config"
    cfg.write_text(GENERATED_FROM.format(base=tmp_path) + "model_config_list {}\n")
    with pytest.raises(ServingClientError, match="serve a config of your own"):
        config_files(cfg)
    cfg.write_text(RENDERED_FROM.format(source=tmp_path / "gone.config") + "model_config_list {}\n")
    with pytest.raises(ServingClientError, match="which is gone"):
        config_files(cfg)
    (tmp_path / "gone.config").write_text("model_config_list {}\n")
    assert config_files(cfg) == [cfg, tmp_path / "gone.config"]
