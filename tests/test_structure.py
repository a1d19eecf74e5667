"""The layout the code keeps: small modules, dependencies pointing one way (transports → core → registry,
runtime → config, wire), the wire package a leaf that server and clients share."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

MAX_LINES = 520
PACKAGES = ("tfsb",)
SRC = REPO / "tfsb"


def _modules():
    yield from sorted(p for p in SRC.rglob("*.py") if p.name != "_descriptors.py")


def imports_of(path: Path) -> set[str]:
    """Every absolute import in a file (at any level: lazy imports count too), as `module` and `module.name`."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _project_imports(path: Path) -> set[str]:
    """Project modules a file imports."""
    return {n for n in imports_of(path) if n.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_over_the_size_limit(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(REPO)} has {n} lines: split it by job"


SHARED = ("tfsb.wire", "tfsb.protos", "tfsb.errors")


def _shared_or_root(m: str) -> bool:
    return m.startswith(SHARED) or m in ("tfsb", "tfsb.program_name", "tfsb.__version__")


def test_the_shared_packages_are_a_leaf():
    """wire, protos and errors import nothing of the server, the client or export."""
    for path in sorted(p for d in ("wire", "protos") for p in (SRC / d).glob("*.py")) + [SRC / "errors.py"]:
        bad = {m for m in _project_imports(path) if not _shared_or_root(m)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_server_imports_neither_the_client_nor_export():
    for path in sorted((SRC / "server").rglob("*.py")):
        bad = {m for m in _project_imports(path) if m.startswith(("tfsb.client", "tfsb.export"))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_client_uses_only_the_shared_packages():
    """The client shares codecs, message classes, the status table and Spec with the server, never its
    state, and nothing that imports TensorFlow."""
    for path in sorted((SRC / "client").glob("*.py")):
        bad = {m for m in _project_imports(path) if not (_shared_or_root(m) or m.startswith("tfsb.client"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_core_knows_no_transport_and_the_runtime_no_batching():
    assert not {m for m in _project_imports(SRC / "server" / "core.py")
                if m.startswith(("tfsb.server.rest", "tfsb.server.grpc_api", "tfsb.server.server"))}
    for runtime in ("runtime.py", "tflite.py"):
        text = (SRC / "server" / runtime).read_text()
        assert "batch" not in text.lower(), f"{runtime} mentions batching: the loader wraps servables instead"


def test_every_flag_marked_supported_is_read_outside_the_flag_table():
    """A flag that claims support must change something: the server reads it somewhere (a flag nothing reads
    is marked unsupported, so setting it logs that it has no effect)."""
    import re

    from tfsb.server.flags import FLAGS

    sources = [p.read_text() for p in (SRC / "server").rglob("*.py") if p.name != "flags.py"]
    unread = [f.name for f in FLAGS if f.supported is True
              and not any(re.search(rf"\.{f.name}\b", text) for text in sources)]
    assert unread == []


def test_metrics_are_one_object_built_at_start_up():
    """No metric lives in a module global and nothing reads the environment at import: `server.build` makes
    one `Metrics` and hands it to the parts that record and read."""
    tree = ast.parse((SRC / "server" / "metrics.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
            assert getattr(node.value.func, "id", "") not in ("Counter", "Gauge", "Histogram", "CollectorRegistry")
    assert "environ" not in (SRC / "server" / "metrics.py").read_text()
    for path in sorted((SRC / "server").rglob("*.py")):
        assert "from tfsb.server import metrics" not in path.read_text(), f"{path.name} uses module-level metrics"
    builds = [p.name for p in (SRC / "server").rglob("*.py") if "Metrics(" in p.read_text()]
    assert builds == ["server.py"], f"Metrics built outside server.build: {builds}"


def test_two_metrics_objects_share_nothing():
    from tfsb.server.metrics import Metrics

    a, b = Metrics(), Metrics()
    a.request("m", "Predict", "GRPC", "OK", 0.001)
    a.in_flight("REST").inc()

    def count(m):
        return sum(s.value for fam in m.collect() if fam.name == ":tensorflow:serving:request_count"
                   for s in fam.samples if s.name.endswith("_total"))

    assert count(a) == 1 and count(b) == 0
    a.forget_model("m")
    assert count(a) == 0


def test_every_test_has_exactly_one_tier_from_what_it_uses(request):
    from tests.conftest import TIERS

    def expected(item) -> str | None:
        name, uses = Path(str(item.fspath)).name, set(item.fixturenames)
        if name in ("test_codec.py", "test_structure.py"):
            return "unit"
        if name == "test_hostile.py":
            return "hostile"
        if "demo_server" in uses:
            return "process"
        if name == "test_rest_conformance.py" and "rest" in uses:  # an InProcessServer
            return "inprocess"
        return None

    checked = 0
    for item in request.session.items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        assert len(tiers) == 1, f"{item.nodeid}: {tiers}"
        want = expected(item)
        if want is not None:
            assert tiers[0] == want, f"{item.nodeid} is {tiers[0]}, expected {want}"
            checked += 1
    assert checked >= 1
    assert not [i.nodeid for i in request.session.items if i.get_closest_marker("integration")]


def test_transports_are_built_from_parts_not_from_the_server():
    """No transport receives the `Server` object or reads its fields: each is made from the core, the
    registry, the lifecycle and its own settings (`server.build_and_start` wires them)."""
    for name in ("rest.py", "rest_routes.py", "rest_protocol.py", "grpc_api.py", "grpc_transport.py",
                 "extensions.py", "catalog.py", "history.py"):
        text = (SRC / "server" / name).read_text()
        assert "tfsb.server.server" not in _project_imports(SRC / "server" / name), name
        import re

        reads = re.findall(r"(?<![\w.])(?:self\.)?server\.(?:options|core|registry|lifecycle|control)\b", text)
        assert not reads and "self.server" not in text, f"{name} reads {reads}"
    server = (SRC / "server" / "server.py").read_text()
    assert "transport.start()" in server and "on_drain(transport.drain)" in server
