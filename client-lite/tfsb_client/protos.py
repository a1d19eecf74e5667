"""Message classes from the generated descriptors (a private pool: no clash with TensorFlow's own)."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tfsb_client._descriptors import FILES

POOL = descriptor_pool.DescriptorPool()
for _name, _blob in FILES:
    POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(_blob))


def message(full_name: str):
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


TensorProto = message("tensorflow.TensorProto")
PredictRequest = message("tensorflow.serving.PredictRequest")
PredictResponse = message("tensorflow.serving.PredictResponse")
GetModelStatusRequest = message("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = message("tensorflow.serving.GetModelStatusResponse")
GetModelMetadataRequest = message("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = message("tensorflow.serving.GetModelMetadataResponse")
SignatureDefMap = message("tensorflow.serving.SignatureDefMap")
