"""REST conformance: cases derived from TF Serving's `util/json_tensor_test.cc`,
`model_servers/http_rest_api_handler_test.cc` and the behaviour spec, each sent to a live server that
serves `half_plus_two` (TF1 SavedModelBuilder) and `echo` (identity signatures per dtype)."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import requests

from tests.inprocess import InProcessServer
from tests.rest_models import build_echo, build_half_plus_two



E, H = "/v1/models/echo", "/v1/models/half_plus_two"
NEST = 500000


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    base = tmp_path_factory.mktemp("rest_models")
    build_half_plus_two(base / "half_plus_two" / "123")
    build_echo(base / "echo" / "1")
    cfg = base / "models.config"
    cfg.write_text(f'''model_config_list {{
  config {{ name: "half_plus_two" base_path: "{base}/half_plus_two" model_platform: "tensorflow"
           version_labels {{ key: "stable" value: 123 }} }}
  config {{ name: "echo" base_path: "{base}/echo" model_platform: "tensorflow" }}
}}''')
    mon = base / "monitoring.config"
    mon.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    srv = InProcessServer([f"--model_config_file={cfg}", "--allow_version_labels_for_unavailable_models",
                           f"--monitoring_config_file={mon}", "--rest_api_enable_cors_support"])
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def same(a, b) -> bool:
    """JSON equality where NaN equals NaN and numbers compare by value."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def P(path, body, status, expect=None, *, error=None, contains=None, raw=None, sig=None, method="POST",
      id=None):
    if sig is not None and isinstance(body, dict):
        body = {"signature_name": sig, **body}
    return pytest.param(method, path, body, status, expect, error, contains, raw, id=id)


def _predictions(v):
    return {"predictions": v}


CASES = [
    # ---------------------------------------------------------------- json_tensor_test.cc: requests
    P(f"{E}:predict", {"instances": [[1, 2], [3, 4], [5, 6]]}, 200, _predictions([[1, 2], [3, 4], [5, 6]]),
      sig="int32", id="SingleUnnamedTensor"),
    P(f"{E}:predict", '{"signature_name": "int32", "instances": [1], "nested": ' + "[" * NEST + "]" * NEST + "}",
      200, _predictions([1]), id="DeeplyNestedWellFormed"),
    P(f"{E}:predict", '{"signature_name": ' + "[" * NEST + "]" * NEST + "}", 400,
      contains="key must be a string value", id="DeeplyNestedMalformed"),
    P(f"{E}:predict", {"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}, 200,
      _predictions([1.0, 2.0, 3.0, 4.0, 5.003, 0.007, 0.0]), sig="float", id="MixedInputForFloatTensor"),
    P(f"{E}:predict", {"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}, 200,
      _predictions([1.0, 2.0, 3.0, 4.0, 0.662, 0.0, 0.0]), sig="double", id="MixedInputForDoubleTensor"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [1435774380]}', 200,
      raw='{\n    "predictions": [1.43577434e+09\n    ]\n}', id="FloatTensorWithPrecisionLoss"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [1435774380.0]}', 200,
      raw='{\n    "predictions": [1.43577434e+09\n    ]\n}', id="FloatTensorWithPrecisionLossDecimal"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [1.7976931348623157e+308]}', 200,
      raw='{\n    "predictions": [Infinity\n    ]\n}', id="FloatTensorThatExceedsMaxReturnsInf"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [-1.7976931348623157e+308]}', 200,
      raw='{\n    "predictions": [-Infinity\n    ]\n}', id="FloatTensorThatExceedsMinReturnsNegInf"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [2.2250738585072014e-308]}', 200,
      raw='{\n    "predictions": [0.0\n    ]\n}', id="FloatTensorThatExceedsMinReturnsZero"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [-2.2250738585072014e-308]}', 200,
      raw='{\n    "predictions": [-0.0\n    ]\n}', id="FloatTensorNegativeUnderflowReturnsNegZero"),
    P(f"{E}:predict", {"instances": [[1, 2]]}, 200, _predictions([[1, 2]]), sig="int32",
      id="SingleUnnamedTensorWithSignature"),
    P(f"{E}:predict", {"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}, 200,
      _predictions(["hello", "world"]), sig="string", id="SingleUnnamedTensorBase64Scalars"),
    P(f"{E}:predict", {"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}, 200,
      _predictions([["hello"], ["world"]]), sig="string", id="SingleUnnamedTensorBase64Lists"),
    P(f"{E}:predict", {"instances": [{"x": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}, 200,
      _predictions([[["hello"], ["world"]]]), sig="string", id="SingleNamedTensorBase64"),
    P(f"{E}:predict", '{"signature_name": "multi", "instances": [{"a": [1.0, NaN], "b": ["foo", "bar"]}, '
      '{"a": [2.0, Infinity], "b": ["baz", "bat"]}]}', 200,
      _predictions([{"a": [1.0, float("nan")], "b": ["foo", "bar"]}, {"a": [2.0, float("inf")], "b": ["baz", "bat"]}]),
      id="MultipleNamedTensor"),
    P(f"{E}:predict", {"inputs": {"x": [[[1, 2], [3, 4], [5, 6]]]}}, 200, {"outputs": [[[1, 2], [3, 4], [5, 6]]]},
      sig="int32", id="SingleUnnamedTensorColumnarFormatNamed"),
    P(f"{E}:predict", {"inputs": [[[1, 2], [3, 4], [5, 6]]]}, 200, {"outputs": [[[1, 2], [3, 4], [5, 6]]]},
      sig="int32", id="SingleUnnamedTensorColumnarFormatUnnamed"),
    P(f"{E}:predict", {"inputs": {"a": [[1.0, 2.0]], "b": {"b64": "aGVsbG8="}}}, 200,
      {"outputs": {"a": [[1.0, 2.0]], "b": "hello"}}, sig="multi", id="MultipleNamedTensorColumnarFormat"),
    P(f"{E}:predict", "", 400, error="JSON Parse error: The document is empty", id="ErrorEmptyDocument"),
    P(f"{E}:predict", {"signature_name": 5, "instances": [[1, 2], [3, 4], [5, 6, 7]]}, 400,
      contains="not formatted correctly. 'signature_name' key must be a string value.", id="ErrorSignatureNotString"),
    P(f"{E}:predict", {"instances": [[1, 2]], "inputs": [[1, 2]]}, 400,
      contains="Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
      sig="int32", id="ErrorBothInstancesAndInputs"),
    P(f"{E}:predict", {"instances": [[1, 2], [3, 4], [5, 6, 7]]}, 400,
      error="Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 "
            "but got: 3", sig="int32", id="ErrorExpectingTensorSize"),
    P(f"{E}:predict", {"instances": [[1, 2], [3, 4], [[5, 6]]]}, 400,
      error="Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2] but "
            "got: [1,2]", sig="int32", id="ErrorExpectingShape"),
    P(f"{E}:predict", {"instances": [1, [1]]}, 400, contains="Expecting shape [] but got: [1]", sig="int32",
      id="ErrorScalarThenList"),
    P(f"{E}:predict", {"instances": [[1, 2], ["a", "b"]]}, 400,
      error="Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: "
            "String is not of expected type: int32", sig="int32", id="ErrorNotOfExpectedType"),
    P(f"{E}:predict", {"instances": [{"a": [[1.0, 2.0]], "b": ["foo"]}, {"a": [[[7.0, 8.0]]], "b": ["baz"]}]},
      400, contains="Expecting shape [1,2] but got: [1,1,2]", sig="multi", id="MultipleNamedErrorShape"),
    P(f"{E}:predict", {"instances": [{"a": [1.0, 2.0], "b": ["foo"]}, {"a": [1.0], "b": ["baz"]}]}, 400,
      contains="Expecting tensor size: 2 but got: 1", sig="multi", id="MultipleNamedErrorSize"),
    P(f"{E}:predict", {"instances": [{"a": [1.0], "b": ["foo"]}, [1, 20, 30]]}, 400,
      error="Expecting object but got list at item 1 of input list", sig="multi", id="ErrorObjectThenList"),
    P(f"{E}:predict", {"instances": [["baz", "bar"], {"x": ["baz", "bat"]}]}, 400,
      error="Expecting value/list but got object at item 1 of input list", sig="string", id="ErrorListThenObject"),
    # ---------------------------------------------------------------- json_tensor_test.cc: responses
    P(f"{E}:predict", {"instances": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}, 200,
      raw='{\n    "predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]\n    ]\n}', sig="int32",
      id="FromJsonSingleTensorRow"),
    P(f"{E}:predict", {"inputs": [[[1, 2], [3, 4]]]}, 200, {"outputs": [[[1, 2], [3, 4]]]}, sig="int32",
      id="FromJsonSingleTensorColumnar"),
    P(f"{E}:predict", {"instances": [1, 2, 3, 4, 5]}, 200, _predictions([1, 2, 3, 4, 5]), sig="int32",
      id="FromJsonSingleScalarTensor"),
    P(f"{E}:predict", {"instances": [["hello", "world"], ["tf", "serving"]]}, 200,
      _predictions([[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]),
      sig="bytes", id="FromJsonSingleBytesTensor"),
    P(f"{E}:predict", {"instances": [[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]]}, 200,
      raw='{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}', sig="float",
      id="FromJsonSingleFloatTensorSixDigitPrecision"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [[NaN, Infinity], [3, -Infinity]]}', 200,
      raw='{\n    "predictions": [[NaN, Infinity], [3.0, -Infinity]\n    ]\n}', id="FromJsonSingleFloatTensorNonFinite"),
    P(f"{E}:predict", {"instances": [1.0]}, 400, error="Failed to write JSON value for tensor type: complex64",
      sig="complex_out", id="FromJsonErrorComplex"),
    P(f"{E}:predict", {"instances": [1.0, 2.0]}, 400, error="Tensor name: y has no shape information ",
      sig="scalar_out", id="FromJsonErrorNoShape"),
    P(f"{E}:predict", {"instances": [1.0, 2.0]}, 400,
      error="Tensor name: z has inconsistent batch size: 1 expecting: 2", sig="mismatch",
      id="FromJsonErrorInconsistentBatch"),
    P(f"{E}:predict", {"inputs": []}, 200, {"outputs": []}, sig="float", id="FromJsonSingleZeroBatchTensor"),
    P(f"{E}:predict", {"inputs": [[1.0], [2.0]]}, 200, {"outputs": {"p": [[1.0], [2.0]], "q": [[2.0], [4.0]]}},
      sig="two_out", id="FromJsonMultipleNamedTensorsColumnar"),
    P(f"{E}:predict", {"instances": [1.0, 2.0]}, 200,
      raw='{\n    "predictions": [\n        {\n            "p": 1.0,\n            "q": 2.0\n        },\n'
          '        {\n            "p": 2.0,\n            "q": 4.0\n        }\n    ]\n}', sig="two_out",
      id="FromJsonMultipleNamedTensorsRowLayout"),
    P(f"{E}:predict", {"inputs": [1.5, 4.0]}, 200, raw='{\n    "outputs": [\n        1.5,\n        4.0\n    ]\n}',
      sig="float", id="ColumnarLayoutFullyPretty"),
    # ---------------------------------------------------------------- http_rest_api_handler_test.cc
    P("/v1/foo", "", 400, error="Malformed request: GET /v1/foo", method="GET", id="UnsupportedGetFoo"),
    P("/v1/foo", "", 400, error="Malformed request: POST /v1/foo", id="UnsupportedPostFoo"),
    P("/v1/models", "", 400, error="Missing model name in request.", method="GET", id="MissingModelName"),
    P("/v1/models/debug/model_name", "", 400, error="Malformed request: GET /v1/models/debug/model_name",
      method="GET", id="GetDebugPath"),
    P("/v1/models", "", 400, error="Malformed request: POST /v1/models", id="PostModels"),
    P("/v1/models/foo:predict", "", 400, error="Malformed request: GET /v1/models/foo:predict", method="GET",
      id="GetPredict"),
    P("/v1/models/foo/version/50:predict", "", 400, contains="Malformed request", method="GET",
      id="GetVersionTypo"),
    P("/v1/models/foo/version/50:regress", "", 400, contains="Malformed request", id="PostVersionTypo"),
    P("/v1/models/foo/versions/HELLO:regress", "", 400, contains="Malformed request", id="NonNumericVersion"),
    P("/v1/models/foo/versions/99999999999999999999999:regress", "", 400, raw="", id="VersionOverflowEmptyBody"),
    P("/v1/models/foo/metadata", "", 400, contains="Malformed request", id="PostMetadata"),
    P("/v1/models/foo/label/some_label:regress", "", 400, contains="Malformed request", id="LabelTypo"),
    P("/v1/models/foo/versions/50/labels/some_label:regress", "", 400, contains="Malformed request",
      id="VersionAndLabel"),
    P("/v1/models/foo/versions/some_label:regress", "", 400, contains="Malformed request", id="LabelAsVersion"),
    P("/v1/models/foo:predict", {"instances": [1]}, 404, error="Servable not found for request: Latest(foo)",
      id="PredictUnknownModel"),
    P("/v1/models/foo/versions/50:predict", {"instances": [1]}, 404,
      error="Servable not found for request: Specific(foo, 50)", id="PredictUnknownModelVersion"),
    P(f"{H}/versions/99:predict", {"instances": [1]}, 404,
      error="Servable not found for request: Specific(half_plus_two, 99)", id="PredictUnknownVersion"),
    P(f"{H}:predict", "", 400, error="JSON Parse error: The document is empty", id="PredictEmptyBody"),
    P(f"{H}:predict", "instances = [1, 2]", 400, error="JSON Parse error: Invalid value. at offset: 0",
      id="PredictInvalidValue"),
    P(f"{H}:predict", {"instances": ["x", "y"]}, 400, contains="not of expected type: float",
      id="PredictStringsForFloat"),
    P(f"{H}/labels/some_label:predict", {"instances": ["x", "y"]}, 400,
      error="Unrecognized servable version label: some_label", id="PredictUnknownLabel"),
    P(f"{H}:predict", {"signature_name": 100}, 400, contains="'signature_name' key must be a string value.",
      id="PredictSignatureNotString"),
    P(f"{H}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]}, 200, _predictions([[2.5, 3.0], [3.5, 4.0]]),
      id="Predict"),
    P(f"{H}/versions/123:predict", {"instances": [1.0, 2.0]}, 200, _predictions([2.5, 3.0]),
      id="PredictVersion"),
    P(f"{H}/labels/stable:predict", {"instances": [1.0, 2.0]}, 200, _predictions([2.5, 3.0]), id="PredictLabel"),
    P(f"{H}/versions/123:predict", {"instances": [3.0, 4.0]}, 200, _predictions([3.5, 4.0]),
      sig="serving_default", id="PredictSignature"),
    P(f"{H}/versions/123:predict", {"inputs": [3.0, 4.0]}, 200, {"outputs": [3.5, 4.0]}, sig="serving_default",
      id="PredictColumnar"),
    P(f"{H}:regress", {"examples": [{"x": 80.0}]}, 200, {"results": [42.0]}, sig="regress_x_to_y", id="Regress"),
    P(f"{H}/versions/123:regress", {"examples": [{"x": 80.0}]}, 200, {"results": [42.0]}, sig="regress_x_to_y",
      id="RegressVersion"),
    P(f"{H}/labels/stable:regress", {"examples": [{"x": 80.0}]}, 200, {"results": [42.0]}, sig="regress_x_to_y",
      id="RegressLabel"),
    P(f"{H}:classify", {"examples": [{"x": 20.0}]}, 200, {"results": [[["", 12.0]]]}, sig="classify_x_to_y",
      id="Classify"),
    P(f"{H}/labels/stable:classify", {"examples": [{"x": 10.0}]}, 200, {"results": [[["", 7.0]]]},
      sig="classify_x_to_y", id="ClassifyLabel"),
    P(H, "", 200, {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                             "status": {"error_code": "OK", "error_message": ""}}]},
      method="GET", id="GetStatus"),
    P(f"{H}/versions/123", "", 200, {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                                                "status": {"error_code": "OK", "error_message": ""}}]},
      method="GET", id="GetStatusVersion"),
    P(f"{H}/labels/whatever", "", 200, {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                                                  "status": {"error_code": "OK", "error_message": ""}}]},
      method="GET", id="GetStatusLabelIgnored"),
    P("/v1/models/foo", "", 404, error="Could not find any versions of model foo", method="GET",
      id="GetStatusUnknownModel"),
    P(f"{H}/versions/9", "", 404, error="Could not find version 9 of model half_plus_two", method="GET",
      id="GetStatusUnknownVersion"),
    P("/v1/models/foo/metadata", "", 404, error="Servable not found for request: Latest(foo)", method="GET",
      id="GetMetadataUnknownModel"),
    P(f"{H}/labels/nope/metadata", "", 400, error="Unrecognized servable version label: nope", method="GET",
      id="GetMetadataUnknownLabel"),
    # ---------------------------------------------------------------- spec §4.5–4.8, §9
    P(f"{E}:predict", {"instances": [1.0]}, 400, error='Serving signature name: "nope" not found in signature def',
      sig="nope", id="UnknownSignaturePredict"),
    P(f"{H}:classify", {"examples": [{"x": 1.0}]}, 400, error="No signature was found with the name: nope",
      sig="nope", id="UnknownSignatureClassify"),
    P(f"{E}:predict", {"inputs": {"a": [1.0]}}, 400, error="Missing named input: b in 'inputs' object.",
      sig="multi", id="ColumnarMissingInput"),
    P(f"{E}:predict", {"inputs": {"a": [1.0], "b": ["s"], "zzz": 1}}, 200, {"outputs": {"a": [1.0], "b": ["s"]}},
      sig="multi", id="ColumnarExtraKeyIgnored"),
    P(f"{E}:predict", {"instances": [{"a": 1.0}]}, 400,
      error="Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1.0\n} keys must be "
            "equal to: a,b", sig="multi", id="RowMissingKey"),
    P(f"{E}:predict", {"instances": [{"a": 1.0, "c": 2.0}]}, 400,
      error="Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does "
            "not have named input: c", sig="multi", id="RowUnknownKey"),
    P(f"{E}:predict", {"instances": [1.0]}, 400,
      error="instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map", sig="multi", id="RowPlainListMultipleInputs"),
    P(f"{E}:predict", {"inputs": [1.0]}, 400,
      error="inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map", sig="multi", id="ColumnarPlainMultipleInputs"),
    P(f"{E}:predict", {"instances": 5}, 400, contains="Expecting 'instances' to be an list/array", sig="float",
      id="InstancesNotArray"),
    P(f"{E}:predict", {"instances": []}, 400, contains="No values in 'instances' array", sig="float",
      id="InstancesEmpty"),
    P(f"{E}:predict", {"signature_name": "float"}, 400, error="Missing 'inputs' or 'instances' key",
      id="NeitherKey"),
    P(f"{E}:predict", "[1, 2]", 400, error="JSON Value: [1, 2] Is not object", id="TopLevelNotObject"),
    P(f"{E}:predict", {"instances": [True, False]}, 200, _predictions([True, False]), sig="bool", id="Bool"),
    P(f"{E}:predict", {"instances": [1]}, 400, contains="JSON Value: 1 Type: Number is not of expected type: bool",
      sig="bool", id="BoolRejectsNumber"),
    P(f"{E}:predict", {"inputs": [1.0, True]}, 400, error="JSON Value: true Type: True is not of expected type: float",
      sig="float", id="FloatRejectsBool"),
    P(f"{E}:predict", {"inputs": [1.0]}, 400, error="JSON Value: 1.0 Type: Number is not of expected type: int32",
      sig="int32", id="Int32RejectsDecimal"),
    P(f"{E}:predict", {"inputs": [3000000000]}, 400, contains="is not of expected type: int32", sig="int32",
      id="Int32RejectsOverflow"),
    P(f"{E}:predict", '{"signature_name": "int64", "inputs": [9007199254740993, -9223372036854775808]}', 200,
      raw='{\n    "outputs": [\n        9007199254740993,\n        -9223372036854775808\n    ]\n}', id="Int64Exact"),
    P(f"{E}:predict", '{"signature_name": "uint64", "inputs": [18446744073709551615]}', 200,
      raw='{\n    "outputs": [\n        18446744073709551615\n    ]\n}', id="Uint64Exact"),
    P(f"{E}:predict", {"inputs": [300, 255]}, 200, {"outputs": [44, 255]}, sig="uint8", id="Uint8Truncates"),
    P(f"{E}:predict", {"inputs": [-5, 7]}, 200, {"outputs": [-5, 7]}, sig="int16", id="Int16"),
    P(f"{E}:predict", {"inputs": [4294967295]}, 200, {"outputs": [4294967295]}, sig="uint32", id="Uint32"),
    P(f"{E}:predict", {"inputs": [0.3333333333333333, 123456789.0]}, 200,
      raw='{\n    "outputs": [\n        0.33333333333333331,\n        123456789.0\n    ]\n}', sig="double",
      id="DoubleFormatting"),
    P(f"{E}:predict", {"inputs": [0.1, 123456789, 100000, 1000000, 0.1234567]}, 200,
      raw='{\n    "outputs": [\n        0.1,\n        123456792.0,\n        100000.0,\n        1e+06,\n'
          '        0.123456702\n    ]\n}', sig="float", id="FloatFormatting"),
    P(f"{E}:predict", {"inputs": [1.0]}, 501, error="Conversion of JSON Value: 1.0 to type: half", sig="half",
      id="HalfColumnarUnimplemented"),
    P(f"{E}:predict", {"instances": [1.0]}, 400,
      error="Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.0 "
            "to type: half", sig="half", id="HalfRowWrappedAs400"),
    P(f"{E}:predict", {"inputs": [{"b64": "!!notbase64"}]}, 400, error="Unable to base64 decode", sig="string",
      id="Base64Invalid"),
    P(f"{E}:predict", {"inputs": [{"b64": "aGVsbG8"}]}, 200, {"outputs": ["hello"]}, sig="string",
      id="Base64Unpadded"),
    P(f"{E}:predict", {"inputs": [{"b64": "aGVs\nbG8="}]}, 200, {"outputs": ["hello"]}, sig="string",
      id="Base64Whitespace"),
    P(f"{E}:predict", {"inputs": [{"b64": "aGVsbG8=", "x": 1}]}, 400,
      contains="not formatted correctly for base64 data", sig="string", id="Base64ExtraKey"),
    P(f"{E}:predict", {"inputs": [{"b64": "aGVsbG8="}]}, 400, contains="Type: Object is not of expected type: float",
      sig="float", id="Base64ForFloat"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [1.0]} trailing garbage', 200, _predictions([1.0]),
      id="TrailingBytesIgnored"),
    P(f"{E}:predict", '{"signature_name": "float", "instances": [1.0], "instances": [2.0]}', 200,
      _predictions([1.0]), id="DuplicateKeyFirstWins"),
    P(f"{E}:predict", '{"signature_name": "float", "inputs": [NaN, -Infinity, Inf, -Inf]}', 200,
      {"outputs": [float("nan"), float("-inf"), float("inf"), float("-inf")]}, id="NonFiniteTokens"),
    P(f"{E}:predict", '{"signature_name": "int32", "inputs": [NaN]}', 400,
      error="JSON Value:  Type: Number is not of expected type: int32", id="NaNForIntRendersEmpty"),
    P(f"{E}:predict", {"inputs": ["a\nb\u0001\"/"]}, 200, raw='{\n    "outputs": [\n        "a\\nb\\u0001\\"/"\n    ]\n}',
      sig="string", id="StringEscaping"),
    P(f"{E}:predict", {"inputs": [[1, 2], [3]]}, 400,
      error="Encountered list at unexpected size: 1 at level: 1 expected size: 2", sig="int32", id="Ragged"),
    P(f"{E}:predict", {"inputs": [[1, 2], 3]}, 400,
      error="JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2", sig="int32",
      id="ScalarAtWrongLevel"),
    P(f"{E}:predict", {"inputs": [1, [2]]}, 400, error="Encountered list at unexpected level: 1 expected < 1",
      sig="int32", id="ListTooDeep"),
    P(f"{E}:predict", '{"signature_name": "float", "inputs": [1.0,]}', 400,
      error="JSON Parse error: Invalid value. at offset: 43", id="ParseErrorOffset"),
    P(f"{E}:predict", '{"signature_name" "float"}', 400,
      error="JSON Parse error: Missing a colon after a name of object member. at offset: 18", id="ParseMissingColon"),
    P(f"{E}:predict", '{"a": 1 "b": 2}', 400,
      error="JSON Parse error: Missing a comma or '}' after an object member. at offset: 8", id="ParseMissingComma"),
    P(f"{E}:predict", '{"a": "unterminated', 400,
      error="JSON Parse error: Missing a closing quotation mark in string. at offset: 6", id="ParseUnterminated"),
    P(f"{H}:classify", {"signature_name": "classify_x_to_y"}, 400,
      contains="When method is classify, key 'examples' is expected and was not found", id="ClassifyNoExamples"),
    P(f"{H}:regress", {"signature_name": "regress_x_to_y", "examples": {}}, 400,
      contains="Expecting 'examples' value to be an list/array", id="RegressExamplesNotArray"),
    P(f"{H}:regress", {"signature_name": "regress_x_to_y", "examples": []}, 400,
      contains="'examples' value is an empty array", id="RegressExamplesEmpty"),
    P(f"{H}:regress", {"examples": [{"x": None}]}, 400, error="Feature: x has element with unexpected JSON type: Null",
      sig="regress_x_to_y", id="FeatureNull"),
    P(f"{H}:regress", {"examples": [{"x": [10, 10.0]}]}, 400,
      error="Unexpected element type in feature: x expecting type: int64", sig="regress_x_to_y", id="FeatureMixedKinds"),
    P(f"{H}:regress", '{"signature_name": "regress_x_to_y", "examples": [{"x": 18446744073709551615}]}', 400,
      error="Feature: x has uint64_t element. Only int64_t is supported.", id="FeatureUint64"),
    P(f"{H}:regress", {"examples": [[1]]}, 400, error="Example must be JSON object but got JSON Array",
      sig="regress_x_to_y", id="ExampleNotObject"),
    P(f"{H}:classify", {"context": {"x": 20.0}, "examples": [{}]}, 200, {"results": [[["", 12.0]]]},
      sig="classify_x_to_y", id="ClassifyWithContext"),
    P(f"{H}:regress", {"examples": [{"x": 80}]}, 400, contains="x", sig="regress_x_to_y",
      id="IntFeatureForFloatModelFailsInModel"),
    P(f"{H}:regress", {"examples": [{"x": 80.0}, {"x": 0.0}]}, 200, raw='{\n    "results": [42.0, 2.0]\n}',
      sig="regress_x_to_y", id="RegressLayout"),
    P("/V1/MODELS/echo:predict", {"instances": [1.0]}, 200, _predictions([1.0]), id="CaseInsensitivePath"),
    P(f"{E}:PREDICT", {"instances": [1.0]}, 400, error="Malformed request: POST /v1/models/echo:PREDICT",
      id="VerbIsCaseSensitive"),
    P(f"{E}/versions/0001:predict", {"instances": [1.0]}, 200, _predictions([1.0]), id="VersionLeadingZeros"),
    P(f"{E}?x=1", "", 404, error="Could not find any versions of model echo?x=1", method="GET",
      id="QueryStringBecomesPartOfName"),
    P(f"{E}:predict?x=1", {"instances": [1.0]}, 400, error="Malformed request: POST /v1/models/echo:predict?x=1",
      id="QueryStringBreaksVerb"),
    P("/v1/models/ech%6F:predict", {"instances": [1.0]}, 200, _predictions([1.0]), id="UrlDecodedModelName"),
    P(E, "", 400, error="Malformed request: PUT /v1/models/echo", method="PUT", id="PutIsMalformed"),
    P(E, "", 400, error="Malformed request: DELETE /v1/models/echo", method="DELETE", id="DeleteIsMalformed"),
]


@pytest.mark.parametrize("method,path,body,status,expect,error,contains,raw", CASES)
def test_conformance(rest, method, path, body, status, expect, error, contains, raw):
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.request(method, rest.rest_url + path, data=data.encode(), timeout=60)
    assert r.status_code == status, r.text[:2000]
    if raw is not None:
        assert r.text == raw
    if r.text and r.status_code != 404 or "Could not find" in r.text or "Servable" in r.text:
        assert r.headers["Content-Type"] == "application/json"
    if expect is not None:
        assert same(json.loads(r.text), expect), r.text
    if error is not None:
        assert json.loads(r.text) == {"error": error}
    if contains is not None:
        assert contains in json.loads(r.text)["error"]


def test_case_count():
    assert len(CASES) >= 80


def test_error_body_layout(rest):
    r = requests.post(rest.rest_url + "/v1/models/foo:predict", data=b'{"instances": [1]}')
    assert r.text == '{\n    "error": "Servable not found for request: Latest(foo)"\n}'


def test_metadata_json(rest):
    r = requests.get(rest.rest_url + H + "/metadata")
    assert r.status_code == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "regress_x_to_y", "classify_x_to_y"} <= set(sigs)
    x = sigs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["name"] == "x:0"
    assert sigs["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"


def test_non_v1_path_is_html_404(rest):
    r = requests.get(rest.rest_url + "/foo")
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")


def test_cors(rest):
    r = requests.post(rest.rest_url + E + ":predict", data=b'{"instances": [1.0]}')
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "POST, GET"
    assert r.headers["Access-Control-Allow-Headers"] == "Content-Type"
    ok = requests.options(rest.rest_url + E + ":predict", headers={"Origin": "https://example.com"})
    assert ok.status_code == 200 and ok.text == ""
    assert requests.options(rest.rest_url + E + ":predict").status_code == 400


def test_gzip_request_body(rest):
    body = gzip.compress(b'{"instances": [2.5]}')
    r = requests.post(rest.rest_url + E + ":predict", data=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {"predictions": [2.5]}


def test_metrics_count_requests(rest):
    def count() -> float:
        text = requests.get(rest.rest_url + "/monitoring/prometheus/metrics").text
        for line in text.splitlines():
            if line.startswith(':tensorflow:serving:request_count{model_name="echo",status="OK"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    assert requests.post(rest.rest_url + E + ":predict", data=b'{"instances": [1.0]}').status_code == 200
    assert count() == before + 1
    text = requests.get(rest.rest_url + "/monitoring/prometheus/metrics").text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",model_name="echo"' in text \
        or ':tensorflow:serving:request_latency_bucket{model_name="echo",API="predict",entrypoint="REST"' in text


def test_readiness_and_liveness(rest):
    assert requests.get(rest.rest_url + "/healthz").status_code == 200
    assert requests.get(rest.rest_url + "/readyz").status_code == 200



def test_handler_reports_the_error_code_not_just_the_http_status():
    """FAILED_PRECONDITION and INVALID_ARGUMENT both answer 400; the metrics label must keep them apart."""
    from tfsb.errors import FailedPreconditionError
    from tfsb.server.rest_routes import RestHandler

    class Core:
        def predict(self, spec, inputs, api):
            raise FailedPreconditionError("not now")

    handler = RestHandler(Core(), None)
    answer = handler.process("POST", "/v1/models/m:predict", b'{"instances": [1]}')
    assert (answer.status, answer.model, answer.api, answer.code) == (400, "m", "predict", "FAILED_PRECONDITION")
    assert json.loads(answer.body) == {"error": "not now"} and answer.version is None
    assert handler.process("GET", "/v1/foo", b"").code == "INVALID_ARGUMENT"
