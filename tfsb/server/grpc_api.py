"""gRPC transport: `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService` and
`grpc.health.v1.Health`. Each method converts protos to the core's arguments and back; errors are
mapped once in `_rpc`."""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent import futures
from typing import Callable

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from tfsb.server.admission import MemoryBudget, Reservation
from tfsb.server.core import Core
from tfsb.errors import (Code, FailedPreconditionError, InternalError, InvalidArgumentError,
                            PermissionDeniedError, ServingError, UnavailableError)
from tfsb.server.registry import ModelRegistry
from tfsb.wire import tensor_proto
from tfsb.wire.spec import spec_from_proto

log = logging.getLogger("tfsb.server.grpc")

MAX_MESSAGE = 2**31 - 1
_MAX_ERROR_LEN = 1024


def _abort(context: grpc.ServicerContext, err: ServingError) -> None:
    msg = err.message
    if len(msg) > _MAX_ERROR_LEN:  # grpc_status_util.cc
        msg = msg[:_MAX_ERROR_LEN] + "...TRUNCATED"
    context.abort(grpc.StatusCode[err.code.name], msg)


class _Sized:
    """A request as the guarded deserializer hands it over: the message and its wire size, or the reason it
    was not parsed at all (`request` None)."""

    __slots__ = ("request", "nbytes", "refused")

    def __init__(self, request, nbytes: int, refused: ServingError | None = None):
        self.request, self.nbytes, self.refused = request, nbytes, refused


def _guarded_deserializer(parse: Callable, budget: MemoryBudget) -> Callable:
    """Refuse a message the memory budget cannot hold (its parsed copy plus its decoded tensors) before
    protobuf parses it: the only moment a gRPC server can decline bytes that have already arrived."""

    def deserialize(raw: bytes) -> _Sized:
        try:
            budget.check(2 * len(raw), f"A request of {len(raw)} bytes")
        except ServingError as e:
            return _Sized(None, len(raw), e)
        return _Sized(parse(raw), len(raw))

    return deserialize


class CallExecutor(futures.ThreadPoolExecutor):
    """The gRPC server's worker pool, counting its unfinished tasks: every unary RPC from its arrival (queued,
    receiving its message, handled) to its answer. Open health Watch streams hold no task (they run in
    grpcio's non-blocking mode), so `pending == 0` means only such streams are left."""

    def __init__(self, max_workers: int):
        super().__init__(max_workers=max_workers, thread_name_prefix="grpc")
        self._pending = 0
        self._count_lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _count(self, n: int) -> None:
        with self._count_lock:
            self._pending += n

    def submit(self, fn, /, *args, **kwargs):
        def task():
            try:
                return fn(*args, **kwargs)
            finally:
                self._count(-1)

        self._count(1)
        try:
            return super().submit(task)
        except BaseException:
            self._count(-1)
            raise


def drain(server: grpc.Server, calls: CallExecutor, grace: float) -> None:
    """Stop accepting; let in-flight requests finish within `grace`; then cancel what is left. Open health
    Watch streams (their last message said NOT_SERVING) are cancelled as soon as no request is left, so a
    watcher cannot hold shutdown for the whole grace period."""
    done = server.stop(grace)
    deadline = time.monotonic() + grace
    while not done.wait(0.05):
        if calls.pending == 0 or time.monotonic() >= deadline:
            server.stop(None)  # cancels the remaining calls at once
            break
    done.wait(grace + 1)


def _rpc(api: str, count: bool = True) -> Callable:
    """Run a handler, record TF Serving's request metrics, and turn ServingError into a gRPC status. The
    request's wire size is held in the memory budget for as long as the handler runs."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(self, sized, context):
            t0 = time.perf_counter()
            request = sized.request if isinstance(sized, _Sized) else sized
            model = self.core.metric_model_name(_model_name(request)) if request is not None else ""
            self.in_flight.inc()
            held = None
            try:
                if isinstance(sized, _Sized):
                    if sized.refused is not None:
                        raise sized.refused
                    held = self.core.budget.reserve(sized.nbytes, f"A request of {sized.nbytes} bytes")
                resp = fn(self, request, context, held)
            except ServingError as e:
                if count:
                    self.metrics.request(model, api, "GRPC", e.code.name, None)
                _abort(context, e)
            except Exception as e:  # noqa: BLE001 - never let a bug kill the connection silently
                log.exception("%s failed", api)
                if count:
                    self.metrics.request(model, api, "GRPC", "INTERNAL", None)
                _abort(context, InternalError(f"{type(e).__name__}: {e}"))
            finally:
                self.in_flight.dec()
                if held is not None:
                    held.release()
            if count:
                self.metrics.request(model, api, "GRPC", "OK", time.perf_counter() - t0)
            return resp

        return handler

    return wrap


class ProtoInputs:
    """The Predict request's TensorProtos, decoded only after the core has checked the input names against
    the resolved signature, and only once their declared size has been reserved in the memory budget."""

    def __init__(self, protos, held: Reservation | None):
        self._protos = protos
        self._held = held
        self.names = list(protos.keys())

    def __call__(self, sig) -> dict:
        total = 0
        for alias, proto in self._protos.items():
            try:
                total += tensor_proto.decoded_bytes(proto)
            except ServingError as e:
                raise InvalidArgumentError(f"tensor parsing error: {alias} ({e.message})") from e
        if self._held is not None:
            self._held.grow(total, "The request's tensors")
        inputs = {}
        for alias, proto in self._protos.items():
            try:
                inputs[alias] = tensor_proto.to_numpy(proto, checked=True)  # sized just above
            except ServingError as e:
                raise InvalidArgumentError(f"tensor parsing error: {alias} ({e.message})") from e
            except (ValueError, MemoryError) as e:  # whatever numpy refuses is the request's fault
                raise InvalidArgumentError(f"tensor parsing error: {alias} ({e})") from e
        return inputs

    @staticmethod
    def missing_signature(name: str) -> ServingError:
        return FailedPreconditionError(f'Serving signature key "{name}" not found.')


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
        self.metrics, self.in_flight = core.metrics, core.metrics.in_flight("GRPC")
        self.tensor_content = tensor_content

    @_rpc("Predict")
    def Predict(self, request: predict_pb2.PredictRequest, context, held=None) -> predict_pb2.PredictResponse:
        _require_spec(request)
        spec = spec_from_proto(request.model_spec)
        pred = self.core.predict(spec, ProtoInputs(request.inputs, held), list(request.output_filter))
        resp = predict_pb2.PredictResponse()
        for alias, arr in pred.outputs.items():
            tensor_proto.from_numpy(arr, as_content=self.tensor_content, into=resp.outputs[alias])
        _fill_spec(resp.model_spec, spec.name, pred.version, pred.signature_name)
        return resp

    def _examples(self, request, run, response_cls):
        _require_spec(request)
        spec = spec_from_proto(request.model_spec)
        version, result = run(spec, request.input)
        resp = response_cls(result=result)
        _fill_spec(resp.model_spec, spec.name, version, spec.signature)
        return resp

    @_rpc("Classify")
    def Classify(self, request, context, held=None) -> classification_pb2.ClassificationResponse:
        return self._examples(request, self.core.classify, classification_pb2.ClassificationResponse)

    @_rpc("Regress")
    def Regress(self, request, context, held=None) -> regression_pb2.RegressionResponse:
        return self._examples(request, self.core.regress, regression_pb2.RegressionResponse)

    @_rpc("MultiInference")
    def MultiInference(self, request, context, held=None):
        return self.core.multi_inference(request)

    @_rpc("GetModelMetadata", count=False)
    def GetModelMetadata(self, request, context, held=None) -> get_model_metadata_pb2.GetModelMetadataResponse:
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
    """GetModelStatus, and the admin API HandleReloadConfigRequest: off, unix-socket only, or open (TF
    Serving's behaviour) per `--model_config_reload_api`. One reload runs at a time; a second one waiting
    behind it gives up after a few seconds instead of pinning a worker thread that Predict needs."""

    def __init__(self, core: Core, registry: ModelRegistry, *, reload_api: str = "enabled",
                 reload_wait_s: float = 60.0, on_reloaded: Callable | None = None):
        self.core = core
        self.metrics, self.in_flight = core.metrics, core.metrics.in_flight("GRPC")
        self.registry = registry
        self.reload_api = reload_api
        self.reload_wait_s = reload_wait_s
        self.on_reloaded = on_reloaded  # (config, seconds left): sibling worker processes apply it too
        self._reloading = threading.BoundedSemaphore(1)

    @_rpc("GetModelStatus", count=False)
    def GetModelStatus(self, request, context, held=None) -> get_model_status_pb2.GetModelStatusResponse:
        _require_spec(request)
        ms = request.model_spec
        return self.core.status_proto(ms.name,
                                      ms.version.value if ms.WhichOneof("version_choice") == "version" else None)

    def _admit_reload(self, context) -> None:
        if self.reload_api == "disabled":
            raise PermissionDeniedError("HandleReloadConfigRequest is disabled on this server "
                                        "(--model_config_reload_api=disabled)")
        if self.reload_api == "unix_socket_only" and not context.peer().startswith("unix:"):
            raise PermissionDeniedError("HandleReloadConfigRequest is only accepted on the unix socket "
                                        "(--model_config_reload_api=unix_socket_only, --grpc_socket_path)")

    @_rpc("HandleReloadConfigRequest", count=False)
    def HandleReloadConfigRequest(self, request, context, held=None) -> model_management_pb2.ReloadConfigResponse:
        self._admit_reload(context)
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgumentError("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                       "Only ModelConfigList is currently supported")
        remaining = context.time_remaining()
        wait = self.reload_wait_s if remaining is None else max(0.0, min(self.reload_wait_s, remaining - 0.05))
        if not self._reloading.acquire(timeout=min(wait, _RELOAD_QUEUE_S)):
            raise UnavailableError("Another model config reload is in progress; retry when it has finished")
        t0 = time.monotonic()
        try:
            self.registry.apply(request.config, wait_seconds=wait, reload=True)
            if self.on_reloaded is not None:
                self.on_reloaded(request.config, max(0.0, wait - (time.monotonic() - t0)))
        finally:
            self._reloading.release()
        resp = model_management_pb2.ReloadConfigResponse()
        resp.status.error_code = Code.OK
        for name in request.metric_names:
            resp.metric.add(name=name, int64_value_increase=0)  # TF reports 0 for metrics it does not know
        return resp


_RELOAD_QUEUE_S = 5.0
_PREDICTION_METHODS = {
    "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
    "Classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
    "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
    "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
    "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                         get_model_metadata_pb2.GetModelMetadataResponse),
}
_MODEL_METHODS = {
    "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse),
    "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest, model_management_pb2.ReloadConfigResponse),
}


def _handlers(servicer, methods: dict, budget: MemoryBudget) -> dict[str, grpc.RpcMethodHandler]:
    """The generated `add_*Servicer_to_server`, with the budget-guarded deserializer on every method."""
    return {m: grpc.unary_unary_rpc_method_handler(getattr(servicer, m),
                                                   request_deserializer=_guarded_deserializer(req.FromString, budget),
                                                   response_serializer=resp.SerializeToString)
            for m, (req, resp) in methods.items()}


def build_server(core: Core, registry: ModelRegistry, *, max_workers: int, tensor_content: bool,
                 health_servicer=None, extra_options: list[tuple[str, object]] = (),
                 max_inflight: int = 0, reload_api: str = "enabled", reload_wait_s: float = 60.0,
                 on_reloaded: Callable | None = None, reuse_port: bool = False,
                 executor: CallExecutor | None = None) -> grpc.Server:
    """Beyond `max_inflight` concurrent RPCs grpcio answers RESOURCE_EXHAUSTED at once (no unbounded queue)."""
    # --grpc_channel_arguments override the defaults (grpc core would keep the first duplicate)
    options = list({**{"grpc.max_receive_message_length": MAX_MESSAGE, "grpc.max_send_message_length": MAX_MESSAGE,
                       "grpc.so_reuseport": int(reuse_port)}, **dict(extra_options)}.items())
    server = grpc.server(executor if executor is not None else CallExecutor(max_workers),
                         options=options,
                         maximum_concurrent_rpcs=max_inflight or None)
    # registered methods: grpc core matches the method name itself instead of asking Python handlers per call
    server.add_registered_method_handlers("tensorflow.serving.PredictionService", _handlers(
        PredictionServicer(core, tensor_content=tensor_content), _PREDICTION_METHODS, core.budget))
    server.add_registered_method_handlers("tensorflow.serving.ModelService", _handlers(
        ModelServicer(core, registry, reload_api=reload_api, reload_wait_s=reload_wait_s, on_reloaded=on_reloaded),
        _MODEL_METHODS, core.budget))
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
