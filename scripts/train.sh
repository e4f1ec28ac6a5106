#!/usr/bin/env bash
# Train MIND on a prepared dataset: a thin wrapper around recommend/model/trainer.py.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage() {
  cat <<USAGE
usage: scripts/train.sh [DATASET] [trainer.py options...]
  DATASET   synthetic (default), movielens or amazonbook
  Runs: cd recommend/model && python -u trainer.py -m <its config> [options]
  e.g.  scripts/train.sh synthetic -o runner.epochs=2
        scripts/train.sh movielens --resume
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
DATASET=${1:-synthetic}; shift || true
CONFIG=$(config_for "$DATASET")
need_dir "$ROOT/recommend/data/$DATASET/train" "cd recommend/data && sh data.sh $DATASET"
cd "$ROOT/recommend/model"
exec "$PY" -u trainer.py -m "$CONFIG" "$@"
