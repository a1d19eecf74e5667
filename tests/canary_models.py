"""Versions of one small model for canary tests: `y = x @ W + b` with x float32 [batch, 4], plus a
regression signature over tf.Example (feature "x", 4 floats). Version 1 is the baseline; a version made
with `bias` answers off by that much (fails an output gate); `slow` adds a chain of dense matmuls whose
result (computed from the input) is multiplied by 0 (same answers, a much larger p99)."""

from __future__ import annotations

from pathlib import Path


def export(path: Path, *, bias: float = 0.0, slow: int = 0) -> Path:
    import tensorflow as tf

    w = tf.constant([[0.5], [-1.0], [0.25], [2.0]], tf.float32)

    class M(tf.Module):
        def _y(self, x):
            y = tf.matmul(x, w) + (0.125 + bias)
            if slow:
                # depends on the input, so grappler cannot fold the chain into a constant at load time
                h = tf.ones([256, 256], tf.float32) + tf.reduce_mean(x) * 1e-9
                for _ in range(slow):
                    h = tf.matmul(h, h) * 1e-3
                y = y + 0.0 * tf.reduce_sum(h)
            return y

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self._y(x)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([4], tf.float32)})["x"]
            return {"outputs": tf.reshape(self._y(x), [-1])}

    m = M()
    regress = m.regress.get_concrete_function()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.predict.get_concrete_function(),
                                                  "regress": regress})
    return path


def publish(base: Path, name: str, versions: dict[int, dict]) -> Path:
    """base/name/<v>/ for each version's export() keywords; returns the model's base path."""
    root = base / name
    for v, kw in versions.items():
        export(root / str(v), **kw)
    return root
