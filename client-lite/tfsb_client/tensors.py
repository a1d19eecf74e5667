"""numpy <-> TensorProto for the common dtypes, without TensorFlow (numbers are TF's DataType enum)."""

from __future__ import annotations

import numpy as np

from tfsb_client.protos import TensorProto

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 17, 19, 22, 23

_NP = {DT_FLOAT: np.float32, DT_DOUBLE: np.float64, DT_INT32: np.int32, DT_UINT8: np.uint8, DT_INT16: np.int16,
       DT_INT8: np.int8, DT_INT64: np.int64, DT_BOOL: np.bool_, DT_UINT16: np.uint16, DT_HALF: np.float16,
       DT_UINT32: np.uint32, DT_UINT64: np.uint64}
_FROM_NP = {np.dtype(v): k for k, v in _NP.items()}
_FIELD = {DT_FLOAT: "float_val", DT_DOUBLE: "double_val", DT_INT32: "int_val", DT_UINT8: "int_val",
          DT_INT16: "int_val", DT_INT8: "int_val", DT_INT64: "int64_val", DT_BOOL: "bool_val",
          DT_UINT16: "int_val", DT_UINT32: "uint32_val", DT_UINT64: "uint64_val"}
NAMES = {1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16", 6: "DT_INT8", 7: "DT_STRING",
         9: "DT_INT64", 10: "DT_BOOL", 17: "DT_UINT16", 19: "DT_HALF", 22: "DT_UINT32", 23: "DT_UINT64"}


def to_proto(value, dtype: int | None = None):
    """An array (or nested list) as a TensorProto: tensor_content for numbers, string_val for text."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if dtype is None:
        dtype = DT_STRING if arr.dtype.kind in "OSU" else _FROM_NP.get(arr.dtype)
        if dtype is None:
            raise ValueError(f"unsupported dtype {arr.dtype}")
    proto = TensorProto(dtype=dtype)
    for d in arr.shape:
        proto.tensor_shape.dim.add().size = int(d)
    if dtype == DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in arr.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(arr, dtype=_NP[dtype]).tobytes()
    return proto


def to_numpy(proto) -> np.ndarray:
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    n = int(np.prod(shape)) if shape else 1
    if proto.dtype == DT_STRING:
        vals = list(proto.string_val)
        out = np.empty(n, dtype=object)
        out[:] = (vals + vals[-1:] * (n - len(vals)))[:n] if vals else [b""] * n
        return out.reshape(shape)
    npd = np.dtype(_NP[proto.dtype])
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=npd).reshape(shape).copy()
    if proto.dtype == DT_HALF:
        flat = np.array(proto.half_val, dtype=np.uint16).view(np.float16)
    else:
        flat = np.array(getattr(proto, _FIELD[proto.dtype]), dtype=npd)
    if flat.size == n:
        return flat.reshape(shape)
    out = np.full(n, flat[-1] if flat.size else 0, dtype=npd)
    out[:min(n, flat.size)] = flat[:n]
    return out.reshape(shape)
