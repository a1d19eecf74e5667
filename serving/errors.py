"""One exception tree for the server. Each error carries its canonical code and TF Serving's message text;
transports map it once: gRPC uses the code as is, REST derives the HTTP status from TF Serving's table
(`model_servers/http_server.cc::ToHTTPStatusCode`)."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """absl / TF error codes; numerically identical to gRPC status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409, Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """Base of every error a request or a load can produce."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def __str__(self) -> str:  # TF's Status::ToString form, used in wrapped messages
        return f"{self.code.name}: {self.message}"


def _make(code: Code) -> type[ServingError]:
    name = "".join(p.capitalize() for p in code.name.split("_")) + "Error"
    return type(name, (ServingError,), {"code": code, "__doc__": f"{code.name} ({HTTP_STATUS[code]})."})


InvalidArgumentError = _make(Code.INVALID_ARGUMENT)
NotFoundError = _make(Code.NOT_FOUND)
FailedPreconditionError = _make(Code.FAILED_PRECONDITION)
UnimplementedError = _make(Code.UNIMPLEMENTED)
UnavailableError = _make(Code.UNAVAILABLE)
ResourceExhaustedError = _make(Code.RESOURCE_EXHAUSTED)
DeadlineExceededError = _make(Code.DEADLINE_EXCEEDED)
InternalError = _make(Code.INTERNAL)
UnknownError = _make(Code.UNKNOWN)
DataLossError = _make(Code.DATA_LOSS)
CancelledError = _make(Code.CANCELLED)
PermissionDeniedError = _make(Code.PERMISSION_DENIED)


def from_tf_exception(exc: BaseException) -> ServingError:
    """Carry a TensorFlow runtime error (tf.errors.OpError) through with its own code and message."""
    code = getattr(exc, "error_code", None)
    msg = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, ServingError):
        return exc
    try:
        return ServingError(msg, Code(int(code))) if code is not None else UnknownError(msg)
    except ValueError:
        return UnknownError(msg)
