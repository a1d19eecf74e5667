"""Publish a trained model as a numbered SavedModel version, atomically and only after it validates.

Why this shape: TF Serving polls `<base>/<model>/` and loads any int64-named child it finds. A version that
appears half-written, or that loads but answers differently from the model that was trained, goes straight
into production. So everything is written into a hidden, non-numeric directory in the same base path
(same filesystem → `rename` is atomic), reloaded fresh and checked, and only then renamed to `<version>`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, input_pb2, model_pb2, predict_pb2,
                                     prediction_log_pb2, regression_pb2)

from tfsb.export.zoo import CLASSIFY, REGRESS, Endpoint, TrainedModel
from tfsb.server.dirlock import OwnedDir, remove_if_abandoned

WARMUP_FILE = "tf_serving_warmup_requests"
_VERSION_RE = re.compile(r"^\s*[+-]?\d+$")  # what absl::SimpleAtoi accepts for int64 (TF Serving's rule)
_TMP_PREFIX = ".publishing-"


class PublishError(RuntimeError):
    """A publish that did not happen; the message says which check failed. No numeric directory exists."""


@dataclass(frozen=True)
class Published:
    name: str
    version: int
    path: Path


def version_number(name: str) -> int | None:
    """The version a directory name stands for, read the way TF Serving reads it (absl::SimpleAtoi)."""
    if not _VERSION_RE.match(name):
        return None
    try:
        return int(name)
    except ValueError:
        return None


def existing_versions(model_dir: Path) -> list[int]:
    """Version numbers present under a model's base path."""
    if not model_dir.is_dir():
        return []
    return sorted(v for v in map(version_number, os.listdir(model_dir)) if v is not None)


@contextmanager
def _publish_lock(model_dir: Path) -> Iterator[None]:
    """Serialise version choice + rename between concurrent publishers of the same model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / ".publish.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clean_stale_tmp(model_dir: Path) -> list[Path]:
    """Remove hidden directories left by publishers that died mid-export (their owner lock is free)."""
    removed = []
    if not model_dir.is_dir():
        return removed
    for child in model_dir.iterdir():
        if child.name.startswith(_TMP_PREFIX) and child.is_dir() and remove_if_abandoned(child):
            removed.append(child)
    return removed


def _os_reason(e: BaseException) -> str:
    """One line for an OS-level failure (disk full, permissions, a read-only volume), whichever layer raised
    it: an OSError, shutil's collected errors, or TensorFlow's file system (`ResourceExhaustedError`)."""
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        return str(e.args[0][0][-1])
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    if isinstance(e, tf.errors.OpError):
        return e.message.splitlines()[0]
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@contextmanager
def staging(base_path: str | os.PathLike, name: str) -> Iterator[Path]:
    """Where a new version of `name` is written before `commit`: a path inside a hidden directory of
    `<base_path>/<name>/` that this process owns (see tfsb.server.dirlock). OS errors become a PublishError; on
    any failure nothing is left behind, neither the hidden directory nor a model directory made for it."""
    model_dir = Path(base_path).resolve() / name
    made = not model_dir.exists()
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(model_dir)
        owned = OwnedDir(model_dir, _TMP_PREFIX)
    except OSError as e:
        raise PublishError(_os_reason(e)) from e
    done = False
    try:
        yield owned.path / "version"
        done = True
    except PublishError:
        raise
    except (OSError, shutil.Error, tf.errors.OpError) as e:
        raise PublishError(_os_reason(e)) from e
    finally:
        owned.remove()
        if made and not done:
            _remove_if_empty(model_dir)


def _remove_if_empty(model_dir: Path) -> None:
    try:
        if {p.name for p in model_dir.iterdir()} <= {".publish.lock"}:
            (model_dir / ".publish.lock").unlink(missing_ok=True)
            model_dir.rmdir()
    except OSError:
        pass  # another publisher is using it


def commit(work: Path, name: str, version: int | None) -> Published:
    """Make the written version durable, then rename it to the next (or the given) version number."""
    model_dir = work.parent.parent
    _fsync_tree(work)
    with _publish_lock(model_dir):
        current = existing_versions(model_dir)
        chosen = version if version is not None else (max(current) + 1 if current else 1)
        if chosen < 0:
            raise PublishError(f"version must be >= 0, got {chosen}")
        final = model_dir / str(chosen)
        if chosen in current or final.exists():
            raise PublishError(f"version {chosen} of {name} already exists at {final}; refusing to overwrite")
        try:
            os.rename(work, final)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise PublishError(f"version {chosen} of {name} appeared concurrently") from e
            raise
        dfd = os.open(model_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return Published(name, chosen, final)


# ---------------------------------------------------------------------------------------------- writing

def _write_archive(trained: TrainedModel, path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(trained.model)
    for name, ep in trained.endpoints.items():
        archive.add_endpoint(name, ep.fn, input_signature=list(ep.input_signature))
    archive.write_out(str(path), verbose=False)


def _set_method_names(path: Path, endpoints: dict[str, Endpoint]) -> None:
    """Keras/TF2 export writes every signature as `tensorflow/serving/predict`; TF Serving's Classify and
    Regress APIs require the classify/regress method names, so they are set in saved_model.pb here."""
    if all(ep.method_name not in (CLASSIFY, REGRESS) for ep in endpoints.values()):
        return
    pb = path / "saved_model.pb"
    sm = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for mg in sm.meta_graphs:
        for name, ep in endpoints.items():
            if name in mg.signature_def:
                mg.signature_def[name].method_name = ep.method_name
    pb.write_bytes(sm.SerializeToString())


TFLITE_FILE = "model.tflite"


def to_tflite(path: Path, signatures: list[str]) -> None:
    """Replace the SavedModel in `path` by its TensorFlow Lite conversion (`model.tflite`: the signatures in
    the signature table and, when TF Serving's C++ can resolve them — all in the first subgraph —, also in the
    metadata entry it reads): the version directory then holds only what a TFLite server loads."""
    from tfsb.export.tflite import (convert_saved_model, primary_subgraph_signatures, table_signature_defs,
                               with_signature_metadata)

    content = convert_saved_model(path, signatures)
    table = table_signature_defs(content)
    portable = primary_subgraph_signatures(content, table)
    if portable == table:  # else TF Serving could not resolve them all: leave the table as the only source
        content = with_signature_metadata(content, table)
    for child in list(path.iterdir()):
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    (path / TFLITE_FILE).write_bytes(content)


def warmup_records(name: str, trained: TrainedModel) -> list[prediction_log_pb2.PredictionLog]:
    """One request per signature from its sample inputs, using the API each signature is served by."""
    logs = []
    for sig, ep in trained.endpoints.items():
        sample = trained.samples[sig]
        spec = model_pb2.ModelSpec(name=name, signature_name=sig)
        if ep.method_name in (CLASSIFY, REGRESS):
            logs.append(example_log(spec, ep.method_name, sample["inputs"]))
            continue
        req = predict_pb2.PredictRequest(model_spec=spec)
        for ts in ep.input_signature:
            req.inputs[ts.name].CopyFrom(tf.make_tensor_proto(sample[ts.name], dtype=ts.dtype))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))
    return logs


def example_log(spec, method_name: str, examples: list[bytes]) -> prediction_log_pb2.PredictionLog:
    """A warmup record for a classify or regress signature over serialized tf.Examples."""
    inp = input_pb2.Input()
    for blob in examples:
        inp.example_list.examples.add().ParseFromString(blob)
    if method_name == CLASSIFY:
        return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
            request=classification_pb2.ClassificationRequest(model_spec=spec, input=inp)))
    return prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(
        request=regression_pb2.RegressionRequest(model_spec=spec, input=inp)))


def write_warmup(path: Path, records: list[prediction_log_pb2.PredictionLog]) -> None:
    extra = path / "assets.extra"
    extra.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as w:
        for rec in records:
            w.write(rec.SerializeToString())


def read_warmup(version_dir: Path) -> list[prediction_log_pb2.PredictionLog]:
    path = version_dir / "assets.extra" / WARMUP_FILE
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]


def _fsync_tree(path: Path) -> None:
    """Make the files durable before the rename publishes them (a crash must not expose empty files)."""
    for root, _dirs, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- validation

def _compare(sig: str, got: dict[str, np.ndarray], reference: dict[str, np.ndarray], rtol: float,
             atol: float) -> None:
    if set(got) != set(reference):
        raise PublishError(f"signature {sig!r}: output keys {sorted(got)}, expected {sorted(reference)}")
    for k, ref in reference.items():
        out = got[k]
        if out.dtype != ref.dtype or out.shape != ref.shape:
            raise PublishError(f"signature {sig!r}: output {k!r} is {out.dtype}{list(out.shape)}, "
                               f"expected {ref.dtype}{list(ref.shape)}")
        same = (np.array_equal(out, ref) if out.dtype == object or out.dtype.kind in "biuSU"
                else np.allclose(out, ref, rtol=rtol, atol=atol))
        if not same:
            raise PublishError(f"signature {sig!r}: output {k!r} differs from the in-memory model "
                               f"(max abs diff {np.max(np.abs(out.astype(float) - ref.astype(float)))})")


def validate_tflite(path: Path, trained: TrainedModel, *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Load `model.tflite` the way the server does (LiteRT interpreter, signatures as the server reads them) and
    compare every signature with the in-memory endpoints (conversion may reorder float operations: a
    slightly wider tolerance)."""
    from tfsb.server.tflite import TfLiteServable

    servable = TfLiteServable(str(path / TFLITE_FILE))
    try:
        if set(servable.signatures) != set(trained.endpoints):
            raise PublishError(f"signatures: expected {sorted(trained.endpoints)}, model.tflite has "
                               f"{sorted(servable.signatures)}")
        for sig, ep in trained.endpoints.items():
            s = servable.signatures[sig]
            want = sorted(ts.name for ts in ep.input_signature)
            if sorted(s.inputs) != want:
                raise PublishError(f"signature {sig!r}: input keys {sorted(s.inputs)}, expected {want}")
            sample = trained.samples[sig]
            inputs = {ts.name: np.asarray(sample[ts.name], dtype=ts.dtype.as_numpy_dtype) for ts in ep.input_signature}
            _compare(sig, servable.run_signature(s, inputs, list(s.outputs)), ep.call(sample), rtol, atol)
    finally:
        servable.close()


def validate(path: Path, trained: TrainedModel, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Reload the written SavedModel (or model.tflite) fresh and compare every signature with the in-memory
    endpoints.

    Raises PublishError naming the signature and the check (keys, dtypes, shapes, method name, values)."""
    if trained.tflite:
        validate_tflite(path, trained)
        _check_warmup(path, trained)
        return
    sm = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    sigdefs = sm.meta_graphs[0].signature_def
    loaded = tf.saved_model.load(str(path))
    expected_sigs = set(trained.endpoints)
    got_sigs = set(loaded.signatures.keys())
    if got_sigs != expected_sigs:
        raise PublishError(f"signatures: expected {sorted(expected_sigs)}, SavedModel has {sorted(got_sigs)}")
    for sig, ep in trained.endpoints.items():
        fn = loaded.signatures[sig]
        if sigdefs[sig].method_name != ep.method_name:
            raise PublishError(f"signature {sig!r}: method_name {sigdefs[sig].method_name!r}, "
                               f"expected {ep.method_name!r}")
        in_specs = fn.structured_input_signature[1]
        want = {ts.name: ts for ts in ep.input_signature}
        if set(in_specs) != set(want):
            raise PublishError(f"signature {sig!r}: input keys {sorted(in_specs)}, expected {sorted(want)}")
        for k, ts in want.items():
            if in_specs[k].dtype != ts.dtype:
                raise PublishError(f"signature {sig!r}: input {k!r} dtype {in_specs[k].dtype.name}, "
                                   f"expected {ts.dtype.name}")
            if in_specs[k].shape.as_list() != ts.shape.as_list():
                raise PublishError(f"signature {sig!r}: input {k!r} shape {in_specs[k].shape}, "
                                   f"expected {ts.shape}")
        sample = trained.samples[sig]
        reference = ep.call(sample)
        got = {k: v.numpy() for k, v in fn(**{k: tf.constant(sample[k], dtype=want[k].dtype)
                                               for k in want}).items()}
        _compare(sig, got, reference, rtol, atol)
    _check_warmup(path, trained)


def _check_warmup(path: Path, trained: TrainedModel) -> None:
    records = read_warmup(path)
    if len(records) != len(trained.endpoints):
        raise PublishError(f"warmup: {len(records)} records, expected {len(trained.endpoints)}")


# ---------------------------------------------------------------------------------------------- publish

def publish(trained: TrainedModel, base_path: str | os.PathLike, *, version: int | None = None,
            validator: Callable[[Path, TrainedModel], None] = validate) -> Published:
    """Write, validate and atomically publish `trained` as `<base_path>/<name>/<version>`.

    `version=None` takes the highest existing version + 1. An existing version is never overwritten."""
    with staging(base_path, trained.name) as tmp:
        _write_archive(trained, tmp)
        _set_method_names(tmp, trained.endpoints)
        if trained.tflite:
            to_tflite(tmp, list(trained.endpoints))
        write_warmup(tmp, warmup_records(trained.name, trained))
        try:
            validator(tmp, trained)
        except PublishError:
            raise
        except Exception as e:  # a loader error is a validation failure too
            raise PublishError(f"validation: reloading the SavedModel failed: {e}") from e
        return commit(tmp, trained.name, version)
