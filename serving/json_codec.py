"""TF Serving's REST JSON ↔ numpy, reproducing `util/json_tensor.cc` (messages, number typing, float
formatting, rapidjson's pretty layout). A leaf module: no server state, shared with the clients.

Parsing: orjson first (fast); anything it refuses, or anything it would read differently from rapidjson
(NaN/Infinity tokens, trailing bytes, very deep nesting, integers past 64 bits), goes through `_Parser`, an
iterative parser with rapidjson's semantics and error texts. Tensor building tries one `np.asarray` and
falls back to the exact element-by-element walk of `FillTensorProto` whenever the fast path cannot prove it
would give the same answer, so error messages always come from the exact walk.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import numpy as np
import orjson

from serving.codec import DT, NP_DTYPE, dtype_name
from serving.errors import InvalidArgumentError, ServingError, UnimplementedError

ROW, COLUMNAR = "row", "columnar"


class Double(float):
    """A JSON number written with a fraction or exponent (rapidjson's IsDouble) from the exact parser;
    orjson already returns float for those and int for plain integers, which is the same distinction."""


# ================================================================================================ parsing

_ERR = {
    "empty": "The document is empty.",
    "value": "Invalid value.",
    "name": "Missing a name for object member.",
    "colon": "Missing a colon after a name of object member.",
    "obj_comma": "Missing a comma or '}' after an object member.",
    "arr_comma": "Missing a comma or ']' after an array element.",
    "hex": "Incorrect hex digit after \\u escape in string.",
    "surrogate": "The surrogate pair in string is invalid.",
    "escape": "Invalid escape character in string.",
    "quote": "Missing a closing quotation mark in string.",
    "encoding": "Invalid encoding in string.",
    "big": "Number too big to be stored in double.",
    "fraction": "Miss fraction part in number.",
    "exponent": "Miss exponent in number.",
}

_WS = b" \t\n\r"
_ESC = {ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b", ord("f"): "\f", ord("n"): "\n",
        ord("r"): "\r", ord("t"): "\t"}
_NUM_RE = re.compile(rb"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_STR_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')


class _ParseError(Exception):
    def __init__(self, key: str, offset: int):
        self.key, self.offset = key, offset


class _Parser:
    """rapidjson (kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag) in Python:
    no recursion, first duplicate key wins, trailing bytes after the root value are ignored."""

    def __init__(self, data: bytes):
        self.s = data
        self.i = 0

    def _ws(self) -> None:
        s, i, n = self.s, self.i, len(self.s)
        while i < n and s[i] in _WS:
            i += 1
        self.i = i

    def parse(self) -> Any:
        self._ws()
        if self.i >= len(self.s):
            raise _ParseError("empty", self.i)
        stack: list[list] = []  # frames: [container, pending_key]
        while True:
            self._ws()
            if self.i >= len(self.s):
                raise _ParseError("value", self.i)
            c = self.s[self.i]
            if c == ord("{"):
                self.i += 1
                self._ws()
                if self.i < len(self.s) and self.s[self.i] == ord("}"):
                    self.i += 1
                    value = {}
                else:
                    key = self._key()
                    stack.append([{}, key])
                    continue
            elif c == ord("["):
                self.i += 1
                self._ws()
                if self.i < len(self.s) and self.s[self.i] == ord("]"):
                    self.i += 1
                    value = []
                else:
                    stack.append([[], None])
                    continue
            else:
                value = self._scalar()
            # attach `value` to its parent(s), closing containers as they end
            while True:
                if not stack:
                    return value
                frame = stack[-1]
                container = frame[0]
                if isinstance(container, dict):
                    container.setdefault(frame[1], value)
                    self._ws()
                    if self.i < len(self.s) and self.s[self.i] == ord(","):
                        self.i += 1
                        self._ws()
                        frame[1] = self._key()
                        break
                    if self.i < len(self.s) and self.s[self.i] == ord("}"):
                        self.i += 1
                        value = stack.pop()[0]
                        continue
                    raise _ParseError("obj_comma", self.i)
                container.append(value)
                self._ws()
                if self.i < len(self.s) and self.s[self.i] == ord(","):
                    self.i += 1
                    break
                if self.i < len(self.s) and self.s[self.i] == ord("]"):
                    self.i += 1
                    value = stack.pop()[0]
                    continue
                raise _ParseError("arr_comma", self.i)

    def _key(self) -> str:
        if self.i >= len(self.s) or self.s[self.i] != ord('"'):
            raise _ParseError("name", self.i)
        key = self._string()
        self._ws()
        if self.i >= len(self.s) or self.s[self.i] != ord(":"):
            raise _ParseError("colon", self.i)
        self.i += 1
        return key

    def _literal(self, word: bytes, value: Any) -> Any:
        if self.s.startswith(word, self.i):
            self.i += len(word)
            return value
        raise _ParseError("value", self.i)

    def _scalar(self) -> Any:
        s, i = self.s, self.i
        c = s[i]
        if c == ord('"'):
            return self._string()
        if c == ord("t"):
            return self._literal(b"true", True)
        if c == ord("f"):
            return self._literal(b"false", False)
        if c == ord("n"):
            return self._literal(b"null", None)
        if c == ord("N"):
            return self._literal(b"NaN", Double("nan"))
        if c == ord("I"):
            if s.startswith(b"Infinity", i):
                return self._literal(b"Infinity", Double("inf"))
            return self._literal(b"Inf", Double("inf"))
        if c == ord("-") and i + 1 < len(s) and s[i + 1] in b"NI":
            self.i += 1
            if s[i + 1] == ord("N"):
                return Double(-float(self._literal(b"NaN", Double("nan"))))
            v = self._scalar()
            return Double(-v)
        m = _NUM_RE.match(s, i)
        if not m or m.end() == i:
            raise _ParseError("value", i)
        end = m.end()
        if end < len(s) and s[end] == ord("."):
            raise _ParseError("fraction", end + 1)
        if end < len(s) and s[end] in b"eE":
            raise _ParseError("exponent", end + 1)
        self.i = end
        tok = m.group(0)
        if m.group(2) or m.group(3):
            v = float(tok)
            if math.isinf(v):
                raise _ParseError("big", i)
            return Double(v)
        if len(tok) <= 21:  # int() of thousands of digits is slow, and refused beyond 4,300 of them
            v = int(tok)
            if -(2**63) <= v < 2**64:
                return v
        v = float(tok)  # rapidjson reads too-large integers as doubles, and refuses them beyond a double's range
        if math.isinf(v):
            raise _ParseError("big", i)
        return Double(v)

    def _string(self) -> str:
        s = self.s
        i = self.i + 1
        start = self.i
        out: list[str] = []
        while True:
            m = _STR_PLAIN.match(s, i)
            chunk = m.group(0)
            if chunk:
                try:
                    out.append(chunk.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise _ParseError("encoding", i + e.start) from None
            i = m.end()
            if i >= len(s):
                raise _ParseError("quote", start)
            c = s[i]
            if c == ord('"'):
                self.i = i + 1
                return "".join(out)
            if c == ord("\\"):
                if i + 1 >= len(s):
                    raise _ParseError("escape", i)
                e = s[i + 1]
                if e == ord("u"):
                    cp, i = self._hex4(i + 2)
                    if 0xD800 <= cp <= 0xDBFF:
                        if not s.startswith(b"\\u", i):
                            raise _ParseError("surrogate", i)
                        lo, i = self._hex4(i + 2)
                        if not 0xDC00 <= lo <= 0xDFFF:
                            raise _ParseError("surrogate", i)
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                    out.append(chr(cp))
                    continue
                if e not in _ESC:
                    raise _ParseError("escape", i)
                out.append(_ESC[e])
                i += 2
                continue
            raise _ParseError("quote", start)  # raw control character

    def _hex4(self, i: int) -> tuple[int, int]:
        h = self.s[i:i + 4]
        if len(h) < 4 or not all(ch in b"0123456789abcdefABCDEF" for ch in h):
            raise _ParseError("hex", i)
        return int(h, 16), i + 4


def parse(body: bytes) -> dict:
    """Parse a request body; errors are TF Serving's `JSON Parse error: ...` / `... Is not object`."""
    if not body:
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
        fast = True
    except orjson.JSONDecodeError:
        fast = False
    if fast and b'"' in body and _has_duplicate_risk(body):
        fast = False
    if not fast:
        try:
            doc = _Parser(body).parse()
        except _ParseError as e:
            raise InvalidArgumentError(f"JSON Parse error: {_ERR[e.key]} at offset: {e.offset}") from None
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def _has_duplicate_risk(body: bytes) -> bool:
    """orjson keeps the last duplicate key, rapidjson the first: only the top level matters for our keys."""
    return body.count(b'"instances"') > 1 or body.count(b'"inputs"') > 1 or body.count(b'"signature_name"') > 1 \
        or body.count(b'"examples"') > 1 or body.count(b'"context"') > 1


# ================================================================================================ writing

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


# ================================================================================================ request → tensors

_INT32 = (-(2**31), 2**31 - 1)
_INT_RANGES = {DT.DT_INT32: _INT32, DT.DT_INT16: _INT32, DT.DT_INT8: _INT32, DT.DT_UINT8: _INT32,
               DT.DT_INT64: (-(2**63), 2**63 - 1), DT.DT_UINT32: (0, 2**32 - 1), DT.DT_UINT64: (0, 2**64 - 1)}
_JSON_DTYPES = {DT.DT_FLOAT, DT.DT_DOUBLE, DT.DT_STRING, DT.DT_BOOL, *_INT_RANGES}


def _type_error(v: Any, dtype: int) -> InvalidArgumentError:
    return InvalidArgumentError(f"JSON Value: {debug_string(v)} Type: {json_type(v)} is not of expected type: "
                                f"{dtype_name(dtype)}")


def is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def b64_decode(v: Any) -> bytes:
    """absl::Base64Unescape: standard alphabet, padding optional, whitespace ignored."""
    if not is_b64(v):
        raise InvalidArgumentError(f"JSON Value: {debug_string(v)} not formatted correctly for base64 data")
    s = "".join(v["b64"].split())
    if not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", s):
        raise InvalidArgumentError("Unable to base64 decode")
    core = s.rstrip("=")
    if len(core) % 4 == 1 or (s != core and (len(core) + (len(s) - len(core))) % 4 != 0):
        raise InvalidArgumentError("Unable to base64 decode")
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except binascii.Error:
        raise InvalidArgumentError("Unable to base64 decode") from None


def _scalar(v: Any, dtype: int) -> Any:
    """`AddValueToTensor` for one leaf."""
    if isinstance(v, dict):
        if dtype == DT.DT_STRING:
            return b64_decode(v)
        raise _type_error(v, dtype)
    if dtype == DT.DT_FLOAT or dtype == DT.DT_DOUBLE:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _type_error(v, dtype)
        return float(v)
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if isinstance(v, bool) or not isinstance(v, int) or isinstance(v, float) or not lo <= v <= hi:
            raise _type_error(v, dtype)
        return v
    if dtype == DT.DT_STRING:
        if not isinstance(v, str):
            raise _type_error(v, dtype)
        return v.encode("utf-8", "surrogateescape")
    if dtype == DT.DT_BOOL:
        if not isinstance(v, bool):
            raise _type_error(v, dtype)
        return v
    raise UnimplementedError(f"Conversion of JSON Value: {debug_string(v)} to type: {dtype_name(dtype)}")


MAX_RANK = 63  # numpy arrays have at most 64 dimensions, and row format adds the batch dimension


def _dense_shape(v: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if len(shape) > MAX_RANK:
            raise InvalidArgumentError(f"JSON value nests lists deeper than the {MAX_RANK} dimensions a tensor "
                                       "can have here")
        if not v:
            break
        v = v[0]
    return tuple(shape)


def _fill(v: Any, dtype: int, shape: tuple[int, ...], out: list) -> None:
    """`FillTensorProto`: walk the DOM (iteratively) checking level and sizes against `shape`."""
    rank = len(shape)
    stack = [(v, 0)]
    while stack:
        val, level = stack.pop()
        if not isinstance(val, list):
            if level != rank:
                raise InvalidArgumentError(f"JSON Value: {debug_string(val)} found at incorrect level: {level + 1} "
                                           f"in the JSON DOM. Expected at level: {rank}")
            out.append(_scalar(val, dtype))
            continue
        if level >= rank:
            raise InvalidArgumentError(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(val) != shape[level]:
            raise InvalidArgumentError(f"Encountered list at unexpected size: {len(val)} at level: {level} "
                                       f"expected size: {shape[level]}")
        for x in reversed(val):
            stack.append((x, level + 1))


def _np(values: list, dtype: int, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == DT.DT_STRING:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    npd = NP_DTYPE[dtype]
    if dtype in (DT.DT_FLOAT, DT.DT_DOUBLE):
        return np.array(values, dtype=np.float64).astype(npd).reshape(shape)
    return np.array(values, dtype=np.int64 if dtype != DT.DT_UINT64 else np.uint64).astype(npd).reshape(shape)


def _fast(v: Any, dtype: int, allow_fast: bool) -> np.ndarray | None:
    """One np.asarray when the outcome is provably what the exact walk would produce; else None."""
    if not allow_fast or dtype == DT.DT_STRING or not isinstance(v, list):
        return None
    try:
        arr = np.asarray(v)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = arr.dtype.kind
    if dtype in (DT.DT_FLOAT, DT.DT_DOUBLE):
        return arr.astype(NP_DTYPE[dtype]) if kind in "if" else None
    if dtype in _INT_RANGES and kind == "i":
        lo, hi = _INT_RANGES[dtype]
        if arr.size and (arr.min() < lo or arr.max() > hi):
            return None
        return arr.astype(NP_DTYPE[dtype])
    if dtype == DT.DT_BOOL and kind == "b":
        return arr
    return None


def to_tensor(v: Any, dtype: int, allow_fast: bool = True) -> np.ndarray:
    """One JSON value (scalar, nested list, b64 object) as a tensor of the signature's dtype."""
    if dtype not in _JSON_DTYPES:
        leaf = v
        while isinstance(leaf, list) and leaf:
            leaf = leaf[0]
        raise UnimplementedError(f"Conversion of JSON Value: {debug_string(leaf)} to type: {dtype_name(dtype)}")
    arr = _fast(v, dtype, allow_fast)
    if arr is not None and arr.shape == _dense_shape(v):
        return arr
    shape = _dense_shape(v)
    values: list = []
    _fill(v, dtype, shape, values)
    return _np(values, dtype, shape)


def _shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _sig_error(doc: dict) -> InvalidArgumentError:
    return InvalidArgumentError(f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key "
                                "must be a string value.")


def signature_name(doc: dict) -> str:
    """The optional `signature_name` ("" = default); must be a JSON string."""
    s = doc.get("signature_name", "")
    if not isinstance(s, str):
        raise _sig_error(doc)
    return s


def predict_inputs(doc: dict, inputs: dict[str, int], signame: str, allow_fast: bool = True
                   ) -> tuple[str, dict[str, np.ndarray]]:
    """`FillPredictRequestFromJson` after the signature is known: (format, {alias: array})."""
    if not inputs:
        raise InvalidArgumentError(f"Failed to get input map for signature: {signame or 'DEFAULT'}")
    has_inst, has_inp = "instances" in doc, "inputs" in doc
    if has_inst and has_inp:
        raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
                                   "'inputs' or 'instances' keys to exist ")
    if has_inst:
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not inst:
            raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return ROW, _instances(inst, inputs, allow_fast)
    if has_inp:
        return COLUMNAR, _columnar(doc["inputs"], inputs, allow_fast)
    raise InvalidArgumentError("Missing 'inputs' or 'instances' key")


def _instances(inst: list, inputs: dict[str, int], allow_fast: bool) -> dict[str, np.ndarray]:
    names = sorted(inputs)
    if not isinstance(inst[0], dict) and len(inputs) > 1:
        raise InvalidArgumentError("instances is a plain list, but expecting list of objects as multiple input "
                                   "tensors required as per tensorinfo_map")

    def is_obj(v):
        return isinstance(v, dict) and not is_b64(v)

    objects = is_obj(inst[0])
    if not objects:
        name = names[0]
        dtype = inputs[name]
        if allow_fast and dtype != DT.DT_STRING:
            arr = _fast(inst, dtype, True)
            if arr is not None and arr.shape == _dense_shape(inst):
                return {name: arr}
    per_input: dict[str, list[np.ndarray]] = {n: [] for n in names}
    sizes: dict[str, tuple[int, tuple[int, ...]]] = {}

    def add(item, name, index, key_in_msg):
        if name not in inputs:
            raise InvalidArgumentError(f"JSON object: does not have named input: {name}")
        arr = to_tensor(item, inputs[name], allow_fast)
        if name not in sizes:
            sizes[name] = (arr.size, arr.shape)
        elif sizes[name][0] != arr.size:
            raise InvalidArgumentError(f"Expecting tensor size: {sizes[name][0]} but got: {arr.size}")
        elif sizes[name][1] != arr.shape:
            raise InvalidArgumentError(f"Expecting shape {_shape_str(sizes[name][1])} but got: {_shape_str(arr.shape)}")
        per_input[name].append(arr)

    for n, elem in enumerate(inst):
        if objects:
            if not is_obj(elem):
                raise InvalidArgumentError(f"Expecting object but got list at item {n} of input list")
            for key, item in elem.items():
                try:
                    add(item, key, n, True)
                except ServingError as e:
                    raise InvalidArgumentError(f"Failed to process element: {n} key: {key} of 'instances' list. "
                                               f"Error: {e}") from None
            if set(elem) != set(names):
                raise InvalidArgumentError(f"Failed to process element: {n} of 'instances' list. JSON object: "
                                           f"{debug_string(elem)} keys must be equal to: {','.join(names)}")
        else:
            if is_obj(elem):
                raise InvalidArgumentError(f"Expecting value/list but got object at item {n} of input list")
            try:
                add(elem, names[0], n, False)
            except ServingError as e:
                raise InvalidArgumentError(f"Failed to process element: {n} of 'instances' list. Error: {e}") from None
    out = {}
    for name, arrs in per_input.items():
        if arrs:
            out[name] = np.stack(arrs) if arrs[0].dtype != object else _stack_objects(arrs)
    return out


def _stack_objects(arrs: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(arrs), *arrs[0].shape), dtype=object)
    for i, a in enumerate(arrs):
        out[i, ...] = a
    return out


def _columnar(val: Any, inputs: dict[str, int], allow_fast: bool) -> dict[str, np.ndarray]:
    if not isinstance(val, dict) or is_b64(val):
        if len(inputs) > 1:
            raise InvalidArgumentError("inputs is a plain value/list, but expecting an object as multiple input "
                                       "tensors required as per tensorinfo_map")
        name = sorted(inputs)[0]
        return {name: to_tensor(val, inputs[name], allow_fast)}
    out = {}
    for name in sorted(inputs):
        if name not in val:
            raise InvalidArgumentError(f"Missing named input: {name} in 'inputs' object.")
        out[name] = to_tensor(val[name], inputs[name], allow_fast)
    return out


# ================================================================================================ tensors → response

def _float_tokens(arr: np.ndarray) -> list[str]:
    """`format_decimal` for a whole float32/float64 array: `%g` per value, the round trip checked for all at
    once by numpy's C text parser, `max_digits10` only where `%g` lost bits (3× faster than numpy's char
    functions, which loop in Python too)."""
    flat = arr.ravel()
    f32 = flat.dtype == np.float32
    vals = flat.astype(np.float64).tolist()
    tokens = [f"{v:g}" for v in vals]
    back = np.fromstring(" ".join(tokens), sep=" ") if tokens else np.empty(0)
    if f32:
        back = back.astype(np.float32)
    spec = "{:.9g}" if f32 else "{:.17g}"
    for i in np.flatnonzero((back != flat) & np.isfinite(flat)).tolist():
        tokens[i] = spec.format(vals[i])
    for i, t in enumerate(tokens):
        if "." not in t and "e" not in t:
            if t[-1] in "nf":  # nan, inf, -inf
                tokens[i] = "NaN" if t == "nan" else ("-Infinity" if t[0] == "-" else "Infinity")
            else:
                tokens[i] = t + ".0"
    return tokens


def _leaf_tokens(arr: np.ndarray, as_bytes: bool) -> list | None:
    """Flat list of JSON tokens for numeric/bool tensors; None for strings (written via the writer)."""
    k = arr.dtype.kind
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return _float_tokens(arr) if arr.size else []
    if k == "b":
        return ["true" if v else "false" for v in arr.ravel().tolist()]
    if k in "iu":
        return [str(v) for v in arr.ravel().tolist()]
    return None


_WRITABLE = (np.float32, np.float64, np.int32, np.int16, np.int8, np.uint8, np.int64, np.uint32, np.uint64, np.bool_)


def _check_writable(arr: np.ndarray) -> None:
    if arr.dtype.kind in "OSU":
        return
    if arr.dtype.type not in _WRITABLE:
        from serving.codec import dtype_of

        raise InvalidArgumentError(f"Failed to write JSON value for tensor type: {dtype_name(dtype_of(arr))}")


def _write_tensor(w: PrettyWriter, arr: np.ndarray, name: str) -> None:
    """`AddTensorValues`: nested arrays; `_bytes` string outputs as {"b64": ...}."""
    as_bytes = name.endswith("_bytes") and arr.dtype.kind in "OSU"
    tokens = _leaf_tokens(arr, as_bytes)
    if tokens is not None and w.single:
        w.raw(_single_line(tokens, arr.shape))  # nested arrays on one line: same text, one writer event
        return
    flat = arr.ravel().tolist() if tokens is None else tokens
    shape = arr.shape
    idx = 0

    def leaf():
        nonlocal idx
        v = flat[idx]
        idx += 1
        if tokens is not None:
            w.raw(v)
        elif as_bytes:
            w.start(False)
            w.key("b64")
            w.string(base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode())
            w.end()
        else:
            w.string(v if isinstance(v, (bytes, str)) else str(v))

    def rec(dim):
        if dim >= len(shape):
            leaf()
            return
        w.start(True)
        for _ in range(shape[dim]):
            rec(dim + 1)
        w.end()

    rec(0)


def _single_line(tokens: list[str], shape: tuple[int, ...]) -> str:
    """rapidjson's kFormatSingleLineArray text for a nested array of ready tokens."""
    if not shape:
        return tokens[0]
    if 0 in shape:
        def empty(sh):
            return "[]" if sh[0] == 0 else "[" + ", ".join(empty(sh[1:]) for _ in range(sh[0])) + "]"
        return empty(shape)
    parts = tokens
    for dim in reversed(shape):
        parts = ["[" + ", ".join(parts[i:i + dim]) + "]" for i in range(0, len(parts), dim)]
    return parts[0]


def predict_response(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    """`MakeJsonFromTensors` with rapidjson's exact layout."""
    if not outputs:
        raise InvalidArgumentError("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    for n in names:
        _check_writable(outputs[n])
    multi = len(names) > 1
    if fmt == ROW and not multi:
        a = outputs[names[0]]
        if a.ndim == 0:
            raise InvalidArgumentError(f"Tensor name: {names[0]} has no shape information ")
        tokens = _leaf_tokens(a, False)
        if tokens is not None:  # the common case in one piece: rows on one line, the list closed on its own
            if a.shape[0] == 0:
                return b'{\n    "predictions": []\n}'
            text = _single_line(tokens, a.shape)
            return ('{\n    "predictions": ' + text[:-1] + '\n    ]\n}').encode()
    w = PrettyWriter()
    w.start(False)
    if fmt == ROW:
        batch = -1
        for n in names:
            a = outputs[n]
            if a.ndim == 0:
                raise InvalidArgumentError(f"Tensor name: {n} has no shape information ")
            if batch >= 0 and a.shape[0] != batch:
                raise InvalidArgumentError(f"Tensor name: {n} has inconsistent batch size: {a.shape[0]} "
                                           f"expecting: {batch}")
            batch = a.shape[0]
        w.key("predictions")
        w.start(True)
        # numeric tokens are formatted once per tensor (vectorised), then sliced per instance
        tokens = {n: _leaf_tokens(outputs[n], False) for n in names}
        for i in range(batch):
            if multi:
                w.start(False)
            w.single = True
            for n in names:
                if multi:
                    w.key(n)
                a = outputs[n]
                if tokens[n] is not None:
                    per = a[0].size if batch else 0
                    w.raw(_single_line(tokens[n][i * per:(i + 1) * per], a.shape[1:]))
                else:
                    _write_tensor(w, a[i, ...], n)
            w.single = False
            if multi:
                w.end()
        w.end()
    else:
        w.key("outputs")
        if multi:
            w.start(False)
        for n in names:
            if multi:
                w.key(n)
            _write_tensor(w, outputs[n], n)
        if multi:
            w.end()
    w.end()
    return w.text().encode("utf-8", "replace")


def classify_response(result) -> bytes:
    if not result.classifications:
        raise InvalidArgumentError("Cannot convert empty ClassificationResults to JSON")
    w = PrettyWriter()
    w.start(False)
    w.key("results")
    w.start(True)
    for cl in result.classifications:
        w.single = True
        w.start(True)
        for c in cl.classes:
            w.start(True)
            w.string(c.label)
            w.raw(format_decimal(c.score, True))
            w.end()
        w.end()
        w.single = False
    w.end()
    w.end()
    return w.text().encode("utf-8", "replace")


def regress_response(result) -> bytes:
    if not result.regressions:
        raise InvalidArgumentError("Cannot convert empty RegressionResults to JSON")
    w = PrettyWriter()
    w.start(False)
    w.key("results")
    w.single = True
    w.start(True)
    for r in result.regressions:
        w.raw(format_decimal(r.value, True))
    w.end()
    w.single = False
    w.end()
    return w.text().encode("utf-8", "replace")


# ================================================================================================ classify/regress request

def _feature_kind(v: Any, name: str) -> str:
    if v is None or isinstance(v, list) or (isinstance(v, dict) and not is_b64(v)):
        raise InvalidArgumentError(f"Feature: {name} has element with unexpected JSON type: {json_type(v)}")
    if isinstance(v, bool):
        return "int64"
    if isinstance(v, (str, dict)):
        return "bytes"
    if isinstance(v, Double) or isinstance(v, float):
        return "float"
    if v > 2**63 - 1:
        return "uint64"
    return "int64"


def _example(obj: Any, ex) -> None:
    """`MakeExampleFromJsonObject` into a tf.train.Example proto."""
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"Example must be JSON object but got JSON {json_type(obj)}")
    for name, content in obj.items():
        values = content if isinstance(content, list) else [content]
        feature = ex.features.feature[name]
        kind = None
        for v in values:
            k = _feature_kind(v, name)
            if k == "uint64":
                if kind not in (None, "int64"):
                    raise InvalidArgumentError(f"Unexpected element type in feature: {name} expecting type: {kind}")
                raise InvalidArgumentError(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            if kind is not None and k != kind:
                raise InvalidArgumentError(f"Unexpected element type in feature: {name} expecting type: {kind}")
            kind = k
            if k == "int64":
                feature.int64_list.value.append(int(v))
            elif k == "float":
                feature.float_list.value.append(float(v))
            else:
                feature.bytes_list.value.append(b64_decode(v) if isinstance(v, dict) else v.encode("utf-8", "surrogateescape"))


def examples_input(doc: dict, method: str):
    """`FillClassifyRegressRequestFromJson`: an `Input` proto (with context when given)."""
    from tensorflow_serving.apis import input_pb2

    inp = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example(doc["context"], inp.example_list_with_context.context)
    if "examples" not in doc:
        raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is "
                                   "expected and was not found")
    exs = doc["examples"]
    if not isinstance(exs, list):
        raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not exs:
        raise InvalidArgumentError(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    target = inp.example_list_with_context.examples if has_context else inp.example_list.examples
    for e in exs:
        _example(e, target.add())
    return inp
