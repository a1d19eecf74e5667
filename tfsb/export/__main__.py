"""`python -m tfsb.export`: train and publish demo models as the next SavedModel version of each."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tfsb.export.inspect import signature_table
from tfsb.export.publish import PublishError, existing_versions, publish
from tfsb.export.zoo import ZOO
from tfsb import program_name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=program_name("tfsb.export"), description=__doc__)
    p.add_argument("--model", default="all", help=f"one of {', '.join(ZOO)} or 'all' (default)")
    p.add_argument("--base-path", default="models", help="model base path root (default: models)")
    p.add_argument("--version", type=int, default=None, help="version to publish (default: latest + 1)")
    p.add_argument("--config", default="config/models.config",
                   help="the models.config to check the new version against (default: config/models.config)")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (default: the version number, so each version has new weights)")
    args = p.parse_args(argv)
    names = list(ZOO) if args.model == "all" else [args.model]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {', '.join(ZOO)} or all")
    base = Path(args.base_path)
    for name in names:
        current = existing_versions(base.resolve() / name)
        version = args.version if args.version is not None else (max(current) + 1 if current else 1)
        seed = args.seed if args.seed is not None else version
        t0 = time.monotonic()
        print(f"[{name}] training (seed {seed})", flush=True)
        trained = ZOO[name](seed, log=lambda s: print(f"[{name}] {s}", flush=True))
        print(f"[{name}] trained in {time.monotonic() - t0:.1f}s, final loss {trained.final_loss:.4f}; "
              f"writing, validating, publishing version {version}", flush=True)
        try:
            pub = publish(trained, base, version=version)
        except PublishError as e:
            print(f"NOT published: {name}: {e}", file=sys.stderr)
            return 1
        print(f"[{name}] published version {pub.version} at {pub.path} ({time.monotonic() - t0:.1f}s)")
        print(signature_table(pub.path), flush=True)
        note = served_note(name, pub.version, args.config)
        if note:
            print(f"[{name}] WARNING: {note}", file=sys.stderr, flush=True)
    return 0


def served_note(model: str, version: int, config: str) -> str | None:
    """Why a just-published version will not be served under `config`'s version policy, or None."""
    path = Path(config)
    if not path.is_file():
        return None
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        cfg = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError:
        return None
    for m in cfg.model_config_list.config:
        if m.name == model and m.model_version_policy.WhichOneof("policy_choice") == "specific":
            pinned = sorted(m.model_version_policy.specific.versions)
            if version not in pinned:
                return (f"version {version} will not be served: {config} pins {model} to versions {pinned} "
                        f"(specific policy). Add it there, or move a label to it with "
                        f"`python -m tfsb.client label set {model} canary={version}`.")
    return None


if __name__ == "__main__":
    sys.exit(main())
