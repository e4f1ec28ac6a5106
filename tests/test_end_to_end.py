"""The tutorial's path on small synthetic data: data.sh -> trainer.py -> infer.py (Milvus Lite).

Checks that the model really learned: MIND's Recall@50 on held-out test users must be
at least twice MostPopular's on the same users (issue 3), evaluated through Milvus
exactly as users run infer.py, and must agree with the exact in-process search.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from support import DATA_DIR, MODEL_DIR, run, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    run(["sh", "data.sh", "synthetic", "--out", str(data), "--items", "1500",
         "--categories", "24", "--users", "2000", "--seed", "3"], cwd=DATA_DIR)
    config = write_config(
        root / "config.yaml", data, root / "model",
        runner={"epochs": 2, "samples_per_epoch": 25600, "print_interval": 100,
                "infer_end_epoch": 1, "seed": 11},
        hyper={"neg_samples": 256},
    )
    out = run([sys.executable, "-u", "trainer.py", "-m", str(config)], cwd=MODEL_DIR, timeout=600)
    return root, config, out.stdout


def infer(config, root, *extra):
    out = root / f"infer{len(extra)}.json"
    run([sys.executable, "-u", "infer.py", "-m", str(config), "-top_n", "50", "--json", str(out),
         "--milvus-uri", str(root / "eval.db"), *extra], cwd=MODEL_DIR, timeout=600)
    return json.loads(out.read_text())["results"]


def recall_at_50(record):
    return record["metrics"]["50"]["recall"]


def test_trainer_reports_progress_and_saves_each_epoch(trained):
    root, _, stdout = trained
    assert "samples/s" in stdout
    assert sorted(p.name for p in (root / "model").iterdir() if p.name.isdigit()) == ["0", "1"]
    losses = [json.loads(line)["train_loss"]
              for line in (root / "model" / "train_log.jsonl").read_text().splitlines()]
    assert losses[1] < losses[0]


def test_mind_through_milvus_beats_most_popular_twice(trained):
    root, config, _ = trained
    results = infer(config, root, "--baselines")
    mind = {r["epoch"]: r for r in results if r["epoch"] is not None}
    popular = next(r for r in results if r["name"] == "MostPopular")
    assert set(mind) == {0, 1}
    best = max(recall_at_50(r) for r in mind.values())
    assert best >= 2 * recall_at_50(popular), (best, recall_at_50(popular))
    # Milvus Lite (FLAT on a small catalogue) must rank exactly as the exact search does.
    exact = {r["epoch"]: r for r in infer(config, root, "--search", "exact")}
    for epoch, rec in mind.items():
        assert recall_at_50(rec) == pytest.approx(recall_at_50(exact[epoch]), abs=1e-9)


def test_infer_outputs_are_named_per_option(tiny_model, tmp_path):
    """Runs with other options keep their own JSON and plots (the demo's baseline curve stays)."""
    config = tiny_model[0]
    model = yaml.safe_load(config.read_text())["runner"]["model_save_path"]
    plain = run([sys.executable, "-u", "infer.py", "-m", str(config), "--search", "exact"],
                cwd=MODEL_DIR).stdout
    both = run([sys.executable, "-u", "infer.py", "-m", str(config), "--search", "exact",
                "--baselines", "--curve"], cwd=MODEL_DIR).stdout
    first = f"{model}/infer_results_test_exact.json"
    second = f"{model}/infer_results_test_exact_baselines.json"
    assert f"JSON results: {first}" in plain and f"JSON results: {second}" in both
    assert len(json.loads(Path(first).read_text())["results"]) == 1
    assert len(json.loads(Path(second).read_text())["results"]) == 3
    assert f"Recall@K curve: {model}/recall_curve_test_exact_baselines.png" in both
    # --json PATH: the plots are named after it, beside it.
    out = tmp_path / "mine.json"
    run([sys.executable, "-u", "infer.py", "-m", str(config), "--search", "exact", "--curve",
         "--json", str(out)], cwd=MODEL_DIR)
    assert out.is_file() and (tmp_path / "mine_recall_curve.png").is_file()


def test_infer_merge_option_scores_that_merge(tiny_model, tmp_path):
    """--merge round_robin reports what the round-robin merge gives in process, under its own name."""
    sys.path.insert(0, str(MODEL_DIR))
    from evaluation.evaluate import evaluate_tower
    from evaluation.exact_search import ExactSearch
    from mind.config import load_config
    from mind.reader import read_eval_dir
    from mind.user_tower import UserTower

    config = tiny_model[0]
    out = run([sys.executable, "-u", "infer.py", "-m", str(config), "--search", "exact",
               "--merge", "round_robin"], cwd=MODEL_DIR).stdout
    model = yaml.safe_load(config.read_text())["runner"]["model_save_path"]
    path = Path(f"{model}/infer_results_test_exact_round_robin.json")
    assert f"JSON results: {path}" in out
    payload = json.loads(path.read_text())
    assert payload["merge"] == "round_robin"

    cfg = load_config(config)
    tower = UserTower(cfg, payload["best_epoch"])
    data = read_eval_dir(cfg.runner.test_data_dir, cfg.hyper_parameters.item_count)
    want = {merge: evaluate_tower(tower, ExactSearch(*tower.item_embeddings()).search, data, [50],
                                  128, merge=merge).metrics[50]["recall"]
            for merge in ("score", "round_robin")}
    assert want["score"] != want["round_robin"]  # the option must be able to change the answer
    assert payload["results"][0]["metrics"]["50"]["recall"] == pytest.approx(want["round_robin"])
