"""TensorProto <-> numpy, without TensorFlow: a leaf module shared by the server and the clients.

`tf.make_tensor_proto` / `tf.make_ndarray` cost tens of microseconds and pull TensorFlow into clients; this
codec reads `tensor_content` with one `np.frombuffer` and the typed `*_val` fields with one array copy.
Decoding follows TF's `Tensor::FromProto`: missing typed values repeat the last one (zeros if none), extra
values are ignored, a `tensor_content` of the wrong length is an error.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Iterable

import ml_dtypes
import numpy as np
from google.protobuf.message import Message

from tfsb.errors import InvalidArgumentError
from tfsb.protos import DATA_TYPES, TensorProto

# plain ints: attribute access on the protobuf EnumTypeWrapper costs ~1 µs each on the hot path
DT = SimpleNamespace(**DATA_TYPES)
_DT_NAMES = {v: k for k, v in DATA_TYPES.items()}

# dtype enum -> numpy dtype (None for DT_STRING: numpy object array of bytes)
NP_DTYPE: dict[int, np.dtype | None] = {
    DT.DT_FLOAT: np.dtype(np.float32),
    DT.DT_DOUBLE: np.dtype(np.float64),
    DT.DT_INT32: np.dtype(np.int32),
    DT.DT_UINT8: np.dtype(np.uint8),
    DT.DT_INT16: np.dtype(np.int16),
    DT.DT_INT8: np.dtype(np.int8),
    DT.DT_STRING: None,
    DT.DT_COMPLEX64: np.dtype(np.complex64),
    DT.DT_INT64: np.dtype(np.int64),
    DT.DT_BOOL: np.dtype(np.bool_),
    DT.DT_QINT8: np.dtype(np.int8),
    DT.DT_QUINT8: np.dtype(np.uint8),
    DT.DT_QINT32: np.dtype(np.int32),
    DT.DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DT.DT_QINT16: np.dtype(np.int16),
    DT.DT_QUINT16: np.dtype(np.uint16),
    DT.DT_UINT16: np.dtype(np.uint16),
    DT.DT_COMPLEX128: np.dtype(np.complex128),
    DT.DT_HALF: np.dtype(np.float16),
    DT.DT_UINT32: np.dtype(np.uint32),
    DT.DT_UINT64: np.dtype(np.uint64),
}

_FROM_NP: dict[np.dtype, int] = {
    np.dtype(np.float32): DT.DT_FLOAT, np.dtype(np.float64): DT.DT_DOUBLE, np.dtype(np.int32): DT.DT_INT32,
    np.dtype(np.uint8): DT.DT_UINT8, np.dtype(np.int16): DT.DT_INT16, np.dtype(np.int8): DT.DT_INT8,
    np.dtype(np.complex64): DT.DT_COMPLEX64, np.dtype(np.int64): DT.DT_INT64, np.dtype(np.bool_): DT.DT_BOOL,
    np.dtype(ml_dtypes.bfloat16): DT.DT_BFLOAT16, np.dtype(np.uint16): DT.DT_UINT16,
    np.dtype(np.complex128): DT.DT_COMPLEX128, np.dtype(np.float16): DT.DT_HALF,
    np.dtype(np.uint32): DT.DT_UINT32, np.dtype(np.uint64): DT.DT_UINT64,
}

# the typed repeated field that carries each dtype
_FIELD: dict[int, str] = {
    DT.DT_FLOAT: "float_val", DT.DT_DOUBLE: "double_val", DT.DT_INT32: "int_val", DT.DT_UINT8: "int_val",
    DT.DT_INT16: "int_val", DT.DT_INT8: "int_val", DT.DT_STRING: "string_val",
    DT.DT_COMPLEX64: "scomplex_val", DT.DT_INT64: "int64_val", DT.DT_BOOL: "bool_val",
    DT.DT_QINT8: "int_val", DT.DT_QUINT8: "int_val", DT.DT_QINT32: "int_val", DT.DT_BFLOAT16: "half_val",
    DT.DT_QINT16: "int_val", DT.DT_QUINT16: "int_val", DT.DT_UINT16: "int_val",
    DT.DT_COMPLEX128: "dcomplex_val", DT.DT_HALF: "half_val", DT.DT_UINT32: "uint32_val",
    DT.DT_UINT64: "uint64_val",
}


def dtype_name(dtype: int) -> str:
    """TF's short dtype name as used in error messages ("float", "int32", "string")."""
    name = _DT_NAMES.get(dtype)
    return name[3:].lower() if name else f"unknown dtype {dtype}"


def dtype_of(arr: np.ndarray) -> int:
    """The DataType enum for a numpy array (object/bytes/str arrays are DT_STRING)."""
    if arr.dtype.kind in "OSU":
        return DT.DT_STRING
    try:
        return _FROM_NP[arr.dtype]
    except KeyError:
        raise InvalidArgumentError(f"unsupported numpy dtype {arr.dtype}") from None


def _shape(proto: Message) -> tuple[int, ...]:
    dims = tuple(d.size for d in proto.tensor_shape.dim)
    if len(dims) > 64:
        raise InvalidArgumentError(f"tensor rank {len(dims)} exceeds the 64 dimensions supported here")
    if any(d < 0 for d in dims):
        raise InvalidArgumentError(f"negative dimension in tensor shape {list(dims)}")
    return dims


MAX_TENSOR_BYTES = 2**31 - 1  # a tensor larger than the largest message gRPC accepts cannot be meant


def decoded_bytes(proto: Message) -> int:
    """What `to_numpy` will allocate for this proto, computed without allocating; raises what it would raise
    for an unusable dtype or shape. Lets a server charge a request before decoding it."""
    dtype = proto.dtype
    if dtype not in NP_DTYPE:
        raise InvalidArgumentError(f"unsupported tensor dtype {dtype_name(dtype)}")
    shape = _shape(proto)
    itemsize = 8 if dtype == DT.DT_STRING else NP_DTYPE[dtype].itemsize
    bound = itemsize * math.prod(max(d, 1) for d in shape)  # numpy refuses such shapes even when empty
    if bound > MAX_TENSOR_BYTES:
        raise InvalidArgumentError(f"tensor shape {list(shape)} of {dtype_name(dtype)} needs {bound} bytes, "
                                   f"more than the {MAX_TENSOR_BYTES} a request can carry")
    if dtype == DT.DT_STRING:  # the values themselves are already held by the proto
        return bound
    # typed *_val fields go through one staging copy as wide as the field's type
    staging = 0 if proto.tensor_content else 8 * min(math.prod(shape), _field_len(proto, dtype))
    return bound + staging


def _field_len(proto: Message, dtype: int) -> int:
    return len(getattr(proto, _FIELD[dtype]))


def to_numpy(proto: Message, *, checked: bool = False) -> np.ndarray:
    """Decode a TensorProto. Raises InvalidArgumentError on anything TF's FromProto would reject, and on a
    shape whose size would exceed MAX_TENSOR_BYTES (a few bytes of proto must not allocate gigabytes).
    `checked`: the caller already had `decoded_bytes` accept this proto (a server charging it first)."""
    if not checked:
        decoded_bytes(proto)
    dtype = proto.dtype
    shape = _shape(proto)
    n = math.prod(shape)
    if dtype == DT.DT_STRING:
        vals = proto.string_val
        arr = np.empty(n, dtype=object)
        if n:
            k = len(vals)
            if k >= n:
                arr[:] = list(vals[:n]) if k > n else list(vals)
            else:
                arr[:k] = list(vals)
                arr[k:] = vals[-1] if k else b""
        return arr.reshape(shape)
    npd = NP_DTYPE[dtype]
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != n * npd.itemsize:
            raise InvalidArgumentError(
                f"tensor_content has {len(content)} bytes, shape {list(shape)} of {dtype_name(dtype)} "
                f"needs {n * npd.itemsize}")
        return np.frombuffer(content, dtype=npd).reshape(shape).copy()
    field = getattr(proto, _FIELD[dtype])
    if dtype in (DT.DT_HALF, DT.DT_BFLOAT16):
        flat = np.array(field, dtype=np.int32).astype(np.uint16).view(npd)
    elif dtype in (DT.DT_COMPLEX64, DT.DT_COMPLEX128):
        raw = np.array(field, dtype=np.float32 if dtype == DT.DT_COMPLEX64 else np.float64)
        flat = raw[: len(raw) // 2 * 2].view(npd)
    elif _FIELD[dtype] == "int_val":
        # int_val of int8/uint8 etc. truncates like TF's FromProto (300 -> uint8 44).
        flat = np.array(field, dtype=np.int64).astype(npd)
    else:
        flat = np.array(field, dtype=npd)
    k = flat.size
    if k == n:
        return flat.reshape(shape)
    out = np.empty(n, dtype=npd)
    if k > n:
        out[:] = flat[:n]
    elif k == 0:
        out[:] = 0
    else:
        out[:k] = flat
        out[k:] = flat[-1]
    return out.reshape(shape)


def _set_shape(proto: Message, shape: Iterable[int]) -> None:
    dims = proto.tensor_shape.dim
    for d in shape:
        dims.add().size = int(d)


def from_numpy(arr: np.ndarray | list | float | int | bytes | str, dtype: int | None = None, *,
               as_content: bool = False, into: Message | None = None) -> Message:
    """Encode an array. Typed `*_val` fields by default (what TF Serving's responses use); `as_content`
    writes `tensor_content`, which is several times cheaper for large numeric tensors. `into` is an empty
    TensorProto to fill in place (a request's or response's map entry, from whichever descriptor pool the
    message comes from); without it a new `tfsb.protos.TensorProto` is returned."""
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr, dtype=object if isinstance(arr, (bytes, str)) else None)
    if dtype is None:
        dtype = dtype_of(arr)
    proto = TensorProto() if into is None else into
    proto.dtype = dtype
    _set_shape(proto, arr.shape)
    if dtype == DT.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in arr.ravel().tolist())
        return proto
    npd = NP_DTYPE[dtype]
    if arr.dtype != npd:
        arr = arr.astype(npd)
    if as_content:
        proto.tensor_content = np.ascontiguousarray(arr).tobytes()
        return proto
    flat = arr.ravel()
    field = getattr(proto, _FIELD[dtype])
    if dtype in (DT.DT_HALF, DT.DT_BFLOAT16):
        flat = flat.view(np.uint16).astype(np.int32)
    elif dtype in (DT.DT_COMPLEX64, DT.DT_COMPLEX128):
        flat = flat.view(np.float32 if dtype == DT.DT_COMPLEX64 else np.float64)
    # tolist() makes a 32-byte Python object per value: go through it in slices, so a 60 MB output costs a
    # few MB of transient objects instead of half a gigabyte
    for i in range(0, flat.size, _EXTEND_STEP):
        field.extend(flat[i:i + _EXTEND_STEP].tolist())
    return proto


_EXTEND_STEP = 1 << 18


def signature_summary(sigdefs, *, tensor_names: bool = False) -> dict[str, dict]:
    """SignatureDef protos → {name: {method_name, inputs: {alias: {dtype, shape[, name]}}, outputs: {...}}}
    (signatures named `__...` are internal and left out): what the clients print and `/api/models` lists."""
    def tensors(m):
        out = {}
        for alias, t in sorted(m.items()):
            out[alias] = {"dtype": _DT_NAMES.get(t.dtype, str(t.dtype)),
                          "shape": None if t.tensor_shape.unknown_rank else [d.size for d in t.tensor_shape.dim]}
            if tensor_names:
                out[alias]["name"] = t.name
        return out

    return {name: {"method_name": sd.method_name, "inputs": tensors(sd.inputs), "outputs": tensors(sd.outputs)}
            for name, sd in sorted(sigdefs.items()) if not name.startswith("__")}
