"""Execution of one SavedModel version: a `tf.compat.v1` Session with a prepared callable per signature.

Why a TF1 session rather than `tf.saved_model.load`: it loads what TF Serving loads (TF1
`SavedModelBuilder` exports as well as TF2/Keras 3 ones, through the same MetaGraphDef + SignatureDef path
the C++ server uses), and a callable prepared with `_make_callable_from_options` costs ~30 µs per call
against ~200 µs for a TF2 concrete function. Feeds and fetches are the SignatureDef's tensor names.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tensorflow.core.protobuf import config_pb2

from tfsb.wire.tensor_proto import DT, NP_DTYPE, dtype_name, dtype_of
from tfsb.errors import InvalidArgumentError, NotFoundError, UnimplementedError, from_tf_exception

log = logging.getLogger("tfsb.server.runtime")
DT_STRING = DT.DT_STRING

_tf = None


def tf():
    """TensorFlow, with its Python logger quieted once (the TF1 loader's deprecation notices)."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow

        tensorflow.get_logger().setLevel(logging.ERROR)
        _tf = tensorflow
    return _tf


@dataclass(frozen=True)
class TensorSpec:
    alias: str
    name: str  # graph tensor name, e.g. "serving_default_x:0"
    dtype: int


class Signature:
    """A SignatureDef plus the prepared callables that run it."""

    def __init__(self, name: str, sigdef):
        self.name = name
        self.sigdef = sigdef
        self.method_name: str = sigdef.method_name
        self.inputs: dict[str, TensorSpec] = {a: TensorSpec(a, t.name, t.dtype) for a, t in sigdef.inputs.items()}
        self.outputs: dict[str, TensorSpec] = {a: TensorSpec(a, t.name, t.dtype)
                                               for a, t in sigdef.outputs.items()}
        self.input_order: tuple[str, ...] = tuple(sorted(self.inputs))
        self.output_order: tuple[str, ...] = tuple(sorted(self.outputs))
        self.defaults = set(getattr(sigdef, "defaults", {}) or {})


def check_feed_dtypes(sig: Signature, inputs: dict[str, np.ndarray]) -> list[str]:
    """TF's feed type check with its message (every runtime answers alike); string inputs become object
    arrays (in place). Returns the aliases in feed order."""
    order = [a for a in sig.input_order if a in inputs]
    for i, alias in enumerate(order):
        want = sig.inputs[alias].dtype
        arr = inputs[alias]
        ok = arr.dtype.kind in "OSU" if want == DT_STRING else arr.dtype == NP_DTYPE.get(want)
        if not ok:
            raise InvalidArgumentError(f"Expects arg[{i}] to be {dtype_name(want)} but "
                                       f"{dtype_name(dtype_of(arr))} is provided")
        if want == DT_STRING and arr.dtype != object:
            inputs[alias] = arr.astype(object)
    return order


class TensorNameServable:
    """What every runtime shares: the feed type check, and a signature run as a run by tensor names
    (`run(feeds, fetches)`, provided by the runtime)."""

    @staticmethod
    def check_dtypes(sig: Signature, inputs: dict[str, np.ndarray]) -> list[str]:
        return check_feed_dtypes(sig, inputs)

    def run(self, feeds: dict[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_signature(self, sig: Signature, inputs: dict[str, np.ndarray],
                      outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run a signature on aliased inputs (already validated by the caller) for the given output aliases."""
        order = self.check_dtypes(sig, inputs)
        results = self.run({sig.inputs[a].name: inputs[a] for a in order}, [sig.outputs[a].name for a in outputs])
        return dict(zip(outputs, results))


class SavedModelServable(TensorNameServable):
    """One loaded version. Thread-safe: TF sessions run concurrently; callables are created once."""

    RUNTIME = "TF1"  # the metrics' runtime label, as TF Serving names its session runtime

    def __init__(self, path: str | Path, tags: Sequence[str] = ("serve",), *, session_config=None):
        self.path = str(path)
        _check_looks_like_saved_model(self.path)
        try:
            try:
                self._load(tags, session_config)
            except Exception as e:
                if _unregistered_op(e) is None or not register_optional_ops():
                    raise
                self._load(tags, session_config)  # TF Text's ops are registered now: once more
        except Exception as e:
            raise _load_error(e) from e
        self.signature_defs = self.meta_graph.signature_def
        self.signatures: dict[str, Signature] = {k: Signature(k, sd) for k, sd in self.signature_defs.items()}
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def _load(self, tags: Sequence[str], session_config) -> None:
        t = tf()
        self.graph = t.Graph()
        self.session = t.compat.v1.Session(graph=self.graph, config=session_config)
        try:
            with self.graph.as_default():
                self.meta_graph = t.compat.v1.saved_model.loader.load(self.session, list(tags), self.path)
        except Exception:
            self.session.close()
            raise

    def close(self) -> None:
        self._callables.clear()
        self.session.close()

    def _callable(self, feeds: tuple[str, ...], fetches: tuple[str, ...]):
        key = (feeds, fetches)
        fn = self._callables.get(key)
        if fn is None:
            with self._lock:
                fn = self._callables.get(key)
                if fn is None:
                    opts = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
                    fn = self.session._make_callable_from_options(opts)
                    self._callables[key] = fn
        return fn

    def run(self, feeds: dict[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Run with graph tensor names. `feeds` keys are tensor names; returns arrays in `fetches` order."""
        names = tuple(feeds)
        fn = self._callable(names, tuple(fetches))
        try:
            out = fn(*[feeds[n] for n in names])
        except Exception as e:
            raise from_tf_exception(e) from e
        # rank-0 results come back as numpy scalars or bare bytes: make every result an ndarray
        return [r if isinstance(r, np.ndarray) else np.asarray(r, dtype=object if isinstance(r, bytes) else None)
                for r in out]



# Op libraries tensorflow_model_server links in statically; here they are Python packages whose import
# registers their ops. Imported only when a model needs an op TensorFlow itself does not have.
OPTIONAL_OP_PACKAGES = (("tensorflow_text", "tensorflow-text"),)
_registered: list[str] | None = None
_register_lock = threading.Lock()


def register_optional_ops() -> list[str]:
    """Import every installed optional op package once; returns the ones that are now registered."""
    global _registered
    with _register_lock:
        if _registered is None:
            _registered = []
            for module, dist in OPTIONAL_OP_PACKAGES:
                try:
                    __import__(module)
                except ImportError as e:
                    log.info("%s is not available (%s); its ops cannot be loaded", dist, e)
                    continue
                log.info("registered the ops of %s", dist)
                _registered.append(dist)
        return list(_registered)


_OP_NOT_REGISTERED = re.compile(r"Op type not registered '([^']+)'")


def _unregistered_op(e: Exception) -> str | None:
    m = _OP_NOT_REGISTERED.search(str(e))
    return m.group(1) if m else None


def _load_error(e: Exception):
    """TF's error, plus what to install when the model needs an op TensorFlow does not have."""
    err = from_tf_exception(e)
    op = _unregistered_op(e)
    if op is not None:
        have = register_optional_ops()
        missing = [dist for _mod, dist in OPTIONAL_OP_PACKAGES if dist not in have]
        hint = (f"The model uses op '{op}', which is not part of TensorFlow. Ops of TensorFlow Text (TF Serving "
                f"links them in) are registered when the tensorflow-text package is installed")
        hint += f"; not installed here: pip install {' '.join(missing)}" if missing else \
            ", and it is installed, so the op comes from another library"
        err = NotFoundError(f"{hint}. {err.message}")
    return err


def _check_looks_like_saved_model(path: str) -> None:
    p = Path(path)
    if (p / "export.meta").exists():
        raise UnimplementedError("Session Bundle is deprecated and removed.")
    if not ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()):
        raise NotFoundError("Specified file path does not appear to contain a SavedModel bundle (should have "
                            f"a file called `saved_model.pb`)\nSpecified file path: {path}")


def tree_snapshot(path: str | Path) -> tuple[tuple[str, int], ...]:
    """(relative path, size) of every file: equal on two polls means nobody is still writing."""
    out = []
    for root, _dirs, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            try:
                out.append((os.path.relpath(fp, path), os.stat(fp).st_size))
            except OSError:
                continue
    return tuple(sorted(out))


def is_complete(path: str | Path) -> bool:
    """Whether a version directory looks fully written: saved_model.pb present and, when the model has a
    variables/ directory, its index and every data shard the index's file names promise; or a model.tflite.

    TF Serving tries to load a half-copied directory, fails, and (after retries) never looks at it again;
    we wait for it to be complete instead."""
    p = Path(path)
    if not p.is_dir():
        return p.exists()  # a plain file named like a version: let the load report the error
    if not ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()):
        # a TFLite-only version (`--prefer_tflite_model`); the settle check covers a half-written file
        return (p / "model.tflite").is_file()
    var = p / "variables"
    if var.is_dir():
        names = {c.name for c in var.iterdir()}
        if "variables.index" not in names:
            return False
        shards = [n for n in names if n.startswith("variables.data-")]
        if shards:
            total = int(shards[0].rsplit("-of-", 1)[-1])
            if len(shards) < total:
                return False
    return True

