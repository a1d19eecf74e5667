"""Embedded model server: wire- and config-compatible with TensorFlow Serving's tensorflow_model_server."""

__version__ = "0.1.0"
