"""Bring the compose stack up for the container tier, and down again: `python -m tests.container.stack up|down`.

`up` publishes the demo zoo into models-test/ (the mounted model volume), copies config/*.config into
run/container-config/ (a writable config directory, so the rollout tool can move labels), starts the
`tfserving` service with TFS_IMAGE on free loopback ports and waits until compose reports it healthy, then
writes run/container.env: the TFS_* variables the integration suite reads to target the container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = "tfsb-test"
ENV_FILE = REPO / "run" / "container.env"
MODELS = REPO / "models-test"
CONFIG_DIR = REPO / "run" / "container-config"


def compose(*args: str, env: dict | None = None, check: bool = True, project: str = PROJECT
            ) -> subprocess.CompletedProcess:
    cmd = ["docker", "compose", "-p", project, "-f", str(REPO / "docker" / "docker-compose.yml"), *args]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, check=check, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stack_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_FILE.read_text().split() if "=" in line)


def up() -> None:
    from tests.conftest import export_zoo
    from tests.server_util import free_port

    t0 = time.monotonic()
    if MODELS.exists():
        shutil.rmtree(MODELS)
    export_zoo(MODELS)
    os.chmod(MODELS, 0o755)
    if CONFIG_DIR.exists():
        shutil.rmtree(CONFIG_DIR)
    CONFIG_DIR.mkdir(parents=True)
    for name in ("models.config", "batching.config", "monitoring.config"):
        shutil.copy(REPO / "config" / name, CONFIG_DIR / name)
    print(f"stack: models exported in {time.monotonic() - t0:.1f}s", flush=True)
    grpc_port, rest_port = free_port(), free_port()
    env = {"TFS_IMAGE": os.environ.get("TFS_IMAGE", "tf-serving-bundle-embedded:local"),
           "MODELS_DIR": str(MODELS), "CONFIG_DIR": str(CONFIG_DIR),
           "GRPC_PORT": str(grpc_port), "REST_PORT": str(rest_port)}
    compose("down", "--remove-orphans", env=env, check=False)
    t1 = time.monotonic()
    r = compose("up", "-d", "--wait", "--wait-timeout", "240", "tfserving", env=env, check=False)
    print(r.stdout, flush=True)
    if r.returncode != 0:
        print(compose("logs", "--no-color", "--tail", "80", env=env, check=False).stdout)
        raise SystemExit(f"compose up failed ({r.returncode})")
    print(f"stack: compose up --wait healthy in {time.monotonic() - t1:.1f}s", flush=True)
    container = compose("ps", "-q", "tfserving", env=env).stdout.strip()
    ENV_FILE.parent.mkdir(exist_ok=True)
    ENV_FILE.write_text("\n".join([
        f"TFS_GRPC=127.0.0.1:{grpc_port}", f"TFS_REST=http://127.0.0.1:{rest_port}", f"TFS_MODEL_BASE={MODELS}",
        f"TFS_CONFIG_DIR={CONFIG_DIR}", f"TFS_CONTAINER={container}", f"TFS_IMAGE={env['TFS_IMAGE']}",
        "TFS_MAX_BATCH_SIZE=64", f"COMPOSE_ENV={','.join(f'{k}:{v}' for k, v in env.items())}"]) + "\n")


def down() -> None:
    env = {}
    if ENV_FILE.exists():
        env = dict(kv.split(":", 1) for kv in stack_env().get("COMPOSE_ENV", "").split(",") if ":" in kv)
    print(compose("logs", "--no-color", "--tail", "30", env=env, check=False).stdout)
    compose("down", "--remove-orphans", "-t", "30", env=env, check=False)
    ENV_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    {"up": up, "down": down}[sys.argv[1]]()
