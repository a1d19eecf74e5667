"""Inputs for the signatures of a SavedModel nobody here wrote: generated from what each signature declares,
or read from TF Serving's own REST request bodies (`--sample SIG='{"instances": ...}'`).

A signature's method name does not say what its inputs are: TF Serving's TF1 `half_plus_two` has a *regress*
signature over a float tensor, its TF2 twin a *predict* signature over serialized tf.Examples. So inputs are
generated from the declared dtype and shape; a string input is tried as a tf.Example built from the parse
spec found in the graph (the `ParseExample` ops: feature names, dtypes, shapes), then as an empty Example,
then as a plain string, and the first that runs is kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from tfsb.export.publish import PublishError
from tfsb.export.zoo import CLASSIFY, REGRESS

_DT_FLOAT, _DT_INT64, _DT_STRING = 1, 9, 7
_PARSE_OPS = ("ParseExample", "ParseExampleV2", "ParseSingleExample")


@dataclass(frozen=True)
class Feature:
    """One feature a `ParseExample` op reads: dense features are required unless they have a default."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    sparse: bool = False

    def value(self) -> Any:
        n = int(np.prod([max(1, d) for d in self.shape])) if self.shape else 1
        one = {_DT_FLOAT: 0.5, _DT_INT64: 1}.get(self.dtype, "a")
        return [one] * n


# ---------------------------------------------------------------------------------------------- parse spec

def _const_strings(nodes: dict, ref: str) -> list[str]:
    from tensorflow.python.framework import tensor_util

    node = nodes.get(ref.lstrip("^").split(":")[0])
    if node is None or node.op != "Const":
        return []
    value = tensor_util.MakeNdarray(node.attr["value"].tensor)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value).tolist()]


def _op_features(node, nodes: dict) -> list[Feature]:
    a = node.attr
    dense_types = list(a["Tdense"].list.type)
    dense_shapes = [tuple(d.size for d in s.dim) for s in a["dense_shapes"].list.shape]
    sparse_types = list(a["sparse_types"].list.type)
    inputs = [i for i in node.input if not i.startswith("^")]
    if node.op == "ParseExample":
        ns, nd = a["Nsparse"].i, a["Ndense"].i
        sparse_keys = [k for ref in inputs[2:2 + ns] for k in _const_strings(nodes, ref)]
        dense_keys = [k for ref in inputs[2 + ns:2 + ns + nd] for k in _const_strings(nodes, ref)]
    elif node.op == "ParseExampleV2":
        sparse_keys = _const_strings(nodes, inputs[2]) if len(inputs) > 2 else []
        dense_keys = _const_strings(nodes, inputs[3]) if len(inputs) > 3 else []
    else:  # ParseSingleExample: keys are attributes
        sparse_keys = [k.decode() for k in a["sparse_keys"].list.s]
        dense_keys = [k.decode() for k in a["dense_keys"].list.s]
    out = [Feature(k, t, s) for k, t, s in zip(dense_keys, dense_types, dense_shapes)]
    out += [Feature(k, t, (1,), sparse=True) for k, t in zip(sparse_keys, sparse_types)]
    return out


def parse_spec(meta_graph) -> list[Feature]:
    """Every feature the graph's `ParseExample` ops read (the graph and its function library), first
    declaration of a name wins."""
    graphs = [list(meta_graph.graph_def.node)]
    graphs += [list(f.node_def) for f in meta_graph.graph_def.library.function]
    seen: dict[str, Feature] = {}
    for nodes in graphs:
        by_name = {n.name: n for n in nodes}
        for n in nodes:
            if n.op in _PARSE_OPS:
                for f in _op_features(n, by_name):
                    seen.setdefault(f.name, f)
    return list(seen.values())


def example_json(features: list[Feature]) -> dict[str, Any]:
    """The REST `examples` row for the parse spec (dense features; sparse ones too, one value each)."""
    return {f.name: f.value() for f in features}


def serialize_examples(rows: list[dict]) -> list[bytes]:
    """REST `examples` rows (TF Serving's JSON: lists of numbers or strings, `{"b64": ...}`) → serialized."""
    from tfsb.wire.json_example import examples_input

    inp = examples_input({"examples": rows}, CLASSIFY)
    return [e.SerializeToString() for e in inp.example_list.examples]


# ---------------------------------------------------------------------------------------------- generated

def _dims(ti) -> list[int]:
    if ti.tensor_shape.unknown_rank:
        return []  # unknown rank: a scalar is the one shape every op accepts
    return [1 if d.size < 0 else d.size for d in ti.tensor_shape.dim]


def takes_examples(sig) -> bool:
    """A classify/regress signature with one input: TF Serving's Classify and Regress feed it serialized
    tf.Examples whatever dtype it declares (TF Serving's half_plus_three declares DT_FLOAT there)."""
    return sig.method_name in (CLASSIFY, REGRESS) and len(sig.inputs) == 1


def candidates(sig, features: list[Feature]) -> Iterator[dict[str, np.ndarray]]:
    """Feeds to try for a predict-style run of `sig`, most plausible first."""
    from tfsb.wire.tensor_proto import NP_DTYPE

    options: dict[str, list[np.ndarray]] = {}
    for alias, ti in sig.sigdef.inputs.items():
        dims = _dims(ti)
        if ti.dtype == _DT_STRING:
            blobs = ([serialize_examples([example_json(features)])[0]] if features else []) + \
                [serialize_examples([{}])[0], b"a"]
            options[alias] = [np.full(dims, b, dtype=object) for b in blobs]
        else:
            npd = NP_DTYPE.get(ti.dtype)
            if npd is None:
                from tfsb.wire.tensor_proto import dtype_name

                raise PublishError(f"signature {sig.name!r}: input {alias!r} is {dtype_name(ti.dtype)}, which no "
                                   f"input can be generated for; pass --sample {sig.name}='<TF Serving REST body>' "
                                   f"or --skip-signature {sig.name}")
            options[alias] = [np.full(dims, True if npd.kind == "b" else (0.5 if npd.kind in "fc" else 1), npd)]
    depth = max((len(v) for v in options.values()), default=1)
    for i in range(depth):
        yield {alias: opts[min(i, len(opts) - 1)] for alias, opts in options.items()}


def example_candidates(features: list[Feature]) -> list[list[dict]]:
    """`examples` rows to try for a classify/regress signature over tf.Examples."""
    return ([[example_json(features)]] if features else []) + [[{}]]


# ---------------------------------------------------------------------------------------------- given

def from_request_body(doc: Any, sig) -> tuple[str, Any]:
    """A TF Serving REST request body for `sig` → ("examples", [serialized]) or ("tensors", {alias: array}).

    Row (`instances`) and columnar (`inputs`) bodies, b64 strings and `examples` (with `context`) are read by
    the server's own JSON codec; a plain object of named inputs is taken as columnar `inputs`."""
    from tfsb.errors import ServingError
    from tfsb.wire.json_example import examples_input
    from tfsb.wire.json_request import predict_inputs

    if not isinstance(doc, dict):
        raise PublishError(f"sample for signature {sig.name!r} must be a JSON object (a TF Serving request body)")
    try:
        if "examples" in doc:
            inp = examples_input(doc, sig.method_name or CLASSIFY)
            kind = inp.WhichOneof("kind")
            if kind == "example_list_with_context":
                ctx = inp.example_list_with_context.context
                blobs = []
                for e in inp.example_list_with_context.examples:
                    merged = type(e)()
                    merged.CopyFrom(ctx)
                    merged.MergeFrom(e)
                    blobs.append(merged.SerializeToString())
            else:
                blobs = [e.SerializeToString() for e in inp.example_list.examples]
            if takes_examples(sig):
                return "examples", blobs
            strings = [a for a, ti in sig.sigdef.inputs.items() if ti.dtype == _DT_STRING]
            if len(sig.inputs) != 1 or not strings:
                raise PublishError(f"signature {sig.name!r} does not take serialized tf.Examples; give "
                                   "'instances' or 'inputs'")
            return "tensors", {strings[0]: np.array(blobs, dtype=object)}
        body = doc if ("instances" in doc or "inputs" in doc) else {"inputs": doc}
        dtypes = {alias: ti.dtype for alias, ti in sig.sigdef.inputs.items()}
        _, tensors = predict_inputs(body, dtypes, sig.name)
    except ServingError as e:
        raise PublishError(f"sample for signature {sig.name!r}: {e.message}") from None
    missing = sorted(set(sig.inputs) - set(tensors))
    if missing:
        raise PublishError(f"sample for signature {sig.name!r} lacks input {missing[0]!r}")
    return "tensors", tensors
