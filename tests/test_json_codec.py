"""JSON codec units: TF Serving's float formatting, vectorised and per value, and the rapidjson layouts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfsb.wire import json_parse, json_response, json_text


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_vectorised_float_tokens_equal_the_per_value_rule(arr):
    f32 = arr.dtype == np.float32
    assert json_response._float_tokens(arr) == [json_text.format_decimal(v, f32) for v in arr.ravel().tolist()]


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float32_tokens_round_trip_exactly(v):
    tok = json_text.format_decimal(float(np.float32(v)), True)
    assert np.float32(float(tok)) == np.float32(v)
    assert "." in tok or "e" in tok


def test_single_line_fast_path_matches_the_pretty_writer():
    for shape in [(3,), (2, 3), (2, 2, 2), (2, 0), (0,), (1, 1)]:
        arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 7
        w = json_text.PrettyWriter(single_line_arrays=True)
        tokens = json_response._float_tokens(arr)
        slow = []

        def rec(a):
            if a.ndim == 0:
                w.raw(json_text.format_decimal(float(a), True))
                return
            w.start(True)
            for x in a:
                rec(x)
            w.end()

        rec(arr)
        slow = w.text()
        assert json_response._single_line(tokens, arr.shape) == slow


def test_error_json_layout_and_escaping():
    assert json_text.error_json('say "hi"\n') == b'{\n    "error": "say \\"hi\\"\\n"\n}'


def test_debug_string_truncates_and_renders_like_rapidjson():
    assert json_text.debug_string([1, 2.5, "a"]) == '[1, 2.5, "a"]'
    assert json_text.debug_string({"a": [1, 2]}) == '{\n    "a": [1, 2]\n}'
    assert len(json_text.debug_string(list(range(1000)))) < 300
    assert json_text.debug_string(float("nan")) == ""


def test_parser_matches_rapidjson_semantics():
    assert json_parse.parse(b'{"inputs": 1, "inputs": 2}') == {"inputs": 1}  # first wins for request keys
    doc = json_parse.parse(b'{"x": [1, 1.0, NaN, -Infinity]} trailing')
    assert type(doc["x"][0]) is int and isinstance(doc["x"][1], json_text.Double)
    assert doc["x"][2] != doc["x"][2] and doc["x"][3] == float("-inf")
    assert json_parse.parse(b'{"big": 18446744073709551615}')["big"] == 2**64 - 1
    assert type(json_parse.parse(b'{"huge": 99999999999999999999999}')["huge"]) in (float, json_text.Double)  # a double, as rapidjson reads it
