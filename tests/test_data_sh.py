"""`sh data.sh <variant>` end to end, as users run it (a subprocess in recommend/data)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from mind.reader import read_eval_dir, read_train_dir
from recdata.itemmap import read_item_map
from recdata.protocol import history_lengths, render_train, split_users
from recdata.synthetic import SyntheticConfig, generate

DATA_DIR = Path(__file__).resolve().parent.parent / "recommend" / "data"
FIXTURES = Path(__file__).parent / "fixtures" / "data" / "paddlerec"


def run_data_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["sh", "data.sh", *args],
        cwd=DATA_DIR,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_dataset(out: Path) -> tuple[dict, dict, object, object]:
    """Split invariants every variant must satisfy; returns (meta, train, valid, test)."""
    meta = json.loads((out / "meta.json").read_text())
    ic = meta["item_count"]
    train = read_train_dir(out / "train", ic)  # raises on any id outside [1, item_count)
    valid = read_eval_dir(out / "valid", ic)
    test = read_eval_dir(out / "test", ic)
    users = [set(train), set(valid.user_ids.tolist()), set(test.user_ids.tolist())]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert meta["users"] == {"train": len(users[0]), "valid": len(users[1]), "test": len(users[2])}
    assert meta["clicks"]["train"] == sum(len(s) for s in train.values())
    for ev in (valid, test):
        for h, e in zip(ev.histories, ev.eval_items, strict=True):
            assert len(h) == history_lengths(np.array([len(h) + len(e)]))[0] and len(e) >= 1
    assert min(len(s) for s in train.values()) >= 5
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))  # no temp dir left behind
    return meta, train, valid, test


def test_help_and_missing_python(tmp_path):
    res = run_data_sh("--help")
    assert res.returncode == 0 and "synthetic" in res.stdout and "movielens" in res.stdout
    res = run_data_sh("synthetic", "--help")
    assert res.returncode == 0 and "--full" in res.stdout and "--seed" in res.stdout
    res = run_data_sh("synthetic", PYTHON="/nonexistent/python3")
    assert res.returncode == 2 and "activate the venv: . .venv/bin/activate" in res.stderr
    bare = tmp_path / "python-without-site"  # our interpreter without site-packages: no numpy
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    res = run_data_sh("synthetic", PYTHON=str(bare))
    assert res.returncode == 2 and "numpy is missing" in res.stderr
    assert ". .venv/bin/activate" in res.stderr


def test_synthetic_end_to_end(tmp_path):
    out = tmp_path / "synthetic"
    res = run_data_sh("synthetic", "--out", str(out), "--users", "800", "--seed", "4")
    assert res.returncode == 0, res.stderr
    assert "seq_len_mean" in res.stdout and "eval_len_median" in res.stdout
    meta, train, valid, test = check_dataset(out)
    assert meta["item_count"] == 3001 and meta["seed"] == 4
    assert meta["command"] == f"sh data.sh synthetic --out {out} --users 800 --seed 4"
    assert len(train) + len(valid) + len(test) == 800
    assert (out / "truth.npz").is_file()


def ml100k_reference(cache: Path) -> tuple[dict[int, list[int]], dict[str, int]]:
    """Independent reading of the wheel's ml-100k: per user, frequency ids in timestamp order;
    and the id of each MovieLens item id."""
    with zipfile.ZipFile(cache / "recbole-1.2.1-py3-none-any.whl") as zf:
        lines = zf.read("recbole/dataset_example/ml-100k/ml-100k.inter").decode().splitlines()[1:]
    rows = [tuple(line.split("\t")) for line in lines]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    rank = sorted(counts, key=lambda i: (-counts[i], int(i)))
    new_id = {raw: k + 1 for k, raw in enumerate(rank)}
    per_user: dict[int, list[tuple[float, int]]] = {}
    for r in rows:
        per_user.setdefault(int(r[0]), []).append((float(r[3]), new_id[r[1]]))
    seqs = {u: [i for _, i in sorted(v, key=lambda x: x[0])] for u, v in per_user.items()}
    return seqs, new_id


def test_movielens_end_to_end(tmp_path):
    out, cache = tmp_path / "movielens", tmp_path / "cache"
    res = run_data_sh("movielens", "--out", str(out), "--cache", str(cache))
    assert res.returncode == 0, res.stderr
    assert "item_count (max id + 1, incl. padding 0): 1683" in res.stdout
    meta, train, valid, test = check_dataset(out)
    assert meta["item_count"] == 1683  # 1,682 movies + padding
    assert sum(meta["clicks"].values()) == 100_000 and sum(meta["users"].values()) == 943
    ref, new_id = ml100k_reference(cache)
    for u, seq in list(train.items())[:50]:
        assert seq.tolist() == ref[u]
    for ev in (valid, test):
        for u, h, e in zip(ev.user_ids.tolist(), ev.histories, ev.eval_items, strict=True):
            assert h.tolist() + e.tolist() == ref[u]
    # item_map.tsv: row id i is the movie the data calls i, with the wheel's ml-100k.item row.
    m = read_item_map(out / "item_map.tsv")
    assert len(m) == 1682 and m.list_columns == {"genre"}
    assert all(m.keys[i] == raw for raw, i in new_id.items())
    with zipfile.ZipFile(cache / "recbole-1.2.1-py3-none-any.whl") as zf:
        rows = zf.read("recbole/dataset_example/ml-100k/ml-100k.item").decode().splitlines()[1:]
    for raw, title, year, genres in (r.split("\t") for r in rows):
        i = new_id[raw]
        assert (m.columns["title"][i], m.columns["year"][i]) == (title, year)
        assert m.columns["genre"][i] == tuple(genres.split())
    assert m.columns["title"][new_id["50"]] == "Star Wars" and new_id["50"] == 1


# -- amazonbook through a local HTTP server ----------------------------------------------------


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def book():
    """A small archive in the AmazonBook tarball's structure, and what it holds."""
    g = generate(SyntheticConfig(items=400, categories=8, users=300, min_len=5, max_len=15, seed=3))
    parts = split_users(g.clicks, seed=9)
    n_items = int(g.clicks.items.max())
    members = {
        f"book_data/book_{s}.txt": render_train(parts[s]) for s in ("train", "valid", "test")
    }
    # Listed backwards: the map places each ASIN by its id, not by its line.
    members["book_data/book_item_map.txt"] = "".join(
        f"B{i:09d},{i}\n" for i in range(n_items, 0, -1)
    ).encode()
    members["book_data/book_user_map.txt"] = b"A1,0\n"
    seqs = {
        s: {int(u): parts[s].sequence(i).tolist() for i, u in enumerate(parts[s].user_ids)}
        for s in parts
    }
    return {"archive": tar_gz(members), "members": members, "seqs": seqs, "expect": n_items + 1}


class Server:
    """Serves in-memory files with HTTP Range support; can cut a response off half way."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> number of responses still to cut
        self.log: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.log.append((self.path, rng))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut.get(self.path, 0) > 0:
                    outer.cut[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def check_book_output(out: Path, book: dict) -> None:
    meta, train, valid, test = check_dataset(out)
    assert meta["item_count"] == book["expect"]
    keys = read_item_map(out / "item_map.tsv").keys.tolist()
    assert keys == ["", *(f"B{i:09d}" for i in range(1, book["expect"]))]
    assert set(train) == set(book["seqs"]["train"])
    assert all(train[u].tolist() == v for u, v in book["seqs"]["train"].items())
    for name, ev in (("valid", valid), ("test", test)):
        assert set(ev.user_ids.tolist()) == set(book["seqs"][name])
        for u, h, e in zip(ev.user_ids.tolist(), ev.histories, ev.eval_items, strict=True):
            assert h.tolist() + e.tolist() == book["seqs"][name][u]


def book_args(url: str, tmp_path: Path, book: dict) -> list[str]:
    """Options of an amazonbook run into tmp_path/amazonbook with cache tmp_path/cache."""
    out, cache, expect = tmp_path / "amazonbook", tmp_path / "cache", str(book["expect"])
    return ["--url", url, "--cache", str(cache), "--out", str(out), "--expect-items", expect]


def test_amazonbook_interrupted_download_resumes_then_uses_the_cache(tmp_path, server, book):
    server.files["/datasets/AmazonBook.tar.gz"] = book["archive"]
    server.cut["/datasets/AmazonBook.tar.gz"] = 1
    url = server.url + "/datasets/AmazonBook.tar.gz"
    out, cache = tmp_path / "amazonbook", tmp_path / "cache"
    args = book_args(url, tmp_path, book)
    res = run_data_sh("amazonbook", *args)
    assert res.returncode == 0, res.stderr
    half = len(book["archive"]) // 2
    assert server.log == [
        ("/datasets/AmazonBook.tar.gz", None),
        ("/datasets/AmazonBook.tar.gz", f"bytes={half}-"),
    ]
    assert (cache / "AmazonBook.tar.gz").read_bytes() == book["archive"]
    assert "comirec layout" in res.stdout and "eval_len_mean" in res.stdout
    check_book_output(out, book)
    res = run_data_sh("amazonbook", *args)
    assert res.returncode == 0 and "using cached" in res.stdout
    assert len(server.log) == 2  # no new request


def test_amazonbook_resumes_a_partial_download_left_by_an_earlier_run(tmp_path, server, book):
    server.files["/AmazonBook.tar.gz"] = book["archive"]
    server.cut["/AmazonBook.tar.gz"] = 5
    out, cache = tmp_path / "amazonbook", tmp_path / "cache"
    args = book_args(server.url + "/AmazonBook.tar.gz", tmp_path, book)
    res = run_data_sh("amazonbook", *args, "--retries", "1")
    assert res.returncode == 1 and "rerun to resume" in res.stderr
    assert "sh data.sh synthetic" in res.stderr.splitlines()[-1]
    assert not out.exists()
    part = (cache / "AmazonBook.tar.gz.part").stat().st_size
    assert part == len(book["archive"]) // 2
    server.cut["/AmazonBook.tar.gz"] = 0
    res = run_data_sh("amazonbook", *args)
    assert res.returncode == 0, res.stderr
    assert server.log[-1] == ("/AmazonBook.tar.gz", f"bytes={part}-")
    check_book_output(out, book)


def test_amazonbook_download_with_nothing_received_does_not_promise_a_resume(tmp_path, server, book):
    res = run_data_sh("amazonbook", *book_args(server.url + "/nothing.tar.gz", tmp_path, book),
                      "--retries", "1")
    last = res.stderr.splitlines()[-1]
    assert res.returncode == 1 and "nothing was received" in last
    assert "resume" not in last and "sh data.sh synthetic" in last


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_crc"])
def test_amazonbook_rejects_a_corrupt_archive_and_keeps_the_old_dataset(
    tmp_path, server, book, damage
):
    data = book["archive"]
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    elif damage == "garbage":
        data = b"<html>not found</html>" * 50
    else:  # flip a byte of the gzip CRC trailer
        data = data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]
    server.files["/AmazonBook.tar.gz"] = data
    out = tmp_path / "amazonbook"
    (out / "train").mkdir(parents=True)
    (out / "train" / "part-0").write_text("0,1,0\n")  # the dataset of an earlier run
    res = run_data_sh(
        "amazonbook",
        "--url",
        server.url + "/AmazonBook.tar.gz",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    )
    assert res.returncode == 1
    assert "expected a valid .tar.gz archive" in res.stderr and "corrupt or truncated" in res.stderr
    assert (out / "train" / "part-0").read_text() == "0,1,0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amazonbook", "cache"]  # no temp dirs


def test_amazonbook_checks_members_and_extracted_files(tmp_path, book):
    def run(members: dict[str, bytes], expect: int = book["expect"]) -> subprocess.CompletedProcess:
        path = tmp_path / "a.tar.gz"
        path.write_bytes(tar_gz(members))
        return run_data_sh(
            "amazonbook",
            "--url",
            path.as_uri(),
            "--cache",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "out"),
            "--expect-items",
            str(expect),
        )

    m = book["members"]
    res = run({"book_data/book_train.txt": m["book_data/book_train.txt"]})
    assert (
        res.returncode == 1
        and "expected book_data/{book_train,book_valid,book_test}.txt" in res.stderr
    )
    bad = dict(m)
    bad["book_data/book_valid.txt"] = m["book_data/book_valid.txt"] + b"12,7\n"
    res = run(bad)
    line = m["book_data/book_valid.txt"].count(b"\n") + 1
    assert res.returncode == 1 and f"book_valid.txt:{line}: expected" in res.stderr
    res = run(m, expect=367_983)
    assert (
        res.returncode == 1
        and "expected 367983 item rows" in res.stderr
        and "--expect-items" in res.stderr
    )
    short_map = dict(m)
    short_map["book_data/book_item_map.txt"] = b"B1,1\n"
    res = run(short_map)
    assert res.returncode == 1 and "book_item_map.txt: expected" in res.stderr
    twice = dict(m)
    twice["book_data/book_item_map.txt"] = m["book_data/book_item_map.txt"].replace(
        b",1\n", b",2\n")
    res = run(twice)
    assert res.returncode == 1 and "book_item_map.txt:" in res.stderr
    assert "expected `ASIN,id` with a new id" in res.stderr
    assert not (tmp_path / "out").exists()
    res = run(m)  # file:// URL, read in place
    assert res.returncode == 0, res.stderr
    check_book_output(tmp_path / "out", book)


def test_amazonbook_installs_paddlerec_format_unchanged(tmp_path):
    members = {
        "AmazonBook/train/demo.txt": (FIXTURES / "train" / "demo.txt").read_bytes(),
        "AmazonBook/valid/part-0": (FIXTURES / "valid" / "part-0").read_bytes(),
        "AmazonBook/test/part-0": (FIXTURES / "valid_no_target" / "part-0").read_bytes(),
    }
    path = tmp_path / "p.tar.gz"
    path.write_bytes(tar_gz(members))
    out = tmp_path / "out"
    res = run_data_sh(
        "amazonbook", "--url", path.as_uri(), "--out", str(out), "--cache", str(tmp_path / "c")
    )
    assert res.returncode == 0, res.stderr
    assert "paddlerec layout" in res.stdout
    for name, data in members.items():
        assert (out / Path(name).relative_to("AmazonBook")).read_bytes() == data
    meta = json.loads((out / "meta.json").read_text())
    assert meta["users"] == {"train": 3, "valid": 3, "test": 3} and meta["item_count"] == 367_983


def test_gzip_helper_really_detects_crc_damage():
    # Guards the bad_crc case above: the damaged bytes must fail gzip's own check.
    data = tar_gz({"x": b"hello" * 100})
    broken = data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(broken)
