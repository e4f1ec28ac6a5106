"""`sh data.sh import`: a shop's own click log and item file, on tiny hand-made logs."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mind.config import load_config
from recdata.formats import read_eval_dir, read_train_dir
from recdata.importer import MODEL_CONFIG, Options, prepare
from recdata.itemmap import read_item_map
from test_data_sh import check_dataset, run_data_sh

HEADER = ["user", "item", "time"]


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    """`rows` in the format of `path`'s extension, as a shop's export would hold them."""
    fmt = path.suffix
    if fmt == ".csv":
        with open(path, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *rows])
    elif fmt == ".tsv":
        path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")
    elif fmt in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=True))) + "\n"
                                for r in rows))
    else:
        pq.write_table(pa.table({h: [r[j] for r in rows] for j, h in enumerate(header)}), path,
                       row_group_size=7)  # several row groups: batches meet a boundary
    return path


def random_log(seed: int = 0, users: int = 40, items: int = 25) -> list[list]:
    """Clicks with repeats of whole clicks, equal times within a user and rare items/users."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        for _ in range(rng.randint(1, 12)):
            item = min(int(rng.paretovariate(1.2)) - 1, items - 1)
            rows.append([f"u{u:03d}", f"sku-{item}", rng.randint(0, 6)])
    rng.shuffle(rows)
    rows += [list(r) for r in rng.sample(rows, 15)]  # exact duplicates
    return rows


def reference(rows: list[list], min_count: int) -> dict:
    """The preprocessing of recdata.importer's docstring, one click at a time."""
    seen, clicks = set(), []
    for pos, (u, i, t) in enumerate(rows):
        if (u, i, t) not in seen:
            seen.add((u, i, t))
            clicks.append((u, i, t, pos))
    n_item = Counter(c[1] for c in clicks)
    kept = [c for c in clicks if n_item[c[1]] >= min_count]
    n_user = Counter(c[0] for c in kept)
    final = [c for c in kept if n_user[c[0]] >= max(min_count, 2)]
    seqs: dict[str, list[str]] = {}
    for u, i, _, _ in sorted(final, key=lambda c: (c[2], c[3])):
        seqs.setdefault(u, []).append(i)
    first = {}
    for u, i, _ in rows:
        first.setdefault(i, len(first))
        first.setdefault(("user", u), len(first))
    count = Counter(c[1] for c in final)
    return {
        "seqs": seqs,
        "items": sorted(count, key=lambda i: (-count[i], first[i])),
        "users": sorted(seqs, key=lambda u: first[("user", u)]),
        "dropped": {
            "duplicate_clicks": len(rows) - len(clicks),
            "rare_items": sum(1 for n in n_item.values() if n < min_count),
            "rare_item_clicks": len(clicks) - len(kept),
            "rare_users": len({c[0] for c in clicks}) - len(seqs),
            "rare_user_clicks": len(kept) - len(final),
            "items_left_without_clicks": len({c[1] for c in kept} - set(count)),
        },
    }


def written(out: Path) -> dict[str, list[str]]:
    """{user key: item keys in click order} of a written dataset, through its two maps."""
    items = read_item_map(out / "item_map.tsv").keys
    users = read_item_map(out / "user_map.tsv").keys
    seqs = {users[u]: [items[i] for i in s] for u, s in read_train_dir(out / "train").items()}
    for split in ("valid", "test"):
        ev = read_eval_dir(out / split)
        for u, h, e in zip(ev.user_ids.tolist(), ev.histories, ev.eval_items, strict=True):
            seqs[users[u]] = [items[i] for i in h.tolist() + e.tolist()]
    return seqs


def run_import(tmp_path: Path, rows: list[list], suffix: str = ".csv", header=HEADER,
               **options) -> tuple[Path, dict]:
    clicks = write_table(tmp_path / f"clicks{suffix}", header, rows)
    out = tmp_path / "shop"
    meta = prepare(Options(clicks=clicks, out=out, **options))
    return out, meta


def test_preprocessing_matches_a_click_by_click_reference(tmp_path):
    rows = random_log()
    out, meta = run_import(tmp_path, rows, min_count=3)
    ref = reference(rows, 3)
    assert written(out) == ref["seqs"]
    # Ids: items 1..N by descending clicks, ties in first-appearance order; users likewise.
    assert read_item_map(out / "item_map.tsv").keys[1:].tolist() == ref["items"]
    assert read_item_map(out / "user_map.tsv").keys[1:].tolist() == ref["users"]
    assert meta["dropped"] == ref["dropped"] and meta["item_count"] == len(ref["items"]) + 1
    assert ref["dropped"]["duplicate_clicks"] >= 10 and ref["dropped"]["rare_users"] >= 3


def test_ties_keep_file_order_duplicates_go_and_ids_follow_popularity(tmp_path):
    rows = [[f"u{u}", f"i{k}", 10] for u in range(12) for k in (3, 1, 2, 4, 5)]
    rows += [["u0", "i1", 10], ["u0", "i1", 11], ["u0", "i9", 5]]  # a duplicate, a repeat later
    out, meta = run_import(tmp_path, rows, min_count=1)
    seqs = written(out)
    assert seqs["u0"] == ["i9", "i3", "i1", "i2", "i4", "i5", "i1"]
    assert seqs["u7"] == ["i3", "i1", "i2", "i4", "i5"]
    assert meta["dropped"]["duplicate_clicks"] == 1
    # i1 has 13 clicks; the rest tie at 12 and keep the order they first appear in; i9 last.
    keys = read_item_map(out / "item_map.tsv").keys.tolist()
    assert keys == ["", "i1", "i3", "i2", "i4", "i5", "i9"]


def test_min_count_filters_items_first_then_users(tmp_path):
    rows = [[f"u{u}", f"i{k}", k] for u in range(12) for k in range(5)]  # 12 users x 5 items
    rows += [["u0", "rare", 9]]  # 1 click: dropped, u0 keeps 5
    rows += [["late", f"i{k}", 9] for k in range(4)] + [["late", "rare2", 9]]  # 4 after items
    # 'solo' passes the item filter with 5 clicks, all by users the user filter then drops.
    rows += [[f"x{k}", i, 1] for k in range(5) for i in ("solo", "i0")]
    out, meta = run_import(tmp_path, rows, min_count=5)
    seqs = written(out)
    assert set(seqs) == {f"u{u}" for u in range(12)} and seqs["u0"] == [f"i{k}" for k in range(5)]
    assert meta["dropped"] == {"duplicate_clicks": 0, "rare_items": 2, "rare_item_clicks": 2,
                               "rare_users": 6, "rare_user_clicks": 14,
                               "items_left_without_clicks": 1}
    assert "solo" not in read_item_map(out / "item_map.tsv").keys.tolist()


@pytest.mark.parametrize("times, form", [
    ([30, 10, 20], "integers"),
    ([1.5, -2.25, 1.25], "floats"),
    ([3, 1.5, 2], "floats"),  # integers among floats are promoted
    (["2024-01-01T10:00:00+02:00", "2024-01-01T07:00:00Z", "2024-01-01T08:30:00+0100"],
     "ISO-8601 with zone offsets"),
    (["2024-01-02", "2024-01-01 23:59:59.5", "2024-01-01T23:59:59.75"],
     "ISO-8601 without zone offsets"),
])
def test_every_time_form_orders_the_clicks(tmp_path, times, form):
    # times[1] < times[2] < times[0] in every form; each user clicks a, b, c at those times.
    rows = [[f"u{u}", k, t] for u in range(10) for k, t in zip("abc", times, strict=True)]
    out, meta = run_import(tmp_path, rows, min_count=1)
    assert set(map(tuple, written(out).values())) == {("b", "c", "a")}
    assert meta["time_form"].startswith(form)


@pytest.mark.parametrize("unit, tz", [("ms", "UTC"), ("us", None)])
def test_parquet_typed_columns(tmp_path, unit, tz):
    # As a warehouse exports them: integer user keys, dictionary item keys, timestamp times.
    base = [30, 10, 20]
    table = pa.table({
        "user": pa.array([u for u in range(10) for _ in base], pa.int64()),
        "item": pa.array([k for _ in range(10) for k in "abc"]).dictionary_encode(),
        "time": pa.array([t * 1000 for _ in range(10) for t in base], pa.timestamp(unit, tz)),
    })
    pq.write_table(table, tmp_path / "clicks.parquet")
    out = tmp_path / "shop"
    meta = prepare(Options(clicks=tmp_path / "clicks.parquet", out=out, min_count=1))
    seqs = written(out)
    assert set(seqs) == {str(u) for u in range(10)} and seqs["7"] == ["b", "c", "a"]
    assert meta["time_form"].startswith("ISO-8601 " + ("with" if tz else "without"))


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".ndjson", ".parquet"])
def test_every_input_format_gives_the_csv_result(tmp_path, suffix):
    rows = random_log(seed=5)
    if suffix != ".tsv":  # integer keys of typed formats are strings too: "17" as in the CSV
        rows = [[u, i[4:], t] for u, i, t in rows]
    typed = rows if suffix == ".tsv" else [[u, int(i), t] for u, i, t in rows]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base, _ = run_import(tmp_path / "a", rows, min_count=3)
    other, _ = run_import(tmp_path / "b", typed, suffix, min_count=3)
    for f in ("train/part-0", "valid/part-0", "test/part-0", "item_map.tsv", "user_map.tsv"):
        assert (other / f).read_bytes() == (base / f).read_bytes(), f


def test_csv_quotes_blank_lines_and_other_column_names(tmp_path):
    text = "visitor,sku,ts,extra\n" + "".join(
        f'"v,{u}",{k},{t},"x ""y"""\n' for u in range(10) for k, t in (("b", 2), ("a", 1)))
    path = tmp_path / "log.csv"
    path.write_text(text.replace("\n", "\n\n", 3))  # a few blank lines: skipped, still counted
    out = tmp_path / "shop"
    meta = prepare(Options(clicks=path, out=out, user_col="visitor", item_col="sku",
                           time_col="ts", min_count=1))
    assert written(out)["v,3"] == ["a", "b"] and meta["blank_lines"] == 3


def test_items_file_joins_by_key_and_reports_what_does_not_match(tmp_path):
    rows = [[f"u{u}", f"i{k}", k] for u in range(10) for k in range(4)]
    items = write_table(tmp_path / "items.csv", ["item", "Title", "Genres", "Price (EUR)"], [
        ["i0", "Zero, the first", "Action|Comedy", "1.5"],
        ["i1", "One\twith tab", " Drama ||", ""],
        ["i2", "Two", "", "3"],
        ["nobody", "Never clicked", "Drama", "4"],
        ["ghost", "Neither", "", "5"],
    ])
    out, meta = run_import(tmp_path, rows, items=items, min_count=1, list_cols=("Genres",))
    m = read_item_map(out / "item_map.tsv")
    assert list(m.columns) == ["title", "genres", "price_eur"] and m.list_columns == {"genres"}
    by_key = m.ids_by_key()
    assert set(by_key) == {"i0", "i1", "i2", "i3"}
    assert m.columns["title"][by_key["i0"]] == "Zero, the first"
    assert m.columns["title"][by_key["i1"]] == "One with tab"
    assert m.columns["genres"][by_key["i0"]] == ("Action", "Comedy")
    assert m.columns["genres"][by_key["i1"]] == ("Drama",)
    assert m.columns["price_eur"][by_key["i2"]] == "3"
    # i3 has clicks and no row: kept, with empty metadata.
    assert m.columns["title"][by_key["i3"]] == "" and m.columns["genres"][by_key["i3"]] == ()
    assert meta["dropped"]["item_rows_without_clicks"] == 2
    assert meta["items_file"] == {"item_rows_without_clicks": 2, "items_without_row": 1,
                                  "item_rows_without_clicks_examples": ["nobody", "ghost"]}
    assert meta["item_map_sha256"] == m.sha256


def test_items_as_json_lines_with_list_values(tmp_path):
    rows = [[f"u{u}", k, k] for u in range(10) for k in range(3)]  # integer item keys
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": k, "tags": ["x", f"t{k}"], "stock": k * 2})
                             + "\n" for k in range(3)))
    out, _ = run_import(tmp_path, rows, ".jsonl", items=items, min_count=1)
    m = read_item_map(out / "item_map.tsv")
    k1 = m.ids_by_key()["1"]
    assert m.columns["tags"][k1] == ("x", "t1") and m.columns["stock"][k1] == "2"


def test_generated_config_loads_with_this_data_and_the_shipped_defaults(tmp_path):
    out, meta = run_import(tmp_path, random_log(seed=2), min_count=2)
    text = (out / "config.yaml").read_text()
    cfg = load_config(out / "config.yaml")
    assert cfg.runner.train_data_dir == out / "train" and cfg.runner.test_data_dir == out / "test"
    assert cfg.runner.valid_data_dir == out / "valid"
    assert cfg.hyper_parameters.item_count == meta["item_count"]
    assert cfg.runner.model_save_path == tmp_path / "shop_model" == cfg.runner.infer_load_path
    shipped = load_config(MODEL_CONFIG).to_dict()
    mine = cfg.to_dict()
    for key in ("train_data_dir", "valid_data_dir", "test_data_dir", "model_save_path",
                "infer_load_path"):
        del shipped["runner"][key], mine["runner"][key]
    # Sized to the data: an epoch of one sample per click, early stopping on valid.
    assert mine["runner"].pop("samples_per_epoch") is None
    assert mine["runner"].pop("early_stopping_patience") == 3
    del shipped["runner"]["samples_per_epoch"], shipped["runner"]["early_stopping_patience"]
    del shipped["hyper_parameters"]["item_count"], mine["hyper_parameters"]["item_count"]
    assert mine == shipped
    assert "# (int) training epochs" in text and "amazonbook" not in text
    assert yaml.safe_load(text)["hyper_parameters"]["item_count"] == meta["item_count"]


def test_cli_prints_the_summary_and_the_next_command(tmp_path):
    rows = random_log(seed=3, users=60)
    clicks = write_table(tmp_path / "clicks.parquet", HEADER, rows)
    items = write_table(tmp_path / "items.tsv", ["item", "name"],
                        [[f"sku-{k}", f"Name {k}"] for k in range(40)])
    out = tmp_path / "my shop"
    res = run_data_sh("import", "--clicks", str(clicks), "--items", str(items), "--out", str(out),
                      "--seed", "3")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "duplicate clicks (same user, item and time)" in res.stdout
    assert "eval_len_median" in res.stdout and "whose key has no click left" in res.stdout
    assert lines[-1] == ("next: cd recommend/model && python -u trainer.py -m "
                         f"'{out / 'config.yaml'}'")
    meta, *_ = check_dataset(out)
    assert meta["seed"] == 3 and meta["options"]["min_count"] == 5
    assert meta["command"].startswith("sh data.sh import --clicks")
    # Re-importing replaces the folder whole, and nothing of the model beside it.
    (tmp_path / "my shop_model").mkdir()
    (out / "stale").write_text("x")
    assert run_data_sh("import", "--clicks", str(clicks), "--out", str(out)).returncode == 0
    assert not (out / "stale").exists() and (tmp_path / "my shop_model").is_dir()


def _ok_log(n_users: int = 12) -> str:
    return "user,item,time\n" + "".join(f"u{u},i{k},{k}\n" for u in range(n_users)
                                        for k in range(5))


BAD_INPUTS = {
    # name: (file name, content, extra args, expected in the one stderr line)
    "short row": ("c.csv", _ok_log() + "u1,i2\n" + _ok_log()[15:], [],
                  "c.csv:62: Expected 3 columns, got 2"),
    "long row": ("c.tsv", _ok_log().replace(",", "\t") + "u1\ti2\t3\t4\n", [],
                 "c.tsv:62: Expected 3 columns, got 4"),
    "open quote": ("c.csv", _ok_log() + '"u1,i2,3\n' + _ok_log()[15:], [],
                   'c.csv:62: Expected 3 columns, got 1: "u1,i2,3'),
    "missing column": ("c.csv", _ok_log().replace("time", "when", 1), [],
                       "c.csv:1: no column 'time' (--time-col); found columns 'user', 'item', "
                       "'when'"),
    "empty file": ("c.csv", "", [], "c.csv:1: empty file"),
    "header only": ("c.csv", "user,item,time\n", [], "c.csv: no clicks"),
    "not utf-8": ("c.csv", _ok_log()[:40] + "\udcff" + _ok_log()[40:], [],
                  "c.csv:5: not UTF-8 text"),
    "bad time": ("c.csv", _ok_log() + "u1,i1,yesterday\n", [],
                 "c.csv:62: time ('time') 'yesterday' is not an integer, a float or an ISO-8601"),
    "mixed times": ("c.csv", _ok_log() + "u1,i1,2024-01-01T00:00:00Z\n", [],
                    "c.csv:62: time ('time') '2024-01-01T00:00:00Z' is an ISO-8601 timestamp "
                    "with a zone offset, unlike the times before it (an integer)"),
    "zone and no zone": ("c.csv", "user,item,time\nu1,i1,2024-01-01T00:00:00Z\n"
                         "u1,i2,2024-01-01T00:00:00\n", [], "c.csv:3: time ('time')"),
    "empty key": ("c.csv", _ok_log() + ",i1,3\n", [], "c.csv:62: empty user key ('user')"),
    "bad json": ("c.jsonl", '{"user": "a", "item": "b", "time": 1}\n\n{"user": "a", "item": '
                 '"b" "time": 2}\n', [], "c.jsonl:3: not valid JSON"),
    "json type change": ("c.jsonl", '{"user": "a", "item": "b", "time": 1}\n{"user": 7, '
                         '"item": "b", "time": 2}\n', [],
                         "c.jsonl:2: 'user' is 7, but it is a string on the first line"),
    "json missing field": ("c.jsonl", '{"user": "a", "item": "b", "time": 1}\n\n'
                           '{"user": "a", "time": 2}\n', [], "c.jsonl:3: empty item key"),
    "json not utf-8": ("c.jsonl", '{"user": "a", "item": "b", "time": 1}\n{"user": "\udcff", '
                       '"item": "b", "time": 1}\n', [], "c.jsonl:2: not UTF-8 text"),
    "not parquet": ("c.parquet", "user,item,time\n", [], "c.parquet: not a readable Parquet"),
    "unknown extension": ("c.xlsx", _ok_log(), [], "c.xlsx: unknown extension '.xlsx'"),
    "too few users": ("c.csv", _ok_log(9), [], "9 user(s) left with >= 5 clicks"),
    "repeated item row": ("c.csv", _ok_log(), ["--items", "items.csv"],
                          "items.csv:7: item key 'i1' appears again (first on line 5)"),
    "reserved column": ("c.csv", _ok_log(), ["--items", "reserved.csv"],
                        "reserved.csv:1: column 'Score' would be the field 'score'"),
    "clashing columns": ("c.csv", _ok_log(), ["--items", "clash.csv"],
                         "clash.csv:1: columns 'Item Name' and 'item-name' both become the field "
                         "'item_name'"),
    "unknown list column": ("c.csv", _ok_log(), ["--items", "items2.csv", "--list-cols", "tags"],
                            "--list-cols 'tags': not a metadata column"),
}
SIDE_FILES = {
    "items.csv": "item,title\ni0,a\n\ni2,b\ni1,c\ni3,d\ni1,e\n",  # a blank line, skipped
    "items2.csv": "item,title\ni0,a\n",
    "reserved.csv": "item,title,Score\ni0,a,1\n",
    "clash.csv": "item,Item Name,item-name\ni0,a,b\n",
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_out_untouched(tmp_path, case):
    name, content, extra, expected = BAD_INPUTS[case]
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    for side, text in SIDE_FILES.items():
        (tmp_path / side).write_text(text)
    extra = [str(tmp_path / a) if a in SIDE_FILES else a for a in extra]
    out = tmp_path / "shop"
    out.mkdir()
    (out / "meta.json").write_text("{}\n")  # an earlier import's folder
    res = run_data_sh("import", "--clicks", str(path), "--out", str(out), *extra)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("error: ") and expected in res.stderr, res.stderr
    assert [p.name for p in out.iterdir()] == ["meta.json"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_missing_file_and_unsafe_out_are_refused(tmp_path):
    out = tmp_path / "shop"
    res = run_data_sh("import", "--clicks", str(tmp_path / "nope.csv"), "--out", str(out))
    assert res.returncode == 2 and "nope.csv: --clicks file does not exist" in res.stderr
    # The import replaces --out whole: never a folder it did not write, nor one holding inputs.
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    clicks = write_table(home / "clicks.csv", HEADER, [[1, 2, 3]])
    res = run_data_sh("import", "--clicks", str(clicks), "--out", str(home))
    assert res.returncode == 2 and "did not write (no meta.json)" in res.stderr
    (home / "meta.json").write_text("{}\n")
    res = run_data_sh("import", "--clicks", str(clicks), "--out", str(home))
    assert res.returncode == 2 and "inside --out" in res.stderr
    assert (home / "precious.txt").read_text() == "keep me"
