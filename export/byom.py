"""Bring your own model: publish any SavedModel directory as the next version of a model, and inspect one.

    python -m export.byom inspect PATH
    python -m export.byom publish PATH --name NAME [--base-path models] [--version N]
                                  [--sample SIGNATURE='{"x": [[1.0, 2.0]]}'] [--config FILE [--dry-run]]

`publish` gives a model of your own (Keras 3 `model.export`, `tf.saved_model.save`, a TF1 builder export) the
demo zoo's guarantees: the directory is copied into a hidden directory next to the versions, loaded with the
*server's* loader, every signature is run on the sample inputs you give (or on generated ones), warmup
requests are written from them, and only then is it renamed into place as `<base>/<name>/<N>`. With
`--config` the model's entry is added to a models.config (`--dry-run` prints the diff instead).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from export.publish import Published, PublishError, commit, example_log, staging, write_warmup
from export.zoo import CLASSIFY, REGRESS


def _signatures(path: Path, tags=("serve",)):
    from serving.runtime import SavedModelServable

    return SavedModelServable(path, tags)


def _generated(dtype: int, shape: list[int]) -> np.ndarray:
    """A small valid input: unknown dims become 1; numbers 0.5 / 1, strings b"a", bools True."""
    from serving.wire.tensor_proto import DT, NP_DTYPE

    dims = [1 if d < 0 else d for d in shape] if shape is not None else [1]
    if dtype == DT.DT_STRING:
        return np.full(dims, b"a", dtype=object)
    npd = NP_DTYPE[dtype]
    return np.full(dims, True if npd.kind == "b" else (0.5 if npd.kind in "fc" else 1), dtype=npd)


def _shape(ti) -> list[int] | None:
    return None if ti.tensor_shape.unknown_rank else [d.size for d in ti.tensor_shape.dim]


def sample_inputs(servable, given: dict[str, dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per predict-style signature: the user's sample (JSON lists, cast to the signature's dtypes) or one
    generated from the declared dtypes and shapes."""
    from serving.wire.tensor_proto import DT, NP_DTYPE

    out = {}
    for name, sig in servable.signatures.items():
        if name.startswith("__") or sig.method_name in (CLASSIFY, REGRESS):
            continue
        sd = sig.sigdef
        if name in given:
            out[name] = {}
            for alias, ti in sd.inputs.items():
                if alias not in given[name]:
                    raise PublishError(f"sample for signature {name!r} lacks input {alias!r}")
                value = given[name][alias]
                if ti.dtype == DT.DT_STRING:
                    arr = np.array(value, dtype=object)
                    arr = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(arr)
                else:
                    arr = np.asarray(value, dtype=NP_DTYPE[ti.dtype])
                out[name][alias] = arr
        else:
            out[name] = {alias: _generated(ti.dtype, _shape(ti)) for alias, ti in sd.inputs.items()}
    return out


def _example_inputs(given: dict, name: str) -> list[bytes]:
    from tensorflow.core.example import example_pb2

    rows = given.get(name, {}).get("examples", [{}])
    out = []
    for row in rows:
        ex = example_pb2.Example()
        for k, v in row.items():
            vals = v if isinstance(v, list) else [v]
            f = ex.features.feature[k]
            if all(isinstance(x, str) for x in vals):
                f.bytes_list.value.extend(x.encode() for x in vals)
            elif all(isinstance(x, int) for x in vals):
                f.int64_list.value.extend(vals)
            else:
                f.float_list.value.extend(float(x) for x in vals)
        out.append(ex.SerializeToString())
    return out


def check_and_warmup(path: Path, name: str, given: dict) -> list:
    """Load `path` with the server's loader, run every signature, return the warmup PredictionLogs."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    from serving.wire.tensor_proto import from_numpy

    try:
        servable = _signatures(path)
    except Exception as e:  # noqa: BLE001 - any loader failure means: not publishable
        raise PublishError(f"the SavedModel does not load in the server: {e}") from e
    logs = []
    try:
        samples = sample_inputs(servable, given)
        for sig_name, sig in sorted(servable.signatures.items()):
            if sig_name.startswith("__"):
                continue
            spec = model_pb2.ModelSpec(name=name, signature_name=sig_name)
            if sig.method_name in (CLASSIFY, REGRESS):
                blobs = _example_inputs(given, sig_name)
                (alias,) = list(sig.inputs) or ["inputs"]
                try:
                    servable.run({sig.inputs[alias].name: np.array(blobs, dtype=object)},
                                 [sig.outputs[o].name for o in sig.output_order])
                except Exception as e:  # noqa: BLE001
                    raise PublishError(f"signature {sig_name!r} ({sig.method_name}) failed on the sample examples "
                                       f"{given.get(sig_name, {}).get('examples', [{}])}: {e}; pass "
                                       f"--sample {sig_name}='{{\"examples\": [{{...}}]}}'") from e
                logs.append(example_log(spec, sig.method_name, blobs))
                continue
            feeds = samples[sig_name]
            try:
                outputs = servable.run_signature(sig, dict(feeds), sig.output_order)
            except Exception as e:  # noqa: BLE001
                raise PublishError(f"signature {sig_name!r} failed on its sample inputs "
                                   f"{ {k: v.tolist() for k, v in feeds.items()} }: {e}") from e
            if set(outputs) != set(sig.outputs):
                raise PublishError(f"signature {sig_name!r}: outputs {sorted(outputs)}, declared {sorted(sig.outputs)}")
            req = predict_pb2.PredictRequest(model_spec=spec)
            for alias, arr in feeds.items():
                req.inputs[alias].CopyFrom(from_numpy(arr, sig.inputs[alias].dtype))
            logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))
    finally:
        servable.close()
    if not logs:
        raise PublishError("the SavedModel has no serving signature")
    return logs


def publish_saved_model(src: str | os.PathLike, base_path: str | os.PathLike, name: str, *,
                        version: int | None = None, samples: dict | None = None) -> Published:
    """Copy, load with the server's loader, run, write warmup, publish atomically as the next version."""
    src = Path(src)
    if not (src / "saved_model.pb").is_file():
        raise PublishError(f"{src} is not a SavedModel directory (no saved_model.pb)")
    with staging(base_path, name) as tmp:
        shutil.copytree(src, tmp)
        logs = check_and_warmup(tmp, name, samples or {})
        write_warmup(tmp, logs)
        return commit(tmp, name, version)


def config_with(config_text: str, name: str, base_path: str) -> str:
    """`config_text` with an entry for `name`: added, or its base path updated (policy and labels kept); every
    other line of the file (comments, layout, the other entries) stays as it was."""
    from tensorflow_serving.config import model_server_config_pb2

    from serving.wire.config_text import add_model, entries, update_model

    for entry in entries(config_text):
        if entry.model.name == name:
            if entry.model.base_path == base_path:
                return config_text
            return update_model(config_text, name, lambda m: setattr(m, "base_path", base_path))
    return add_model(config_text, model_server_config_pb2.ModelConfig(name=name, base_path=base_path,
                                                                      model_platform="tensorflow"))


# ---------------------------------------------------------------------------------------------- inspect

def describe(path: str | os.PathLike, name: str = "MODEL") -> str:
    """Signatures plus, for each, the REST body and the gRPC call it expects, ready to paste."""
    from serving.wire.tensor_proto import dtype_name

    servable = _signatures(Path(path))
    try:
        samples = sample_inputs(servable, {})
        lines = [f"SavedModel {path}"]
        for sig_name, sig in sorted(servable.signatures.items()):
            if sig_name.startswith("__"):
                continue
            lines.append(f"\nsignature {sig_name!r}  method: {sig.method_name}")
            for kind, m in (("input ", sig.sigdef.inputs), ("output", sig.sigdef.outputs)):
                for alias in sorted(m):
                    ti = m[alias]
                    shp = _shape(ti)
                    lines.append(f"  {kind} {alias:<16} {dtype_name(ti.dtype):<8} "
                                 f"{'unknown rank' if shp is None else shp}  ({ti.name})")
            sig_field = "" if sig_name == "serving_default" else f'"signature_name": "{sig_name}", '
            if sig.method_name in (CLASSIFY, REGRESS):
                verb = "classify" if sig.method_name == CLASSIFY else "regress"
                lines.append(f"  REST: curl -d '{{{sig_field}\"examples\": [{{\"feature\": 1.0}}]}}' "
                             f"localhost:8501/v1/models/{name}:{verb}")
                continue
            feeds = {k: (v.astype(object).tolist() if v.dtype == object else v.tolist())
                     for k, v in samples[sig_name].items()}
            feeds = {k: json.loads(json.dumps(v, default=lambda b: b.decode())) for k, v in feeds.items()}
            lines.append(f"  REST: curl -d '{{{sig_field}\"inputs\": {json.dumps(feeds)}}}' "
                         f"localhost:8501/v1/models/{name}:predict")
            sig_arg = "" if sig_name == "serving_default" else f", signature={sig_name!r}"
            lines.append(f"  gRPC: GrpcClient('localhost:8500').predict({name!r}, "
                         f"{{{', '.join(f'{k!r}: np.array({json.dumps(v)})' for k, v in feeds.items())}}}{sig_arg})")
        return "\n".join(lines)
    finally:
        servable.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.byom", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("inspect", help="signatures and the requests each expects")
    sp.add_argument("path")
    sp.add_argument("--name", default="MODEL", help="model name to use in the example requests")
    sp = sub.add_parser("publish", help="validate and publish a SavedModel as the next version")
    sp.add_argument("path")
    sp.add_argument("--name", required=True)
    sp.add_argument("--base-path", default="models")
    sp.add_argument("--version", type=int)
    sp.add_argument("--sample", action="append", default=[], metavar="SIGNATURE=JSON",
                    help='sample inputs, e.g. serving_default=\'{"x": [[1.0]]}\' or '
                         'classify=\'{"examples": [{"age": 39.0}]}\'')
    sp.add_argument("--config", help="add the model to this models.config (base path /models/NAME)")
    sp.add_argument("--dry-run", action="store_true", help="with --config: print the diff, change nothing")
    args = p.parse_args(argv)
    try:
        if args.cmd == "inspect":
            print(describe(args.path, args.name))
            return 0
        samples = {}
        for item in args.sample:
            sig, eq, js = item.partition("=")
            if not eq:
                p.error(f"--sample wants SIGNATURE=JSON, got {item!r}")
            try:
                samples[sig] = json.loads(js)
            except json.JSONDecodeError as e:
                p.error(f"--sample {sig}: not JSON ({e})")
        if args.config:
            old = Path(args.config).read_text() if Path(args.config).exists() else "model_config_list {}\n"
            new = config_with(old, args.name, f"/models/{args.name}")
            if args.dry_run:
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                           args.config, args.config))
                return 0
        pub = publish_saved_model(args.path, args.base_path, args.name, version=args.version, samples=samples)
        print(f"published {pub.name} version {pub.version} at {pub.path}")
        if args.config and new != old:
            tmp = Path(args.config).with_name(f".{Path(args.config).name}.tmp")
            tmp.write_text(new)
            tmp.replace(args.config)
            print(f"added {args.name} to {args.config}")
        return 0
    except PublishError as e:
        print(f"NOT published: {args.name}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
