"""gRPC client for TF Serving's PredictionService/ModelService (and the embedded server)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from clients.base import ClientBase, ServingClientError, TlsFiles, as_inputs, make_input
from serving.wire import tensor_proto
from serving.wire.spec import fill_proto
from serving.wire.tensor_proto import signature_summary

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
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    # ------------------------------------------------------------------------------------ plumbing
    def _call(self, method, request, timeout: float | None):
        return self.retry.call(lambda: self._call_once(method, request, timeout))

    def _call_once(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details() or "") from None

    # ------------------------------------------------------------------------------------ API
    def predict(self, model: str, inputs: Mapping[str, Any] | np.ndarray, *, signature: str = "",
                version: int | None = None, label: str | None = None, timeout: float | None = None,
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        return self.predict_versioned(model, inputs, signature=signature, version=version, label=label,
                                      timeout=timeout, output_filter=output_filter)[0]

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
        req = predict_pb2.PredictRequest(output_filter=list(output_filter))
        fill_proto(req.model_spec, t)
        for k, v in named.items():
            req.inputs[k].CopyFrom(tensor_proto.from_numpy(v, as_content=self.tensor_content and v.dtype != object))
        resp = self._call(self._predict.Predict, req, timeout)
        served = resp.model_spec.version.value if resp.model_spec.HasField("version") else None
        return {k: tensor_proto.to_numpy(v) for k, v in resp.outputs.items()}, served

    def classify(self, model: str, examples, *, signature: str = "", version: int | None = None,
                 label: str | None = None, context: Mapping | None = None,
                 timeout: float | None = None) -> list[list[tuple[str, float]]]:
        req = classification_pb2.ClassificationRequest(input=self._input(examples, context))
        fill_proto(req.model_spec, self._target(model, version, label, signature))
        resp = self._call(self._predict.Classify, req, timeout)
        return [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]

    def regress(self, model: str, examples, *, signature: str = "", version: int | None = None,
                label: str | None = None, context: Mapping | None = None, timeout: float | None = None) -> np.ndarray:
        req = regression_pb2.RegressionRequest(input=self._input(examples, context))
        fill_proto(req.model_spec, self._target(model, version, label, signature))
        resp = self._call(self._predict.Regress, req, timeout)
        return np.array([r.value for r in resp.result.regressions], np.float32)

    def multi_inference(self, model: str, examples, tasks: Sequence[tuple[str, str]], *, version: int | None = None,
                        label: str | None = None, timeout: float | None = None) -> list:
        """tasks: (signature, "classify"|"regress"). Returns per task what classify()/regress() return."""
        req = inference_pb2.MultiInferenceRequest(input=self._input(examples, None))
        for sig, method in tasks:
            task = req.tasks.add(method_name=f"tensorflow/serving/{method}")
            fill_proto(task.model_spec, self._target(model, version, label, sig))
        resp = self._call(self._predict.MultiInference, req, timeout)
        out = []
        for r in resp.results:
            if r.HasField("classification_result"):
                out.append([[(c.label, c.score) for c in cl.classes] for cl in r.classification_result.classifications])
            else:
                out.append(np.array([x.value for x in r.regression_result.regressions], np.float32))
        return out

    @staticmethod
    def _input(examples, context):
        if hasattr(examples, "example_list") or hasattr(examples, "example_list_with_context"):
            return examples
        return make_input(examples, context)

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> dict:
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        fill_proto(req.model_spec, self._target(model, version, label))
        resp = self._call(self._predict.GetModelMetadata, req, timeout)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        return {"model": resp.model_spec.name, "version": resp.model_spec.version.value,
                "signature_def": signature_summary(sdm.signature_def)}

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[dict]:
        req = get_model_status_pb2.GetModelStatusRequest()
        fill_proto(req.model_spec, self._target(model, version))
        resp = self._call(self._models.GetModelStatus, req, timeout)
        return [{"version": s.version, "state": _STATE.get(s.state, str(s.state)),
                 "error_code": s.status.error_code, "error_message": s.status.error_message}
                for s in resp.model_version_status]

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig, *, timeout: float | None = None) -> None:
        req = model_management_pb2.ReloadConfigRequest(config=config)
        self._call(self._models.HandleReloadConfigRequest, req, timeout)


def _cast(arr: np.ndarray, dtype_name: str) -> np.ndarray:
    from tensorflow.core.framework import types_pb2

    npd = tensor_proto.NP_DTYPE.get(types_pb2.DataType.Value(dtype_name))
    return arr if npd is None or arr.dtype == object else arr.astype(npd)
