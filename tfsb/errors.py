"""One exception tree for the server. Each error carries its canonical code and TF Serving's message text;
transports map it once: gRPC uses the code as is, REST derives the HTTP status from TF Serving's table
(`model_servers/http_server.cc::ToHTTPStatusCode`)."""

from __future__ import annotations

from tfsb.wire.status import HTTP_STATUS, Code  # noqa: F401 - errors carry these; callers import them here

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
