"""TFLite models in the three shapes TF Serving's TFLite path meets, made by the tests themselves:

- `table`: today's converter output, signatures in the flatbuffer's signature table, here two of them in two
  subgraphs (`serving_default` and `times_two`, y = 2x);
- `metadata`: an older converter's layout, no signature table, the SignatureDefs in the
  `signature_defs_metadata` metadata entry (a flexbuffer map of serialized SignatureDefs whose tensor names
  carry the `:0` suffix the interpreter's tensor names lack) — like TF Serving's
  `saved_model_half_plus_two_tflite_with_sigdef` test model;
- `bare`: neither, so the server derives `serving_default` from the tensors — like
  `saved_model_half_plus_two_tflite`.

Each computes y = 0.5 * x + 2 on float32 x of shape [batch, 1]; the input tensor is named `tflite_input` in
`metadata` (as in TF Serving's model, where the alias `x` maps to `tflite_input:0`) and `x` otherwise.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from tfsb.export.tflite import with_signature_metadata

PREDICT = "tensorflow/serving/predict"


def _convert(*, with_second_signature: bool) -> bytes:
    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serving_default(self, x):  # the converter names signatures after the functions
            return {"y": tf.add(tf.multiply(x, 0.5), 2.0, name="y")}

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def times_two(self, x):
            return {"y": tf.multiply(x, 2.0)}

    m = HalfPlusTwo()
    fns = [m.serving_default.get_concrete_function()]
    if with_second_signature:  # a second subgraph: `times_two`, y = 2x
        fns.append(m.times_two.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions(fns, m).convert()


def _io_names(content: bytes) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    return it.get_input_details()[0]["name"], it.get_output_details()[0]["name"]


def half_plus_two(kind: str) -> bytes:
    if kind == "table":
        return _convert(with_second_signature=True)
    content = _convert(with_second_signature=False)
    inp, out = _io_names(content)
    if kind == "bare":
        return with_signature_metadata(content, {}, drop_table=True, rename={inp: "x", out: "y"})
    if kind == "metadata":
        sd = meta_graph_pb2.SignatureDef(method_name=PREDICT)
        sd.inputs["x"].name = "tflite_input:0"
        sd.inputs["x"].dtype = 1
        sd.outputs["y"].name = "y:0"
        sd.outputs["y"].dtype = 1
        return with_signature_metadata(content, {"serving_default": sd}, drop_table=True,
                                       rename={inp: "tflite_input", out: "y"})
    raise ValueError(kind)


def write_half_plus_two(base: Path, kind: str, version: int = 123) -> Path:
    """`<base>/<version>/model.tflite`; returns the model's base path."""
    d = Path(base) / str(version)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.tflite").write_bytes(half_plus_two(kind))
    return Path(base)
