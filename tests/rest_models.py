"""Small SavedModels for the REST conformance suite.

`half_plus_two` is written by TF1's SavedModelBuilder (like TF Serving's own testdata model of that name:
y = 0.5x + 2 with `regress_x_to_y` / `classify_x_to_y` over tf.Example), which also proves TF1 exports
serve. `echo` is a TF2 tf.Module whose signatures return their input, one per dtype, so JSON decoding and
encoding can be checked value for value.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

ECHO_DTYPES = {"float": tf.float32, "double": tf.float64, "int32": tf.int32, "int64": tf.int64, "int16": tf.int16,
               "int8": tf.int8, "uint8": tf.uint8, "uint32": tf.uint32, "uint64": tf.uint64, "bool": tf.bool,
               "string": tf.string, "half": tf.float16}


def build_half_plus_two(path: Path, b: float = 2.0) -> None:
    g = tf.Graph()
    with g.as_default(), tf.compat.v1.Session(graph=g) as sess:
        a_var = tf.compat.v1.Variable(0.5, name="a")
        b_var = tf.compat.v1.Variable(b, name="b")
        x = tf.compat.v1.placeholder(tf.float32, None, name="x")
        y = tf.add(a_var * x, b_var, name="y")
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        y_ex = tf.add(a_var * parsed["x"], b_var, name="y_from_examples")  # [batch, 1]
        sess.run(tf.compat.v1.global_variables_initializer())
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        sigs = {
            "serving_default": tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
                {"x": x}, {"y": y}),
            "regress_x_to_y": tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
                {"inputs": info(serialized)}, {"outputs": info(y_ex)}, "tensorflow/serving/regress"),
            "classify_x_to_y": tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
                {"inputs": info(serialized)}, {"scores": info(y_ex)}, "tensorflow/serving/classify"),
        }
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=sigs)
        builder.save()


class _Echo(tf.Module):
    pass


def build_echo(path: Path) -> None:
    m = _Echo()
    sigs = {}
    for name, dt in ECHO_DTYPES.items():
        sigs[name] = tf.function(lambda x: {"y": tf.identity(x)},
                                 input_signature=[tf.TensorSpec(None, dt, name="x")]).get_concrete_function()
    sigs["serving_default"] = sigs["float"]
    sigs["bytes"] = tf.function(lambda x: {"y_bytes": tf.identity(x)},
                                input_signature=[tf.TensorSpec(None, tf.string, name="x")]).get_concrete_function()
    sigs["multi"] = tf.function(lambda a, b: {"a": tf.identity(a), "b": tf.identity(b)},
                                input_signature=[tf.TensorSpec(None, tf.float32, name="a"),
                                                 tf.TensorSpec(None, tf.string, name="b")]).get_concrete_function()
    sigs["two_out"] = tf.function(lambda x: {"p": tf.identity(x), "q": x * 2},
                                  input_signature=[tf.TensorSpec(None, tf.float32, name="x")]).get_concrete_function()
    sigs["mismatch"] = tf.function(lambda x: {"y": tf.identity(x), "z": x[:1]},
                                   input_signature=[tf.TensorSpec(None, tf.float32, name="x")]).get_concrete_function()
    sigs["scalar_out"] = tf.function(lambda x: {"y": tf.reduce_sum(x)},
                                     input_signature=[tf.TensorSpec(None, tf.float32, name="x")]).get_concrete_function()
    sigs["complex_out"] = tf.function(lambda x: {"y": tf.complex(x, x)},
                                      input_signature=[tf.TensorSpec(None, tf.float32, name="x")]).get_concrete_function()
    tf.saved_model.save(m, str(path), signatures=sigs)
