"""Request bodies parsed the way rapidjson parses them (TF Serving's `JSON Parse error: ...` texts).

orjson first (fast); anything it refuses, or anything it would read differently from rapidjson (NaN/Infinity
tokens, trailing bytes, very deep nesting, integers past 64 bits, duplicate top-level keys), goes through
`_Parser`, an iterative parser with rapidjson's semantics and error texts."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from tfsb.errors import InvalidArgumentError
from tfsb.wire.json_text import Double, debug_string


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
