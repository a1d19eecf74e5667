"""Shared fixtures: the demo zoo exported once per test session into a temporary base path."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def export_zoo(base) -> dict:
    """Train every demo model (seed 1) and publish version 1, plus mlp version 2 (seed 2), unless present.

    Training is seeded, so a second call retrains the same weights to compare against."""
    from pathlib import Path

    from tfsb.export.publish import publish
    from tfsb.export.zoo import ZOO

    base = Path(base)
    trained = {}
    for name, build in ZOO.items():
        trained[name] = build(1)
        if not (base / name / "1").exists():
            publish(trained[name], base, version=1)
    # mlp gets a second version with other weights, so labels (stable=1, canary=2) point at different models
    trained["mlp@2"] = ZOO["mlp"](2)
    if not (base / "mlp" / "2").exists():
        publish(trained["mlp@2"], base, version=2)
    return trained


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The exported demo zoo: (base path, trained models). TFS_MODEL_BASE points at the directory a
    container serves (`make test-docker`)."""
    base = Path(os.environ["TFS_MODEL_BASE"]) if os.environ.get("TFS_MODEL_BASE") else tmp_path_factory.mktemp("zoo")
    return base, export_zoo(base)


def pip_install_target(src, target) -> dict:
    """`pip install` a project directory into `target` (no deps, no network) and return an environment in which
    only that copy is importable and its console scripts come first on PATH: how a user outside the checkout
    would run it."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{Path(target) / 'bin'}:{env['PATH']}")
    return env


def render_models_config(base) -> str:
    """config/models.config with /models/ replaced by `base`, exactly what `make serve` does."""
    text = (REPO / "config" / "models.config").read_text()
    return text.replace('base_path: "/models/', f'base_path: "{base}/')


@pytest.fixture(scope="session")
def demo_server(zoo, tmp_path_factory):
    """The demo zoo served from the checked-in models.config, like `make serve`; or TFS_GRPC/TFS_REST."""
    from tests.server_util import external_target, serving

    ext = external_target()
    if ext:
        yield type("External", (), {"grpc_target": ext[0], "rest_url": ext[1], "external": True})()
        return
    base, _ = zoo
    cfg = tmp_path_factory.mktemp("cfg") / "models.config"
    cfg.write_text(render_models_config(base))
    with serving([f"--model_config_file={cfg}", "--allow_version_labels_for_unavailable_models",
                  "--file_system_poll_wait_seconds=1", "--enable_grpc_healthcheck_service",
                  "--prefer_tflite_model=true"]) as srv:
        srv.external = False
        _wait_aspired_versions(srv.grpc_target, cfg)
        yield srv


def _aspired(cfg: Path) -> set[tuple[str, int]]:
    """(model, version) pairs the config's version policies pick from what is on disk now."""
    from tensorflow_serving.config import model_server_config_pb2

    from tfsb.server.config import parse_text_file

    out = set()
    for m in parse_text_file(cfg, model_server_config_pb2.ModelServerConfig).model_config_list.config:
        on_disk = sorted((int(v.name) for v in Path(m.base_path).iterdir() if v.name.isdigit()), reverse=True)
        policy = m.model_version_policy.WhichOneof("policy_choice")
        if policy == "specific":
            picked = [v for v in on_disk if v in m.model_version_policy.specific.versions]
        elif policy == "all":
            picked = on_disk
        else:
            picked = on_disk[:max(1, m.model_version_policy.latest.num_versions)]
        out |= {(m.name, v) for v in picked}
    return out


def _wait_aspired_versions(target: str, cfg: Path, timeout: float = 60.0) -> None:
    """Until every version the config's policies pick is AVAILABLE. The server is ready once each model has
    one (TF Serving's rule); a version published moments before the server started is loaded a poll or two
    later (it settles first), and tests name mlp's version 2 from their first request."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from tests.server_util import wait_for

    wanted = _aspired(cfg)
    with grpc.insecure_channel(target) as ch:
        stub = model_service_pb2_grpc.ModelServiceStub(ch)

        def available() -> set[tuple[str, int]]:
            out = set()
            for name in {n for n, _ in wanted}:
                req = get_model_status_pb2.GetModelStatusRequest()
                req.model_spec.name = name
                try:
                    statuses = stub.GetModelStatus(req, timeout=5).model_version_status
                except grpc.RpcError:
                    continue
                out |= {(name, s.version) for s in statuses
                        if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE}
            return out

        wait_for(lambda: wanted <= available(), timeout, interval=0.2, what=f"versions {sorted(wanted)} AVAILABLE")


# ---------------------------------------------------------------------------------------------- tiers
# Each test gets exactly one tier marker, from what it (or any fixture it uses) does, so a marker cannot
# drift from the test: `container` (the compose stack), `hostile` (attacks on a live server), `process`
# (starts the server as a process: `ServerProcess`, `python -m tfsb.server`, `demo_server`), `inprocess`
# (the server or a CLI in this interpreter), `unit` (none of these). `make test-<tier>` runs one.
TIERS = ("unit", "inprocess", "process", "hostile", "container")
_PROCESS_CALLS = {"ServerProcess", "serving"}
_INPROCESS_CALLS = {"InProcessServer", "build_and_start", "run_main", "run_command", "run_python"}


def _uses(func) -> set[str]:
    """What a test or fixture function calls (names), plus "tfsb.server" when it runs `python -m tfsb.server`."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set()
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
        elif isinstance(node, ast.Constant) and node.value == "tfsb.server":
            out.add("tfsb.server")
    return out


def tier_of(item) -> str:
    path = Path(str(item.fspath))
    if "container" in path.parts:
        return "container"
    if path.name == "test_hostile.py":
        return "hostile"
    uses = _uses(getattr(item, "function", None))
    for name in item.fixturenames:
        for d in item._fixtureinfo.name2fixturedefs.get(name, ()):
            uses |= _uses(d.func)
    if "demo_server" in item.fixturenames or uses & (_PROCESS_CALLS | {"tfsb.server"}):
        return "process"
    if uses & _INPROCESS_CALLS:
        return "inprocess"
    return "unit"


def pytest_collection_modifyitems(config, items):
    """Tier markers on every test; against an external server (TFS_GRPC: the compose stack or a
    tensorflow/serving container) only the process-tier tests that talk to that server run (those that
    start a server process of their own would only repeat what `make test` already ran)."""
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(item)))
    if not os.environ.get("TFS_GRPC"):
        return
    keep, drop = [], []
    for item in items:
        talks_to_it = "demo_server" in item.fixturenames or item.get_closest_marker("container")
        (keep if talks_to_it else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
