"""TF Serving's gRPC API without TensorFlow: `Client(target).predict(model, {"x": array})`.

The message classes are built at import from descriptors generated from the installed TF Serving packages
(`_descriptors.py`), in a private descriptor pool, so this package needs only grpcio, protobuf and numpy and
can live next to TensorFlow in one process."""

from tfsb_client.client import Client, ServingError

__all__ = ["Client", "ServingError"]
