"""A gated rollout across three replicas of the embedded server (compose --scale): `tfsb-client rollout
--docker-service` shadows, splits and promotes on every replica at once, under traffic from plain gRPC clients
naming the baseline label and the split label, with no failed request."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.container.clients import LabelClients
from tests.server_util import wait_for

pytestmark = pytest.mark.container
REPLICAS = 3
PROJECT = "tfsb-canary"


def test_a_gated_rollout_reaches_every_replica(stack, tmp_path):
    if stack.image.startswith("tensorflow/serving"):
        pytest.skip("the stack runs the official image: traffic control (--traffic_config_file) is the embedded "
                    "server's")
    from tfsb.client import GrpcClient
    from tfsb.client.rollout import docker_replicas
    from tests.container.stack import REPO, compose
    from tests.inprocess import run_main

    cfg = tmp_path / "config"
    cfg.mkdir()
    for name in ("models.config", "batching.config", "monitoring.config"):
        shutil.copy(REPO / "config" / name, cfg / name)
    base = {"models": {"mlp": {"split": {"label": "rollout", "weights": {"stable": 100}}}}}
    (cfg / "traffic.json").write_text(json.dumps(base))
    os.chmod(cfg, 0o755)
    os.chmod(cfg / "traffic.json", 0o644)
    env = {"TFSB_IMAGE": stack.image, "MODELS_DIR": stack.models, "CONFIG_DIR": str(cfg)}
    try:
        r = compose("--profile", "canary", "up", "-d", "--wait", "--wait-timeout", "240", "--scale",
                    f"tfsb-canary={REPLICAS}", "tfsb-canary", env=env, project=PROJECT, check=False)
        assert r.returncode == 0, r.stdout
        targets = docker_replicas(f"{PROJECT}/tfsb-canary")
        assert len(targets) == REPLICAS
        for t in targets:
            with GrpcClient(t, retries=0) as c:
                wait_for(lambda: {s["version"] for s in c.status("mlp") if s["state"] == "AVAILABLE"} == {1, 2},
                         timeout=120, what=f"both mlp versions on {t}")
        evidence = tmp_path / "evidence.json"
        with LabelClients(targets, ("stable", "rollout")) as clients:
            wait_for(lambda: min(len(v) for v in clients.versions.values()) >= 10, timeout=60, what="traffic")
            # mlp v2 is a retrained model: its answers differ from v1's by design, so the output gate is opened
            r = run_main("tfsb.client", ["--grpc-target", targets[0], "--rest-url", f"http://{targets[0].split(':')[0]}:8501",
                                         "rollout", "mlp", "--to", "2", "--config", str(cfg / "models.config"),
                                         "--traffic-file", str(cfg / "traffic.json"),
                                         "--docker-service", f"{PROJECT}/tfsb-canary", "--shadow-fraction", "0.5",
                                         "--steps", "50,100", "--hold", "30", "--hold-requests", "30",
                                         "--max-abs-diff", "1e9", "--max-p99-ratio", "10",
                                         "--evidence", str(evidence)])
            assert r.returncode == 0, r.stdout + r.stderr
            marks = {k: len(v) for k, v in clients.versions.items()}
            wait_for(lambda: min(len(v) - marks[k] for k, v in clients.versions.items()) >= 5, timeout=60,
                     what="answers after the promotion")
        ev = json.loads(evidence.read_text())
        print(f"\n{REPLICAS} replicas, rollout under traffic: {sum(map(len, clients.versions.values()))} requests, "
              f"{len(clients.failures)} failures; steps: "
              + ", ".join(f"{s['step']} {'passed' if s['passed'] else 'FAILED'}" for s in ev["steps"]))
        assert clients.failures == [], clients.failures[:5]
        assert ev["result"] == "promoted" and [s["step"] for s in ev["steps"]] == ["shadow", "50%", "100%"]
        # every replica took part: the step's evidence is the sum of three servers' readings
        assert ev["steps"][-1]["evidence"]["live"]["2"]["requests"] >= 30
        for t in targets:  # during the 100 % step and after the promotion, every replica answers v2
            assert 2 in clients.versions[(t, "rollout")]
            assert set(clients.versions[(t, "stable")][marks[(t, "stable")]:]) == {2}
            with GrpcClient(t, retries=0) as c:
                assert c.metadata("mlp", label="stable")["version"] == 2
        assert 'version_labels { key: "stable" value: 2 }' in (cfg / "models.config").read_text()
        assert json.loads((cfg / "traffic.json").read_text()) == base
    finally:
        print(compose("--profile", "canary", "logs", "--no-color", "--tail", "20", env=env, project=PROJECT,
                      check=False).stdout[-3000:])
        compose("--profile", "canary", "down", "-t", "10", env=env, project=PROJECT, check=False)
