"""Packaging: one namespaced import package, console scripts that work from anywhere, a client that never
imports TensorFlow, and one source of dependencies with locks compiled from it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, pip_install_target

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Refuse TensorFlow (and tensorflow-serving-api, which imports it) in the child: any import is a failure, not
# only a slow start. The client must work in an environment where they are not installed at all.
_NO_TF = ("import sys\n"
          "class _NoTF:\n"
          "    def find_spec(self, name, path=None, target=None):\n"
          "        if name.split('.')[0] in ('tensorflow', 'tensorflow_serving', 'keras', 'tf_keras'):\n"
          "            raise ImportError(f'{name} must not be imported by the client')\n"
          "sys.meta_path.insert(0, _NoTF())\n")


def _client(env: dict, cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    code = _NO_TF + "from tfsb.client.__main__ import main\nsys.argv[0] = 'tfsb-client'\nsys.exit(main())\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project as `pip install .` puts it (no deps: those of this venv), run from outside the checkout."""
    target = tmp_path_factory.mktemp("site")
    env = pip_install_target(str(REPO), target)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    return target, env, elsewhere


def test_pip_install_adds_exactly_one_top_level_import_package(installed):
    target, env, elsewhere = installed
    top = {p.name for p in target.iterdir()
           if p.name not in ("bin", "__pycache__") and not p.name.endswith((".dist-info", ".egg-info"))}
    assert top == {"tfsb"}, f"pip install . added {sorted(top)}"
    assert (target / "tfsb" / "server" / "dashboard" / "index.html").is_file()  # package data travels
    assert (target / "tfsb" / "protos" / "_descriptors.py").is_file()
    for script in ("tfsb-serve", "tfsb-client", "tfsb-export", "tfsb-byom"):
        assert (target / "bin" / script).is_file(), script
    imp = subprocess.run([sys.executable, "-c", "import tfsb.server.config, tfsb.client, tfsb.export.byom as b; "
                          "print(tfsb.client.__file__); print(b.__file__)"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr[-2000:]
    assert all(line.startswith(str(target)) for line in imp.stdout.split())
    for old in ("serving", "clients", "export"):
        r = subprocess.run([sys.executable, "-c", f"import {old}"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0, f"`import {old}` still works: a generic top-level name is installed"


def test_console_scripts_name_themselves(installed):
    target, env, elsewhere = installed
    for script, word in (("tfsb-client", "label"), ("tfsb-byom", "publish"), ("tfsb-export", "--model")):
        out = subprocess.run([str(target / "bin" / script), "--help"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and word in out.stdout, out.stderr[-2000:]
        assert out.stdout.startswith(f"usage: {script} "), out.stdout[:200]
    ver = subprocess.run([str(target / "bin" / "tfsb-serve"), "--version"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ver.returncode == 0 and "TensorFlow ModelServer" in ver.stdout, ver.stderr[-2000:]


def test_client_help_is_fast_and_imports_no_tensorflow(installed):
    target, env, elsewhere = installed
    t0 = time.perf_counter()
    out = subprocess.run([str(target / "bin" / "tfsb-client"), "--help"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    print(f"\ntfsb-client --help: {took * 1000:.0f} ms")
    # every module the client package has, imported under -X importtime: none of TensorFlow's
    mods = sorted(f"tfsb.client.{p.stem}" for p in (REPO / "tfsb" / "client").glob("*.py") if p.stem != "__init__")
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", _NO_TF + "import " + ", ".join(mods)],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert imp.returncode == 0, imp.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in imp.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras")}
    assert "tfsb.client.rollout" in imported


def test_every_client_command_works_without_tensorflow(demo_server, installed):
    """predict, classify, regress, metadata, status over both transports, with TensorFlow refused at import:
    the same answers the tests elsewhere check, no TensorFlow log lines."""
    _, env, elsewhere = installed
    g = ["--grpc-target", demo_server.grpc_target, "--rest-url", demo_server.rest_url, "--json"]
    for transport in ("--grpc", "--rest"):
        t0 = time.perf_counter()
        r = _client(env, elsewhere, *g, transport, "predict", "linear", "--input", '{"x": [[1.0], [2.0]]}')
        took = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr[-2000:]
        print(f"\ntfsb-client {transport} predict: {took * 1000:.0f} ms wall")
        y = np.asarray(json.loads(r.stdout)["y"])
        assert y.shape == (2, 1)
        assert not re.search(r"cuda|absl::InitializeLog|oneDNN|cpu_feature_guard", r.stderr), r.stderr
        rows = json.dumps([{"age": 40.0, "education": "Masters", "hours_per_week": 45}])
        for cmd in ("classify", "regress"):
            rr = _client(env, elsewhere, *g, transport, cmd, "census", "--signature", cmd, "--examples", rows)
            assert rr.returncode == 0, rr.stderr[-2000:]
        meta = _client(env, elsewhere, *g, transport, "metadata", "census")
        assert meta.returncode == 0 and "hours_per_week" in meta.stdout, meta.stderr[-2000:]
        st = _client(env, elsewhere, *g, transport, "status", "mlp")
        assert st.returncode == 0 and "AVAILABLE" in st.stdout, st.stderr[-2000:]
        missing = _client(env, elsewhere, *g, transport, "status", "nope")
        assert missing.returncode == 1 and json.loads(missing.stdout)["code"] == "NOT_FOUND", missing.stdout


def test_the_client_library_accepts_tensorflow_serving_api_messages(demo_server):
    """Callers that build requests with tensorflow-serving-api's classes (another descriptor pool) still
    work: the client re-reads them as its own."""
    from tensorflow_serving.apis import input_pb2

    from tfsb.client import GrpcClient, make_input

    c = GrpcClient(demo_server.grpc_target)
    ours = make_input([{"age": 40.0, "education": "Masters", "hours_per_week": 45}])
    theirs = input_pb2.Input.FromString(ours.SerializeToString())
    assert c.classify("census", theirs, signature="classify") == c.classify("census", ours, signature="classify")
    with pytest.raises(TypeError, match="expected a tensorflow.serving.ModelServerConfig"):
        c.reload_config(input_pb2.Input())


def test_generated_protobuf_code_is_current(tmp_path):
    """`make protos` output is committed: the descriptors from the installed TF Serving packages and the
    `_pb2.py` modules grpcio-tools compiles from the project's own `.proto` files."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the dev extra (make setup installs it)")
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from generate_protos import OUT, compile_protos, render
    finally:
        sys.path.remove(str(REPO / "tools"))
    assert OUT.read_text() == render(), "tfsb/protos/_descriptors.py is stale: run `make protos`"
    fresh = compile_protos(tmp_path)
    assert fresh, "no .proto files compiled"
    for path in fresh:
        committed = REPO / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed.relative_to(REPO)} is stale: run `make protos`"


def test_config_messages_come_from_compiled_protos_not_hand_declared_descriptors():
    """The config schemas are `.proto` files compiled by protoc (and tensorflow-serving-api's own classes where
    it ships them), not descriptors assembled field by field in Python."""
    from tensorflow_serving.config import platform_config_pb2

    from tfsb.server import config
    from tfsb.server.proto import serving_config_pb2

    for name in ("BatchingParameters", "MonitoringConfig", "SSLConfig"):
        cls = getattr(config, name)
        assert cls.DESCRIPTOR.file.name == "tfsb/server/proto/serving_config.proto", name
        assert cls is getattr(serving_config_pb2, name)
    assert config.BatchingParameters.DESCRIPTOR.fields_by_name["max_execution_batch_size"].number == 9
    hand_declared = [p.relative_to(REPO) for p in (REPO / "tfsb").rglob("*.py")
                     if not p.name.endswith("_pb2.py") and "FieldDescriptorProto" in p.read_text()]
    assert hand_declared == [], f"messages declared field by field in {hand_declared}"
    from tfsb.server.profiler import _messages

    assert _messages()["ProfileRequest"].DESCRIPTOR.file.name == "tfsb/server/proto/profiler_service.proto"
    assert "platform_config_pb2" in (REPO / "tfsb" / "server" / "config.py").read_text()
    assert platform_config_pb2.PlatformConfigMap.DESCRIPTOR.full_name == "tensorflow.serving.PlatformConfigMap"


def test_make_setup_installs_the_project_editable(tmp_path):
    """`make setup` installs the checkout (editable) into .venv: the console scripts exist and import the
    checkout's code from any directory."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a virtual environment (make setup creates .venv)")
    script = Path(sys.executable).parent / "tfsb-client"
    assert script.is_file(), "make setup did not install the project into the virtual environment"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.startswith("usage: tfsb-client "), r.stderr[-2000:]
    imp = subprocess.run([sys.executable, "-c", "import tfsb.client; print(tfsb.client.__file__)"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    assert imp.stdout.strip() == str(REPO / "tfsb" / "client" / "__init__.py")


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _third_party_imports(paths) -> set[str]:
    from tests.test_structure import imports_of

    own = set(sys.stdlib_module_names) | {"tfsb", "tests", "benchmarks", "__future__"}
    return {n.split(".")[0] for path in paths for n in imports_of(path)} - own


@pytest.mark.parametrize("part, extras", [
    (("client", "wire", "protos"), ()),
    (("server", "export"), ("server",)),
])
def test_every_import_is_declared_in_pyproject(part, extras):
    """pyproject.toml is the one list: each distribution the code imports is a dependency of the part it
    ships in (the client's must be base dependencies, so `pip install tf-serving-bundle` runs it)."""
    from importlib.metadata import packages_distributions

    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        declared |= _requirement_names(PYPROJECT["project"]["optional-dependencies"][extra])
    dists = packages_distributions()
    paths = [p for name in part for p in (REPO / "tfsb" / name).rglob("*.py")] + [REPO / "tfsb" / "errors.py",
                                                                                  REPO / "tfsb" / "__init__.py"]
    lazy_optional = {"docker"}  # the label tool's --docker-service: imported on use, with a message saying so
    missing = {}
    for mod in _third_party_imports(paths) - lazy_optional:
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        # tensorflow-cpu provides the same module as tensorflow
        if not names & declared and not ({"tensorflow", "tensorflow-cpu"} & names and "tensorflow" in declared):
            missing[mod] = sorted(names)
    assert not missing, f"imported but not declared for {part}: {missing}"


def test_tests_and_benchmarks_need_nothing_undeclared():
    from importlib.metadata import packages_distributions

    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    for reqs in PYPROJECT["project"]["optional-dependencies"].values():
        declared |= _requirement_names(reqs)
    locked = {line.split("==")[0] for line in (REPO / "requirements" / "dev.lock").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    dists = packages_distributions()
    paths = list((REPO / "tests").rglob("*.py")) + list((REPO / "benchmarks").rglob("*.py"))
    local = {p.stem for d in ("tests", "benchmarks", "tools") for p in (REPO / d).rglob("*.py")}
    for mod in _third_party_imports(paths) - local:
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        assert names & locked, f"{mod} is imported by tests or benchmarks but not in requirements/dev.lock"
    assert declared <= locked, f"declared but not locked: {sorted(declared - locked)}"


def test_runtime_lock_is_the_server_without_test_or_bench_packages():
    pins = {line.split("==")[0]: line.split("==")[1].strip()
            for line in (REPO / "requirements" / "runtime.lock").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    dev = {line.split("==")[0]: line.split("==")[1].strip()
           for line in (REPO / "requirements" / "dev.lock").read_text().splitlines()
           if "==" in line and not line.startswith("#")}
    extras = PYPROJECT["project"]["optional-dependencies"]
    text = (REPO / "requirements" / "runtime.lock").read_text()
    # a test package may be locked only where a runtime package needs it (uvicorn[standard] -> pyyaml)
    needed, current = set(), None
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            current = line.split("==")[0]
        elif current and line.startswith("    #"):
            who = line.strip("# ").removeprefix("via").strip()
            if who and not who.startswith(("tf-serving-bundle", "-r ", "-c ")):
                needed.add(current)
    leaked = (_requirement_names(extras["test"]) | _requirement_names(extras["bench"])) & set(pins) - needed
    assert not leaked, f"test/bench packages in the runtime lock: {sorted(leaked)}"
    assert "tensorflow" not in pins and pins["tensorflow-cpu"].startswith("2.21.")
    assert _requirement_names(extras["server"]) - {"tensorflow"} <= set(pins)
    assert {k: v for k, v in pins.items() if k in dev and dev[k] != v} == {}, "the two locks disagree"
    for lock in ("runtime.lock", "dev.lock"):
        assert "#    make lock" in (REPO / "requirements" / lock).read_text().splitlines()[1], lock


def test_make_lock_reproduces_the_committed_locks(tmp_path):
    """`make lock` into a copy of the committed locks changes nothing: they are current with pyproject.toml
    and the compile is reproducible."""
    if not (Path(sys.executable).parent / "uv").is_file():
        pytest.skip("uv is not installed in this environment (make setup installs it from the dev lock)")
    for lock in ("dev.lock", "runtime.lock"):
        (tmp_path / lock).write_text((REPO / "requirements" / lock).read_text())
    r = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "lock", f"LOCK_DIR={tmp_path}"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for lock in ("dev.lock", "runtime.lock"):
        got = (tmp_path / lock).read_text().replace(str(tmp_path), "requirements")  # the `-c` annotation
        assert got == (REPO / "requirements" / lock).read_text(), \
            f"requirements/{lock} is not what `make lock` compiles from pyproject.toml: run `make lock`"
