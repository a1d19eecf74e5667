"""The layout the code keeps: small modules, dependencies pointing one way (transports → core → registry,
runtime → config, wire), the wire package a leaf that server and clients share."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

MAX_LINES = 520
PACKAGES = ("serving", "clients", "export")


def _modules():
    for pkg in PACKAGES:
        yield from sorted((REPO / pkg).rglob("*.py"))


def _project_imports(path: Path) -> set[str]:
    """Project modules a file imports (at any level: lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in PACKAGES)
    return out


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_over_the_size_limit(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(REPO)} has {n} lines: split it by job"


def test_the_wire_package_is_a_leaf():
    for path in sorted((REPO / "serving" / "wire").glob("*.py")):
        bad = {m for m in _project_imports(path)
               if not (m.startswith("serving.wire") or m.startswith("serving.errors") or m == "serving")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_server_imports_neither_clients_nor_export():
    for path in sorted((REPO / "serving").rglob("*.py")):
        bad = {m for m in _project_imports(path) if m.split(".")[0] in ("clients", "export")}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_clients_use_only_the_servers_wire_modules():
    """The clients share codecs, the status table and Spec with the server, never its state (the package
    root's stateless names, the version and the usage-line helper, are shared too)."""
    for path in sorted((REPO / "clients").glob("*.py")):
        bad = {m for m in _project_imports(path)
               if m.startswith("serving") and not (m.startswith("serving.wire") or m.startswith("serving.errors")
                                                   or m in ("serving", "serving.program_name",
                                                            "serving.__version__"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_core_knows_no_transport_and_the_runtime_no_batching():
    assert not {m for m in _project_imports(REPO / "serving" / "core.py")
                if m.startswith(("serving.rest", "serving.grpc_api", "serving.server"))}
    for runtime in ("runtime.py", "tflite.py"):
        text = (REPO / "serving" / runtime).read_text()
        assert "batch" not in text.lower(), f"{runtime} mentions batching: the loader wraps servables instead"


def test_every_flag_marked_supported_is_read_outside_the_flag_table():
    """A flag that claims support must change something: the server reads it somewhere (a flag nothing reads
    is marked unsupported, so setting it logs that it has no effect)."""
    import re

    from serving.flags import FLAGS

    sources = [p.read_text() for p in (REPO / "serving").rglob("*.py") if p.name != "flags.py"]
    unread = [f.name for f in FLAGS if f.supported is True
              and not any(re.search(rf"\.{f.name}\b", text) for text in sources)]
    assert unread == []
