#!/usr/bin/env bash
# Execute the tutorial notebook and keep an executed copy, for reading its outputs without Jupyter.
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage() {
  cat <<USAGE
usage: scripts/run_notebook.sh [--notebook PATH] [--out PATH] [--work-dir DIR] [--timeout SECONDS]
  Runs every cell of the tutorial notebook (recommend/tutorial.ipynb) in a fresh kernel of the
  project's Python, from recommend/, and writes the notebook with its outputs. The stored notebook
  itself is never modified (it is kept with outputs stripped). About 2 minutes on 2 cores: it
  generates synthetic data, trains MIND briefly, evaluates it, loads Milvus Lite and starts the
  recall service on a free loopback port; then (section 8) prepares MovieLens-100k, trains on it
  for 3 epochs and serves it from a second service. Both services are stopped at the end.
  MovieLens needs the recbole wheel from PyPI once (pip download; cached in recommend/data/cache/).

  --notebook PATH    notebook to run (default: recommend/tutorial.ipynb)
  --out PATH         executed copy (default: recommend/tutorial_work/tutorial.executed.ipynb);
                     written even when a cell fails, so the error can be read there
  --work-dir DIR     where the notebook puts its data, model, Milvus Lite files and service log
                     (default: recommend/tutorial_work, git-ignored); exported as TUTORIAL_WORK_DIR
  --timeout SECONDS  limit for one cell (default: 600)

  Exit status: 0 if every cell ran, 1 if a cell failed (its traceback is printed).
  For HTML: jupyter nbconvert --to html <the executed copy>  (needs nbconvert, not a dependency).
USAGE
}

NOTEBOOK="$ROOT/recommend/tutorial.ipynb"
OUT="$ROOT/recommend/tutorial_work/tutorial.executed.ipynb"
WORK_DIR="$ROOT/recommend/tutorial_work"
TIMEOUT=600
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --notebook) NOTEBOOK=${2:?--notebook needs a path}; shift 2 ;;
    --out) OUT=${2:?--out needs a path}; shift 2 ;;
    --work-dir) WORK_DIR=${2:?--work-dir needs a directory}; shift 2 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -f "$NOTEBOOK" ] || die "no notebook at $NOTEBOOK"
case "$TIMEOUT" in ''|*[!0-9]*) die "--timeout must be a whole number of seconds, got '$TIMEOUT'" ;; esac
"$PY" -c 'import nbclient, nbformat, ipykernel' 2>/dev/null \
  || die "nbclient, nbformat and ipykernel are needed: $PY -m pip install -r requirements-dev.txt"

mkdir -p "$WORK_DIR" "$(dirname "$OUT")"
export TUTORIAL_WORK_DIR=$(cd "$WORK_DIR" && pwd)
export TUTORIAL_RECOMMEND_DIR="$ROOT/recommend"
stage "executing $NOTEBOOK (work dir $TUTORIAL_WORK_DIR)"
"$PY" - "$NOTEBOOK" "$OUT" "$ROOT/recommend" "$TIMEOUT" <<'PY'
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

src, out, cwd, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
nb = nbformat.read(src, as_version=4)
# kernel "python3" is this Python (ipykernel installed in it); cells run with cwd = recommend/.
# The kernel is killed once the cells are done ("immediate"): a graceful shutdown of a kernel that
# used paddle and Milvus Lite outlasts jupyter_client's wait and ends in a SIGTERM that paddle
# reports as a fatal error. Nothing is lost: the last cell stops the service and closes Milvus,
# and Milvus Lite's server exits by itself when the kernel's lock on the .db file goes.
client = NotebookClient(nb, timeout=timeout, kernel_name="python3", shutdown_kernel="immediate",
                        resources={"metadata": {"path": cwd}})
start = time.monotonic()
status = 0
try:
    client.execute()
except CellExecutionError as exc:
    print(exc, file=sys.stderr)
    status = 1
finally:
    nbformat.write(nb, out)
verdict = "failed" if status else "ran every cell"
print(f"{verdict} in {time.monotonic() - start:.0f} s; executed copy: {out}")
sys.exit(status)
PY
