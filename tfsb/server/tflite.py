"""A `model.tflite` version served through the LiteRT interpreter (`ai-edge-litert`), like TF Serving's
`--prefer_tflite_model` (`servables/tensorflow/tflite_session.cc`, `tflite_interpreter_pool.cc`).

Signatures, in TF Serving's order of preference:
1. the `signature_defs_metadata` metadata entry older converters wrote (a flexbuffer map of serialized
   SignatureDefs; its tensor names carry a `:0` suffix the interpreter's tensors do not, fixed up as TF Serving
   does);
2. the model's own signature table (what `TFLiteConverter` writes today; TF Serving's C++ reads only the
   metadata, so there it would fall through to 3);
3. a `serving_default` signature made of every input and output tensor, named without the `:0` suffix.

Interpreters are not thread-safe: each request takes one from a pool (`num_tflite_pools` ×
`num_tflite_interpreters_per_pool` of them, created on demand) and resizes the inputs to the request's shape.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Sequence

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from tfsb.wire.tensor_proto import DT, dtype_of
from tfsb.errors import InternalError, InvalidArgumentError, NotFoundError, ServingError
from tfsb.server.runtime import Signature, TensorNameServable

log = logging.getLogger("tfsb.server.tflite")

PREDICT_METHOD = "tensorflow/serving/predict"
SIGNATURE_METADATA = "signature_defs_metadata"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise NotFoundError("--prefer_tflite_model needs the LiteRT interpreter: pip install ai-edge-litert") from e
    return Interpreter


def _dt(np_type) -> int:
    return DT.DT_STRING if np.dtype(np_type).kind in "OSU" else dtype_of(np.empty(0, np_type))


def tensor_info(detail: dict) -> meta_graph_pb2.TensorInfo:
    """An interpreter's tensor details as a TensorInfo (dynamic dimensions as -1, from `shape_signature`)."""
    info = meta_graph_pb2.TensorInfo(name=detail["name"], dtype=_dt(detail["dtype"]))
    shape = detail.get("shape_signature")
    if shape is None or (len(shape) == 0 and len(detail["shape"])):
        shape = detail["shape"]
    for d in shape:
        info.tensor_shape.dim.add(size=int(d))
    return info


def _legacy_name(name: str) -> str:
    return name.split(":", 1)[0]


def _metadata_signatures(content: bytes) -> dict[str, meta_graph_pb2.SignatureDef]:
    from flatbuffers import flexbuffers

    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() != SIGNATURE_METADATA.encode():
            continue
        buf = model.Buffers(md.Buffer())
        data = buf.DataAsNumpy().tobytes() if buf.DataLength() else content[buf.Offset():buf.Offset() + buf.Size()]
        try:
            entries = flexbuffers.GetRoot(data).AsMap
            keys, values = entries.Keys, entries.Values
            return {keys[i].AsKey: meta_graph_pb2.SignatureDef.FromString(
                        bytes(values[i].AsStringBytes if values[i].IsString else values[i].AsBlob))
                    for i in range(len(keys))}
        except Exception as e:  # noqa: BLE001 - flexbuffer or protobuf decoding
            raise InvalidArgumentError(f"Invalid SignatureDefs found in TfLite model: {e}") from e
    return {}


class TfLiteServable(TensorNameServable):
    """One loaded `model.tflite` version; the same interface the core uses for a SavedModel."""

    RUNTIME = "TFLite"  # the metrics' runtime label

    def __init__(self, path: str, *, pools: int = 1, interpreters_per_pool: int = 1):
        self.path = path
        try:
            with open(path, "rb") as f:
                self._content = f.read()
        except OSError as e:
            raise NotFoundError(f"Could not read TFLite model {path}: {e.strerror}") from e
        self._cls = _interpreter_class()
        try:
            first = self._new_interpreter()
        except ValueError as e:
            raise InvalidArgumentError(f"Cannot build Interpreter from buffer. {path}: {e}") from e
        self._inputs = {d["name"]: d for d in first.get_input_details()}
        self._outputs = {d["name"]: d for d in first.get_output_details()}
        self._table = False
        self.signature_defs = self._signature_defs(first)
        self.signatures = {k: Signature(k, sd) for k, sd in self.signature_defs.items()}
        self._capacity = max(1, pools) * max(1, interpreters_per_pool)
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._idle.put(first)
        self._created = 1
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ loading
    def _new_interpreter(self):
        it = self._cls(model_content=self._content, num_threads=1)
        it.allocate_tensors()
        it._tfsb_shapes = {}  # input index -> shape last resized to
        it._tfsb_runners = {}  # signature key -> SignatureRunner
        return it

    def _fix_name(self, name: str, tensors: dict[str, dict], what: str, alias: str) -> str:
        if name in tensors:
            return name
        legacy = _legacy_name(name)
        if legacy in tensors:
            return legacy
        raise InternalError(f"Signature {what} {alias} references an unknown tensor: Unknown tensor '{name}'.")

    def _signature_defs(self, interpreter) -> dict[str, meta_graph_pb2.SignatureDef]:
        sigs = _metadata_signatures(self._content)
        if sigs:
            for sd in sigs.values():
                for alias, info in sd.inputs.items():
                    info.name = self._fix_name(info.name, self._inputs, "input", alias)
                for alias, info in sd.outputs.items():
                    info.name = self._fix_name(info.name, self._outputs, "output", alias)
            return sigs
        table = interpreter.get_signature_list()
        if table:
            out = {}
            for key in table:
                runner = interpreter.get_signature_runner(key)
                sd = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
                for alias, d in runner.get_input_details().items():
                    sd.inputs[alias].CopyFrom(tensor_info(d))
                for alias, d in runner.get_output_details().items():
                    sd.outputs[alias].CopyFrom(tensor_info(d))
                out[key] = sd
            self._table = True  # each signature may be its own subgraph: run it through its runner
            return out
        log.warning("No signature def found in TFLite model %s. Generating one.", self.path)
        sd = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for name, d in self._inputs.items():
            sd.inputs[_legacy_name(name)].CopyFrom(tensor_info(d))
        for name, d in self._outputs.items():
            sd.outputs[_legacy_name(name)].CopyFrom(tensor_info(d))
        return {"serving_default": sd}

    # ------------------------------------------------------------------------------------ serving
    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait()

    @contextlib.contextmanager
    def _borrowed(self):
        """An interpreter of the pool for one request (an idle one, a new one below capacity, else wait)."""
        try:
            it = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                fresh = self._created < self._capacity
                if fresh:
                    self._created += 1
            it = self._new_interpreter() if fresh else self._idle.get()
        try:
            yield it
        finally:
            self._idle.put(it)

    def run(self, feeds: dict[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Run with TFLite tensor names (as the signatures hold them); returns arrays in `fetches` order."""
        for name in feeds:
            if name not in self._inputs:
                raise InvalidArgumentError(f"Missing input TFLite tensor: {name}: Unknown tensor '{name}'.")
        for name in fetches:
            if name not in self._outputs:
                raise InvalidArgumentError(f"Missing output TFLite tensor: {name}: Unknown tensor '{name}'.")
        with self._borrowed() as it:
            return self._run_on(it, feeds, fetches)

    def _run_on(self, it, feeds: dict[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        try:
            resized = False
            for name, arr in feeds.items():
                idx = self._inputs[name]["index"]
                if it._tfsb_shapes.get(idx) != arr.shape:
                    try:
                        it.resize_tensor_input(idx, list(arr.shape), strict=False)
                    except (ValueError, RuntimeError) as e:
                        raise InternalError(f"Failed to resize input tensor: {name}: {e}") from e
                    it._tfsb_shapes[idx] = arr.shape
                    resized = True
            if resized:
                try:
                    it.allocate_tensors()
                except (ValueError, RuntimeError) as e:
                    it._tfsb_shapes.clear()
                    raise InvalidArgumentError(f"TFLite model cannot run on these input shapes: {e}") from e
            for name, arr in feeds.items():
                want = self._inputs[name]["dtype"]
                it.set_tensor(self._inputs[name]["index"], arr if arr.dtype == want else arr.astype(want))
            try:
                it.invoke()
            except (ValueError, RuntimeError) as e:
                raise InternalError(f"TFLite invoke failed: {e}") from e
            return [np.array(it.get_tensor(self._outputs[n]["index"])) for n in fetches]
        except ServingError:
            raise
        except (ValueError, RuntimeError) as e:
            raise InvalidArgumentError(str(e)) from e

    def run_signature(self, sig: Signature, inputs: dict[str, np.ndarray],
                      outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if not self._table:
            return super().run_signature(sig, inputs, outputs)
        order = self.check_dtypes(sig, inputs)
        with self._borrowed() as it:
            runner = it._tfsb_runners.get(sig.name)
            if runner is None:
                runner = it._tfsb_runners[sig.name] = it.get_signature_runner(sig.name)
            try:
                got = runner(**{a: inputs[a] for a in order})
            except (ValueError, RuntimeError) as e:
                raise InvalidArgumentError(f"TFLite signature {sig.name} cannot run on these inputs: {e}") from e
            return {a: np.array(got[a]) for a in outputs}
