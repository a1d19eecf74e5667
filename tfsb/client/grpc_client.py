"""gRPC client for TF Serving's PredictionService/ModelService (and the embedded server)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import grpc
import numpy as np
from google.protobuf.message import Message

from tfsb import protos
from tfsb.client.base import ClientBase, ServingClientError, TlsFiles, as_inputs, make_input
from tfsb.wire import tensor_proto
from tfsb.wire.spec import fill_proto
from tfsb.wire.tensor_proto import signature_summary

MAX_MESSAGE = 2**31 - 1  # what TF Serving accepts (builder.SetMaxMessageSize(INT32_MAX))
_STATE = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


class GrpcClient(ClientBase):
    """One channel per client (reuse it); the same retry policy and metadata cache as the REST client."""

    def __init__(self, target: str = "localhost:8500", *, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.05, metadata_ttl: float = 10.0, tensor_content: bool = True,
                 tls: TlsFiles | None = None):
        self.target = target
        self.tls = tls
        self.timeout = timeout
        super().__init__(retries=retries, backoff=backoff, metadata_ttl=metadata_ttl)
        self.tensor_content = tensor_content
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        if tls is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self.channel = grpc.secure_channel(target, tls.credentials(), options=options)
        self._rpc = {method: self.channel.unary_unary(f"/tensorflow.serving.{service}/{method}",
                                                      request_serializer=req.SerializeToString,
                                                      response_deserializer=resp.FromString)
                     for (service, method), (req, resp) in protos.METHODS.items()}

    def close(self) -> None:
        self.channel.close()

    # ------------------------------------------------------------------------------------ plumbing
    def _call(self, method: str, request: Message, timeout: float | None):
        return self.retry.call(lambda: self._call_once(self._rpc[method], request, timeout))

    def _call_once(self, rpc, request: Message, timeout: float | None):
        try:
            return rpc(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details() or "") from None

    # ------------------------------------------------------------------------------------ API
    def predict_versioned(self, model: str, inputs: Mapping[str, Any] | np.ndarray, *, signature: str = "",
                          version: int | None = None, label: str | None = None, timeout: float | None = None,
                          output_filter: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], int | None]:
        """`predict`, and the version that answered (the response's model_spec)."""
        t = self._target(model, version, label, signature)
        bare = not isinstance(inputs, Mapping)
        given = {None: inputs} if bare else inputs
        # a bare array needs the input's name, plain Python values the signature's dtypes (as JSON gets over
        # REST): one signature lookup, from the shared metadata cache
        sig = self.signatures.signature(t) if bare or any(not isinstance(v, np.ndarray) for v in given.values()) \
            else None
        named = as_inputs(inputs, default_name=self.signatures.only_input(sig) if bare else None)
        if sig is not None:
            dtypes = {a: i["dtype"] for a, i in sig["inputs"].items()}
            plain = {k for k, v in zip(named, given.values()) if not isinstance(v, np.ndarray)}
            named = {k: _cast(v, dtypes[k]) if k in dtypes and k in plain else v for k, v in named.items()}
        req = protos.PredictRequest(output_filter=list(output_filter))
        fill_proto(req.model_spec, t)
        for k, v in named.items():
            tensor_proto.from_numpy(v, as_content=self.tensor_content and v.dtype != object, into=req.inputs[k])
        resp = self._call("Predict", req, timeout)
        served = resp.model_spec.version.value if resp.model_spec.HasField("version") else None
        return {k: tensor_proto.to_numpy(v) for k, v in resp.outputs.items()}, served

    def classify(self, model: str, examples, *, signature: str = "", version: int | None = None,
                 label: str | None = None, context: Mapping | None = None,
                 timeout: float | None = None) -> list[list[tuple[str, float]]]:
        req = protos.ClassificationRequest(input=self._input(examples, context))
        fill_proto(req.model_spec, self._target(model, version, label, signature))
        resp = self._call("Classify", req, timeout)
        return [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]

    def regress(self, model: str, examples, *, signature: str = "", version: int | None = None,
                label: str | None = None, context: Mapping | None = None, timeout: float | None = None) -> np.ndarray:
        req = protos.RegressionRequest(input=self._input(examples, context))
        fill_proto(req.model_spec, self._target(model, version, label, signature))
        resp = self._call("Regress", req, timeout)
        return np.array([r.value for r in resp.result.regressions], np.float32)

    def multi_inference(self, model: str, examples, tasks: Sequence[tuple[str, str]], *, version: int | None = None,
                        label: str | None = None, timeout: float | None = None) -> list:
        """tasks: (signature, "classify"|"regress"). Returns per task what classify()/regress() return."""
        req = protos.MultiInferenceRequest(input=self._input(examples, None))
        for sig, method in tasks:
            task = req.tasks.add(method_name=f"tensorflow/serving/{method}")
            fill_proto(task.model_spec, self._target(model, version, label, sig))
        resp = self._call("MultiInference", req, timeout)
        out = []
        for r in resp.results:
            if r.HasField("classification_result"):
                out.append([[(c.label, c.score) for c in cl.classes] for cl in r.classification_result.classifications])
            else:
                out.append(np.array([x.value for x in r.regression_result.regressions], np.float32))
        return out

    @staticmethod
    def _input(examples, context):
        if isinstance(examples, Message):
            return protos.coerce(examples, protos.Input)
        return make_input(examples, context)

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> dict:
        req = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
        fill_proto(req.model_spec, self._target(model, version, label))
        resp = self._call("GetModelMetadata", req, timeout)
        sdm = protos.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        return {"model": resp.model_spec.name, "version": resp.model_spec.version.value,
                "signature_def": signature_summary(sdm.signature_def)}

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[dict]:
        req = protos.GetModelStatusRequest()
        fill_proto(req.model_spec, self._target(model, version))
        resp = self._call("GetModelStatus", req, timeout)
        return [{"version": s.version, "state": _STATE.get(s.state, str(s.state)),
                 "error_code": s.status.error_code, "error_message": s.status.error_message}
                for s in resp.model_version_status]

    def reload_config(self, config: Message, *, timeout: float | None = None) -> None:
        req = protos.ReloadConfigRequest(config=protos.coerce(config, protos.ModelServerConfig))
        self._call("HandleReloadConfigRequest", req, timeout)


def _cast(arr: np.ndarray, dtype_name: str) -> np.ndarray:
    npd = tensor_proto.NP_DTYPE.get(protos.DATA_TYPES[dtype_name])
    return arr if npd is None or arr.dtype == object else arr.astype(npd)
