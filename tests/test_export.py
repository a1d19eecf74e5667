"""Export pipeline: numbering, no overwrite, atomicity, validation, warmup records, zoo fidelity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfsb.export.publish import PublishError, clean_stale_tmp, existing_versions, publish, read_warmup, validate
from tfsb.export.zoo import ZOO, Endpoint, TrainedModel
from tests.conftest import REPO
from tests.inprocess import InProcessServer, run_main


def tiny(seed: int = 0) -> TrainedModel:
    """An untrained one-layer model: publishing mechanics do not need training."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2)(inp))

    def serve(x):
        return {"y": model(x, training=False)}

    return TrainedModel("tiny", model, {"serving_default": Endpoint(serve, (tf.TensorSpec([None, 3], tf.float32, "x"),))},
                        samples={"serving_default": {"x": np.ones((2, 3), np.float32)}})


def numeric_dirs(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.isdigit())


def test_versions_are_numbered_from_highest_plus_one(tmp_path):
    assert publish(tiny(), tmp_path).version == 1
    assert publish(tiny(1), tmp_path).version == 2
    (tmp_path / "tiny" / "7").mkdir()  # a gap: next is highest + 1
    assert publish(tiny(2), tmp_path).version == 8
    assert existing_versions(tmp_path / "tiny") == [1, 2, 7, 8]


def test_refuses_to_overwrite_existing_version(tmp_path):
    publish(tiny(), tmp_path, version=3)
    before = (tmp_path / "tiny" / "3" / "saved_model.pb").read_bytes()
    with pytest.raises(PublishError, match="already exists"):
        publish(tiny(5), tmp_path, version=3)
    assert (tmp_path / "tiny" / "3" / "saved_model.pb").read_bytes() == before
    assert [p.name for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".publishing")] == []


def test_failed_validation_leaves_no_numeric_directory(tmp_path):
    def failing(path, trained):
        raise PublishError("signature 'serving_default': forced failure")

    with pytest.raises(PublishError, match="forced failure"):
        publish(tiny(), tmp_path, validator=failing)
    assert not (tmp_path / "tiny").exists()  # not even the model directory the publish made for it


def test_validation_catches_a_signature_whose_output_differs(tmp_path):
    def tamper_then_validate(path, trained):
        layer = trained.model.layers[-1]
        layer.kernel.assign(layer.kernel + 1.0)  # in-memory model now differs from what was written
        validate(path, trained)

    with pytest.raises(PublishError, match=r"signature 'serving_default': output 'y' differs"):
        publish(tiny(), tmp_path, validator=tamper_then_validate)
    assert not (tmp_path / "tiny").exists()  # nothing published, not even the model directory


def test_validation_catches_wrong_method_name(tmp_path):
    t = tiny()
    ep = t.endpoints["serving_default"]
    t.endpoints["serving_default"] = Endpoint(ep.fn, ep.input_signature, "tensorflow/serving/predict")

    def expect_classify(path, trained):
        trained.endpoints["serving_default"] = Endpoint(ep.fn, ep.input_signature, "tensorflow/serving/classify")
        validate(path, trained)

    with pytest.raises(PublishError, match="method_name"):
        publish(t, tmp_path, validator=expect_classify)


_KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
from tfsb.export.publish import publish, validate
from tests.test_export import tiny
def slow(path, trained):
    validate(path, trained)
    Path(sys.argv[2]).write_text("validated")
    time.sleep(60)
publish(tiny(), sys.argv[1], validator=slow)
"""


def test_kill_mid_export_leaves_no_numeric_directory(tmp_path):
    marker = tmp_path / "marker"
    base = tmp_path / "base"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(base), str(marker)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "publisher exited early"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    model_dir = base / "tiny"
    assert numeric_dirs(model_dir) == []
    leftovers = [p for p in model_dir.iterdir() if p.name.startswith(".publishing-")]
    assert len(leftovers) == 1  # the killed publisher's hidden directory, invisible to TF Serving
    assert clean_stale_tmp(model_dir) == leftovers
    assert publish(tiny(), base).version == 1


def test_concurrent_reader_never_sees_a_partial_version(tmp_path):
    seen_partial: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()
    model_dir = tmp_path / "tiny"

    def reader():
        while not stop.is_set():
            if not model_dir.exists():
                continue
            for name in numeric_dirs(model_dir):
                d = model_dir / name
                complete = ((d / "saved_model.pb").is_file() and (d / "variables" / "variables.index").is_file()
                            and (d / "assets.extra" / "tf_serving_warmup_requests").is_file())
                if not complete:
                    seen_partial.append(name)
                seen.add(name)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(3):
            publish(tiny(i), tmp_path)
    finally:
        stop.set()
        t.join()
    assert seen_partial == []
    assert {"1", "2", "3"} <= seen | set(numeric_dirs(model_dir))


def test_warmup_file_holds_one_prediction_log_per_signature(zoo):
    base, trained = zoo
    for name in ZOO:
        tm = trained[name]
        records = read_warmup(base / name / "1")
        kinds = {}
        for rec in records:
            kind = rec.WhichOneof("log_type")
            req = getattr(rec, kind).request
            kinds[req.model_spec.signature_name] = kind
            assert req.model_spec.name == name
        expected = {sig: {"tensorflow/serving/classify": "classify_log",
                          "tensorflow/serving/regress": "regress_log"}.get(ep.method_name, "predict_log")
                    for sig, ep in tm.endpoints.items()}
        assert kinds == expected


def test_every_demo_signature_reloads_with_in_memory_predictions(zoo):
    base, trained = zoo
    assert set(ZOO) == {"linear", "mlp", "multi", "census", "mlp_lite"}
    for name in ZOO:
        tm = trained[name]
        if tm.tflite:
            continue  # test_tflite_zoo_model_is_only_a_tflite_file_with_both_signatures
        loaded = tf.saved_model.load(str(base / name / "1"))
        assert set(loaded.signatures.keys()) == set(tm.endpoints)
        for sig, ep in tm.endpoints.items():
            sample = tm.samples[sig]
            got = loaded.signatures[sig](**{k: tf.constant(v) for k, v in sample.items()})
            ref = ep.call(sample)
            assert set(got) == set(ref) and all(not k.startswith("output_") for k in got)
            for k in ref:
                g = got[k].numpy()
                if g.dtype == object:
                    assert (g == ref[k]).all()
                else:
                    np.testing.assert_allclose(g, ref[k], rtol=1e-5, atol=1e-6)


def test_linear_learns_the_seed_relation(zoo):
    _, trained = zoo
    y = trained["linear"].endpoints["serving_default"].call({"x": np.array([[1.0], [2.0]], np.float32)})["y"]
    np.testing.assert_allclose(y[:, 0], [3.0, 5.0], atol=0.3)


def test_census_classify_and_regress_agree(zoo):
    _, trained = zoo
    tm = trained["census"]
    ex = tm.samples["classify"]
    cls = tm.endpoints["classify"].call(ex)
    reg = tm.endpoints["regress"].call(ex)
    assert cls["classes"][0].tolist() == [b"<=50K", b">50K"]
    np.testing.assert_allclose(cls["scores"][:, 1], reg["outputs"], rtol=1e-6)
    np.testing.assert_allclose(cls["scores"].sum(axis=1), 1.0, rtol=1e-5)


def test_different_seeds_give_different_weights(zoo):
    _, trained = zoo  # seed 1, trained once for the session
    a = trained["linear"].endpoints["serving_default"].call({"x": np.array([[1.0]], np.float32)})["y"]
    b = ZOO["linear"](2).endpoints["serving_default"].call({"x": np.array([[1.0]], np.float32)})["y"]
    assert not np.array_equal(a, b)


def test_models_config_parses_and_names_only_exported_models():
    text = (REPO / "config" / "models.config").read_text()
    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    configs = cfg.model_config_list.config
    assert {c.name for c in configs} == set(ZOO)
    kinds = set()
    for c in configs:
        assert c.base_path == f"/models/{c.name}"
        assert c.model_platform == "tensorflow"
        kinds.add(c.model_version_policy.WhichOneof("policy_choice"))
    assert kinds == {"latest", "all", "specific"}
    labelled = [c for c in configs if c.version_labels]
    assert labelled and {"stable", "canary"} <= set(labelled[0].version_labels)


def test_export_warns_when_a_new_version_is_outside_a_specific_policy(tmp_path):
    from tfsb.export.__main__ import served_note

    cfg = tmp_path / "models.config"
    cfg.write_text('model_config_list { config { name: "mlp" base_path: "/models/mlp" model_platform: "tensorflow" '
                   'model_version_policy { specific { versions: 1 versions: 2 } } } '
                   'config { name: "linear" base_path: "/models/linear" model_platform: "tensorflow" } }')
    note = served_note("mlp", 3, str(cfg))
    assert note and "version 3 will not be served" in note and "[1, 2]" in note
    assert served_note("mlp", 2, str(cfg)) is None
    assert served_note("linear", 7, str(cfg)) is None  # latest policy serves it
    assert served_note("mlp", 3, str(tmp_path / "missing.config")) is None


def test_make_clean_keeps_published_models(tmp_path):
    import subprocess

    models = tmp_path / "models"
    (models / "mlp" / "1").mkdir(parents=True)
    r = subprocess.run(["make", "clean", f"MODELS={models}", f"RUN={tmp_path / 'run'}", "CLEAN_EXTRA="], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (models / "mlp" / "1").is_dir() and "make clean-models" in r.stdout
    r = subprocess.run(["make", "clean-models", f"MODELS={models}"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, input="no\n")
    assert r.returncode != 0 and (models / "mlp" / "1").is_dir()
    r = subprocess.run(["make", "clean-models", f"MODELS={models}", "CONFIRM=1"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not models.exists()


def test_publish_your_own_keras_export_and_serve_it(tmp_path):
    """Keras 3 `model.export` output → `python -m tfsb.export.byom publish` → served, same numbers as Keras."""
    from tfsb.client import GrpcClient, RestClient

    inp = keras.Input((3,), name="features")
    model = keras.Model(inp, keras.layers.Dense(2, name="dense")(inp))
    model.export(str(tmp_path / "export"), verbose=False)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    want = np.asarray(model.predict(x, verbose=0))

    def cli(*args):  # in-process; the entry point itself runs as a process for `inspect`
        return run_main("tfsb.export.byom", list(args), cwd=REPO)

    shown = subprocess.run([sys.executable, "-m", "tfsb.export.byom", "inspect", str(tmp_path / "export"), "--name",
                            "mine"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "localhost:8501/v1/models/mine:predict" in shown.stdout and "features" in shown.stdout
    cfg = tmp_path / "models.config"
    cfg.write_text('model_config_list { config { name: "other" base_path: "/models/other" '
                   'model_platform: "tensorflow" } }\n')
    dry = cli("publish", str(tmp_path / "export"), "--name", "mine", "--base-path", str(tmp_path / "models"),
              "--config", str(cfg), "--dry-run")
    assert dry.returncode == 0 and '+    name: "mine"' in dry.stdout and not (tmp_path / "models").exists()
    bad = cli("publish", str(tmp_path / "export"), "--name", "mine", "--base-path", str(tmp_path / "models"),
              "--sample", 'serving_default={"features": [[1.0, 2.0]]}')
    assert bad.returncode == 1 and "NOT published" in bad.stderr
    assert existing_versions(tmp_path / "models" / "mine") == []  # nothing half-published
    ok = cli("publish", str(tmp_path / "export"), "--name", "mine", "--base-path", str(tmp_path / "models"),
             "--sample", 'serving_default={"features": [[1.0, 2.0, 3.0]]}', "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "published mine version 1" in ok.stdout and 'name: "mine"' in cfg.read_text()
    assert len(read_warmup(tmp_path / "models" / "mine" / "1")) == 2  # serve and serving_default
    srv = InProcessServer(["--model_name=mine", f"--model_base_path={tmp_path / 'models' / 'mine'}"])
    try:
        srv.wait_ready()
        for c in (GrpcClient(srv.grpc_target), RestClient(srv.rest_url)):
            np.testing.assert_allclose(c.predict("mine", {"features": x})["output_0"], want, rtol=1e-5)
    finally:
        srv.stop()
    assert "replayed 2 warmup record(s)" in srv.log_text()


def test_publish_a_tf1_builder_export_with_classify_and_regress(tmp_path):
    """A TF1 SavedModelBuilder model: every signature runs on inputs generated from what it declares (the
    Example inputs from the graph's parse spec), or on given samples; warmup covers all three."""
    from tfsb.export.byom import publish_saved_model
    from tests.rest_models import build_half_plus_two

    src = tmp_path / "hpt"
    build_half_plus_two(src)
    generated = publish_saved_model(src, tmp_path / "generated", "hpt")
    examples = [r.classify_log.request.input.example_list.examples[0] for r in read_warmup(generated.path)
                if r.WhichOneof("log_type") == "classify_log"]
    assert list(examples[0].features.feature) == ["x"]  # the feature the graph parses, not a placeholder
    pub = publish_saved_model(src, tmp_path / "models", "hpt", samples={
        "regress_x_to_y": {"examples": [{"x": 1.0}]}, "classify_x_to_y": {"examples": [{"x": 2.0}]}})
    assert pub.version == 1
    kinds = sorted(r.WhichOneof("log_type") for r in read_warmup(pub.path))
    assert kinds == ["classify_log", "predict_log", "regress_log"]


def test_tflite_zoo_model_is_only_a_tflite_file_with_its_signature(zoo):
    """mlp_lite: the mlp (same seed) converted at export; the version holds model.tflite and the warmup file
    only, the LiteRT interpreter gives the in-memory model's numbers, and the signature is also in the metadata
    entry TF Serving's C++ reads, naming tensors of the first subgraph (so the official image serves it too)."""
    from ai_edge_litert.interpreter import Interpreter

    from tfsb.server.tflite import _metadata_signatures

    base, trained = zoo
    tm = trained["mlp_lite"]
    version = base / "mlp_lite" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["assets.extra", "model.tflite"]
    content = (version / "model.tflite").read_bytes()
    interpreter = Interpreter(model_content=content)
    assert set(interpreter.get_signature_list()) == {"serving_default"}
    x = np.random.default_rng(3).random((5, 10), dtype=np.float32)
    got = interpreter.get_signature_runner("serving_default")(x=x)["y"]
    np.testing.assert_allclose(got, tm.endpoints["serving_default"].call({"x": x})["y"], rtol=1e-4, atol=1e-5)
    # same seed as mlp version 1: the conversion of the same weights
    np.testing.assert_allclose(trained["mlp"].endpoints["serving_default"].call({"x": x})["y"],
                               tm.endpoints["serving_default"].call({"x": x})["y"], rtol=1e-6)
    assert len(read_warmup(version)) == 1
    meta = _metadata_signatures(content)
    primary = {d["name"] for d in interpreter.get_input_details()} | {d["name"] for d in interpreter.get_output_details()}
    assert set(meta) == {"serving_default"}
    sd = meta["serving_default"]
    assert set(sd.inputs) == {"x"} and set(sd.outputs) == {"y"}
    assert {t.name for t in [*sd.inputs.values(), *sd.outputs.values()]} <= primary


def test_tflite_metadata_is_written_only_when_tf_serving_could_resolve_it(tmp_path):
    """Two signatures convert to two subgraphs; TF Serving's C++ resolves metadata tensors in the first one
    only, so such a model keeps its signature table as the only source."""
    from tfsb.export.tflite import primary_subgraph_signatures, table_signature_defs
    from tests.tflite_models import half_plus_two

    content = half_plus_two("table")
    table = table_signature_defs(content)
    assert set(table) == {"serving_default", "times_two"}
    assert set(primary_subgraph_signatures(content, table)) == {"serving_default"}


def test_tflite_publish_refuses_a_conversion_that_changes_the_numbers(tmp_path, zoo):
    """The validator compares the converted model with the in-memory one: a model whose numbers changed after
    conversion (here: weights perturbed between export and validation) is not published."""
    import dataclasses

    _, trained = zoo
    tm = dataclasses.replace(trained["mlp_lite"])

    def tampered(path, t):
        w = t.model.get_layer("out").get_weights()
        t.model.get_layer("out").set_weights([w[0] + 1.0, w[1]])
        try:
            validate(path, t)
        finally:
            t.model.get_layer("out").set_weights(w)

    with pytest.raises(PublishError, match="differs from the in-memory model"):
        publish(tm, tmp_path, version=1, validator=tampered)
    assert not (tmp_path / "mlp_lite" / "1").exists()


# ------------------------------------------------------------------------------------------- reliability 3

_HOLD_LOCK = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_stale_publish_cleanup_decides_by_the_owner_lock_not_by_pid(tmp_path):
    """Two containers publishing into one volume: PIDs mean nothing across their namespaces. A killed
    publisher that was PID 1 there is cleaned up here; a live one whose PID does not exist here is kept."""
    from tfsb.server.dirlock import LOCK_FILE

    model_dir = tmp_path / "tiny"
    dead = model_dir / ".publishing-1-0a0a0a0a"  # PID 1 is alive here, but its owner died in its container
    live = model_dir / ".publishing-4194000-0b0b0b0b"  # no such PID here; its owner runs elsewhere
    for d in (dead, live):
        (d / "version").mkdir(parents=True)
        (d / LOCK_FILE).touch()
    legacy = model_dir / ".publishing-1-0c0c0c0c"  # no lock file at all: left by a publisher that took none
    (legacy / "version").mkdir(parents=True)
    owner = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(live / LOCK_FILE)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        assert sorted(clean_stale_tmp(model_dir)) == [dead, legacy]
        assert live.is_dir() and not dead.exists() and not legacy.exists()
        assert publish(tiny(), tmp_path).version == 1  # a publish beside the live one cleans nothing of it
        assert live.is_dir()
    finally:
        owner.kill()
        owner.wait()
    assert clean_stale_tmp(model_dir) == [live]  # its owner died: now it goes


@pytest.fixture
def full_disk(tmp_path):
    """A 16 KiB tmpfs: room for a directory tree, not for a SavedModel (needs root and mount)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); the fault-injection "
                    "tests cover the same paths")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _one_line_refusal(r, model: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    refusals = [ln for ln in lines if ln.startswith(f"NOT published: {model}: ")]
    assert len(refusals) == 1, r.stderr[-2000:]
    return refusals[0]


def test_disk_full_while_publishing_is_one_line_and_leaves_nothing(full_disk, tmp_path):
    src = tmp_path / "src"
    tiny().model.export(str(src), verbose=False)
    r = run_main("tfsb.export.byom", ["publish", str(src), "--name", "mine", "--base-path", str(full_disk)])
    assert "No space left on device" in _one_line_refusal(r, "mine")
    r = run_main("tfsb.export", ["--model", "linear", "--base-path", str(full_disk)])
    assert "No space left on device" in _one_line_refusal(r, "linear")
    assert list(full_disk.iterdir()) == []  # no hidden directory, no empty model directory


def test_os_errors_from_every_layer_are_one_line(tmp_path, monkeypatch):
    """TensorFlow's file system (ResourceExhaustedError), shutil's collected errors and plain OSErrors."""
    import errno
    import shutil

    import tfsb.export.byom
    import tfsb.export.publish

    src = tmp_path / "src"
    tiny().model.export(str(src), verbose=False)

    def tf_full(*a, **k):
        raise tf.errors.ResourceExhaustedError(None, None, "/models/x/assets.extra; No space left on device")

    def shutil_full(s, d, *a, **k):
        raise shutil.Error([(str(s), str(d), "[Errno 28] No space left on device")])

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", "/models/tiny")

    for module, attr, fake, reason in ((tfsb.export.byom, "write_warmup", tf_full, "No space left on device"),
                                       (tfsb.export.byom.shutil, "copytree", shutil_full, "No space left on device"),
                                       (tfsb.export.byom, "commit", read_only, "Read-only file system")):
        with monkeypatch.context() as m:
            m.setattr(module, attr, fake)
            r = run_main("tfsb.export.byom", ["publish", str(src), "--name", "mine", "--base-path", str(tmp_path / "b")])
        assert reason in _one_line_refusal(r, "mine")
        assert not (tmp_path / "b" / "mine").exists()


_NS_PUBLISHER = r"""
import os, sys, time
from pathlib import Path
from tfsb.export.publish import publish, validate
from tests.test_export import tiny
def wait_for_go(path, trained):
    validate(path, trained)
    Path(sys.argv[2]).write_text(str(os.getpid()))
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
print(publish(tiny(), sys.argv[1], validator=wait_for_go).version, flush=True)
"""


def test_publishers_in_other_pid_namespaces_are_judged_by_their_lock(tmp_path):
    """Two containers publishing into one volume, for real: each publisher runs as PID 1 of its own PID
    namespace (`unshare --pid`). A live one is left alone by a publish beside it and completes; a killed one's
    hidden directory is cleaned up by the next publish."""
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("unshare --pid is not permitted here (needs root or user namespaces)")
    base = tmp_path / "volume"

    def publisher(tag: str) -> tuple[subprocess.Popen, Path, Path]:
        marker, go = tmp_path / f"{tag}.validated", tmp_path / f"{tag}.go"
        proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-c", _NS_PUBLISHER,
                                 str(base), str(marker), str(go)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "publisher did not reach validation"
            time.sleep(0.05)
        assert marker.read_text() == "1"  # it is PID 1 in its namespace
        return proc, marker, go

    live, _, go = publisher("live")
    try:
        assert publish(tiny(1), base).version == 1  # beside the live one: nothing of it is touched
        go.touch()
        assert live.communicate(timeout=120)[0].strip() == "2" and live.returncode == 0
    finally:
        if live.poll() is None:
            live.kill()
    dead, _, _ = publisher("dead")
    init = [int(c) for t in os.listdir(f"/proc/{dead.pid}/task")
            for c in Path(f"/proc/{dead.pid}/task/{t}/children").read_text().split()]
    dead.kill()  # unshare dies, --kill-child kills the namespace's init, and everything in it dies
    dead.wait(30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in init):
        assert time.monotonic() < deadline, "the namespace's init did not die"
        time.sleep(0.05)
    hidden = [p for p in (base / "tiny").iterdir() if p.name.startswith(".publishing-")]
    assert len(hidden) == 1
    assert publish(tiny(2), base).version == 3
    assert [p for p in (base / "tiny").iterdir() if p.name.startswith(".publishing-")] == []
