"""Shared fixtures: the demo zoo exported once per test session into a temporary base path."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Train every demo model (seed 1) and publish version 1 under a session-wide base path."""
    from export.publish import publish
    from export.zoo import ZOO

    base = tmp_path_factory.mktemp("zoo")
    trained = {}
    for name, build in ZOO.items():
        trained[name] = build(1)
        publish(trained[name], base, version=1)
    # mlp gets a second version with other weights, so labels (stable=1, canary=2) point at different models
    trained["mlp@2"] = ZOO["mlp"](2)
    publish(trained["mlp@2"], base, version=2)
    return base, trained


def render_models_config(base) -> str:
    """serving/models.config with /models/ replaced by `base`, exactly what `make serve` does."""
    text = (REPO / "serving" / "models.config").read_text()
    return text.replace('base_path: "/models/', f'base_path: "{base}/')


@pytest.fixture(scope="session")
def demo_server(zoo, tmp_path_factory):
    """The demo zoo served from the checked-in models.config, like `make serve`; or TFS_GRPC/TFS_REST."""
    from tests.server_util import ServerProcess, external_target

    ext = external_target()
    if ext:
        yield type("External", (), {"grpc_target": ext[0], "rest_url": ext[1], "external": True})()
        return
    base, _ = zoo
    cfg = tmp_path_factory.mktemp("cfg") / "models.config"
    cfg.write_text(render_models_config(base))
    srv = ServerProcess([f"--model_config_file={cfg}", "--allow_version_labels_for_unavailable_models",
                         "--file_system_poll_wait_seconds=1", "--enable_grpc_healthcheck_service"])
    srv.external = False
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()

