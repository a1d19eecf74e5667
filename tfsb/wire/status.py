"""Canonical status codes and TF Serving's code → HTTP status table (`http_server.cc::ToHTTPStatusCode`),
shared by the server (which maps every error once) and the clients (which map HTTP answers back).

REST error bodies are only `{"error": "..."}`, and several codes share an HTTP status (INVALID_ARGUMENT,
FAILED_PRECONDITION and OUT_OF_RANGE are all 400), so the embedded server also names the code in the
`CODE_HEADER` response header; a client falls back to `code_for_http` against servers that do not send it.
"""

from __future__ import annotations

import enum

CODE_HEADER = "x-tf-serving-code"
VERSION_HEADER = "x-tf-serving-model-version"  # the version that answered a predict/classify/regress


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


# HTTP status -> the code a client reports when the server did not name one: the most common code of each
# status (400 is INVALID_ARGUMENT far more often than FAILED_PRECONDITION or OUT_OF_RANGE).
_HTTP_TO_CODE: dict[int, Code] = {}
for _code, _status in HTTP_STATUS.items():
    _HTTP_TO_CODE.setdefault(_status, _code)
_HTTP_TO_CODE[500] = Code.INTERNAL
_HTTP_TO_CODE[409] = Code.ABORTED


def code_for_http(status: int, header: str | None = None) -> Code:
    """The code of an HTTP answer: the server's `CODE_HEADER` when it sent a valid one, else the table."""
    if header:
        try:
            return Code[header.strip().upper()]
        except KeyError:
            pass
    if status == 200:
        return Code.OK
    return _HTTP_TO_CODE.get(status, Code.UNKNOWN)
