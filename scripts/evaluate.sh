#!/usr/bin/env bash
# Evaluate saved MIND epochs (and the baselines): a thin wrapper around recommend/model/infer.py.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage() {
  cat <<USAGE
usage: scripts/evaluate.sh [DATASET] [infer.py options...]
  DATASET   synthetic (default), movielens or amazonbook
  Runs: cd recommend/model && python -u infer.py -m <its config> -top_n 50 --baselines [options]
  e.g.  scripts/evaluate.sh synthetic --search exact --curve
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
DATASET=${1:-synthetic}; shift || true
CONFIG=$(config_for "$DATASET")
need_dir "$ROOT/recommend/data/$DATASET/test" "cd recommend/data && sh data.sh $DATASET"
cd "$ROOT/recommend/model"
exec "$PY" -u infer.py -m "$CONFIG" -top_n 50 --baselines "$@"
