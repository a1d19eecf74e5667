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
    return base, trained
