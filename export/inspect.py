"""Human-readable listing of a SavedModel's signatures, in the spirit of `saved_model_cli show --all`."""

from __future__ import annotations

from pathlib import Path

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2


def _shape(ti) -> str:
    if ti.tensor_shape.unknown_rank:
        return "unknown_rank"
    return "(" + ", ".join("-1" if d.size < 0 else str(d.size) for d in ti.tensor_shape.dim) + ")"


def signature_table(version_dir: Path) -> str:
    sm = saved_model_pb2.SavedModel.FromString((Path(version_dir) / "saved_model.pb").read_bytes())
    lines = []
    for mg in sm.meta_graphs:
        lines.append(f"  MetaGraphDef tags {list(mg.meta_info_def.tags)}")
        for name in sorted(mg.signature_def):
            if name.startswith("__"):
                continue
            sd = mg.signature_def[name]
            lines.append(f"  signature {name!r}  method: {sd.method_name}")
            for kind, m in (("input ", sd.inputs), ("output", sd.outputs)):
                for alias in sorted(m):
                    ti = m[alias]
                    lines.append(f"    {kind} {alias:<16} {types_pb2.DataType.Name(ti.dtype):<10} "
                                 f"{_shape(ti):<12} {ti.name}")
    return "\n".join(lines)
