"""Predict request JSON ⇄ tensors (`FillPredictRequestFromJson`): row (`instances`) and columnar (`inputs`)
formats, b64 strings, dtype checks with TF Serving's messages. The server decodes with the signature's
dtypes; the clients encode with `to_json_value`.

Tensor building tries one `np.asarray` and falls back to the exact element-by-element walk of
`FillTensorProto` whenever the fast path cannot prove it would give the same answer, so error messages always
come from the exact walk."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import numpy as np

from tfsb.errors import InvalidArgumentError, ServingError, UnimplementedError
from tfsb.wire.json_text import debug_string, json_type
from tfsb.wire.tensor_proto import DT, NP_DTYPE, dtype_name

ROW, COLUMNAR = "row", "columnar"


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
        return _as_float(np.array(values, dtype=np.float64), npd).reshape(shape)
    return np.array(values, dtype=np.int64 if dtype != DT.DT_UINT64 else np.uint64).astype(npd).reshape(shape)


def _as_float(arr: np.ndarray, npd: np.dtype) -> np.ndarray:
    """Numbers beyond float32's range become ±inf, as in TF Serving (`FloatTensorThatExceedsMaxReturnsInf`):
    intended, so numpy's overflow warning is not raised."""
    with np.errstate(over="ignore"):
        return arr.astype(npd)


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
        return _as_float(arr, NP_DTYPE[dtype]) if kind in "if" else None
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


def to_json_value(arr: np.ndarray, b64: bool = False) -> Any:
    """A tensor as the JSON value a request carries (the clients' side of `to_tensor`): nested lists; strings
    as UTF-8 text, or `{"b64": ...}` when `b64` (inputs named `*_bytes`) or when they are not valid UTF-8."""
    if arr.dtype == object or arr.dtype.kind in "SU":
        def conv(v):
            if isinstance(v, str):  # object arrays of str, e.g. a pandas string column
                v = v.encode("utf-8")
            if b64:
                return {"b64": base64.b64encode(v).decode()}
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode()}
        flat = [conv(v) for v in arr.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist() if arr.ndim else flat[0]
    return arr.tolist()
