#!/usr/bin/env bash
# The main job on offline data, start to finish: data -> train -> evaluate -> Milvus -> serve -> curl.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage() {
  cat <<USAGE
usage: scripts/demo.sh [DATASET] [--exit]
  DATASET   synthetic (default, offline), movielens (fetches the recbole wheel from PyPI)
            or amazonbook (downloads the full dataset; needs internet and hours of training)
  --exit    stop the service after the curl calls instead of serving on
Prepares the data, trains MIND, evaluates it against MostPopular and co-occurrence, starts
the recall service on embedded Milvus Lite (http://127.0.0.1:\${PORT:-8000}), loads the item
embeddings and runs the tutorial's curl calls. Then it keeps serving until Ctrl-C.
USAGE
}
DATASET=synthetic; KEEP=1
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --exit) KEEP=0 ;;
    synthetic|movielens|amazonbook) DATASET=$arg ;;
    *) usage >&2; die "unknown argument '$arg'" ;;
  esac
done
PORT=${PORT:-8000}
BASE="http://127.0.0.1:$PORT"
CONFIG=$(config_for "$DATASET")
command -v curl >/dev/null || die "curl is needed for the last step (apt-get install curl)"
# Checked before the minutes of training, not at the serving stage.
port_free "$PORT" || die "port $PORT is in use on 127.0.0.1; stop what listens there or run with PORT=<another port>"
# The config's model_save_path (relative to the config's folder): where the summary points.
MODEL=$("$PY" -c 'import os, sys, yaml; c = sys.argv[1]
print(os.path.normpath(os.path.join(os.path.dirname(c), yaml.safe_load(open(c))["runner"]["model_save_path"])))' \
  "$ROOT/recommend/model/$CONFIG")
RESULTS="$MODEL/infer_results_test_milvus_baselines.json"

# summary: where the demo's outputs are (those that exist so far).
summary() {
  printf '\nWhere things are:\n'
  for f in "$MODEL/loss.png" "$RESULTS" "$MODEL/recall_curve_test_milvus_baselines.png" \
           "$MODEL/metrics_by_epoch_test_milvus_baselines.png" "$ROOT/recommend/uvicorn.log"; do
    [ -e "$f" ] && printf '  %s\n' "${f#"$ROOT"/}"
  done
  printf '  recommend/tutorial.ipynb   (the walk-through notebook; run it: scripts/run_notebook.sh)\n'
}
# Ctrl-C is how the demo is meant to end: exit 0 (the EXIT trap stops the service).
trap 'printf "\nstopped (Ctrl-C)\n"; summary; exit 0' INT TERM

stage "1/6 Preparing the $DATASET data (recommend/data/$DATASET/)"
(cd "$ROOT/recommend/data" && sh data.sh "$DATASET")

stage "2/6 Training MIND (python -u trainer.py -m $CONFIG)"
# --overwrite: a re-run of the demo replaces its previous model instead of being refused.
(cd "$ROOT/recommend/model" && "$PY" -u trainer.py -m "$CONFIG" --overwrite)

stage "3/6 Evaluating on held-out test users through Milvus Lite, with baselines"
(cd "$ROOT/recommend/model" && "$PY" -u infer.py -m "$CONFIG" -top_n 50 --baselines --curve)

stage "4/6 Starting the recall service on $BASE (log: recommend/uvicorn.log)"
if curl -s -o /dev/null "$BASE/healthz"; then
  die "something already answers on $BASE; stop it or run with PORT=<another port>"
fi
export MODEL_CONFIG_PATH="model/$CONFIG"
(cd "$ROOT/recommend" && exec uvicorn main:app --host 127.0.0.1 --port "$PORT") \
  >"$ROOT/recommend/uvicorn.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -s -o /dev/null "$BASE/healthz" && break
  kill -0 $SERVER 2>/dev/null || { tail -20 "$ROOT/recommend/uvicorn.log"; die "the service did not start"; }
  sleep 0.5
done
curl -s -o /dev/null "$BASE/healthz" || die "the service did not answer within 60 s (see recommend/uvicorn.log)"

# Show the tutorial's command as written; run it without curl's progress meter.
curl() { command curl -sS "$@"; }
show() { printf '\n$ %s\n' "$1"; eval "$1"; echo; }
stage "5/6 The tutorial's curl calls"
show "curl -X 'POST'   '$BASE/rec/insert_data'   -H 'accept: application/json'   -d ''"
show "curl -X 'POST'   '$BASE/rec/recall'   -H 'accept: application/json'   -H 'Content-Type: application/json'   -d '{  \"top_k\": 50,  \"hist_item\": [[43,23,65,675,3456,8654,123454,54367,234561],[675,3456,8654,123454,76543,1234,9769,5670,65443,123098,34219,234098]]}'"
show "curl -X 'POST'   '$BASE/rec/count'   -H 'accept: application/json'   -d ''"

if [ "$KEEP" = 1 ]; then
  stage "6/6 Serving on $BASE: open the page $BASE/demo (API docs: $BASE/docs). Press Ctrl-C to stop."
  wait $SERVER
else
  stage "6/6 Stopping the service (--exit)"
fi
summary
