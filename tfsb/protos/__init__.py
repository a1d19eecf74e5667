"""TF Serving's message classes without TensorFlow.

`tensorflow-serving-api`'s `*_pb2` modules import `tensorflow` (4–6 s, its C++ start-up logging); these
classes are built at import from the serialized descriptors in `_descriptors.py` (generated from those same
packages by `make protos`) in a private descriptor pool, so the clients and the shared codecs need only
protobuf, and the classes can live beside TensorFlow's own in one process: the wire format is the same, the
Python classes are not (`coerce` converts a message of the same type from the other pool).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from tfsb.protos._descriptors import FILES

POOL = descriptor_pool.DescriptorPool()
for _name, _blob in FILES:
    POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(_blob))


def message(full_name: str) -> type[Message]:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


def enum_values(full_name: str) -> dict[str, int]:
    return {v.name: v.number for v in POOL.FindEnumTypeByName(full_name).values}


M = TypeVar("M", bound=Message)


def coerce(msg: Message, cls: type[M]) -> M:
    """`msg` as a `cls`: itself, or the same message re-read from its bytes when it comes from another
    descriptor pool (tensorflow-serving-api's classes, for callers that build their requests with those)."""
    if isinstance(msg, cls):
        return msg
    if msg.DESCRIPTOR.full_name != cls.DESCRIPTOR.full_name:
        raise TypeError(f"expected a {cls.DESCRIPTOR.full_name}, got a {msg.DESCRIPTOR.full_name}")
    return cls.FromString(msg.SerializeToString())


_S = "tensorflow.serving."
TensorProto = message("tensorflow.TensorProto")
Example = message("tensorflow.Example")
Feature = message("tensorflow.Feature")
Input = message(_S + "Input")
PredictRequest = message(_S + "PredictRequest")
PredictResponse = message(_S + "PredictResponse")
ClassificationRequest = message(_S + "ClassificationRequest")
ClassificationResponse = message(_S + "ClassificationResponse")
RegressionRequest = message(_S + "RegressionRequest")
RegressionResponse = message(_S + "RegressionResponse")
MultiInferenceRequest = message(_S + "MultiInferenceRequest")
MultiInferenceResponse = message(_S + "MultiInferenceResponse")
GetModelMetadataRequest = message(_S + "GetModelMetadataRequest")
GetModelMetadataResponse = message(_S + "GetModelMetadataResponse")
SignatureDefMap = message(_S + "SignatureDefMap")
GetModelStatusRequest = message(_S + "GetModelStatusRequest")
GetModelStatusResponse = message(_S + "GetModelStatusResponse")
ReloadConfigRequest = message(_S + "ReloadConfigRequest")
ReloadConfigResponse = message(_S + "ReloadConfigResponse")
ModelServerConfig = message(_S + "ModelServerConfig")
ModelConfig = message(_S + "ModelConfig")
PredictionLog = message(_S + "PredictionLog")

DATA_TYPES: dict[str, int] = enum_values("tensorflow.DataType")  # "DT_FLOAT" -> 1
ERROR_CODES: dict[str, int] = enum_values("tensorflow.error.Code")  # "NOT_FOUND" -> 5

# (service, method) -> (request class, response class): what a stub and a generic handler both need
METHODS: dict[tuple[str, str], tuple[type[Message], type[Message]]] = {
    ("PredictionService", "Predict"): (PredictRequest, PredictResponse),
    ("PredictionService", "Classify"): (ClassificationRequest, ClassificationResponse),
    ("PredictionService", "Regress"): (RegressionRequest, RegressionResponse),
    ("PredictionService", "MultiInference"): (MultiInferenceRequest, MultiInferenceResponse),
    ("PredictionService", "GetModelMetadata"): (GetModelMetadataRequest, GetModelMetadataResponse),
    ("ModelService", "GetModelStatus"): (GetModelStatusRequest, GetModelStatusResponse),
    ("ModelService", "HandleReloadConfigRequest"): (ReloadConfigRequest, ReloadConfigResponse),
}
