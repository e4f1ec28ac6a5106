"""Command line: `python -m recdata [amazonbook|synthetic|movielens|import] [options]` (via data.sh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import numpy  # noqa: F401  (checked first so a bare interpreter gets a useful message)
except ImportError:
    print(
        f"data.sh: numpy is missing for {sys.executable}; "
        "activate the venv: . .venv/bin/activate (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from . import CACHE_DIR, DATA_ROOT
from .amazonbook import DEFAULT_URL, EXPECTED_ITEMS, ArchiveError
from .download import DownloadError
from .formats import DataFormatError

VARIANTS = ("amazonbook", "synthetic", "movielens", "import")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sh data.sh",
        description="Prepare train/, valid/, test/ and meta.json under the ComiRec protocol "
        "(users split 8:1:1; held-out users: first 80% history, rest eval items).",
        epilog="Default output: recommend/data/<variant>/. Run `sh data.sh <variant> --help` "
        "for the options of one variant.",
    )
    sub = parser.add_subparsers(dest="variant", metavar="{" + ",".join(VARIANTS) + "}")

    def common(p: argparse.ArgumentParser, downloads: bool = True) -> None:
        p.add_argument(
            "--out", type=Path, help="output directory (default: recommend/data/<variant>)"
        )
        if downloads:  # the variants that fetch something
            p.add_argument("--cache", type=Path, default=CACHE_DIR,
                           help="download cache (default: %(default)s)")

    ab = sub.add_parser("amazonbook", help="full ComiRec AmazonBook (download, ~8.9M clicks)")
    common(ab)
    ab.add_argument("--url", default=DEFAULT_URL, help="http(s):// or file:// URL of the tarball")
    ab.add_argument(
        "--expect-items",
        type=int,
        default=EXPECTED_ITEMS,
        help="expected item rows incl. padding 0 (default: %(default)s)",
    )
    ab.add_argument("--retries", type=int, default=3, help="download attempts, each resuming")

    sy = sub.add_parser("synthetic", help="offline data with planted multiple interests")
    common(sy, downloads=False)
    from .synthetic import FULL, SyntheticConfig

    d = SyntheticConfig()
    sy.add_argument(
        "--items", type=int, default=d.items, help="catalogue size (default: %(default)s)"
    )
    sy.add_argument("--categories", type=int, default=d.categories, help="default: %(default)s")
    sy.add_argument("--users", type=int, default=d.users, help="default: %(default)s")
    sy.add_argument(
        "--min-len", type=int, default=d.min_len, help="shortest sequence (default: %(default)s)"
    )
    sy.add_argument(
        "--max-len", type=int, default=d.max_len, help="longest sequence (default: %(default)s)"
    )
    sy.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")
    sy.add_argument(
        "--full",
        action="store_true",
        help="AmazonBook-sized: "
        + ", ".join(f"{k}={v}" for k, v in FULL.items())
        + " (explicit options still win)",
    )

    ml = sub.add_parser(
        "movielens", help="MovieLens-100k from the recbole==1.2.1 wheel (pip download)"
    )
    common(ml)
    ml.add_argument("--seed", type=int, default=0, help="user split seed (default: %(default)s)")
    add_import(sub)
    return parser


def add_import(sub) -> None:
    im = sub.add_parser(
        "import",
        help="your own click log (CSV, TSV, JSON lines, Parquet) and item file",
        description="Import a click log (one row per click: user key, item key, time) and, "
        "optionally, an items file (one row per item: the item key and metadata columns) as a "
        "MIND dataset: ComiRec preprocessing (exact duplicate clicks dropped, items then users "
        "with fewer than --min-count clicks dropped, items numbered 1..N by descending clicks), "
        "users split 8:1:1. Writes DIR/{train,valid,test}/, meta.json, item_map.tsv, "
        "user_map.tsv and config.yaml (for trainer.py), all at once: a failed import leaves DIR "
        "as it was.",
        epilog="Formats by extension: .csv (comma, header line, \"-quoted values), .tsv (tab, "
        "header line, no quoting), .jsonl/.ndjson (one JSON object per line), .parquet. Keys "
        "are strings (an integer key is its digits). Times: integers, floats or ISO-8601 "
        "timestamps (all with a zone offset, or all without), one form per file. Bad input: "
        "one line on stderr naming file and line, exit code 2.",
    )
    im.add_argument("--clicks", type=Path, required=True, metavar="FILE", help="the click log")
    im.add_argument("--items", type=Path, metavar="FILE",
                    help="item metadata keyed by --item-col; other columns become item_map.tsv "
                    "columns (names lower-cased, other characters as _)")
    im.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    im.add_argument("--user-col", default="user", help="default: %(default)s")
    im.add_argument("--item-col", default="item", help="in --clicks and --items; default: "
                    "%(default)s")
    im.add_argument("--time-col", default="time", help="default: %(default)s")
    im.add_argument("--min-count", type=int, default=5,
                    help="fewest clicks of a kept item, then of a kept user (users: at least 2); "
                    "default: %(default)s")
    im.add_argument("--seed", type=int, default=0, help="user split seed (default: %(default)s)")
    im.add_argument("--list-cols", default="", metavar="COL,...",
                    help="--items columns holding several values, split on --list-sep")
    im.add_argument("--list-sep", default="|", help="default: %(default)s")


def run_import(args: argparse.Namespace) -> int:
    try:
        import pyarrow
    except ImportError:
        print(f"data.sh import: pyarrow is missing for {sys.executable}; "
              "pip install -r requirements.txt (from the repository root)", file=sys.stderr)
        return 2
    from .importer import Options, prepare
    from .itemmap import ItemMapError

    try:  # freed batches go back to the OS at once (10M clicks: peak 1.6 -> 1.2 GB, measured)
        pyarrow.set_memory_pool(pyarrow.jemalloc_memory_pool())
    except NotImplementedError:  # a build without jemalloc keeps its default pool
        pass

    opts = Options(
        clicks=args.clicks, out=args.out, items=args.items, user_col=args.user_col,
        item_col=args.item_col, time_col=args.time_col, min_count=args.min_count, seed=args.seed,
        list_cols=tuple(c.strip() for c in args.list_cols.split(",") if c.strip()),
        list_sep=args.list_sep,
    )
    try:
        prepare(opts)
    except (DataFormatError, ItemMapError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "amazonbook")  # the tutorial's bare `sh data.sh` means AmazonBook
    args = build_parser().parse_args(argv)
    if args.variant == "import":
        return run_import(args)
    out = args.out if args.out is not None else DATA_ROOT / args.variant
    try:
        if args.variant == "amazonbook":
            from . import amazonbook

            amazonbook.prepare(out, args.cache, args.url, args.expect_items, args.retries)
        elif args.variant == "synthetic":
            from .synthetic import FULL, SyntheticConfig, prepare

            given = {
                k: getattr(args, k) for k in ("items", "categories", "users", "min_len", "max_len")
            }
            defaults = SyntheticConfig()
            if args.full:  # --full sets the sizes that were not given explicitly
                given = {k: (v if v != getattr(defaults, k) else FULL[k]) for k, v in given.items()}
            prepare(out, SyntheticConfig(**given, seed=args.seed), args.full)
        else:
            from . import movielens

            movielens.prepare(out, args.cache, args.seed)
    except (ArchiveError, DownloadError, DataFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
