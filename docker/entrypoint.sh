#!/bin/sh
# Same contract as the official image's tf_serving_entrypoint.sh: ports 8500/8501, single-model mode from
# MODEL_NAME / MODEL_BASE_PATH, and every argument passed through (a --model_config_file wins over them).
set -e
exec python -m tfsb.server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME:-model}" --model_base_path="${MODEL_BASE_PATH:-/models}/${MODEL_NAME:-model}" "$@"
