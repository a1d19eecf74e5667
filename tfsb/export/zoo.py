"""The demo model zoo: small Keras 3 models trained in seconds on seeded synthetic data.

Each entry returns a :class:`TrainedModel`: the Keras model plus the serving endpoints that will become
SignatureDefs. Endpoints are plain ``tf.function``-traceable callables over named tensors that return dicts,
so every signature input has an explicit name and every output a stable key (never ``output_0``).
The seed document's three patterns are here, corrected for Keras 3 (see docs/byom.md, "Exporting your own model").
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@dataclass(frozen=True)
class Endpoint:
    """One serving signature: a traceable function, its input specs, and its SignatureDef method name."""

    fn: Callable[..., dict[str, tf.Tensor]]
    input_signature: tuple[tf.TensorSpec, ...]
    method_name: str = PREDICT

    def call(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the in-memory endpoint on named numpy inputs (the reference for validation)."""
        args = [tf.constant(inputs[spec.name], dtype=spec.dtype) for spec in self.input_signature]
        return {k: v.numpy() for k, v in self.fn(*args).items()}


@dataclass
class TrainedModel:
    name: str
    model: keras.Model
    endpoints: dict[str, Endpoint]
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    final_loss: float = float("nan")
    # Published as `model.tflite` (converted from the SavedModel) instead of the SavedModel: served with
    # --prefer_tflite_model through the LiteRT interpreter.
    tflite: bool = False


def _spec(shape: list[int | None], dtype: tf.DType, name: str) -> tf.TensorSpec:
    return tf.TensorSpec(shape, dtype, name=name)


def _fit(model: keras.Model, x, y, *, lr: float, epochs: int, loss: str, log: Callable[[str], None]) -> float:
    """Train with Keras' own loop: the seed's hand-written GradientTape loops over `tf.function` methods are
    what produce "No gradients provided" on Keras 3 (the traced method's variables are not the model's)."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    n = len(y)

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % max(1, epochs // 4) == 0:
                log(f"  epoch {epoch + 1}/{epochs} loss={logs['loss']:.4f}")

    hist = model.fit(x, y, epochs=epochs, batch_size=min(64, n), verbose=0, shuffle=True,
                     callbacks=[_Progress()])
    return float(hist.history["loss"][-1])


def build_linear(seed: int, log: Callable[[str], None] = lambda s: None) -> TrainedModel:
    """Seed example 1: y ≈ 2x + 1. Exported with an explicit signature, so the loaded object is usable."""
    rng = np.random.default_rng(seed)
    x = rng.random((200, 1), dtype=np.float32)
    y = (2 * x + 1 + rng.normal(0, 0.1, (200, 1))).astype(np.float32)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((1,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1, name="dense")(inp), name="linear")
    loss = _fit(model, x, y, lr=0.1, epochs=150, loss="mse", log=log)

    def serve(x):
        return {"y": model(x, training=False)}

    sig = (_spec([None, 1], tf.float32, "x"),)
    return TrainedModel(
        "linear", model, {"serving_default": Endpoint(serve, sig)},
        samples={"serving_default": {"x": np.array([[1.0], [2.0]], np.float32)}}, final_loss=loss)


def build_mlp(seed: int, log: Callable[[str], None] = lambda s: None) -> TrainedModel:
    """Seed example 2: 10 → 64 relu → 32 relu → 1, served as `serving_default` and `inference`."""
    rng = np.random.default_rng(seed)
    x = rng.random((512, 10), dtype=np.float32)
    y = (x.sum(axis=1, keepdims=True) + rng.normal(0, 0.1, (512, 1))).astype(np.float32)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10,), name="x")
    h = keras.layers.Dense(64, activation="relu", name="dense1")(inp)
    h = keras.layers.Dense(32, activation="relu", name="dense2")(h)
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(h), name="mlp")
    loss = _fit(model, x, y, lr=0.003, epochs=40, loss="mse", log=log)

    def serve(x):
        return {"y": model(x, training=False)}

    sig = (_spec([None, 10], tf.float32, "x"),)
    sample = {"x": rng.random((3, 10), dtype=np.float32)}
    return TrainedModel(
        "mlp", model, {"serving_default": Endpoint(serve, sig), "inference": Endpoint(serve, sig)},
        samples={"serving_default": sample, "inference": sample}, final_loss=loss)


def build_multi(seed: int, log: Callable[[str], None] = lambda s: None) -> TrainedModel:
    """Seed example 3: one Dense(1) over the first two features, exposed as `predict_two` ([None,2]) and
    `predict_three` ([None,3], third feature ignored). Signatures are reached through `loaded.signatures[...]`."""
    rng = np.random.default_rng(seed)
    x = rng.random((300, 3), dtype=np.float32)
    y = (2 * x[:, :2].sum(axis=1, keepdims=True) + 1 + rng.normal(0, 0.1, (300, 1))).astype(np.float32)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((2,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1, name="dense")(inp), name="multi")
    loss = _fit(model, x[:, :2], y, lr=0.05, epochs=60, loss="mse", log=log)

    def two(x):
        return {"y": model(x, training=False)}

    def three(x):
        return {"y": model(x[:, :2], training=False)}

    two_sig = (_spec([None, 2], tf.float32, "x"),)
    three_sig = (_spec([None, 3], tf.float32, "x"),)
    s2 = {"x": np.array([[1.0, 2.0]], np.float32)}
    s3 = {"x": np.array([[1.0, 2.0, 3.0]], np.float32)}
    return TrainedModel(
        "multi", model,
        {"serving_default": Endpoint(two, two_sig), "predict_two": Endpoint(two, two_sig),
         "predict_three": Endpoint(three, three_sig)},
        samples={"serving_default": s2, "predict_two": s2, "predict_three": s3}, final_loss=loss)


CENSUS_EDUCATION = ("Bachelors", "HS-grad", "Masters", "Doctorate", "Some-college")
CENSUS_CLASSES = ("<=50K", ">50K")


def census_examples(age, hours, education) -> list[bytes]:
    """Serialize rows as tf.Example protos (the wire format of the Classify/Regress APIs)."""
    out = []
    for a, h, e in zip(age, hours, education):
        ex = tf.train.Example(features=tf.train.Features(feature={
            "age": tf.train.Feature(float_list=tf.train.FloatList(value=[float(a)])),
            "hours_per_week": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(h)])),
            "education": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[e if isinstance(e, bytes) else str(e).encode()])),
        }))
        out.append(ex.SerializeToString())
    return out


def build_census(seed: int, log: Callable[[str], None] = lambda s: None) -> TrainedModel:
    """A tabular income classifier over named float (`age`), int64 (`hours_per_week`) and string
    (`education`) features. Feature preprocessing is plain TF ops in the served functions (no lookup
    tables), so `serving_default` (named tensors), `classify` and `regress` (serialized tf.Example) share it."""
    rng = np.random.default_rng(seed)
    n = 1000
    age = rng.uniform(18, 80, n).astype(np.float32)
    hours = rng.integers(10, 70, n).astype(np.int64)
    edu = rng.choice(CENSUS_EDUCATION, n)
    edu_score = np.array([{"Doctorate": 2.0, "Masters": 1.5, "Bachelors": 1.0}.get(e, 0.0) for e in edu])
    logit = 0.05 * (age - 40) + 0.06 * (hours - 40) + 1.2 * edu_score - 0.8
    label = (logit + rng.normal(0, 0.5, n) > 0).astype(np.int32)

    vocab = tf.constant(CENSUS_EDUCATION)

    def features(age, hours, education):
        onehot = tf.cast(tf.equal(tf.expand_dims(education, -1), vocab), tf.float32)
        num = tf.stack([(age - 40.0) / 15.0, (tf.cast(hours, tf.float32) - 40.0) / 15.0], axis=-1)
        return tf.concat([num, onehot], axis=-1)

    keras.utils.set_random_seed(seed)
    inp = keras.Input((2 + len(CENSUS_EDUCATION),), name="features")
    h = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="probs")(h), name="census")
    x = features(tf.constant(age), tf.constant(hours), tf.constant(edu)).numpy()
    loss = _fit(model, x, label, lr=0.02, epochs=30, loss="sparse_categorical_crossentropy", log=log)

    classes = tf.constant([CENSUS_CLASSES])
    spec = {
        "age": tf.io.FixedLenFeature([], tf.float32),
        "hours_per_week": tf.io.FixedLenFeature([], tf.int64),
        "education": tf.io.FixedLenFeature([], tf.string),
    }

    def predict(age, hours_per_week, education):
        probs = model(features(age, hours_per_week, education), training=False)
        return {"probabilities": probs, "class_ids": tf.argmax(probs, axis=-1)}

    def _from_examples(inputs):
        f = tf.io.parse_example(inputs, spec)
        return model(features(f["age"], f["hours_per_week"], f["education"]), training=False)

    def classify(inputs):
        probs = _from_examples(inputs)
        return {"classes": tf.tile(classes, [tf.shape(probs)[0], 1]), "scores": probs}

    def regress(inputs):
        return {"outputs": _from_examples(inputs)[:, 1]}

    ex_sig = (_spec([None], tf.string, "inputs"),)
    sample_rows = (np.array([39.0, 52.0], np.float32), np.array([40, 60], np.int64),
                   np.array([b"Bachelors", b"Doctorate"]))
    examples = {"inputs": np.array(census_examples(*sample_rows), dtype=object)}
    return TrainedModel(
        "census", model,
        {
            "serving_default": Endpoint(predict, (
                _spec([None], tf.float32, "age"), _spec([None], tf.int64, "hours_per_week"),
                _spec([None], tf.string, "education"))),
            "classify": Endpoint(classify, ex_sig, CLASSIFY),
            "regress": Endpoint(regress, ex_sig, REGRESS),
        },
        samples={
            "serving_default": {"age": sample_rows[0], "hours_per_week": sample_rows[1],
                                "education": sample_rows[2]},
            "classify": examples,
            "regress": examples,
        },
        final_loss=loss)


def build_mlp_lite(seed: int, log: Callable[[str], None] = lambda s: None) -> TrainedModel:
    """The mlp (same seed, same weights), published as TensorFlow Lite with its `serving_default` signature.
    One signature is one TFLite subgraph, the only layout TF Serving's C++ TFLite path can describe (it looks
    signature tensors up in the first subgraph), so the official image and the embedded server agree on it."""
    trained = build_mlp(seed, log)
    return dataclasses.replace(trained, name="mlp_lite", tflite=True,
                               endpoints={"serving_default": trained.endpoints["serving_default"]},
                               samples={"serving_default": trained.samples["serving_default"]})


ZOO: dict[str, Callable[..., TrainedModel]] = {
    "linear": build_linear,
    "mlp": build_mlp,
    "multi": build_multi,
    "census": build_census,
    "mlp_lite": build_mlp_lite,
}
