#!/bin/bash
# Healthy when every served model has an AVAILABLE version. Works in the official image (bash, no curl) and
# in the embedded one. What is served is read from the server's own command line, as the server reads it
# (last flag wins): --model_config_file (every model it names), else --model_name (the official image's
# entrypoint passes MODEL_NAME that way, and a user's --model_name=X argument comes after it), and
# --rest_api_port. TFS_CONFIG overrides the config file; HEALTHCHECK_PID names the server process (by default
# the process running tensorflow_model_server or `python -m tfsb.server`, else PID 1).
set -u

server_pid() {
  [ -n "${HEALTHCHECK_PID:-}" ] && { echo "$HEALTHCHECK_PID"; return; }
  local f argv
  for f in /proc/[0-9]*/cmdline; do
    argv=$(tr '\0' ' ' < "$f" 2>/dev/null) || continue
    case " $argv" in
      *tensorflow_model_server\ *|*" -m tfsb.server "*) f=${f#/proc/}; echo "${f%/cmdline}"; return ;;
    esac
  done
  echo 1
}

pid=$(server_pid)
args=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null)
flag() { printf '%s\n' "$args" | sed -n "s/^--$1=//p" | tail -1; }

cfg=${TFS_CONFIG:-$(flag model_config_file)}
port=$(flag rest_api_port)
port=${port:-${REST_PORT:-8501}}
if [ -n "$cfg" ]; then
  [ -r "$cfg" ] || exit 1
  # model names from the text-format config, comments stripped
  names=$(sed 's/#.*$//' "$cfg" | grep -oE '(^|[^_a-z])name: *"[^"]+"' | sed -E 's/.*name: *"([^"]+)"/\1/')
else
  names=$(flag model_name)
  names=${names:-${MODEL_NAME:-model}}
fi
[ -n "$names" ] || exit 1
if [ "$port" = 0 ]; then  # no REST API: the gRPC port accepting connections is all that can be told
  grpc=$(flag port)
  exec 3<>"/dev/tcp/127.0.0.1/${grpc:-8500}" || exit 1
  exit 0
fi
for name in $names; do
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf 'GET /v1/models/%s HTTP/1.0\r\n\r\n' "$name" >&3
  grep -q '"AVAILABLE"' <&3 || exit 1
  exec 3<&-
done
exit 0
