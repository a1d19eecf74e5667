#!/bin/bash
# Healthy when every served model has an AVAILABLE version. Works in the official image (bash, no curl) and
# in the embedded one: the models come from the config file named on the server's command line (or
# TFS_CONFIG), else from MODEL_NAME, so a user's own models need no change here.
set -u
cfg=${TFS_CONFIG:-}
if [ -z "$cfg" ] && [ -r /proc/1/cmdline ]; then
  cfg=$(tr '\0' '\n' < /proc/1/cmdline | sed -n 's/^--model_config_file=//p' | tail -1)
fi
if [ -n "$cfg" ] && [ -r "$cfg" ]; then
  names=$(grep -oE '(^|[^_])name: *"[^"]+"' "$cfg" | sed -E 's/.*name: *"([^"]+)"/\1/')
else
  names=${MODEL_NAME:-model}
fi
[ -n "$names" ] || exit 1
for name in $names; do
  exec 3<>"/dev/tcp/127.0.0.1/${REST_PORT:-8501}" || exit 1
  printf 'GET /v1/models/%s HTTP/1.0\r\n\r\n' "$name" >&3
  grep -q '"AVAILABLE"' <&3 || exit 1
  exec 3<&-
done
exit 0
