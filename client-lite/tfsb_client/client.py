"""The gRPC client: Predict, GetModelStatus, GetModelMetadata with numpy in and out."""

from __future__ import annotations

from typing import Mapping

import grpc
import numpy as np

from tfsb_client import protos
from tfsb_client.tensors import NAMES, to_numpy, to_proto

_STATES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


class ServingError(Exception):
    """A gRPC error from the server: `code` is the status name (NOT_FOUND, INVALID_ARGUMENT, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class Client:
    def __init__(self, target: str = "localhost:8500", *, timeout: float = 30.0):
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 2**31 - 1),
                                                              ("grpc.max_receive_message_length", 2**31 - 1)])

        def rpc(service: str, method: str, response):
            return self.channel.unary_unary(f"/tensorflow.serving.{service}/{method}",
                                            request_serializer=lambda m: m.SerializeToString(),
                                            response_deserializer=response.FromString)

        self._predict = rpc("PredictionService", "Predict", protos.PredictResponse)
        self._metadata = rpc("PredictionService", "GetModelMetadata", protos.GetModelMetadataResponse)
        self._status = rpc("ModelService", "GetModelStatus", protos.GetModelStatusResponse)

    def close(self) -> None:
        self.channel.close()

    def _call(self, fn, request, timeout):
        try:
            return fn(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code().name, e.details() or "") from None

    @staticmethod
    def _spec(spec, model: str, version: int | None, label: str | None, signature: str = "") -> None:
        spec.name = model
        if signature:
            spec.signature_name = signature
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label

    def predict(self, model: str, inputs: Mapping[str, object], *, signature: str = "", version: int | None = None,
                label: str | None = None, timeout: float | None = None) -> dict[str, np.ndarray]:
        req = protos.PredictRequest()
        self._spec(req.model_spec, model, version, label, signature)
        for name, value in inputs.items():
            req.inputs[name].CopyFrom(to_proto(value))
        resp = self._call(self._predict, req, timeout)
        return {k: to_numpy(v) for k, v in resp.outputs.items()}

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[dict]:
        req = protos.GetModelStatusRequest()
        self._spec(req.model_spec, model, version, None)
        resp = self._call(self._status, req, timeout)
        return [{"version": s.version, "state": _STATES.get(s.state, str(s.state)),
                 "error_message": s.status.error_message} for s in resp.model_version_status]

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> dict:
        req = protos.GetModelMetadataRequest()
        self._spec(req.model_spec, model, version, label)
        req.metadata_field.append("signature_def")
        resp = self._call(self._metadata, req, timeout)
        sdm = protos.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)

        def tensors(m):
            return {a: {"dtype": NAMES.get(t.dtype, str(t.dtype)),
                        "shape": None if t.tensor_shape.unknown_rank else [d.size for d in t.tensor_shape.dim]}
                    for a, t in sorted(m.items())}

        return {"model": resp.model_spec.name, "version": resp.model_spec.version.value,
                "signature_def": {n: {"method_name": sd.method_name, "inputs": tensors(sd.inputs),
                                      "outputs": tensors(sd.outputs)}
                                  for n, sd in sorted(sdm.signature_def.items()) if not n.startswith("__")}}
