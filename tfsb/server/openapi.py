"""An OpenAPI 3.1 description of the REST API: TF Serving's `/v1/...` routes (both request formats, b64, the
error body), the embedded server's extensions, and one concrete `:predict` path per loaded model whose request
schema comes from the model's signatures (input names, dtypes, shapes) — what a generated client or a
validator needs to know what that model accepts.

Built from the registry on each request (cheap: a few dicts per signature), so a version rollover that changes
a signature shows at once.
"""

from __future__ import annotations

from typing import Any

from tfsb.wire.tensor_proto import DT

_INT = {DT.DT_INT8, DT.DT_INT16, DT.DT_INT32, DT.DT_INT64, DT.DT_UINT8, DT.DT_UINT16, DT.DT_UINT32, DT.DT_UINT64}
_NUM = {DT.DT_FLOAT, DT.DT_DOUBLE, DT.DT_HALF, DT.DT_BFLOAT16}
PREDICT = "tensorflow/serving/predict"

ERROR = {"$ref": "#/components/schemas/Error"}
_NAME = {"name": "model_name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
# TF Serving answers a version that does not fit int64 (and a name or label that is not UTF-8 once decoded)
# with 400 and an *empty* body, before its JSON error writer runs: the parameters here exclude those inputs
_VERSION = {"name": "version", "in": "path", "required": True,
            "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**63 - 1}}
_LABEL = {"name": "label", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"}}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _errors() -> dict:
    return {"default": {"description": "TF Serving's error body (HTTP status from the gRPC code)",
                        "content": _json(ERROR)}}


def _leaf(dtype: int) -> dict:
    if dtype == DT.DT_STRING:
        return {"anyOf": [{"type": "string"}, {"$ref": "#/components/schemas/B64"}]}
    if dtype == DT.DT_BOOL:
        return {"type": "boolean"}
    if dtype in _INT:
        return {"type": "integer"}
    if dtype in _NUM:
        return {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
    return {}


def _nested(dtype: int, dims: list[int]) -> dict:
    schema = _leaf(dtype)
    for d in reversed(dims):
        arr: dict[str, Any] = {"type": "array", "items": schema}
        if d >= 0:
            arr["minItems"] = arr["maxItems"] = d
        schema = arr
    return schema


def _dims(info) -> list[int] | None:
    if info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in info.tensor_shape.dim]


def _tensor(info, *, row: bool) -> dict:
    dims = _dims(info)
    if dims is None:
        return {}
    if row:
        dims = dims[1:]
    return _nested(info.dtype, dims)


def predict_request_schema(sigdef) -> dict:
    """The body `:predict` accepts for one signature: row (`instances`) or columnar (`inputs`) format."""
    names = sorted(sigdef.inputs)
    if len(names) == 1:
        info = sigdef.inputs[names[0]]
        row_item: dict = {"anyOf": [_tensor(info, row=True), {"type": "object", "properties": {
            names[0]: _tensor(info, row=True)}, "required": names, "additionalProperties": False}]}
        columnar: dict = {"anyOf": [_tensor(info, row=False), {"type": "object", "properties": {
            names[0]: _tensor(info, row=False)}, "required": names, "additionalProperties": False}]}
    else:
        row_item = {"type": "object", "properties": {n: _tensor(sigdef.inputs[n], row=True) for n in names},
                    "required": names, "additionalProperties": False}
        columnar = {"type": "object", "properties": {n: _tensor(sigdef.inputs[n], row=False) for n in names},
                    "required": names, "additionalProperties": False}
    return {"type": "object", "properties": {
        "signature_name": {"type": "string"},
        "instances": {"type": "array", "items": row_item},
        "inputs": columnar}}


def _model_paths(name: str, sigdefs: dict) -> dict:
    predict = {n: sd for n, sd in sorted(sigdefs.items()) if sd.method_name == PREDICT and not n.startswith("__")}
    if not predict:
        return {}
    schemas = []
    for sig, sd in predict.items():
        body = predict_request_schema(sd)
        if sig == "serving_default":
            body["properties"]["signature_name"] = {"enum": ["serving_default", ""]}
        else:
            body["properties"]["signature_name"] = {"const": sig}
            body["required"] = ["signature_name"]
        schemas.append({"title": sig, **body,
                        "oneOf": [{"required": ["instances"], "not": {"required": ["inputs"]}},
                                  {"required": ["inputs"], "not": {"required": ["instances"]}}]})
    return {f"/v1/models/{name}:predict": {"post": {
        "summary": f"Predict with {name} (schema from its loaded signatures: {', '.join(predict)})",
        "operationId": f"predict_{name}",
        "tags": [f"model {name}"],
        "requestBody": {"required": True, "content": _json({"oneOf": schemas} if len(schemas) > 1 else schemas[0])},
        "responses": {"200": {"description": "predictions (row format) or outputs (columnar)",
                              "content": _json({"$ref": "#/components/schemas/PredictResponse"})}, **_errors()}}}}


def _generic_paths() -> dict:
    paths: dict[str, Any] = {}
    status = {"responses": {"200": {"description": "GetModelStatusResponse as JSON",
                                    "content": _json({"$ref": "#/components/schemas/ModelStatus"})}, **_errors()},
              "tags": ["TF Serving"]}
    metadata = {"responses": {"200": {"description": "GetModelMetadataResponse (signature_def) as JSON",
                                      "content": _json({"type": "object", "required": ["model_spec", "metadata"]})},
                              **_errors()}, "tags": ["TF Serving"]}
    verbs = {
        "predict": ("PredictRequest", "PredictResponse"),
        "classify": ("ExamplesRequest", "ClassifyResponse"),
        "regress": ("ExamplesRequest", "RegressResponse"),
    }
    for prefix, params, tag in (("/v1/models/{model_name}", [_NAME], "latest"),
                                ("/v1/models/{model_name}/versions/{version}", [_NAME, _VERSION], "version"),
                                ("/v1/models/{model_name}/labels/{label}", [_NAME, _LABEL], "label")):
        paths[prefix] = {"get": {"summary": f"Model status ({tag})", "operationId": f"status_{tag}",
                                 "parameters": params, **status}}
        paths[prefix + "/metadata"] = {"get": {"summary": f"Model metadata ({tag})",
                                               "operationId": f"metadata_{tag}", "parameters": params,
                                               **metadata}}
        for verb, (req, resp) in verbs.items():
            paths[f"{prefix}:{verb}"] = {"post": {
                "summary": f"{verb.capitalize()} ({tag} version)", "operationId": f"{verb}_{tag}",
                "parameters": params, "tags": ["TF Serving"],
                "requestBody": {"required": True, "content": _json({"$ref": f"#/components/schemas/{req}"})},
                "responses": {"200": {"description": verb, "content": _json({"$ref": f"#/components/schemas/{resp}"})},
                              **_errors()}}}
    return paths


def _extension_paths() -> dict:
    ext = ["embedded server extensions"]
    return {
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "tags": ext, "responses": {
            "200": {"description": "the process serves", "content": _json({"$ref": "#/components/schemas/Health"})}}}},
        "/readyz": {"get": {"summary": "Readiness: every configured model has an AVAILABLE version",
                            "operationId": "readyz", "tags": ext, "responses": {
                                "200": {"description": "ready", "content": _json({"$ref": "#/components/schemas/Health"})},
                                "503": {"description": "not ready", "content": _json({"$ref": "#/components/schemas/Health"})}}}},
        "/api/models": {"get": {"summary": "Every configured model: versions, states, labels, signatures",
                                "operationId": "list_models", "tags": ext, "responses": {
                                    "200": {"description": "model list",
                                            "content": _json({"$ref": "#/components/schemas/ModelList"})}}}},
        "/api/history": {"get": {"summary": "The last minutes of traffic per model: requests/s and model time "
                                           "p50/p99 per version, requests/s per version label",
                                 "operationId": "traffic_history", "tags": ext, "responses": {
                                     "200": {"description": "time series",
                                             "content": _json({"$ref": "#/components/schemas/History"})}}}},
        "/api/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "tags": ext,
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": _json({"type": "object"})}}}},
    }


def _components() -> dict:
    nested = {"anyOf": [{"type": "array"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"},
                        {"type": "string"}, {"$ref": "#/components/schemas/B64"}, {"type": "object"}]}
    feature = {"anyOf": [{"type": "number"}, {"type": "integer"}, {"type": "string"},
                         {"$ref": "#/components/schemas/B64"}, {"type": "array"}]}
    example = {"type": "object", "additionalProperties": feature}
    return {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "B64": {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string",
                                                                          "contentEncoding": "base64"}},
                "additionalProperties": False, "description": "binary string value (`*_bytes` tensors)"},
        "PredictRequest": {"type": "object", "properties": {
            "signature_name": {"type": "string"},
            "instances": {"type": "array", "description": "row format: one entry per batch element"},
            "inputs": {**nested, "description": "columnar format: one tensor per input"}}},
        # a scalar output may be non-finite: TF Serving writes NaN, Infinity and -Infinity as bare literals,
        # which strict JSON readers (schema validators among them) turn into null
        "PredictResponse": {"type": "object", "properties": {
            "predictions": {"type": "array"}, "outputs": {"anyOf": [*nested["anyOf"], {"type": "null"}]}}},
        "ExamplesRequest": {"type": "object", "required": ["examples"], "properties": {
            "signature_name": {"type": "string"}, "context": example,
            "examples": {"type": "array", "items": example}}},
        "ClassifyResponse": {"type": "object", "required": ["results"], "properties": {"results": {
            "type": "array", "items": {"type": "array", "items": {"type": "array", "prefixItems": [
                {"type": "string"}, {"type": "number"}]}}}}},
        "RegressResponse": {"type": "object", "required": ["results"], "properties": {
            "results": {"type": "array", "items": {"type": "number"}}}},
        "ModelStatus": {"type": "object", "required": ["model_version_status"], "properties": {
            "model_version_status": {"type": "array", "items": {"type": "object", "properties": {
                "version": {"type": "string"}, "state": {"type": "string"},
                "status": {"type": "object"}}}}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "History": {"type": "object", "required": ["period_s", "models"], "properties": {
            "period_s": {"type": "number"},
            "models": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["t", "versions", "labels"], "properties": {
                    "t": {"type": "array", "items": {"type": "number"}},
                    "versions": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {
                        "type": "array", "items": {"type": ["number", "null"]}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {
                        "type": "array", "items": {"type": "number"}}}}}}}}},
        "ModelList": {"type": "object", "required": ["models"], "properties": {"models": {"type": "array", "items": {
            "type": "object", "required": ["name", "versions", "labels"], "properties": {
                "name": {"type": "string"}, "platform": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "versions": {"type": "array", "items": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "state": {"type": "string"},
                    "error": {"type": ["string", "null"]},
                    "requests": {"type": "integer"}, "latency_us_sum": {"type": "number"}}}},
                "signatures": {"type": "object"}}}}}},
    }}


def document(registry, server_version: str) -> dict:
    """The whole description, with one concrete `:predict` path per model that has an AVAILABLE version."""
    paths = {**_generic_paths(), **_extension_paths()}
    for name in sorted(registry.names()):
        sigdefs = loaded_signatures(registry, name)
        if sigdefs:
            paths.update(_model_paths(name, sigdefs))
    return {"openapi": "3.1.0",
            "info": {"title": "TensorFlow Serving REST API (tf-serving-bundle embedded server)",
                     "version": server_version,
                     "description": "TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) "
                                    "plus the embedded server's extensions. Concrete /v1/models/<name>:predict "
                                    "paths carry request schemas generated from the loaded signatures."},
            "paths": paths, "components": _components()}


def loaded_signatures(registry, name: str) -> dict:
    """The signatures of the latest AVAILABLE version of `name` ({} when none is loaded)."""
    mv = registry.model(name)
    if mv is None or not mv.available():
        return {}
    try:
        with mv.acquire(None) as rec:
            return dict(rec.servable.signature_defs)
    except Exception:  # noqa: BLE001 - unloaded between the check and the acquire
        return {}
