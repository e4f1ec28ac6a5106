"""Write a small shop's own files, as `sh data.sh import` expects a real shop to bring them.

    python scripts/example_shop.py --out /tmp/shop      # clicks.csv and items.csv

clicks.csv: `user,item,time` with string keys (`cust-000017`, `SKU-7F3A21`), ISO-8601 times in
UTC and a few exact duplicate clicks (a page reloaded); items.csv: `item,title,category`,
including some products nobody clicked. The shoppers are recdata.synthetic's: each has 1-4
planted interests (categories), so a trained model has something real to find.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import numpy as np

from recdata.synthetic import CATEGORY_NAMES, SyntheticConfig, generate


def sku(item: int) -> str:
    return "SKU-" + hashlib.sha256(f"item {item}".encode()).hexdigest()[:6].upper()


def write_shop(out: Path, seed: int = 0) -> tuple[Path, Path]:
    cfg = SyntheticConfig(items=1500, categories=12, users=2500, min_len=10, max_len=40,
                          seed=seed)
    gen = generate(cfg)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    clicks, items = out / "clicks.csv", out / "items.csv"
    start = np.datetime64("2026-06-01T08:00:00")
    with clicks.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "time"])
        for u in range(len(gen.clicks)):
            seq = gen.clicks.sequence(u)
            gaps = np.cumsum(rng.integers(30, 3 * 24 * 3600, len(seq)))
            user = f"cust-{int(gen.clicks.user_ids[u]):06d}"
            for item, t in zip(seq.tolist(), gaps.tolist(), strict=True):
                row = [user, sku(item), f"{start + np.timedelta64(t, 's')}Z"]
                w.writerow(row)
                if rng.random() < 0.01:
                    w.writerow(row)  # an exact duplicate, as a reloaded page logs one
    with items.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "title", "category"])
        for item in range(1, cfg.items + 1):
            name = CATEGORY_NAMES[int(gen.item_category[item]) % len(CATEGORY_NAMES)]
            w.writerow([sku(item), f"{name} #{item}", name])
    return clicks, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for clicks.csv and items.csv")
    ap.add_argument("--seed", type=int, default=0)
    clicks, items = write_shop(ap.parse_args().out, ap.parse_args().seed)
    print(f"wrote {clicks} and {items}")


if __name__ == "__main__":
    main()
