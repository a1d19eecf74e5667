"""Compatibility alias: TF Serving's JSON codec is split by job in `serving.wire` (`json_parse`, `json_text`,
`json_request`, `json_response`, `json_example`). Kept so code written against the earlier layout
(`from serving import json_codec`) keeps working; new code imports the wire modules."""

from serving.wire.json_example import example_to_json, examples_input
from serving.wire.json_parse import parse
from serving.wire.json_request import (COLUMNAR, MAX_RANK, ROW, b64_decode, is_b64, predict_inputs, signature_name,
                                       to_json_value, to_tensor)
from serving.wire.json_response import (_float_tokens, _single_line, classify_response, fits, from_json_value,
                                        predict_response, regress_response)
from serving.wire.json_text import Double, PrettyWriter, debug_string, error_json, format_decimal, json_type

__all__ = ["COLUMNAR", "MAX_RANK", "ROW", "Double", "PrettyWriter", "_float_tokens", "_single_line", "b64_decode",
           "classify_response", "debug_string", "error_json", "example_to_json", "examples_input", "fits",
           "format_decimal", "from_json_value", "is_b64", "json_type", "parse", "predict_inputs", "predict_response",
           "regress_response", "signature_name", "to_json_value", "to_tensor"]
