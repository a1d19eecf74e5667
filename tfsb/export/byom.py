"""Bring your own model: publish any SavedModel directory as the next version of a model, and inspect one.

    python -m tfsb.export.byom inspect PATH [--name NAME]
    python -m tfsb.export.byom publish PATH --name NAME [--base-path models] [--version N]
                                  [--sample SIGNATURE='<TF Serving REST body>' ...] [--skip-signature NAME ...]
                                  [--config FILE [--dry-run]]

`publish` gives a model of your own (Keras 3 `model.export`, `tf.saved_model.save`, a TF1 builder export) the
demo zoo's guarantees: the directory is copied into a hidden directory next to the versions, loaded with the
*server's* loader, every signature is run on the sample inputs you give (TF Serving's own REST bodies:
`instances`, `inputs`, b64 strings, `examples`) or on inputs generated from what it declares, warmup requests
are written from them, and only then is it renamed into place as `<base>/<name>/<N>`. With `--config` the
model's entry is added to a models.config (`--dry-run` prints the diff instead). PATH may also be a base
directory holding numbered versions: its latest version is used, and the tool says so.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfsb.export.publish import Published, PublishError, commit, example_log, staging, version_number, write_warmup
from tfsb.export.samples import (candidates, example_candidates, from_request_body, parse_spec, serialize_examples,
                            takes_examples)
from tfsb import program_name


def _signatures(path: Path, tags=("serve",)):
    from tfsb.server.runtime import SavedModelServable

    return SavedModelServable(path, tags)


def resolve(path: str | os.PathLike, say: Callable[[str], None]) -> Path:
    """A SavedModel directory, or a base directory's latest numbered version (said so); else PublishError."""
    p = Path(path)
    if (p / "saved_model.pb").is_file():
        return p
    found = sorted((version_number(n), n) for n in (os.listdir(p) if p.is_dir() else [])
                   if version_number(n) is not None and (p / n / "saved_model.pb").is_file())
    if not found:
        raise PublishError(f"{p} is not a SavedModel directory (no saved_model.pb) nor a base path holding "
                           "numbered versions")
    latest = p / found[-1][1]
    say(f"{p} is a base path: using its latest version, {latest}")
    return latest


def _signature_map(servable) -> dict:
    return {n: s for n, s in servable.signatures.items() if not n.startswith("__")}


def _run(servable, sig, kind: str, value) -> None:
    """Run one signature on an attempt: serialized tf.Examples fed to its one input, as TF Serving's Classify
    and Regress do ("examples"), or tensors by alias ("tensors"), whose outputs must be the declared ones."""
    if kind == "examples":
        (alias,) = list(sig.inputs)
        servable.run({sig.inputs[alias].name: np.array(value, dtype=object)},
                     [sig.outputs[o].name for o in sig.output_order])
        return
    outputs = servable.run_signature(sig, dict(value), sig.output_order)
    if set(outputs) != set(sig.outputs):
        raise PublishError(f"outputs {sorted(outputs)}, declared {sorted(sig.outputs)}")


def _runs(servable, sig, kind: str, value) -> bool:
    try:
        _run(servable, sig, kind, value)
        return True
    except Exception:  # noqa: BLE001 - not this attempt
        return False


def _warmup_record(spec, sig, kind: str, value):
    """The PredictionLog that replays an attempt that ran."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from tfsb.wire.tensor_proto import from_numpy

    if kind == "examples":
        return example_log(spec, sig.method_name, value)
    req = predict_pb2.PredictRequest(model_spec=spec)
    for alias, arr in value.items():
        from_numpy(arr, sig.inputs[alias].dtype, into=req.inputs[alias])
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))


def check_and_warmup(path: Path, name: str, given: dict[str, Any], skip: frozenset[str] = frozenset(),
                     warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list:
    """Load `path` with the server's loader, run every signature (on its sample, or on generated inputs until
    one runs), return the warmup PredictionLogs."""
    from tensorflow_serving.apis import model_pb2

    try:
        servable = _signatures(path)
    except Exception as e:  # noqa: BLE001 - any loader failure means: not publishable
        raise PublishError(f"the SavedModel does not load in the server: {e}") from e
    logs = []
    try:
        sigs = _signature_map(servable)
        unknown = sorted((set(given) | set(skip)) - set(sigs))
        if unknown:
            raise PublishError(f"{unknown[0]!r} (in --sample/--skip-signature) is not a signature of this "
                               f"SavedModel; its signatures: {', '.join(sorted(sigs))}")
        features = parse_spec(servable.meta_graph)
        for sig_name, sig in sorted(sigs.items()):
            if sig_name in skip:
                warn(f"warning: signature {sig_name!r} skipped (--skip-signature): not checked, no warmup record")
                continue
            spec = model_pb2.ModelSpec(name=name, signature_name=sig_name)
            if sig_name in given:
                attempts = [from_request_body(given[sig_name], sig)]
            else:  # Examples first where Classify/Regress would send them, then tensors as declared
                attempts = [("examples", serialize_examples(rows)) for rows in example_candidates(features)
                            if takes_examples(sig)] + [("tensors", feeds) for feeds in candidates(sig, features)]
            errors = []
            for kind, value in attempts:
                try:
                    _run(servable, sig, kind, value)
                except Exception as e:  # noqa: BLE001 - the next candidate, or the error below
                    errors.append(e)
                    continue
                logs.append(_warmup_record(spec, sig, kind, value))
                break
            else:
                what = "its --sample" if sig_name in given else f"any of {len(attempts)} generated input(s)"
                raise PublishError(f"signature {sig_name!r} ({sig.method_name or 'no method'}) failed on {what}: "
                                   f"{_first_line(errors[0])}; pass --sample {sig_name}='<TF Serving REST body>' "
                                   f"or --skip-signature {sig_name}")
    finally:
        servable.close()
    if not logs:
        raise PublishError("the SavedModel has no serving signature")
    return logs


def _first_line(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e)  # TensorFlow's errors carry the op's message there
    return (str(text).strip().splitlines() or [type(e).__name__])[0]


def publish_saved_model(src: str | os.PathLike, base_path: str | os.PathLike, name: str, *,
                        version: int | None = None, samples: dict | None = None,
                        skip: frozenset[str] = frozenset()) -> Published:
    """Copy, load with the server's loader, run, write warmup, publish atomically as the next version."""
    src = Path(src)
    if not (src / "saved_model.pb").is_file():
        raise PublishError(f"{src} is not a SavedModel directory (no saved_model.pb)")
    with staging(base_path, name) as tmp:
        shutil.copytree(src, tmp)
        logs = check_and_warmup(tmp, name, samples or {}, skip)
        write_warmup(tmp, logs)
        return commit(tmp, name, version)


def config_edits(config: str | os.PathLike, name: str, base_path: str | os.PathLike) -> list[tuple[Path, str, str]]:
    """(file, text now, text with the model) for every file the entry goes into: the given config and, when
    `tfsb.export.serve_config` rendered it (`make serve`'s run/models.config), its template too, so the next
    re-render keeps the model. The template uses the container layout (`/models/NAME`), a rendered file this
    machine's absolute path."""
    from tfsb.wire.config_text import source_of

    path = Path(config)
    old = path.read_text() if path.exists() else "model_config_list {}\n"
    kind, where = source_of(old) or ("", "")
    if kind != "rendered":
        return [(path, old, config_with(old, name, f"/models/{name}"))]
    template = Path(where)
    if not template.is_file():
        raise PublishError(f"{path} was rendered from {template}, which is gone: re-render it or pass the source "
                           "config as --config")
    before = template.read_text()
    return [(path, old, config_with(old, name, str(Path(base_path).resolve() / name))),
            (template, before, config_with(before, name, f"/models/{name}"))]


def config_with(config_text: str, name: str, base_path: str) -> str:
    """`config_text` with an entry for `name`: added, or its base path updated (policy and labels kept); every
    other line of the file (comments, layout, the other entries) stays as it was."""
    from tfsb.wire.config_text import ModelConfig, add_model, entries, update_model

    for entry in entries(config_text):
        if entry.model.name == name:
            if entry.model.base_path == base_path:
                return config_text
            return update_model(config_text, name, lambda m: setattr(m, "base_path", base_path))
    return add_model(config_text, ModelConfig(name=name, base_path=base_path, model_platform="tensorflow"))


# ---------------------------------------------------------------------------------------------- inspect

_INLINE_MAX = 16  # values inlined in an example request; larger inputs get a generator snippet


def _json_value(arr: np.ndarray) -> Any:
    """An example input as TF Serving's JSON: strings as text, binary (a serialized tf.Example) as b64."""
    import base64

    def one(v):
        if isinstance(v, bytes):
            try:
                text = v.decode("utf-8")
                if text.isprintable():
                    return text
            except UnicodeDecodeError:
                pass
            return {"b64": base64.b64encode(v).decode()}
        return v

    return np.vectorize(one, otypes=[object])(arr).tolist() if arr.dtype == object else arr.tolist()


def _generator(arr: np.ndarray) -> str:
    """Python that builds a large all-equal input without pasting it: `[[0.5] * 3] * 224`."""
    expr = json.dumps(arr.flat[0].item())
    for d in reversed(arr.shape):
        expr = f"[{expr}] * {d}"
    return expr


def describe(path: str | os.PathLike, name: str = "MODEL") -> str:
    """Signatures plus, for each, a REST body and a gRPC call that the server accepts, short enough to paste:
    inputs generated as `publish` generates them (the first that runs), real feature names for tf.Example
    inputs, a generator snippet for large shapes, and no REST body for a signature without inputs (TF
    Serving's JSON API cannot call one)."""
    from tfsb.wire.tensor_proto import dtype_name

    servable = _signatures(Path(path))
    rest, grpc = "localhost:8501/v1/models/" + name, "GrpcClient('localhost:8500')"
    try:
        features = parse_spec(servable.meta_graph)
        lines = [f"SavedModel {path}"]
        for sig_name, sig in sorted(_signature_map(servable).items()):
            lines.append(f"\nsignature {sig_name!r}  method: {sig.method_name}")
            for kind, m in (("input ", sig.sigdef.inputs), ("output", sig.sigdef.outputs)):
                for alias in sorted(m):
                    ti = m[alias]
                    shp = "unknown rank" if ti.tensor_shape.unknown_rank else [d.size for d in ti.tensor_shape.dim]
                    lines.append(f"  {kind} {alias:<16} {dtype_name(ti.dtype):<8} {shp}  ({ti.name})")
            sig_field = "" if sig_name == "serving_default" else f'"signature_name": "{sig_name}", '
            sig_arg = "" if sig_name == "serving_default" else f", signature={sig_name!r}"
            rows = next((r for r in example_candidates(features) if takes_examples(sig) and
                         _runs(servable, sig, "examples", serialize_examples(r))), None)
            if rows is not None:
                verb = "classify" if sig.method_name.endswith("classify") else "regress"
                lines.append(f"  REST: curl -d '{{{sig_field}\"examples\": {json.dumps(rows)}}}' {rest}:{verb}")
                lines.append(f"  gRPC: {grpc}.{verb}({name!r}, {rows!r}{sig_arg})")
                continue
            if not sig.inputs:
                lines.append("  REST: none: TF Serving's JSON API cannot call a signature without inputs")
                lines.append(f"  gRPC: {grpc}.predict({name!r}, {{}}{sig_arg})")
                continue
            try:
                tried = list(candidates(sig, features))
            except PublishError as e:
                lines.append(f"  (no example: {e})")
                continue
            feeds = next((f for f in tried if _runs(servable, sig, "tensors", f)), tried[0])
            if sum(a.size for a in feeds.values()) <= _INLINE_MAX:
                body = {k: _json_value(v) for k, v in feeds.items()}
                lines.append(f"  REST: curl -d '{{{sig_field}\"inputs\": {json.dumps(body)}}}' {rest}:predict")
                args = ", ".join(f"{k!r}: np.array({v.tolist()!r}, "
                                 f"{'dtype=object' if v.dtype == object else 'np.' + v.dtype.name})"
                                 for k, v in feeds.items())
            else:
                body = ", ".join(f'"{k}": {_generator(v)}' for k, v in feeds.items())
                lines.append(f"  REST: python3 -c 'import json; print(json.dumps({{{sig_field}\"inputs\": {{{body}}}}}))'"
                             f" | curl -d @- {rest}:predict")
                args = ", ".join(f"{k!r}: np.full({v.shape}, {v.flat[0].item()!r}, np.{v.dtype})"
                                 for k, v in feeds.items())
            lines.append(f"  gRPC: {grpc}.predict({name!r}, {{{args}}}{sig_arg})")
        return "\n".join(lines)
    finally:
        servable.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=program_name("tfsb.export.byom"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("inspect", help="signatures and the requests each expects")
    sp.add_argument("path", help="a SavedModel directory, or a base path holding numbered versions")
    sp.add_argument("--name", default="MODEL", help="model name to use in the example requests")
    sp = sub.add_parser("publish", help="validate and publish a SavedModel as the next version")
    sp.add_argument("path", help="a SavedModel directory, or a base path holding numbered versions")
    sp.add_argument("--name", required=True)
    sp.add_argument("--base-path", default="models")
    sp.add_argument("--version", type=int)
    sp.add_argument("--sample", action="append", default=[], metavar="SIGNATURE=JSON",
                    help="a TF Serving REST request body for one signature (or @file.json): "
                         'serving_default=\'{"instances": [[1.0]]}\', \'{"inputs": {"x": [[1.0]]}}\', '
                         '{"b64": "..."} strings, classify=\'{"examples": [{"age": 39.0}]}\'')
    sp.add_argument("--skip-signature", action="append", default=[], metavar="NAME",
                    help="leave a signature out of the checks and the warmup (with a warning)")
    sp.add_argument("--config", help="add the model to this models.config (base path /models/NAME)")
    sp.add_argument("--dry-run", action="store_true", help="with --config: print the diff, change nothing")
    args = p.parse_args(argv)
    say = (lambda s: print(s, file=sys.stderr))
    try:
        path = resolve(args.path, say)
        if args.cmd == "inspect":
            print(describe(path, args.name))
            return 0
        samples = {}
        for item in args.sample:
            sig, eq, js = item.partition("=")
            if not eq:
                p.error(f"--sample wants SIGNATURE=JSON, got {item!r}")
            try:
                samples[sig] = json.loads(Path(js[1:]).read_text() if js.startswith("@") else js)
            except (OSError, json.JSONDecodeError) as e:
                p.error(f"--sample {sig}: not JSON ({e})")
        edits = config_edits(args.config, args.name, args.base_path) if args.config else []
        if args.dry_run and args.config:
            for f, old, new in edits:
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(f), str(f)))
            return 0
        pub = publish_saved_model(path, args.base_path, args.name, version=args.version, samples=samples,
                                  skip=frozenset(args.skip_signature))
        print(f"published {pub.name} version {pub.version} at {pub.path}")
        for f, old, new in edits:
            if new != old:
                tmp = f.with_name(f".{f.name}.tmp")
                tmp.write_text(new)
                tmp.replace(f)
                print(f"added {args.name} to {f}")
        return 0
    except PublishError as e:
        if args.cmd == "inspect":
            print(f"cannot inspect {args.path}: {e}", file=sys.stderr)
        else:
            print(f"NOT published: {args.name}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
