#!/usr/bin/env bash
# Train MIND on a prepared dataset: a thin wrapper around recommend/model/trainer.py, in one
# process or data-parallel on Paddle's launcher (then it checks that every rank finished).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage() {
  cat <<USAGE
usage: scripts/train.sh [DATASET|CONFIG.yaml] [--nproc N [launch options]] [trainer.py options...]
  DATASET   synthetic (default), movielens or amazonbook; or the path of a config file
  Runs: cd recommend/model && python -u trainer.py -m <its config> [options]
  --nproc N            run N ranks on this machine with python -m paddle.distributed.launch
                       (runner.train_batch_size is the global batch: each rank trains on 1/N)
  --nnodes M --master HOST:PORT --rank R
                       this machine is node R of M (run the same command on every node)
  --log_dir DIR        the launcher's worker logs and exit statuses
                       (default recommend/model/runs/launch)
  With --nproc, the launcher's exit code is not trusted: the run fails unless every rank of
  this node wrote a zero exit status, and names the rank that did not (with its last log line).
  e.g.  scripts/train.sh synthetic -o runner.epochs=2
        scripts/train.sh movielens --resume
        scripts/train.sh synthetic --nproc 2 --overwrite
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
DATASET=synthetic
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then DATASET=$1; shift; fi
if [ "${DATASET%.yaml}" != "$DATASET" ] || [ "${DATASET%.yml}" != "$DATASET" ]; then
  [ -f "$DATASET" ] || die "config file $DATASET not found"
  CONFIG=$(cd "$(dirname "$DATASET")" && pwd)/$(basename "$DATASET")
else
  CONFIG=$(config_for "$DATASET")
  need_dir "$ROOT/recommend/data/$DATASET/train" "cd recommend/data && sh data.sh $DATASET"
fi

NPROC="" NODE_RANK=0 LOG_DIR="$ROOT/recommend/model/runs/launch" LAUNCH=() TRAINER=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc) NPROC=${2:?--nproc needs a number}; shift 2 ;;
    --nnodes|--master) LAUNCH+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --rank) NODE_RANK=${2:?--rank needs a number}; LAUNCH+=("$1" "$2"); shift 2 ;;
    --log_dir) LOG_DIR=${2:?--log_dir needs a folder}; shift 2 ;;
    *) TRAINER+=("$1"); shift ;;
  esac
done
case "$LOG_DIR" in /*) ;; *) LOG_DIR=$PWD/$LOG_DIR ;; esac  # relative to where it was typed
cd "$ROOT/recommend/model"
if [ -z "$NPROC" ]; then
  [ ${#LAUNCH[@]} -eq 0 ] || die "--nnodes/--master/--rank need --nproc"
  exec "$PY" -u trainer.py -m "$CONFIG" ${TRAINER[@]+"${TRAINER[@]}"}
fi
case "$NPROC" in ''|*[!0-9]*|0) die "--nproc must be a positive integer, got '$NPROC'" ;; esac
# A dataset's distributed run trains into a folder of its own (the 1-process run of the
# tutorial lives in the config's), unless the command line names one.
if [ "$CONFIG" = "$(config_for "$DATASET" 2>/dev/null)" ] \
    && ! printf '%s\n' ${TRAINER[@]+"${TRAINER[@]}"} | grep -q '^runner\.model_save_path='; then
  OWN="$ROOT/recommend/model/output_model_mind_${DATASET}_nproc$NPROC"
  TRAINER+=(-o "runner.model_save_path=$OWN" -o "runner.infer_load_path=$OWN")
fi
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/exit.* "$LOG_DIR"/workerlog.*  # a previous run's must not count for this one
echo "train.sh: $NPROC ranks on paddle.distributed.launch; launcher output in" \
     "$LOG_DIR/launcher.log, each rank's in $LOG_DIR/workerlog.<rank>"
LAUNCH_RC=0
"$PY" -m paddle.distributed.launch --nproc_per_node "$NPROC" --log_dir "$LOG_DIR" \
  ${LAUNCH[@]+"${LAUNCH[@]}"} trainer.py -m "$CONFIG" ${TRAINER[@]+"${TRAINER[@]}"} \
  > "$LOG_DIR/launcher.log" 2>&1 || LAUNCH_RC=$?
# Rank 0 speaks for the run: its own lines, without the launcher's banners.
grep -E '^(device |epoch [0-9]+ |resumed |--resume|nothing to do|that run|early stopping|checkpoints: )' \
  "$LOG_DIR/workerlog.0" 2>/dev/null || true
CHECK_RC=0
"$PY" -m mind.distributed check --log_dir "$LOG_DIR" --nproc "$NPROC" --node_rank "$NODE_RANK" \
  || CHECK_RC=$?
[ "$CHECK_RC" -eq 0 ] || exit "$CHECK_RC"
[ "$LAUNCH_RC" -eq 0 ] || die "every rank finished but the launcher exited $LAUNCH_RC (see $LOG_DIR/launcher.log)"
echo "train.sh: all $NPROC ranks of node $NODE_RANK finished (exit status 0 in $LOG_DIR/exit.*)"
