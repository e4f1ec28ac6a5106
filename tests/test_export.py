"""The user tower exported (mind.export) and run by Paddle Inference (mind.inference_tower).

Exactness against the dygraph tower on tiny trained models (routing, relu_layer, dynamic_k and,
when the network has it, the self-attention extractor), on histories with padding, unknown ids,
empty rows and rows longer than maxlen; the export loaded in a fresh process without the trainer
or the network code; `infer.py --export`; and the service with TOWER_RUNTIME=inference over HTTP
answering what the dygraph service answers, from the collection the dygraph service built.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mind.config import HyperConfig, load_config
from mind.export import META_FILE, cached_export, export_tower
from mind.inference_tower import InferenceTower, served_by_inference
from mind.user_tower import UserTower
from reliability_support import Service
from support import MODEL_DIR, run, write_config

TOLERANCE = 1e-5
HAS_SELF_ATTENTION = "extractor" in HyperConfig.model_fields


def histories(item_count: int, maxlen: int, n: int = 200, seed: int = 0) -> list[list[int]]:
    """Rows of every kind the service takes: lengths 0..3*maxlen (each dynamic_k count), padding
    zeros and unknown ids (negative, item_count, far beyond) among the clicks, repeats."""
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = [[], [0], [0, 0, 0], [-3, item_count, 10**12], [1], [item_count - 1]]
    for i in range(n):
        row = rng.integers(1, item_count, size=int(rng.integers(1, 3 * maxlen))).tolist()
        if i % 3 == 0:
            for pos in rng.integers(0, len(row), size=3):
                row[pos] = int(rng.choice([0, -1, item_count, item_count + 7, 2**40]))
        rows.append(row)
    rows.append([5] * maxlen)
    return rows


def train(root: Path, tiny_model, hyper: dict) -> Path:
    """A model of the tiny data with ``hyper`` on top of the tiny model's settings."""
    data = Path(tiny_model[0]).parent / "data"
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(
        root / "config.yaml", data, root / "model",
        runner={"epochs": 1, "train_batch_size": 64, "samples_per_epoch": 1280,
                "print_interval": 1000, "infer_end_epoch": 0, "seed": 7},
        hyper={"neg_samples": 64, "optimizer": {"class": "Adam", "learning_rate": 0.01}, **hyper},
    )
    run([sys.executable, "-u", "trainer.py", "-m", str(config)], cwd=MODEL_DIR)
    return config


VARIANTS = {"routing": {}, "relu_layer": {"relu_layer": True}}
if HAS_SELF_ATTENTION:
    VARIANTS["self_attention"] = {"extractor": "self_attention"}


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Config path per variant; the plain one is the suite's tiny model."""
    out = {"routing": Path(tiny_model[0])}
    for name, hyper in VARIANTS.items():
        if hyper:
            out[name] = train(tmp_path_factory.mktemp(f"export_{name}"), tiny_model, hyper)
    return out


@pytest.mark.parametrize("dynamic_k", [False, True], ids=["all_k", "dynamic_k"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_interests_equal_the_dygraph_towers(models, variant, dynamic_k, tmp_path):
    # dynamic_k changes the program, not the weights: the same checkpoint either way.
    config = load_config(models[variant], [f"hyper_parameters.dynamic_k={str(dynamic_k).lower()}"])
    tower = UserTower(config, 0)
    rows = histories(tower.item_count, tower.maxlen)
    want = tower.interests(rows)
    out = export_tower(tower, tmp_path / "tower")
    # oneDNN works, but stays off: 1.2e-5 off on the full catalogue, and slower (tower_bench).
    for options in ({}, {"onednn": True}, {"ir_optim": False}):
        runtime = InferenceTower(out, **options)
        got = runtime.interests(rows)
        assert got.shape == want.shape == (len(rows), tower.num_interests, tower.dim)
        assert got.dtype == np.float32
        diff = float(np.abs(got - want).max())
        print(f"{variant} dynamic_k={dynamic_k} {options}: max abs diff {diff:.3g}")
        assert diff < TOLERANCE, (variant, dynamic_k, options, diff)
        # One user at a time (the dynamic batch axis) and an empty batch.
        assert np.abs(runtime.interests(rows[7:8]) - want[7:8]).max() < TOLERANCE
        assert runtime.interests([]).shape == (0, tower.num_interests, tower.dim)
    if dynamic_k:  # masked interests are exactly zero in both
        lengths = np.array([len(tower.known_items(h)[-tower.maxlen:]) for h in rows])
        short = lengths < 4  # K'_u = 1 below 4 known clicks
        assert not got[short, 1:].any() and not want[short, 1:].any()
    assert runtime.identity() == tower.identity()
    meta = json.loads((out / META_FILE).read_text())
    assert (meta["maxlen"], meta["item_count"], meta["num_interests"], meta["dim"]) == (
        tower.maxlen, tower.item_count, tower.num_interests, tower.dim)
    # Exporting left the dygraph tower as it was.
    assert np.array_equal(tower.interests(rows), want)


def test_runtime_answers_from_many_threads(models, tmp_path):
    # The service calls the tower from its batcher threads (one lane each).
    tower = UserTower.load(models["routing"])
    runtime = InferenceTower(export_tower(tower, tmp_path / "tower"))
    rows = histories(tower.item_count, tower.maxlen, n=60, seed=9)
    want = tower.interests(rows)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: runtime.interests(rows[i:i + 8]), range(0, len(rows), 8)))
    assert np.abs(np.concatenate(got) - want).max() < TOLERANCE


FRESH = """
import json, sys
import numpy as np
from mind.inference_tower import InferenceTower, served_by_inference

tower = InferenceTower(sys.argv[1])
rows = json.loads(open(sys.argv[2]).read())
np.save(sys.argv[3], tower.interests(rows))
banned = [m for m in sys.modules if m in ("trainer", "mind.network", "mind.checkpoint",
          "mind.user_tower", "mind.export", "mind.sampled_softmax") or m.startswith("trainer")]
print(json.dumps({"banned": banned, "identity": tower.identity()}))
"""


def test_export_loads_in_a_fresh_process_without_the_trainer_or_network(models, tmp_path):
    tower = UserTower.load(models["relu_layer"])
    out = export_tower(tower, tmp_path / "tower")
    rows = histories(tower.item_count, tower.maxlen, n=50, seed=3)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    done = subprocess.run([sys.executable, "-c", FRESH, str(out), str(tmp_path / "rows.json"),
                           str(tmp_path / "got.npy")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["banned"] == []
    assert report["identity"] == tower.identity()
    assert np.abs(np.load(tmp_path / "got.npy") - tower.interests(rows)).max() < TOLERANCE


def infer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-u", "infer.py", *args], cwd=MODEL_DIR,
                          capture_output=True, text=True, timeout=180)


def test_export_cli(models, tmp_path):
    config = str(models["routing"])
    out = tmp_path / "served" / "tower"
    done = infer("-m", config, "--export", str(out))
    assert done.returncode == 0, done.stderr
    assert "exported epoch 0 of " in done.stdout and str(out) in done.stdout
    tower = UserTower.load(config, 0)
    rows = histories(tower.item_count, tower.maxlen, n=20)
    assert np.abs(InferenceTower(out).interests(rows) - tower.interests(rows)).max() < TOLERANCE
    # Again into the same folder: replaced, not refused.
    assert infer("-m", config, "--export", str(out), "--epoch", "0").returncode == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["tower"]

    (tmp_path / "a_file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    for args, says in [
        (["--export", str(tmp_path / "e"), "--epoch", "7"], "no saved epoch 7"),
        (["--export", str(tmp_path / "e"), "-o", "runner.infer_start_epoch=3",
          "-o", "runner.infer_end_epoch=5"], "no saved epoch in [3, 5]"),
        (["--export", str(tmp_path / "a_file")], "is a file, not a folder"),
        (["--export", str(tmp_path / "foreign")], "not an export"),
        (["--export", str(tmp_path / "a_file" / "below")], "cannot write the export"),
        (["--export", str(tmp_path / "e"), "-o", "runner.infer_load_path=/nonexistent"],
         "found none"),
    ]:
        done = infer("-m", config, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("infer.py: ") and says in lines[0], lines
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "e").exists()
    bad = infer("-m", config, "--epoch", "0")  # --epoch alone: argparse's usage error
    assert bad.returncode == 2 and "--epoch is only used with --export" in bad.stderr


def test_cached_export_is_made_once_per_model(models):
    # The relu_layer model is this module's own: the cache goes beside its checkpoints.
    config = models["relu_layer"]
    root = Path(load_config(config).runner.model_save_path)
    first = cached_export(UserTower.load(config))
    assert first.parent == root / "inference" and first.name.startswith("0-")
    stamp = (first / META_FILE).stat().st_mtime_ns
    assert cached_export(UserTower.load(config)) == first
    assert (first / META_FILE).stat().st_mtime_ns == stamp  # reused, not rewritten
    # Another program for the same weights (dynamic_k): another folder, never the stale one.
    other = cached_export(UserTower(load_config(config, ["hyper_parameters.dynamic_k=true"]), 0))
    assert other != first and other.parent == first.parent


RACE = """
import sys
from mind.export import cached_export
from mind.config import load_config
from mind.user_tower import UserTower

config = load_config(sys.argv[1], [f"runner.infer_load_path={sys.argv[2]}"])
print(cached_export(UserTower(config, 0)))
"""


def test_replicas_starting_at_once_share_one_export(models, tmp_path):
    root = tmp_path / "model"
    shutil.copytree(load_config(models["routing"]).runner.model_save_path, root,
                    ignore=shutil.ignore_patterns("inference"))
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(models["routing"]), str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    assert [p.name for p in (root / "inference").iterdir()] == [Path(paths.pop()).name]  # no temp
    config = load_config(models["routing"], [f"runner.infer_load_path={root}"])
    tower = UserTower(config, 0)
    rows = histories(tower.item_count, tower.maxlen, n=20)
    assert np.abs(InferenceTower(cached_export(tower)).interests(rows)
                  - tower.interests(rows)).max() < TOLERANCE


def test_a_read_only_model_folder_gets_a_private_export(models, tmp_path, caplog):
    # A copy of the checkpoints whose cache folder cannot be made (a file holds its name; chmod
    # would not stop root).
    root = tmp_path / "model"
    shutil.copytree(load_config(models["routing"]).runner.model_save_path, root,
                    ignore=shutil.ignore_patterns("inference"))
    (root / "inference").write_text("not a folder")
    config = load_config(models["routing"], [f"runner.infer_load_path={root}"])
    tower = UserTower(config, 0)
    with caplog.at_level(logging.WARNING, logger="mind.inference_tower"):
        served = served_by_inference(tower)
    assert "for this process only" in caplog.text and "cannot write the export" in caplog.text
    assert not served.runtime.export_dir.exists()  # the temporary export is gone, the model not
    rows = histories(tower.item_count, tower.maxlen, n=40)
    assert np.abs(served.interests(rows) - tower.interests(rows)).max() < TOLERANCE
    assert served.identity() is tower.identity() and served.item_count == tower.item_count


@pytest.mark.slow
def test_service_on_paddle_inference_answers_as_dygraph(tiny_model, tmp_path):
    # A model of its own: the service writes its export beside the checkpoint.
    config = train(tmp_path / "m", tiny_model, {})
    env = {"MODEL_CONFIG_PATH": str(config), "MILVUS_URI": str(tmp_path / "items.db")}
    tower = UserTower.load(config)
    rows = histories(tower.item_count, tower.maxlen, n=120, seed=5)
    # The API refuses negative ids and empty rows (422); ids beyond the catalogue it ignores.
    rows = [[i for i in r if i >= 0] or [0] for r in rows]
    bodies = [{"top_k": k, "hist_item": rows[i:i + n]}
              for i, (n, k) in enumerate([(1, 50), (16, 20), (64, 100), (1, 5)] * 8)]

    def answers(runtime: str, insert: bool) -> list:
        svc = Service(tmp_path, {**env, "TOWER_RUNTIME": runtime}, name=runtime)
        svc.start()
        try:
            with svc.client() as c:
                if insert:
                    assert c.post("/rec/insert_data").status_code == 200
                got = []
                for body in bodies:
                    r = c.post("/rec/recall", json=body)
                    assert r.status_code == 200, r.text
                    got.append(r.json())
                return got
        finally:
            svc.stop()

    dygraph = answers("dygraph", insert=True)
    # The collection the dygraph service built passes the inference service's identity check.
    inference = answers("inference", insert=False)
    assert inference == dygraph
    assert any(len(row) == 100 for rows_ in dygraph for row in rows_)
    assert [p.name.split("-")[0] for p in (tmp_path / "m" / "model" / "inference").iterdir()] == ["0"]
    assert "user tower on Paddle Inference" in (tmp_path / "inference.log").read_text()


def test_the_cache_keeps_the_newest_exports_and_drops_crashed_temporaries(models, tmp_path):
    """Each retrained model adds an export (~the weights' size): the cache keeps the 3 newest,
    the one just made among them, and clears the temporary folder of a crashed export."""
    import os
    import time

    from mind.export import KEEP_EXPORTS, STALE_TEMP_SECONDS

    root = tmp_path / "model"
    shutil.copytree(load_config(models["routing"]).runner.model_save_path, root,
                    ignore=shutil.ignore_patterns("inference"))
    cache = root / "inference"
    cache.mkdir()
    old = []
    for age in range(4):  # earlier models' exports, the newest first
        folder = cache / f"0-older{age}"
        folder.mkdir()
        (folder / META_FILE).write_text("{}")
        stamp = time.time() - 100 * (age + 1)
        os.utime(folder / META_FILE, (stamp, stamp))
        old.append(folder)
    crashed, fresh_tmp = cache / ".0-x.tmp-1-dead", cache / ".0-y.tmp-2-live"
    crashed.mkdir(), fresh_tmp.mkdir()
    os.utime(crashed, (time.time() - STALE_TEMP_SECONDS - 5,) * 2)
    made = cached_export(UserTower(load_config(models["routing"],
                                               [f"runner.infer_load_path={root}"]), 0))
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [made.name, fresh_tmp.name] + [p.name for p in old[:KEEP_EXPORTS - 1]])
    assert (made / META_FILE).is_file()
