"""tf.Example ⇄ the JSON `examples` objects of classify/regress (`MakeExampleFromJsonObject`): the server
builds the `Input` proto, the clients write Examples as JSON."""

from __future__ import annotations

import base64
from typing import Any

from tfsb.errors import InvalidArgumentError
from tfsb.protos import Input
from tfsb.wire.json_request import b64_decode, is_b64
from tfsb.wire.json_text import Double, debug_string, json_type


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
    inp = Input()
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


def example_to_json(ex) -> dict:
    """tf.Example → the `examples` object form (the clients' side of `examples_input`): floats keep their
    decimal point, bytes that are not UTF-8 go as b64."""
    out: dict[str, Any] = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        if kind == "float_list":
            out[k] = [float(v) for v in f.float_list.value]
        elif kind == "int64_list":
            out[k] = list(f.int64_list.value)
        elif kind == "bytes_list":
            vals = []
            for b in f.bytes_list.value:
                try:
                    vals.append(b.decode("utf-8"))
                except UnicodeDecodeError:
                    vals.append({"b64": base64.b64encode(b).decode()})
            out[k] = vals
    return out
