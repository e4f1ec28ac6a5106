"""Time and memory of `sh data.sh import` on a generated 10M-click log (CSV and Parquet).

    python bench/import_bench.py                 # 10M clicks, 1M users, 100k items
    python bench/import_bench.py --clicks 200000 --users 20000 --items 5000   # a quick look

The log (bench/work/import/, git-ignored, reused while its parameters are unchanged) is what
a shop exports: string keys (`u0000042`, `sku000017`), item popularity Zipf(1.0), clicks per
user 1 + negative binomial (mean ~10, so some users fall under --min-count), about 1% exact
duplicate clicks, rows in time order (users interleaved, the log's natural order and the
import's worst case: nothing is grouped by user). The CSV has ISO-8601 UTC times, the Parquet
file integer epoch seconds; an items file (CSV) gives every item a title and a category list.
Each import runs as a child process (--repeats times, median reported); wall seconds from
start to exit, peak RSS from that child's own rusage (os.wait4: ru_maxrss, as resource.RUSAGE_CHILDREN reports it, but of this
child alone). Writes bench/results/import.json and import.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = Path(os.environ.get("BENCH_WORK", BENCH / "work")) / "import"
RESULTS = BENCH / "results"
DATA_DIR = REPO / "recommend" / "data"
DAY = 86_400
START = 1_700_000_000  # 2023-11-14, the first click


def keys(prefix: str, n: int) -> pa.Array:
    width = len(str(n - 1))
    return pc.binary_join_element_wise(
        prefix, pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width, "0"), "")


def generate(n_clicks: int, n_users: int, n_items: int, seed: int) -> pa.Table:
    """The click log as a table (user, item, time as epoch seconds), in time order."""
    rng = np.random.default_rng(seed)
    lens = 1 + rng.negative_binomial(2, 2 / (2 + n_clicks / n_users - 1), size=n_users)
    user = np.repeat(np.arange(n_users), lens)[:n_clicks]
    if len(user) < n_clicks:
        user = np.r_[user, rng.integers(0, n_users, n_clicks - len(user))]
    p = 1.0 / np.arange(1, n_items + 1)
    item = rng.permutation(n_items)[np.searchsorted(np.cumsum(p / p.sum()), rng.random(n_clicks),
                                                    side="right").clip(0, n_items - 1)]
    when = START + rng.integers(0, 90 * DAY, n_clicks)
    dup = rng.random(n_clicks) < 0.01  # an exact copy of the click before it, as a double send
    dup[0] = False
    src = np.arange(n_clicks) - dup
    user, item, when = user[src], item[src], when[src]
    order = np.argsort(when, kind="stable")
    return pa.table({"user": keys("u", n_users).take(pa.array(user[order])),
                     "item": keys("sku", n_items).take(pa.array(item[order])),
                     "time": pa.array(when[order])})


def write_inputs(args: argparse.Namespace) -> dict[str, Path]:
    tag = f"{args.clicks}_{args.users}_{args.items}_{args.seed}"
    files = {"csv": WORK / f"clicks_{tag}.csv", "parquet": WORK / f"clicks_{tag}.parquet",
             "items": WORK / f"items_{args.items}.csv"}
    if all(f.is_file() for f in files.values()):
        print(f"using the generated files in {WORK}")
        return files
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = generate(args.clicks, args.users, args.items, args.seed)
    iso = pc.strftime(log["time"].cast(pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    pcsv.write_csv(log.set_column(2, "time", iso), files["csv"],
                   pcsv.WriteOptions(quoting_style="none"))
    pq.write_table(log, files["parquet"])
    names = pc.binary_join_element_wise("Product ", pc.cast(pa.array(np.arange(args.items)),
                                                            pa.string()), "")
    cats = np.array(["Books", "Garden", "Kitchen", "Toys", "Music", "Sports"])[
        np.arange(args.items) % 6]
    items = pa.table({"item": keys("sku", args.items), "title": names,
                      "category": pa.array(np.char.add(cats, "|Gifts"))})
    pcsv.write_csv(items, files["items"], pcsv.WriteOptions(quoting_style="none"))
    print(f"generated {args.clicks:,} clicks in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{f.name} {f.stat().st_size / 1e6:.0f} MB" for f in files.values()))
    return files


def measure(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one child process, its output kept."""
    env = {**os.environ, "PYTHON": sys.executable}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=DATA_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "command": "cd recommend/data && " + " ".join(cmd), "output": out.splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--repeats", type=int, default=3, help="imports per format (median reported)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = ap.parse_args()
    files = write_inputs(args)
    runs = {}
    for fmt in args.formats.split(","):
        out = WORK / f"out_{fmt}"
        rel = [os.path.relpath(p, DATA_DIR) for p in (files[fmt], files["items"], out)]
        cmd = ["sh", "data.sh", "import", "--clicks", rel[0], "--items", rel[1], "--list-cols",
               "category", "--out", rel[2]]
        reps = [measure(cmd) for _ in range(args.repeats)]
        runs[fmt] = {**reps[-1], "seconds": statistics.median(r["seconds"] for r in reps),
                     "seconds_each": [r["seconds"] for r in reps],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in reps)}
        meta = json.loads((out / "meta.json").read_text())
        runs[fmt]["kept_clicks"] = sum(meta["clicks"].values())
        runs[fmt]["item_count"] = meta["item_count"]
        runs[fmt]["dropped"] = meta["dropped"]
        print(f"{fmt}: {runs[fmt]['seconds_each']} s, peak RSS {runs[fmt]['peak_rss_mb']} MB")
    # The same clicks as ISO strings (CSV) and epoch integers (Parquet): the same dataset.
    outs = [WORK / f"out_{fmt}" for fmt in runs]
    same = all((outs[0] / f).read_bytes() == (o / f).read_bytes() for o in outs[1:]
               for f in ("train/part-0", "valid/part-0", "test/part-0", "item_map.tsv",
                         "user_map.tsv"))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, pyarrow {pa.__version__}",
        "load_average_after": [round(x, 2) for x in os.getloadavg()],  # others' work slows us
        "log": {"clicks": args.clicks, "users": args.users, "items": args.items,
                "seed": args.seed, "files": {k: f"{v.name} ({v.stat().st_size / 1e6:.0f} MB)"
                                             for k, v in files.items()}},
        "runs": runs,
        "identical_outputs": same,
    }
    if args.no_write:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {fmt} | {r['seconds']} ({', '.join(map(str, r['seconds_each']))}) | "
            f"{r['peak_rss_mb']:,} | {r['kept_clicks']:,} | {r['item_count'] - 1:,} |"
            for fmt, r in runs.items()]
    (RESULTS / "import.md").write_text("\n".join([
        f"# `sh data.sh import` on {args.clicks:,} clicks ({result['date']})", "",
        f"{args.users:,} users, {args.items:,} items (Zipf), string keys, ~1% duplicate clicks, "
        f"rows in time order; with an items file. {result['machine']}. "
        "From `python bench/import_bench.py`.", "",
        f"Wall seconds: median of {args.repeats} imports (each in parentheses); peak RSS: the "
        f"largest. Load average after the runs: {result['load_average_after']}.", "",
        "| input | wall s | peak RSS MB | clicks kept | items kept |",
        "| --- | ---: | ---: | ---: | ---: |", *rows, "",
        f"Both inputs give byte-identical train/valid/test and maps: {same}.", "",
        *(f"- {fmt}: `{r['command']}`" for fmt, r in runs.items()), "",
    ]))
    print(f"wrote {RESULTS / 'import.json'} and {RESULTS / 'import.md'}")


if __name__ == "__main__":
    main()
