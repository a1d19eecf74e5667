"""Tensors and Classification/Regression results → response JSON, byte for byte as TF Serving writes it
(`MakeJsonFromTensors`, `MakeJsonFromClassificationResult`, ...); and back, for the clients, with the dtypes
from the model's metadata (REST responses carry none)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from tfsb.errors import InvalidArgumentError
from tfsb.wire.json_request import ROW
from tfsb.wire.json_text import PrettyWriter, format_decimal
from tfsb.wire.tensor_proto import DT, NP_DTYPE, dtype_name, dtype_of


_PER_VALUE_MAX = 8  # values formatted one by one below this (measured: the crossover is near 10)


def _float_tokens(arr: np.ndarray) -> list[str]:
    """`format_decimal` for a whole float32/float64 array: `%g` per value, the round trip checked for all at
    once by numpy's C text parser, `max_digits10` only where `%g` lost bits (3× faster than numpy's char
    functions, which loop in Python too)."""
    flat = arr.ravel()
    f32 = flat.dtype == np.float32
    vals = flat.astype(np.float64).tolist()
    if len(vals) <= _PER_VALUE_MAX:  # a few values: numpy's array set-up costs more than the values
        return [format_decimal(v, f32) for v in vals]
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


def fits(value: Any, dtype: int) -> bool:
    """Whether a response's JSON values can be of `dtype` (TF Serving writes floats with a '.', integers
    without one): how a client notices that another version, with other outputs, answered."""
    if dtype == DT.DT_STRING:
        return True
    arr = np.asarray(value)
    kind = arr.dtype.kind
    npd = NP_DTYPE.get(dtype)
    if npd is None or kind in "OUS":
        return kind not in "iuf"
    if arr.size == 0:
        return True
    if npd.kind == "f":
        return kind == "f"
    if npd.kind in "iu":
        return kind in "iu"
    return kind == npd.kind


def from_json_value(value: Any, dtype: int | None) -> np.ndarray:
    """A response's JSON value as an array of the output's dtype (`{"b64": ...}` strings decoded)."""
    if dtype == DT.DT_STRING:
        def conv(v):
            if isinstance(v, dict):
                return base64.b64decode(v["b64"])
            return v.encode("utf-8") if isinstance(v, str) else v
        arr = np.array(value, dtype=object)
        flat = [conv(v) for v in arr.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape)
    return np.array(value, dtype=NP_DTYPE.get(dtype) if dtype is not None else None)
