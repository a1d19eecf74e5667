"""SavedModels with the signature layouts of TF Serving's own test models, built here (none is copied):

- `tf1_half_plus_two`: a TF1 SavedModelBuilder graph, y = 0.5x + 2. `serving_default` predicts from a float
  tensor; `classify_x_to_y`, `regress_x_to_y`, `regress_x_to_y2` read serialized tf.Examples (features x and
  x2, parsed by `ParseExample`); `regress_x2_to_y3` is a *regress* signature over a plain float tensor.
- `tf2_half_plus_two`: a TF2 tf.Module with tf.functions; every signature has the predict method name, and
  `classify_x_to_y` / `regress_x_to_y` take serialized tf.Examples (`ParseExampleV2` inside the function).
- `half_plus_three`: a regress signature whose input declares DT_FLOAT although the graph feeds it strings.
- `counter`: a stateful TF1 model: three signatures without inputs, one with an unknown-rank input.
- `image`: a tf.Module over a [None, 64, 64, 3] image (too big to paste an example of).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

v1 = tf.compat.v1


def _save(path: Path, sess, sigs: dict) -> None:
    builder = v1.saved_model.Builder(str(path))
    builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=sigs)
    builder.save()


def _sig(inputs: dict, outputs: dict, method: str):
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method)


def tf1_half_plus_two(path: Path) -> None:
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b"), v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32),
                                                  "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        x2 = v1.placeholder(tf.float32, [None, 1], name="x2")
        y_ex = tf.add(a * parsed["x"], b, name="y")
        sess.run(v1.global_variables_initializer())
        _save(path, sess, {
            "serving_default": _sig({"x": x}, {"y": tf.add(a * x, b)}, "tensorflow/serving/predict"),
            "classify_x_to_y": _sig({"inputs": serialized}, {"scores": y_ex}, "tensorflow/serving/classify"),
            "regress_x_to_y": _sig({"inputs": serialized}, {"outputs": y_ex}, "tensorflow/serving/regress"),
            "regress_x_to_y2": _sig({"inputs": serialized}, {"outputs": tf.add(a * parsed["x2"], b)},
                                    "tensorflow/serving/regress"),
            "regress_x2_to_y3": _sig({"inputs": x2}, {"outputs": tf.add(a * x2, c)}, "tensorflow/serving/regress"),
        })


class _HalfPlusTwo(tf.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = tf.Variable(0.5), tf.Variable(2.0)

    def _parse(self, serialized):
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="x")])
    def serve(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self.a * self._parse(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self.a * self._parse(inputs) + self.b}


def tf2_half_plus_two(path: Path) -> None:
    m = _HalfPlusTwo()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve, "classify_x_to_y": m.classify,
                                                  "regress_x_to_y": m.regress})


def half_plus_three(path: Path) -> None:
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        a, b = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = v1.placeholder(tf.float32, name="x")
        sess.run(v1.global_variables_initializer())
        regress = _sig({"inputs": serialized}, {"outputs": tf.add(a * parsed["x"], b)}, "tensorflow/serving/regress")
        regress.inputs["inputs"].dtype = tf.float32.as_datatype_enum  # declared wrong, as in TF Serving's model
        _save(path, sess, {"serving_default": _sig({"x": x}, {"y": tf.add(a * x, b)}, "tensorflow/serving/predict"),
                           "tensorflow/serving/regress": regress})


def counter(path: Path) -> None:
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        count = v1.Variable(0.0, name="counter")
        delta = v1.placeholder(tf.float32, name="delta")  # unknown rank
        sess.run(v1.global_variables_initializer())
        predict = "tensorflow/serving/predict"
        _save(path, sess, {
            "get_counter": _sig({}, {"output": tf.identity(count)}, predict),
            "incr_counter": _sig({}, {"output": tf.identity(count.assign_add(1.0))}, predict),
            "incr_counter_by": _sig({"delta": delta}, {"output": tf.identity(count.assign_add(delta))}, predict),
            "reset_counter": _sig({}, {"output": tf.identity(count.assign(0.0))}, predict),
        })


class _Image(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32, name="image")])
    def serve(self, image):
        return {"mean": tf.reduce_mean(image, axis=[1, 2, 3])}


def image(path: Path) -> None:
    m = _Image()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


FOREIGN = {"tf1_half_plus_two": tf1_half_plus_two, "tf2_half_plus_two": tf2_half_plus_two,
           "half_plus_three": half_plus_three, "counter": counter, "image": image}
