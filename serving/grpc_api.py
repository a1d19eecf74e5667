"""gRPC transport: `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService` and
`grpc.health.v1.Health`. Each method converts protos to the core's arguments and back; errors are
mapped once in `_rpc`."""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving import codec, metrics
from serving.core import Core, spec_from_proto
from serving.errors import Code, InternalError, InvalidArgumentError, ServingError
from serving.registry import ModelRegistry

log = logging.getLogger("serving.grpc")

MAX_MESSAGE = 2**31 - 1
_MAX_ERROR_LEN = 1024
_IN_FLIGHT = metrics.IN_FLIGHT.labels("GRPC")


def _abort(context: grpc.ServicerContext, err: ServingError) -> None:
    msg = err.message
    if len(msg) > _MAX_ERROR_LEN:  # grpc_status_util.cc
        msg = msg[:_MAX_ERROR_LEN] + "...TRUNCATED"
    context.abort(grpc.StatusCode[err.code.name], msg)


def _rpc(api: str, count: bool = True) -> Callable:
    """Run a handler, record TF Serving's request metrics, and turn ServingError into a gRPC status."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(self, request, context):
            t0 = time.perf_counter()
            model = _model_name(request)
            _IN_FLIGHT.inc()
            try:
                resp = fn(self, request, context)
            except ServingError as e:
                if count:
                    metrics.request(model, api, "GRPC", e.code.name, None)
                _abort(context, e)
            except Exception as e:  # noqa: BLE001 - never let a bug kill the connection silently
                log.exception("%s failed", api)
                if count:
                    metrics.request(model, api, "GRPC", "INTERNAL", None)
                _abort(context, InternalError(f"{type(e).__name__}: {e}"))
            finally:
                _IN_FLIGHT.dec()
            if count:
                metrics.request(model, api, "GRPC", "OK", time.perf_counter() - t0)
            return resp

        return handler

    return wrap


def _model_name(request) -> str:
    if hasattr(request, "model_spec"):
        return request.model_spec.name
    if hasattr(request, "tasks") and request.tasks:
        return request.tasks[0].model_spec.name
    return ""


def _require_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise InvalidArgumentError("Missing ModelSpec")


def _fill_spec(dst, name: str, version: int, signature_name: str | None = None) -> None:
    dst.name = name
    dst.version.value = version
    if signature_name is not None:
        dst.signature_name = signature_name


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: Core, *, tensor_content: bool = False):
        self.core = core
        self.tensor_content = tensor_content

    @_rpc("Predict")
    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        _require_spec(request)
        spec = spec_from_proto(request.model_spec)
        inputs = {}
        for alias, proto in request.inputs.items():
            try:
                inputs[alias] = codec.to_numpy(proto)
            except ServingError as e:
                raise InvalidArgumentError(f"tensor parsing error: {alias} ({e.message})") from e
            except (ValueError, MemoryError) as e:  # whatever numpy refuses is the request's fault
                raise InvalidArgumentError(f"tensor parsing error: {alias} ({e})") from e
        pred = self.core.predict(spec, inputs, list(request.output_filter))
        resp = predict_pb2.PredictResponse()
        for alias, arr in pred.outputs.items():
            resp.outputs[alias].CopyFrom(codec.from_numpy(arr, as_content=self.tensor_content))
        _fill_spec(resp.model_spec, spec.name, pred.version, pred.signature_name)
        return resp

    def _examples(self, request, kind: str, response_cls):
        _require_spec(request)
        spec = spec_from_proto(request.model_spec)
        version, result = getattr(self.core, kind)(spec, request.input)
        resp = response_cls(result=result)
        _fill_spec(resp.model_spec, spec.name, version, spec.signature)
        return resp

    @_rpc("Classify")
    def Classify(self, request, context) -> classification_pb2.ClassificationResponse:
        return self._examples(request, "classify", classification_pb2.ClassificationResponse)

    @_rpc("Regress")
    def Regress(self, request, context) -> regression_pb2.RegressionResponse:
        return self._examples(request, "regress", regression_pb2.RegressionResponse)

    @_rpc("MultiInference")
    def MultiInference(self, request, context):
        return self.core.multi_inference(request)

    @_rpc("GetModelMetadata", count=False)
    def GetModelMetadata(self, request, context) -> get_model_metadata_pb2.GetModelMetadataResponse:
        _require_spec(request)
        spec = spec_from_proto(request.model_spec)
        version, sigdefs = self.core.metadata(spec, list(request.metadata_field))
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(resp.model_spec, spec.name, version)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        for k, v in sigdefs.items():
            sdm.signature_def[k].CopyFrom(v)
        resp.metadata["signature_def"].Pack(sdm)
        return resp


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: Core, registry: ModelRegistry):
        self.core = core
        self.registry = registry

    @_rpc("GetModelStatus", count=False)
    def GetModelStatus(self, request, context) -> get_model_status_pb2.GetModelStatusResponse:
        _require_spec(request)
        ms = request.model_spec
        return self.core.status_proto(ms.name,
                                      ms.version.value if ms.WhichOneof("version_choice") == "version" else None)

    @_rpc("HandleReloadConfigRequest", count=False)
    def HandleReloadConfigRequest(self, request, context) -> model_management_pb2.ReloadConfigResponse:
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgumentError("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                       "Only ModelConfigList is currently supported")
        self.registry.apply(request.config)
        resp = model_management_pb2.ReloadConfigResponse()
        resp.status.error_code = Code.OK
        for name in request.metric_names:
            resp.metric.add(name=name, int64_value_increase=0)  # TF reports 0 for metrics it does not know
        return resp


def build_server(core: Core, registry: ModelRegistry, *, max_workers: int, tensor_content: bool,
                 health_servicer=None, extra_options: list[tuple[str, object]] = (),
                 max_inflight: int = 0) -> grpc.Server:
    """Beyond `max_inflight` concurrent RPCs grpcio answers RESOURCE_EXHAUSTED at once (no unbounded queue)."""
    from concurrent import futures

    # --grpc_channel_arguments override the defaults (grpc core would keep the first duplicate)
    options = list({**{"grpc.max_receive_message_length": MAX_MESSAGE, "grpc.max_send_message_length": MAX_MESSAGE,
                       "grpc.so_reuseport": 0}, **dict(extra_options)}.items())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=options,
                         maximum_concurrent_rpcs=max_inflight or None)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core, tensor_content=tensor_content), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core, registry), server)
    if health_servicer is not None:
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server


def parse_channel_arguments(spec: str) -> list[tuple[str, object]]:
    """`--grpc_channel_arguments=k=v,k=v`: int values when they parse as int32, else strings."""
    out: list[tuple[str, object]] = []
    for item in filter(None, spec.split(",")):
        k, _, v = item.partition("=")
        try:
            iv = int(v)
            out.append((k.strip(), iv if -(2**31) <= iv < 2**31 else v))
        except ValueError:
            out.append((k.strip(), v))
    return out
