"""Datasets for MIND: AmazonBook (ComiRec), synthetic multi-interest data, MovieLens-100k, and
a shop's own click log (`import`).

Run through `cd recommend/data && sh data.sh [variant] [options]` (a wrapper around
`python -m recdata`). Every variant writes `train/`, `valid/`, `test/` and `meta.json` in the
formats PaddleRec reads (README, step 1 "Data"), and `item_map.tsv` (recdata.itemmap) when it
knows what its items are.
"""

from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parent.parent
"""recommend/data: default parent of every variant's output directory."""

CACHE_DIR = DATA_ROOT / "cache"
"""Downloads (archives, wheels) are kept here between runs."""
