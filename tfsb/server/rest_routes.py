"""TF Serving's REST API as plain synchronous functions (`http_rest_api_handler.cc`, `http_rest_api_util.cc`):
URL parsing, the predict/classify/regress/status/metadata handlers over the core, and the Prometheus
exposition. The transport (`tfsb.server.rest`) calls `RestHandler.process` from its worker pool or, for small
cheap requests, from the event loop."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from tfsb.server.core import Core
from tfsb.server.metrics import Metrics
from tfsb.server.registry import ModelRegistry
from tfsb.errors import InternalError, InvalidArgumentError, ServingError
from tfsb.wire import json_example, json_parse, json_request, json_response
from tfsb.wire.json_text import error_json
from tfsb.wire.spec import Spec

log = logging.getLogger("tfsb.server.rest")

_POST_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                      re.IGNORECASE)
_GET_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                     re.IGNORECASE)


class _EmptyBodyError(InvalidArgumentError):
    """URL-parsing errors: TF Serving returns them before writing the error JSON (400, empty body)."""


def _decode_arg(raw: str, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _EmptyBodyError(f"Failed to decode {what}:{raw}") from None


def _parse_model_info(method: str, path: str) -> tuple[bool, str, int | None, str | None, str]:
    """`ParseModelInfo`: (matched, model, version, label, last path part: the verb of a POST, `metadata` or
    nothing for a GET)."""
    m = (_POST_RE if method == "POST" else _GET_RE).fullmatch(path) if method in ("POST", "GET") else None
    if m is None:
        return False, "", None, None, ""
    name, vstr, label, last = m.group(1) or "", m.group(2), m.group(3), m.group(4) or ""
    if name:
        name = _decode_arg(name, "model name")
    version = None
    if vstr:
        v = int(vstr) if len(vstr) <= 19 else 2**63  # thousands of digits: refused, never int()-converted
        if v >= 2**63:
            raise _EmptyBodyError(f"Failed to convert version: {vstr} to numeric.")
        version = v
    if label:
        label = _decode_arg(label, "model version label")
    return True, name, version, label, last


def _with_signature(spec: Spec, doc: dict) -> Spec:
    """The body's `signature_name`; most bodies name none, and a dataclass copy costs more than the check."""
    name = json_request.signature_name(doc)
    return replace(spec, signature_name=name) if name != spec.signature_name else spec


class _JsonInputs:
    """Decodes a predict body against the signature of the version the core resolved: one version lookup per
    request, so the dtypes and the model call always come from the same version, even mid-rollover."""

    __slots__ = ("doc", "signature_name", "allow_fast", "fmt")
    names = None  # known only once decoded against the signature

    def __init__(self, doc, signature_name: str, allow_fast: bool):
        self.doc, self.signature_name, self.allow_fast, self.fmt = doc, signature_name, allow_fast, None

    def __call__(self, sig) -> dict:
        self.fmt, tensors = json_request.predict_inputs(self.doc, {a: t.dtype for a, t in sig.inputs.items()},
                                                      self.signature_name, self.allow_fast)
        return tensors

    @staticmethod
    def missing_signature(name: str) -> ServingError:
        return InvalidArgumentError(f'Serving signature name: "{name}" not found in signature def')


class Answer(NamedTuple):
    """One REST answer: status and body, plus the model, API and code name for the metrics, and the version
    that served an inference (sent as `VERSION_HEADER`: clients ignore headers they do not know)."""

    status: int
    body: bytes
    model: str = ""
    api: str = ""
    code: str = "OK"
    version: int | None = None


def error_answer(e: ServingError, model: str = "", api: str = "") -> Answer:
    return Answer(e.http_status, error_json(e.message), model, api, e.code.name)


class RestHandler:
    """Synchronous request processing; every method runs in the worker pool."""

    def __init__(self, core: Core, registry: ModelRegistry):
        self.core = core
        self.registry = registry

    def process(self, method: str, path: str, body: bytes) -> Answer:
        model, api = "", ""
        try:
            matched, model, version, label, last = _parse_model_info(method, path)
            spec = Spec(model, version, label)  # refuses a version together with a label
            if method == "POST" and matched and last in ("predict", "classify", "regress"):
                api = last
                served, out = getattr(self, last)(spec, body)
                return Answer(200, out, model, api, "OK", served)
            if method == "GET" and matched:
                if not model:
                    raise InvalidArgumentError("Missing model name in request.")
                out = self.metadata(spec) if last == "metadata" else self.status(spec)
                return Answer(200, out, model, api)
            raise InvalidArgumentError(f"Malformed request: {method} {path}")
        except _EmptyBodyError as e:
            return Answer(400, b"", model, api, e.code.name)
        except ServingError as e:
            return error_answer(e, model, api)
        except Exception as e:  # noqa: BLE001 - a bug answers 500, never kills the server
            log.exception("REST %s %s failed", method, path)
            return error_answer(InternalError(f"{type(e).__name__}: {e}"), model, api)

    def predict(self, spec: Spec, body: bytes) -> tuple[int, bytes]:
        doc = json_parse.parse(body)
        spec = _with_signature(spec, doc)
        allow_fast = b"true" not in body and b"false" not in body  # np.asarray would turn bools into numbers
        decoder = _JsonInputs(doc, spec.signature_name, allow_fast)
        pred = self.core.predict(spec, decoder, api="predict")
        return pred.version, json_response.predict_response(pred.outputs, decoder.fmt)

    def classify(self, spec: Spec, body: bytes) -> tuple[int, bytes]:
        doc = json_parse.parse(body)
        spec = _with_signature(spec, doc)
        version, result = self.core.classify(spec, json_example.examples_input(doc, "classify"))
        return version, json_response.classify_response(result)

    def regress(self, spec: Spec, body: bytes) -> tuple[int, bytes]:
        doc = json_parse.parse(body)
        spec = _with_signature(spec, doc)
        version, result = self.core.regress(spec, json_example.examples_input(doc, "regress"))
        return version, json_response.regress_response(result)

    def status(self, spec: Spec) -> bytes:
        resp = self.core.status_proto(spec.name, spec.version)  # a label is ignored, like TF Serving
        return json_format.MessageToJson(resp, preserving_proto_field_name=True, indent=1,
                                         always_print_fields_with_no_presence=True).encode()

    def metadata(self, spec: Spec) -> bytes:
        version, sigdefs = self.core.metadata(spec)
        opts = dict(preserving_proto_field_name=True, indent=1, always_print_fields_with_no_presence=True)
        ms = get_model_metadata_pb2.GetModelMetadataResponse().model_spec
        ms.name = spec.name
        ms.version.value = version
        sdm = get_model_metadata_pb2.SignatureDefMap()
        for k, v in sigdefs.items():
            sdm.signature_def[k].CopyFrom(v)
        return (f'{{\n"model_spec":{json_format.MessageToJson(ms, **opts)},\n"metadata": {{"signature_def": '
                f'{json_format.MessageToJson(sdm, **opts)}}}\n}}\n').encode()


def prometheus_text(metrics: Metrics) -> bytes:
    """TF Serving's exposition (`util/prometheus_exporter.cc`): `# TYPE` lines, no HELP, counters without the
    `_total` suffix prometheus-client adds, no `_created` samples."""
    lines = []
    for fam in metrics.collect():
        kind = fam.type if fam.type in ("counter", "gauge", "histogram") else "untyped"
        lines.append(f"# TYPE {fam.name} {kind}")
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            name = fam.name if (kind == "counter" and s.name == fam.name + "_total") else s.name
            labels = ",".join(f'{k}="{_esc(v)}"' for k, v in s.labels.items())
            value = int(s.value) if float(s.value).is_integer() else s.value
            lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
    return ("\n".join(lines) + "\n").encode()


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
