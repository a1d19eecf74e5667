"""Several replicas (compose --scale): a label flip with the project's tool reaches every one of them under
traffic, with no failed request, and the tool reports success only once every replica answers the new label."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.container.clients import LabelClients
from tests.server_util import free_port, wait_for

pytestmark = pytest.mark.container
REPLICAS = 3
PROJECT = "tfsb-replicas"


def test_a_label_flip_reaches_every_replica_under_traffic(stack, tmp_path):
    from tfsb.client import GrpcClient
    from tfsb.client.rollout import docker_replicas
    from tests.container.stack import REPO, compose
    from tests.inprocess import run_main

    cfg = tmp_path / "config"
    cfg.mkdir()
    for name in ("models.config", "batching.config", "monitoring.config"):
        shutil.copy(REPO / "config" / name, cfg / name)
    os.chmod(cfg, 0o755)
    env = {"TFS_IMAGE": stack.image, "MODELS_DIR": stack.models, "CONFIG_DIR": str(cfg),
           "GRPC_PORT": str(free_port()), "REST_PORT": str(free_port())}
    try:
        r = compose("--profile", "replicas", "up", "-d", "--wait", "--wait-timeout", "240", "--scale",
                    f"tfserving-replica={REPLICAS}", "tfserving-replica", env=env, project=PROJECT, check=False)
        assert r.returncode == 0, r.stdout
        targets = docker_replicas(f"{PROJECT}/tfserving-replica")
        assert len(targets) == REPLICAS
        for t in targets:  # healthy = one version of each model; both labels' versions are needed here
            with GrpcClient(t, retries=0) as c:
                wait_for(lambda: {s["version"] for s in c.status("mlp") if s["state"] == "AVAILABLE"} == {1, 2},
                         timeout=120, what=f"both mlp versions on {t}")
        with LabelClients(targets, ("stable",), pause_s=0.02) as traffic:
            while min(len(v) for v in traffic.versions.values()) < 20:
                time.sleep(0.05)
            assert {v for vs in traffic.versions.values() for v in vs} == {1}
            t0 = time.monotonic()
            r = run_main("tfsb.client", ["--grpc-target", targets[0], "label", "promote", "mlp", "canary", "stable",
                                     "--config", str(cfg / "models.config"),
                                     "--docker-service", f"{PROJECT}/tfserving-replica"])
            took = time.monotonic() - t0
            assert r.returncode == 0, r.stdout + r.stderr
            marks = {t: len(v) for t, v in traffic.versions.items()}
            while min(len(v) - marks[t] for t, v in traffic.versions.items()) < 20:
                time.sleep(0.05)
        after_flip = sum(len(vs) - marks[t] for t, vs in traffic.versions.items())
        wrong = sum(v != 2 for t, vs in traffic.versions.items() for v in vs[marks[t]:])
        print(f"\n{REPLICAS} replicas, label flip under traffic: {sum(map(len, traffic.versions.values()))} requests, "
              f"{len(traffic.failures)} failures, {wrong} wrong-version answers of {after_flip} after the tool "
              f"returned (tool took {took:.2f}s)")
        assert traffic.failures == [], traffic.failures[:5]
        assert took < 5, took  # within the replicas' config poll period (5 s)
        for t, vs in traffic.versions.items():  # after the tool returned, every replica answers the new version
            assert set(vs[marks[t]:]) == {2}, (t, vs[marks[t]:])
        for t in targets:
            with GrpcClient(t, retries=0) as c:
                assert c.metadata("mlp", label="stable")["version"] == 2
        assert 'version_labels { key: "stable" value: 2 }' in (cfg / "models.config").read_text()
    finally:
        print(compose("--profile", "replicas", "logs", "--no-color", "--tail", "20", env=env, project=PROJECT,
                      check=False).stdout[-3000:])
        compose("--profile", "replicas", "down", "-t", "10", env=env, project=PROJECT, check=False)
