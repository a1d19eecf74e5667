"""The tensor codec against TensorFlow's own conversions, for every dtype it handles."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfsb.wire import tensor_proto
from tfsb.errors import InvalidArgumentError

CASES = [
    np.array([[1.5, -2.25], [3.0, np.inf]], np.float32),
    np.array([1e300, -0.0, np.nan], np.float64),
    np.array([[1, -2], [3, 2**31 - 1]], np.int32),
    np.array([0, 255, 7], np.uint8),
    np.array([-32768, 5], np.int16),
    np.array([-128, 127], np.int8),
    np.array([2**62, -(2**63)], np.int64),
    np.array([True, False, True]),
    np.array([1 + 2j, -3.5j], np.complex64),
    np.array([1 + 2j], np.complex128),
    np.array([0.5, -1.0, 65504.0], np.float16),
    np.array([1.0, -2.5], ml_dtypes.bfloat16),
    np.array([0, 65535], np.uint16),
    np.array([0, 2**32 - 1], np.uint32),
    np.array([0, 2**64 - 1], np.uint64),
    np.array(3.25, np.float32),  # scalar
    np.zeros((0, 3), np.float32),  # empty
]


def _ids():
    return [f"{c.dtype}{list(c.shape)}" for c in CASES]


@pytest.mark.parametrize("arr", CASES, ids=_ids())
@pytest.mark.parametrize("as_content", [False, True])
def test_round_trip_and_agrees_with_tensorflow(arr, as_content):
    proto = tensor_proto.from_numpy(arr, as_content=as_content)
    back = tensor_proto.to_numpy(proto)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # TensorFlow reads our proto identically ...
    np.testing.assert_array_equal(tf.make_ndarray(proto), arr)
    # ... and we read TensorFlow's proto identically.
    np.testing.assert_array_equal(tensor_proto.to_numpy(tf.make_tensor_proto(arr)), arr)


def test_strings_round_trip_and_agree_with_tensorflow():
    arr = np.array([[b"a", b"\x00\xffbin"], ["ünï".encode(), b""]], dtype=object)
    proto = tensor_proto.from_numpy(arr)
    assert proto.dtype == types_pb2.DT_STRING
    np.testing.assert_array_equal(tensor_proto.to_numpy(proto), arr)
    np.testing.assert_array_equal(tf.make_ndarray(proto), arr)
    np.testing.assert_array_equal(tensor_proto.to_numpy(tf.make_tensor_proto(arr)), arr)
    assert tensor_proto.to_numpy(tensor_proto.from_numpy(np.array(["x", "y"]))).tolist() == [b"x", b"y"]


def test_missing_values_repeat_the_last_one_like_tensorflow():
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
    p.tensor_shape.dim.add().size = 4
    np.testing.assert_array_equal(tensor_proto.to_numpy(p), tf.make_ndarray(p))
    np.testing.assert_array_equal(tensor_proto.to_numpy(p), [1.0, 2.0, 2.0, 2.0])
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32)
    empty.tensor_shape.dim.add().size = 3
    np.testing.assert_array_equal(tensor_proto.to_numpy(empty), [0, 0, 0])


def test_int_val_truncates_for_narrow_types_like_tensorflow():
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, int_val=[300])
    p.tensor_shape.dim.add().size = 1
    assert tensor_proto.to_numpy(p).tolist() == [44]


def test_bad_tensor_content_length_is_invalid_argument():
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 6)
    p.tensor_shape.dim.add().size = 2
    with pytest.raises(InvalidArgumentError, match="tensor_content has 6 bytes"):
        tensor_proto.to_numpy(p)


def test_negative_dimension_is_invalid_argument():
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    p.tensor_shape.dim.add().size = -2
    with pytest.raises(InvalidArgumentError, match="negative dimension"):
        tensor_proto.to_numpy(p)


def test_unknown_dtype_is_invalid_argument():
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE)
    with pytest.raises(InvalidArgumentError, match="unsupported tensor dtype"):
        tensor_proto.to_numpy(p)


def test_dtype_names_match_tf_messages():
    assert tensor_proto.dtype_name(types_pb2.DT_FLOAT) == "float"
    assert tensor_proto.dtype_name(types_pb2.DT_INT32) == "int32"
    assert tensor_proto.dtype_name(types_pb2.DT_STRING) == "string"
