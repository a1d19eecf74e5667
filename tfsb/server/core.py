"""The prediction core: every transport (gRPC, REST, warmup) calls these methods and nothing else.

Inputs are numpy arrays keyed by signature alias (or a decoder that turns the resolved Signature into
them, so REST can use the signature's dtypes); outputs are numpy arrays or the Classification/Regression
result protos. Errors are ServingError with TF Serving's codes and texts (`predict_util.cc`,
`classifier.cc`, `regressor.cc`, `multi_inference.cc`, `get_model_metadata_impl.cc`).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, replace
from typing import Collection, Protocol, Sequence

import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, inference_pb2, input_pb2,
                                     regression_pb2)

from tfsb.server.metrics import Metrics
from tfsb.server.admission import UNLIMITED, MemoryBudget
from tfsb.errors import (FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError,
                            ServingError, UnimplementedError)
from tfsb.server.registry import ModelRegistry
from tfsb.server.runtime import SavedModelServable, Signature
from tfsb.server.traffic import (SHADOW_API, Traffic, compare_classifications, compare_regressions,
                                 compare_tensors)
from tfsb.server.versions import Hold, State, VersionRecord
from tfsb.wire.spec import DEFAULT_SIGNATURE, Spec, spec_from_proto

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_API = "warmup"  # the `api` of replayed warmup records: not counted as the version's traffic


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # as decoded: a shadow call reuses them


class Decoder(Protocol):
    """A transport's request inputs, decoded only once the core knows the signature of the version it
    resolved (REST needs its dtypes; gRPC reserves memory before decoding)."""

    names: Collection[str] | None  # the aliases it will produce, checked before decoding (None: not known)

    def __call__(self, sig: Signature) -> dict[str, np.ndarray]: ...

    def missing_signature(self, name: str) -> ServingError:
        """The error for a signature the version does not have, in the transport's words."""


def _join(names) -> str:
    return ",".join(sorted(names))


class ExampleApi(enum.Enum):
    """The two APIs over tf.Example input: the value is the REST verb, `metric` TF Serving's API label."""

    CLASSIFY = "classify"
    REGRESS = "regress"

    @property
    def metric(self) -> str:
        return self.value.capitalize()


class Inference:
    """The work on one loaded servable: signature checks, the model call, result building. No lookups, so
    the loader's warmup replay uses it on a version that is not AVAILABLE yet, and `Core` on resolved ones."""

    def __init__(self, metrics: Metrics, *, method_name_check: bool = False):
        self.metrics = metrics
        self.method_name_check = method_name_check

    def predict_on(self, servable: SavedModelServable, version: int, spec: Spec,
                   inputs: dict[str, np.ndarray] | Decoder, output_filter: Sequence[str] = (), *,
                   api: str = "Predict") -> Prediction:
        """Predict against one given servable (also used by warmup, before the version is AVAILABLE)."""
        sig = servable.signatures.get(spec.signature)
        if sig is None:
            raise (FailedPreconditionError(f'Serving signature key "{spec.signature}" not found.')
                   if isinstance(inputs, dict) else inputs.missing_signature(spec.signature))
        if self.method_name_check and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise InternalError("Expected prediction signature method_name to be one of {"
                                f"{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
                                f"Was: {sig.method_name}")
        outputs = self._check_output_filter(sig, output_filter)
        if isinstance(inputs, dict):
            feeds = inputs
            self._check_inputs(sig, feeds)
        elif inputs.names is not None:  # everything cheap is checked before a byte is decoded
            self._check_inputs(sig, inputs.names)
            feeds = inputs(sig)  # decodes exactly the names just checked
        else:
            feeds = inputs(sig)
            self._check_inputs(sig, feeds)
        t0 = time.perf_counter()
        result = servable.run_signature(sig, dict(feeds), outputs)
        took = time.perf_counter() - t0
        if api != SHADOW_API:  # mirrored calls are counted by the traffic metrics only
            self.metrics.runtime_latency(spec.name, api, servable.RUNTIME, took)
        if api not in (WARMUP_API, SHADOW_API):  # replayed warmup records are not traffic
            self.metrics.version_request(spec.name, version, spec.label, took)
        return Prediction(spec.name, version, spec.signature, result, feeds)

    @staticmethod
    def _check_inputs(sig: Signature, feeds: dict[str, np.ndarray]) -> None:
        n_req, n_sig = len(feeds), len(sig.inputs)
        if n_req > n_sig or (n_req < n_sig and not sig.defaults):
            extra = set(feeds) - set(sig.inputs)
            missing = set(sig.inputs) - set(feeds)
            raise InvalidArgumentError(
                f"input size does not match signature: {n_req}!={n_sig} len({{{_join(feeds)}}}) != "
                f"len({{{_join(sig.inputs)}}}). Sent extra: {{{_join(extra)}}}. "
                f"Missing but required: {{{_join(missing)}}}.")
        for alias, spec in sorted(sig.inputs.items()):
            if alias not in feeds and alias not in sig.defaults:
                raise InvalidArgumentError(
                    f"Signature input alias: {alias}(feed name: {spec.name}) not found in request and no "
                    f"default value provided. Inputs expected to be in the request {{{_join(sig.inputs)}}}, "
                    f"or default input alias set: {_join(sig.defaults)}")
        unknown = [k for k in feeds if k not in sig.inputs]
        if unknown:
            raise InvalidArgumentError(f"Inputs contains invalid name. Used request inputs: "
                                       f"{_join(k for k in feeds if k in sig.inputs)}, request input: {unknown[0]}")

    @staticmethod
    def _check_output_filter(sig: Signature, output_filter: Sequence[str]) -> tuple[str, ...]:
        if not output_filter:
            return sig.output_order
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in sig.outputs:
                raise InvalidArgumentError(f"output tensor alias not found in signature: {alias} Outputs "
                                           f"expected to be in the set {{{_join(sig.outputs)}}}.")
            if alias in seen:
                raise InvalidArgumentError(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return tuple(output_filter)

    # ------------------------------------------------------------------------------------ classify/regress
    @staticmethod
    def serialize_input(inp: input_pb2.Input) -> list[bytes]:
        """tf.Example wire bytes; with context, context bytes are prepended (protobuf merge, example wins)."""
        kind = inp.WhichOneof("kind")
        if kind == "example_list":
            out = [e.SerializeToString() for e in inp.example_list.examples]
        elif kind == "example_list_with_context":
            ctx = inp.example_list_with_context.context.SerializeToString()
            out = [ctx + e.SerializeToString() for e in inp.example_list_with_context.examples]
        else:
            out = []
        if not out:
            raise InvalidArgumentError("Input is empty.")
        return out

    def _classify_signature(self, sig: Signature) -> tuple[str, list[str]]:
        if self.method_name_check and sig.method_name != CLASSIFY_METHOD:
            raise InvalidArgumentError(f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                                       f"Was: {sig.method_name}")
        if len(sig.inputs) != 1:
            raise InvalidArgumentError("Expected one input Tensor.")
        if len(sig.outputs) not in (1, 2):
            raise InvalidArgumentError(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "inputs" not in sig.inputs:
            raise InvalidArgumentError(f"No classification inputs found in SignatureDef: {sig.sigdef}")
        outs = [a for a in ("classes", "scores") if a in sig.outputs]
        if not outs:
            raise InvalidArgumentError('Expected classification signature outputs to contain at least one of '
                                       f'"classes" or "scores". Signature was: {sig.sigdef}')
        return "inputs", outs

    def _regress_signature(self, sig: Signature) -> tuple[str, list[str]]:
        if self.method_name_check and sig.method_name != REGRESS_METHOD:
            raise InvalidArgumentError(f"Expected regression signature method_name to be {REGRESS_METHOD}. "
                                       f"Was: {sig.method_name}")
        if len(sig.inputs) != 1:
            raise InvalidArgumentError("Expected one input Tensor.")
        if len(sig.outputs) != 1:
            raise InvalidArgumentError("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            raise InvalidArgumentError(f"No regression inputs found in SignatureDef: {sig.sigdef}")
        if "outputs" not in sig.outputs:
            raise InvalidArgumentError(f"No regression outputs found in SignatureDef: {sig.sigdef}")
        return "inputs", ["outputs"]

    @staticmethod
    def _classification_result(out: dict[str, np.ndarray], n: int) -> classification_pb2.ClassificationResult:
        classes, scores = out.get("classes"), out.get("scores")
        for name, t, kind in (("classes", classes, "OSU"), ("scores", scores, "f")):
            if t is None:
                continue
            if t.ndim != 2:
                raise InvalidArgumentError(f"Expected Tensor shape: [batch_size num_classes] but got "
                                           f"[{','.join(map(str, t.shape))}]")
            if t.dtype.kind not in kind or (name == "scores" and t.dtype != np.float32):
                raise InvalidArgumentError(f"Expected {name} Tensor of DT_{'STRING' if name == 'classes' else 'FLOAT'}."
                                           f" Got: {t.dtype}")
            if t.shape[0] != n:
                raise InvalidArgumentError(f"Expected {name} output batch size of {n}. Got: {t.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise InvalidArgumentError("Tensors class and score should match in dim_size(1). Got "
                                       f"{classes.shape[1]} vs. {scores.shape[1]}")
        width = (classes if classes is not None else scores).shape[1]
        result = classification_pb2.ClassificationResult()
        for i in range(n):
            c = result.classifications.add()
            for j in range(width):
                cls = c.classes.add()
                if classes is not None:
                    cls.label = classes[i, j] if isinstance(classes[i, j], str) else classes[i, j].decode(
                        "utf-8", "replace")
                if scores is not None:
                    cls.score = float(scores[i, j])
        return result

    @staticmethod
    def _regression_result(out: dict[str, np.ndarray], n: int) -> regression_pb2.RegressionResult:
        t = out["outputs"]
        if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
            raise InvalidArgumentError("Expected output Tensor shape to be either [batch_size] or "
                                       f"[batch_size, 1] but got [{','.join(map(str, t.shape))}]")
        if t.shape[0] != n:
            raise InvalidArgumentError(f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
        if t.dtype != np.float32:
            raise InvalidArgumentError(f"Expected output Tensor of DT_FLOAT.  Got: {t.dtype}")
        result = regression_pb2.RegressionResult()
        for v in t.reshape(-1).tolist():
            result.regressions.add().value = v
        return result

    def _run_examples(self, servable: SavedModelServable, sigs: list[tuple[Signature, str, list[str]]],
                      examples: list[bytes]) -> dict[str, np.ndarray]:
        """One session run feeding the serialized examples to every signature's input tensor."""
        batch = np.array(examples, dtype=object)
        feeds = {sig.inputs[inp].name: batch for sig, inp, _ in sigs}
        fetch = sorted({sig.outputs[o].name for sig, _, outs in sigs for o in outs})
        return dict(zip(fetch, servable.run(feeds, fetch)))

    def examples_on(self, servable: SavedModelServable, spec: Spec, inp: input_pb2.Input, api: ExampleApi, *,
                    shadow: bool = False):
        """Classify or regress against one given servable (`shadow`: a mirrored call, kept out of TF Serving's
        metrics)."""
        sig = servable.signatures.get(spec.signature)
        if sig is None:
            raise InvalidArgumentError(f"No signature was found with the name: {spec.signature}")
        inp_alias, outs = (self._classify_signature if api is ExampleApi.CLASSIFY else self._regress_signature)(sig)
        examples = self.serialize_input(inp)
        t0 = time.perf_counter()
        by_name = self._run_examples(servable, [(sig, inp_alias, outs)], examples)
        if not shadow:
            self.metrics.runtime_latency(spec.name, api.metric, servable.RUNTIME, time.perf_counter() - t0)
        out = {o: by_name[sig.outputs[o].name] for o in outs}
        build = self._classification_result if api is ExampleApi.CLASSIFY else self._regression_result
        return build(out, len(examples))

    def multi_inference_on(self, servable: SavedModelServable, version: int,
                           request: inference_pb2.MultiInferenceRequest) -> inference_pb2.MultiInferenceResponse:
        tasks = list(request.tasks)
        name = tasks[0].model_spec.name
        plan: list[tuple[Signature, str, list[str], str]] = []
        seen: set[str] = set()
        for t in tasks:
            sname = t.model_spec.signature_name or DEFAULT_SIGNATURE
            if sname in seen:
                raise InvalidArgumentError(f"Duplicate evaluation of signature: {sname}")
            seen.add(sname)
            sig = servable.signatures.get(sname)
            if sig is None:
                raise InvalidArgumentError(f"Requested signature not found in model graph: {sname}")
            if t.method_name == CLASSIFY_METHOD:
                inp_alias, outs = self._classify_signature(sig)
            elif t.method_name == REGRESS_METHOD:
                inp_alias, outs = self._regress_signature(sig)
            else:
                raise UnimplementedError(f"Unsupported signature method_name: {t.method_name}")
            plan.append((sig, inp_alias, outs, t.method_name))
        examples = self.serialize_input(request.input)
        t0 = time.perf_counter()
        by_name = self._run_examples(servable, [(s, i, o) for s, i, o, _ in plan], examples)
        self.metrics.runtime_latency(name, "MultiInference", servable.RUNTIME, time.perf_counter() - t0)
        resp = inference_pb2.MultiInferenceResponse()
        for t, (sig, _, outs, method) in zip(tasks, plan):
            res = resp.results.add()
            res.model_spec.name = t.model_spec.name
            res.model_spec.signature_name = sig.name
            res.model_spec.version.value = version
            out = {o: by_name[sig.outputs[o].name] for o in outs}
            if method == CLASSIFY_METHOD:
                res.classification_result.CopyFrom(self._classification_result(out, len(examples)))
            else:
                res.regression_result.CopyFrom(self._regression_result(out, len(examples)))
        return resp


class Core:
    """What the transports call: resolve the servable a request names (one lookup per request, held until
    the answer is built), then run the request through `Inference` on it."""

    def __init__(self, registry: ModelRegistry, inference: Inference, *, budget: MemoryBudget = UNLIMITED,
                 traffic: Traffic | None = None):
        self.registry = registry
        self.inference = inference
        self.metrics = inference.metrics
        self.budget = budget  # request memory in flight, shared by every transport
        self.traffic = traffic  # shadow traffic and the weighted-split label (tfsb.server.traffic)

    def metric_model_name(self, name: str) -> str:
        """The model_name label for a request: names the config does not know share one label, so clients
        cannot grow /metrics (and the process) by inventing model names."""
        return name if self.registry.model(name) is not None else ""

    # ------------------------------------------------------------------------------------ lookup
    def servable(self, spec: Spec) -> Hold:
        """`with core.servable(spec) as rec:` the version the spec resolves to, held until the block ends."""
        if not spec.name:
            raise InvalidArgumentError("ModelSpec has no name specified.")
        if spec.label is not None and self.traffic is not None:  # a split label resolves for every API
            entry = self.traffic.entry(spec.name)
            if entry is not None:
                spec = self.traffic.route(spec, entry)
        versions, version = self.registry.resolve(spec.name, spec.version, spec.label)
        return versions.acquire(version)

    # ------------------------------------------------------------------------------------ requests
    def predict(self, spec: Spec, inputs: dict[str, np.ndarray] | Decoder,
                output_filter: Sequence[str] = (), *, api: str = "Predict") -> Prediction:
        entry = self.traffic.entry(spec.name) if self.traffic is not None else None
        if entry is None:
            with self.servable(spec) as rec:
                return self.inference.predict_on(rec.servable, rec.version, spec, inputs, output_filter, api=api)
        spec = self.traffic.route(spec, entry)
        pred = self._live(spec, lambda rec: self.inference.predict_on(rec.servable, rec.version, spec, inputs,
                                                                       output_filter, api=api))
        feeds = pred.inputs

        def run(target: Spec):
            target = replace(target, signature_name=spec.signature_name)
            with self.servable(target) as rec:
                t0 = time.perf_counter()
                shadow = self.inference.predict_on(rec.servable, rec.version, target, dict(feeds), output_filter,
                                                   api=SHADOW_API)
                return rec.version, shadow.outputs, time.perf_counter() - t0

        self.traffic.mirror(spec.name, entry, pred.version, sum(a.nbytes for a in feeds.values()), self.budget,
                            run, lambda outputs: compare_tensors(pred.outputs, outputs))
        return pred

    def _live(self, spec: Spec, call):
        """A request to a model with a traffic entry: counted per version it resolved to, errors included."""
        with self.servable(spec) as rec:
            t0 = time.perf_counter()
            try:
                out = call(rec)
            except ServingError as e:
                self.traffic.live(spec.name, rec.version, e.code.name, None)
                raise
            self.traffic.live(spec.name, rec.version, "OK", time.perf_counter() - t0)
            return out

    def classify(self, spec: Spec, inp: input_pb2.Input) -> tuple[int, classification_pb2.ClassificationResult]:
        return self._example_api(spec, inp, ExampleApi.CLASSIFY)

    def regress(self, spec: Spec, inp: input_pb2.Input) -> tuple[int, regression_pb2.RegressionResult]:
        return self._example_api(spec, inp, ExampleApi.REGRESS)

    def _example_api(self, spec: Spec, inp: input_pb2.Input, api: ExampleApi):
        entry = self.traffic.entry(spec.name) if self.traffic is not None else None
        if entry is None:
            with self.servable(spec) as rec:
                return rec.version, self.inference.examples_on(rec.servable, spec, inp, api)
        spec = self.traffic.route(spec, entry)
        version, result = self._live(spec, lambda rec: (rec.version, self.inference.examples_on(
            rec.servable, spec, inp, api)))

        def run(target: Spec):
            target = replace(target, signature_name=spec.signature_name)
            with self.servable(target) as rec:
                t0 = time.perf_counter()
                out = self.inference.examples_on(rec.servable, target, inp, api, shadow=True)
                return rec.version, out, time.perf_counter() - t0

        if api is ExampleApi.CLASSIFY:
            def compare(shadow):
                return (None, None, *compare_classifications(result, shadow))
        else:
            def compare(shadow):
                return (*compare_regressions(result, shadow), 0, 0)
        self.traffic.mirror(spec.name, entry, version, inp.ByteSize(), self.budget, run, compare)
        return version, result

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest) -> inference_pb2.MultiInferenceResponse:
        tasks = list(request.tasks)
        if not tasks:
            raise InvalidArgumentError("Found no tasks in MultiInferenceRequest.")
        name = ""
        for t in tasks:
            if not t.model_spec.name:
                raise InvalidArgumentError("Found ModelSpec with an empty model name.")
            if name and t.model_spec.name != name:
                raise InvalidArgumentError("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            name = t.model_spec.name
        with self.servable(spec_from_proto(tasks[0].model_spec)) as rec:
            return self.inference.multi_inference_on(rec.servable, rec.version, request)

    # ------------------------------------------------------------------------------------ metadata / status
    def metadata(self, spec: Spec, fields: Sequence[str] = ("signature_def",)) -> tuple[int, dict]:
        if not fields:
            raise InvalidArgumentError("GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise InvalidArgumentError(f"Metadata field {f} is not supported")
        with self.servable(spec) as rec:
            return rec.version, dict(rec.servable.signature_defs)

    def status_proto(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatusResponse as both transports return it (REST renders it as protobuf JSON)."""
        resp = get_model_status_pb2.GetModelStatusResponse()
        for rec in self.status(name, version):
            mvs = resp.model_version_status.add(version=rec.version, state=int(rec.state))
            mvs.status.SetInParent()  # TF Serving always sets status (error_code OK when healthy)
            if rec.error is not None and rec.state == State.END:  # not while retries are pending
                mvs.status.error_code = int(rec.error.code)
                mvs.status.error_message = rec.error.message
        return resp

    def status(self, name: str, version: int | None) -> list[VersionRecord]:
        versions = self.registry.model(name)
        records = versions.status() if versions is not None else []
        if version is not None:
            records = [r for r in records if r.version == version]
            if not records:
                raise NotFoundError(f"Could not find version {version} of model {name}")
        elif not records:
            raise NotFoundError(f"Could not find any versions of model {name}")
        return records
