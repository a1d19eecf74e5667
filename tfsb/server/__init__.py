"""Embedded model server: wire- and config-compatible with TensorFlow Serving's tensorflow_model_server."""
