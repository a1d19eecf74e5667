"""`tensorflow.ProfilerService` on the model server's own gRPC port (`--enable_profiler`, on by default), as
TF Serving registers TSL's profiler service there (`model_servers/server.cc`).

`Profile` runs an in-process TensorFlow profiler session for `duration_ms`, then writes the captured XSpace
where TensorFlow's profiler client and TensorBoard expect it — `<repository_root>/<session_id>/
<host_name>.<timestamp>.xplane.pb` (TSL's `profiler_service_impl.cc`) — and answers whether the trace is
empty. `Terminate` ends a running session early. No extra port is opened (TensorFlow's own
`tf.profiler.experimental.server.start` would listen on every interface).

The messages come from `proto/profiler_service.proto` (TSL's names and field numbers), compiled by
grpcio-tools (`make protos`): the TensorFlow wheel ships only `ProfileOptions` and `XSpace` as Python modules.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
import time

import grpc

from tfsb.server.lifecycle import Lifecycle

log = logging.getLogger("tfsb.server.profiler")

_SERVICE = "tensorflow.ProfilerService"


def _messages() -> dict[str, type]:
    """The service's message classes (compiled from proto/profiler_service.proto; they import TensorFlow's
    ProfileOptions, so only a server with the profiler on loads them)."""
    from tfsb.server.proto import profiler_service_pb2 as pb

    return {n: getattr(pb, n) for n in ("ProfileRequest", "ProfileResponse", "TerminateRequest", "TerminateResponse")}


def _tracer_options(opts) -> dict[str, int]:
    """ProfileOptions → the profiler session's options; `version` 0 means "use the defaults" (proto3 zeros
    are not TSL's defaults: host tracer level 2, device tracer level 1)."""
    if opts.version == 0:
        return {"host_tracer_level": 2, "device_tracer_level": 1, "python_tracer_level": 0}
    return {"host_tracer_level": opts.host_tracer_level, "device_tracer_level": opts.device_tracer_level,
            "python_tracer_level": opts.python_tracer_level}


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message, walked on the wire: XSpace strings are not
    always valid UTF-8, which Python's protobuf refuses to parse."""
    from google.protobuf.internal.decoder import _DecodeVarint

    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _DecodeVarint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            value, pos = _DecodeVarint(buf, pos)
        elif wt == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _DecodeVarint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        yield num, wt, value


_XSPACE_PLANES, _XPLANE_LINES, _XLINE_EVENTS = 1, 3, 4


def _is_empty(xspace: bytes) -> bool:
    """TSL's IsEmpty: no plane has a line with an event."""
    for num, wt, plane in _fields(xspace):
        if num == _XSPACE_PLANES and wt == 2:
            for lnum, lwt, line in _fields(plane):
                if lnum == _XPLANE_LINES and lwt == 2:
                    if any(n == _XLINE_EVENTS and w == 2 for n, w, _ in _fields(line)):
                        return False
    return True


class ProfilerServicer:
    """One profiling session at a time per process (TensorFlow's profiler is process-wide)."""

    def __init__(self, messages: dict[str, type], lifecycle: Lifecycle | None = None):
        self._m = messages
        self._busy = threading.Lock()
        self._terminated: set[str] = set()
        self._lifecycle = lifecycle

    def Profile(self, request, context):
        from tensorflow.python.profiler.internal import _pywrap_profiler

        if not self._busy.acquire(blocking=False):
            context.abort(grpc.StatusCode.INTERNAL, "Another profiling session is active.")
        scratch = tempfile.mkdtemp(prefix="tfsb-profile-")
        try:
            session = _pywrap_profiler.ProfilerSession()
            try:
                session.start(scratch, _tracer_options(request.opts))
            except Exception as e:  # noqa: BLE001 - pybind raises plain exceptions
                context.abort(grpc.StatusCode.INTERNAL, str(e))
            end = time.monotonic() + request.duration_ms / 1000.0
            while time.monotonic() < end:  # TSL sleeps in 1 ms steps, watching for cancellation
                if not context.is_active():
                    session.stop()
                    context.abort(grpc.StatusCode.CANCELLED, "Profiling was cancelled")
                if request.session_id in self._terminated or (self._lifecycle is not None and self._lifecycle.stopping):
                    break
                time.sleep(min(0.01, max(0.0, end - time.monotonic())))
            session.export_to_tb()  # stops the session and writes the XSpace under `scratch`
            self._terminated.discard(request.session_id)
            captured = glob.glob(os.path.join(scratch, "**", "*.xplane.pb"), recursive=True)
            empty = True
            if captured:
                with open(captured[0], "rb") as f:
                    empty = _is_empty(f.read())
            if captured and request.repository_root:
                self._save(request, captured[0])
            return self._m["ProfileResponse"](empty_trace=empty)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self._busy.release()

    @staticmethod
    def _save(request, captured: str) -> None:
        run_dir = os.path.join(request.repository_root, request.session_id)
        os.makedirs(run_dir, exist_ok=True)
        name = f"{request.host_name}.{time.strftime('%Y_%m_%d_%H_%M_%S')}".replace(":", "_")
        path = os.path.join(run_dir, name + ".xplane.pb")
        shutil.move(captured, path)
        log.info("Collecting XSpace to repository: %s", path)

    def Terminate(self, request, context):
        self._terminated.add(request.session_id)
        return self._m["TerminateResponse"]()


def register(server: grpc.Server, lifecycle: Lifecycle | None = None) -> None:
    """Add the service to a gRPC server (before it starts)."""
    m = _messages()
    servicer = ProfilerServicer(m, lifecycle)
    server.add_registered_method_handlers(_SERVICE, {
        "Profile": grpc.unary_unary_rpc_method_handler(
            servicer.Profile, request_deserializer=m["ProfileRequest"].FromString,
            response_serializer=m["ProfileResponse"].SerializeToString),
        "Terminate": grpc.unary_unary_rpc_method_handler(
            servicer.Terminate, request_deserializer=m["TerminateRequest"].FromString,
            response_serializer=m["TerminateResponse"].SerializeToString),
    })
