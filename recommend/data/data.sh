#!/bin/sh
# Prepare a dataset for MIND: train/, valid/, test/, meta.json and item_map.tsv under
# recommend/data/<variant>/.
#   cd recommend/data && sh data.sh                 # full ComiRec AmazonBook (download)
#   sh data.sh synthetic [--seed N] [--full] ...    # offline, planted multiple interests
#   sh data.sh movielens                            # MovieLens-100k (pip download of recbole)
#   sh data.sh import --clicks FILE [--items FILE] --out DIR   # a shop's own click log
#   sh data.sh --help | sh data.sh synthetic --help
# All logic lives in the Python package recdata (python -m recdata, which also reports a
# missing numpy); this only finds Python.
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "data.sh: $PYTHON not found; activate the venv: . .venv/bin/activate (from the repository root)" >&2
    exit 2
fi
# recdata sits next to this script; PYTHONPATH makes it importable even without `pip install -e .`.
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" RECDATA_COMMAND="sh data.sh $*" exec "$PYTHON" -m recdata "$@"
