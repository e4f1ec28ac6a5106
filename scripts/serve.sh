#!/usr/bin/env bash
# Serve recall over HTTP: a thin wrapper around `cd recommend && uvicorn main:app`.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage() {
  cat <<USAGE
usage: scripts/serve.sh [DATASET] [uvicorn options...]
  DATASET   synthetic (default), movielens or amazonbook: which trained model to serve
  Runs: cd recommend && MODEL_CONFIG_PATH=model/<its config> uvicorn main:app --host 127.0.0.1 --port 8000
  Settings come from the environment (see README, "Configuration", "Service"): MILVUS_URI or
  MILVUS_HOST/MILVUS_PORT for a Milvus server (default: embedded Milvus Lite), EPOCH_NUM,
  API_TOKEN, PORT. Stop it with Ctrl-C.
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
DATASET=${1:-synthetic}; shift || true
CONFIG=$(config_for "$DATASET")
export MODEL_CONFIG_PATH="${MODEL_CONFIG_PATH:-model/$CONFIG}"
# A missing model or data is one line (mind.cli), the traceback only with MIND_DEBUG=1.
"$PY" - "$ROOT/recommend/$MODEL_CONFIG_PATH" "$DATASET" <<'PYCHECK' || exit 1
import sys
from mind import cli
from mind.checkpoint import CheckpointError, list_epochs
from mind.config import load_config
def check(argv):
    config = load_config(argv[0])
    if not list_epochs(config.runner.model_save_path):
        raise CheckpointError(f"no trained model under {config.runner.model_save_path}; "
                              f"train first: scripts/train.sh {argv[1]}")
    return 0
sys.exit(cli.run("serve.sh", check, sys.argv[1:]))
PYCHECK
cd "$ROOT/recommend"
exec uvicorn main:app --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
