"""Fixtures of the container tier: the running compose stack (see stack.py) and the docker SDK client."""

from __future__ import annotations

import os

import pytest


def _docker():
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001 - any failure means: no engine here
        pytest.skip(f"no Docker engine reachable ({type(e).__name__}: {e}); `make test-docker` starts one")


@pytest.fixture(scope="session")
def docker_client():
    return _docker()


@pytest.fixture(scope="session")
def stack(docker_client):
    """The compose service the integration suite is pointed at (TFS_* from run/container.env)."""
    if not os.environ.get("TFS_CONTAINER"):
        pytest.skip("no compose stack: run `make test-docker` (it brings one up)")
    container = docker_client.containers.get(os.environ["TFS_CONTAINER"])
    return type("Stack", (), {"container": container, "grpc_target": os.environ["TFS_GRPC"],
                              "rest_url": os.environ["TFS_REST"], "models": os.environ["TFS_MODEL_BASE"],
                              "config_dir": os.environ["TFS_CONFIG_DIR"], "image": os.environ["TFS_IMAGE"]})()
