"""Human-readable listing of a SavedModel's (or a model.tflite's) signatures, in the spirit of
`saved_model_cli show --all`."""

from __future__ import annotations

from pathlib import Path

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2


def _shape(ti) -> str:
    if ti.tensor_shape.unknown_rank:
        return "unknown_rank"
    return "(" + ", ".join("-1" if d.size < 0 else str(d.size) for d in ti.tensor_shape.dim) + ")"


def _signatures(lines: list[str], signature_def) -> None:
    for name in sorted(signature_def):
        if name.startswith("__"):
            continue
        sd = signature_def[name]
        lines.append(f"  signature {name!r}  method: {sd.method_name}")
        for kind, m in (("input ", sd.inputs), ("output", sd.outputs)):
            for alias in sorted(m):
                ti = m[alias]
                lines.append(f"    {kind} {alias:<16} {types_pb2.DataType.Name(ti.dtype):<10} "
                             f"{_shape(ti):<12} {ti.name}")


def signature_table(version_dir: Path) -> str:
    """A SavedModel's meta graphs and signatures, or a TFLite-only version's signatures as the server sees
    them (served with --prefer_tflite_model)."""
    version_dir = Path(version_dir)
    lines: list[str] = []
    if not (version_dir / "saved_model.pb").is_file() and (version_dir / "model.tflite").is_file():
        from tfsb.server.tflite import TfLiteServable

        lines.append("  model.tflite (serve with --prefer_tflite_model=true)")
        _signatures(lines, TfLiteServable(str(version_dir / "model.tflite")).signature_defs)
        return "\n".join(lines)
    sm = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    for mg in sm.meta_graphs:
        lines.append(f"  MetaGraphDef tags {list(mg.meta_info_def.tags)}")
        _signatures(lines, mg.signature_def)
    return "\n".join(lines)
