"""JSON text as TF Serving writes it (`util/json_tensor.cc` with rapidjson): decimal formatting, the pretty
writer and its single-line-array mode, value debug strings for error messages, and the `{"error": ...}` body.
A leaf: no numpy arrays, no server state."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class Double(float):
    """A JSON number written with a fraction or exponent (rapidjson's IsDouble) from the exact parser;
    orjson already returns float for those and int for plain integers, which is the same distinction."""


def format_decimal(v: float, is_float32: bool) -> str:
    """`WriteDecimal`: %g (6 significant digits) if it round-trips, else max_digits10; `.0` if integral."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    s = f"{v:g}"
    back = float(s)
    if (float(np.float32(back)) if is_float32 else back) != v:
        s = f"{v:.9g}" if is_float32 else f"{v:.17g}"
    if "." not in s and "e" not in s and "inf" not in s:
        s += ".0"
    return s


def _json_string(s: str | bytes) -> str:
    """rapidjson's String(): escapes `"`, `\\` and control characters; leaves `/` and non-ASCII raw."""
    if isinstance(s, bytes):
        s = s.decode("utf-8", "surrogateescape")
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, f"\\u{o:04X}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class PrettyWriter:
    """rapidjson::PrettyWriter (4-space indent) including kFormatSingleLineArray, with an optional byte
    limit after which events are dropped (JsonWriterWithLimit)."""

    def __init__(self, single_line_arrays: bool = False, limit: int | None = None):
        self.buf: list[str] = []
        self.size = 0
        self.stack: list[list] = []  # [in_array, value_count]
        self.single = single_line_arrays
        self.limit = limit

    def _put(self, s: str) -> None:
        self.buf.append(s)
        self.size += len(s.encode("utf-8")) if not s.isascii() else len(s)

    def _ok(self) -> bool:
        return self.limit is None or self.size < self.limit

    def _indent(self) -> None:
        self._put(" " * (4 * len(self.stack)))

    def _prefix(self) -> None:
        if not self.stack:
            return
        level = self.stack[-1]
        if level[0]:
            if level[1] > 0:
                self._put(", " if self.single else ",")
            if not self.single:
                self._put("\n")
                self._indent()
        else:
            if level[1] > 0:
                self._put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self._put("\n")
            if level[1] % 2 == 0:
                self._indent()
        level[1] += 1

    def raw(self, token: str) -> bool:
        if not self._ok():
            return False
        self._prefix()
        self._put(token)
        return True

    def string(self, s: str | bytes) -> bool:
        return self.raw(_json_string(s))

    key = string

    def start(self, array: bool) -> bool:
        if not self._ok():
            return False
        self._prefix()
        self.stack.append([array, 0])
        self._put("[" if array else "{")
        return True

    def end(self) -> bool:
        if not self._ok():
            return False
        array, count = self.stack.pop()
        if count and not (array and self.single):
            self._put("\n")
            self._indent()
        self._put("]" if array else "}")
        return True

    def text(self) -> str:
        return "".join(self.buf)


def _debug_number(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Double) or isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None  # rapidjson's writer refuses non-finite doubles: nothing is written
        r = repr(float(v))
        if "e" in r:
            mant, exp = r.split("e")
            r = f"{mant}e{int(exp)}"
        return r
    return str(v)


def debug_string(value: Any, limit: int = 256) -> str:
    """`JsonValueToDebugString`: pretty, single-line arrays, cut after ~256 bytes."""
    w = PrettyWriter(single_line_arrays=True, limit=limit)
    stack: list = [("v", value)]
    while stack:
        kind, v = stack.pop()
        if kind == "end":
            if not w.end():
                break
            continue
        if kind == "key":
            if not w.key(v):
                break
            continue
        if isinstance(v, dict):
            if not w.start(False):
                break
            stack.append(("end", None))
            for k, x in reversed(list(v.items())):
                stack.append(("v", x))
                stack.append(("key", k))
        elif isinstance(v, list):
            if not w.start(True):
                break
            stack.append(("end", None))
            for x in reversed(v):
                stack.append(("v", x))
        elif isinstance(v, str):
            if not w.string(v):
                break
        elif v is None:
            if not w.raw("null"):
                break
        else:
            tok = _debug_number(v)
            if tok is None or not w.raw(tok):
                break
    return w.text()


def json_type(v: Any) -> str:
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


def error_json(message: str) -> bytes:
    w = PrettyWriter()
    w.start(False)
    w.key("error")
    w.string(message)
    w.end()
    return w.text().encode("utf-8", "replace")
