"""`python -m tfsb.export.serve_config`: the models.config that `make serve` runs on.

The checked-in `config/models.config` names the demo models. When the models directory holds other models
(your own), or not every configured model is there, serving that config would fail ("Could not find base
path"); instead a config is generated with one entry per model directory (TF Serving's default `latest`
policy). `--template FILE` forces a config of your own (`make serve MODEL_CONFIG=FILE`). Either way the
container layout `/models/<name>` becomes this machine's absolute path, as TF Serving needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfsb.wire.config_text import GENERATED_FROM, RENDERED_FROM

ModelServerConfig = model_server_config_pb2.ModelServerConfig


def model_dirs(base: Path) -> list[str]:
    """Subdirectories of `base` that hold at least one numeric version directory."""
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and any(v.name.isdigit() for v in d.iterdir()))


def generated(base: Path) -> ModelServerConfig:
    cfg = ModelServerConfig()
    for name in model_dirs(base):
        cfg.model_config_list.config.add(name=name, base_path=str(base.resolve() / name), model_platform="tensorflow")
    return cfg


def rendered(template: Path, base: Path) -> tuple[str, list[str]]:
    """The template with `/models/` → `base`, and the configured models missing under `base`."""
    text = template.read_text().replace('base_path: "/models/', f'base_path: "{base.resolve()}/')
    cfg = text_format.Parse(text, ModelServerConfig())
    missing = [m.name for m in cfg.model_config_list.config if not Path(m.base_path).is_dir()]
    return text, missing


def choose(template: Path, base: Path, forced: bool) -> tuple[str, str]:
    """(config text with a header naming its source of truth, one line saying where it came from)."""
    text, missing = rendered(template, base)
    header = RENDERED_FROM.format(source=template.resolve())
    if forced or not missing:
        return header + text, f"using {template}" + (f" (missing under {base}: {', '.join(missing)})"
                                                     if missing else "")
    found = model_dirs(base)
    if not found:
        return header + text, f"no model directories under {base}; using {template} anyway"
    return (GENERATED_FROM.format(base=base.resolve()) + text_format.MessageToString(generated(base)),
            f"{template} names models not under {base} ({', '.join(missing)}): using a config generated from "
            f"{base} instead: {', '.join(found)} (latest version of each; MODEL_CONFIG=FILE to choose)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tfsb.export.serve_config", description=__doc__)
    p.add_argument("--models", default="models", help="the models directory (default: models)")
    p.add_argument("--template", default="config/models.config", help="config with /models/<name> base paths")
    p.add_argument("--force", action="store_true", help="use the template even if models are missing")
    p.add_argument("--out", required=True, help="where to write the config")
    args = p.parse_args(argv)
    text, why = choose(Path(args.template), Path(args.models), args.force)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"models.config: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
