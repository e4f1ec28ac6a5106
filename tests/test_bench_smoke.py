"""Smoke runs of the speed benchmarks (bench/) at their tiniest, so they do not rot.

Each bench module runs its `tiny` profile (1,500 items, a few steps, a handful of requests) in a
temporary work dir; only the shape of the results is checked, never the speed. The Milvus server
backend is left out (one server per machine; tests/test_itemstore.py covers it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    """The bench modules, with their work dir (data, model, Lite files) in a temp dir."""
    os.environ["BENCH_WORK"] = str(tmp_path_factory.mktemp("bench_work"))
    sys.path.insert(0, str(BENCH))
    import common

    common.WORK = Path(os.environ["BENCH_WORK"])
    import eval_bench
    import flood_bench
    import run
    import serve_bench
    import store_bench
    import train_bench

    run.WORK = common.WORK
    yield {"common": common, "train": train_bench, "eval": eval_bench, "store": store_bench,
           "serve": serve_bench, "flood": flood_bench, "run": run, "tiny": common.PROFILES["tiny"]}
    sys.path.remove(str(BENCH))


def test_exact_search_block_selection_matches_brute_force():
    from evaluation.exact_search import ExactSearch

    rng = np.random.default_rng(3)
    for n, nq, k in [(5000, 7, 50), (1000, 3, 200), (40, 2, 50), (33, 4, 33), (70, 3, 65)]:
        vectors = rng.standard_normal((n, 8)).astype(np.float32)
        queries = rng.standard_normal((nq, 8)).astype(np.float32)
        ids, scores = ExactSearch(np.arange(1, n + 1), vectors).search(queries, k)
        full = queries @ vectors.T
        want = -np.sort(-full, axis=1)[:, : min(k, n)]
        np.testing.assert_allclose(scores[:, : min(k, n)], want, rtol=1e-5, atol=1e-5)
        got = np.take_along_axis(full, np.maximum(ids[:, : min(k, n)] - 1, 0), axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert (ids[:, min(k, n):] == -1).all()


@pytest.mark.slow
def test_train_bench_tiny(bench):
    out = bench["train"].run(bench["tiny"])
    assert out["samples_per_s"] > 0 and out["limit_fwd_bwd_samples_per_s"] > 0
    assert set(out["ms_per_step"]) == {"read", "forward", "backward", "step"}
    assert out["peak_rss_mb"] > 0


@pytest.mark.slow
def test_eval_and_store_bench_tiny(bench):
    ev = bench["eval"].run(bench["tiny"], backends=("exact", "lite"))
    for b in ("exact", "lite"):
        assert ev[b]["users"] == bench["tiny"].eval_users
        assert ev[b]["e2e_users_per_s"] > 0 and ev[b]["raw_search_users_per_s"] > 0
        # The named stages are parts of the total; the rest is loop overhead, which grows when
        # the machine is loaded, so only require that they fit in it and account for most of it.
        assert 0.5 < sum(ev[b]["share"].values()) <= 1.0 + 1e-6
    st = bench["store"].run(bench["tiny"], backends=("lite",))
    assert st["lite"]["recall@50_vs_exact"] > 0.9  # FLAT is exact
    assert st["exact_numpy"]["recall@50_vs_exact"] == 1.0
    assert st["lite"]["search_4"]["median_ms"] > 0


@pytest.mark.slow
def test_serve_bench_tiny(bench):
    out = bench["serve"].run(bench["tiny"], backends=("lite",))
    lite = out["lite"]
    assert lite["insert_data_reply"]["count"] > 0
    assert set(lite["latency"]) == {"1", "16", "128"}
    assert all(x["errors"] == 0 and x["requests"] > 0 for x in lite["load"].values())
    assert lite["raw_search"]["batched"]["users_per_s"] > 0
    # The key path, beside integer ids on the same users: answers agree, every figure is there.
    kp = lite["key_path"]
    assert {k: v for k, v in kp["checks"].items() if v is not True} == {
        "where_items_per_user": kp["checks"]["where_items_per_user"]}
    assert kp["checks"]["where_items_per_user"] > 0
    assert 0.05 <= kp["where_share"] < 0.5 and list(kp["where_filter"]) == ["category"]
    for v in bench["serve"].KEY_PATH:
        assert kp[v]["latency_1"]["n"] == 2 * dict(bench["tiny"].lat_reps)[1]
        load = kp[v]["load"]
        assert load["errors"] == 0 and load["users_per_s"] > 0 and load["users_per_pass"] >= 1
        assert len(load["rounds_users_per_s"]) == kp["rounds"]
        assert all(c >= 0 for c in load["cpu_ms_per_request"].values())
        if v != "ids":
            assert set(kp[v]["vs_ids"]) == {"median_ratio", "p99_ratio", "throughput_ratio"}
    targets = {t["target"] for t in bench["run"].targets({"serve": out}) if t["issue"] == "20"}
    assert len(targets) == 6 and "keys / ids, 4-client users/s (lite)" in targets
    assert "| lite | keys |" in "\n".join(bench["run"].key_path_markdown(out))
    # One pass at a time beside the default, and the request profile from /metrics.
    assert lite["default_passes"] == "serial"  # Lite's default: one pass after another
    for name in ("overlapped", "unpaced"):
        assert lite[name]["load"]["4"]["errors"] == 0
        assert set(lite["default_over"][name]) >= {"median_ratio", "throughput_ratio"}
    assert "serial" not in lite
    ms = lite["profile"]["ms"]
    assert lite["profile"]["passes"] == lite["profile"]["requests"]  # sequential: a pass each
    assert ms["milvus_search"] > 0 and ms["model_and_merge"] > 0
    assert abs(sum(v for k, v in ms.items() if k != "total") - ms["total"]) < 1e-6
    loaded = lite["passes_under_load"]  # the passes of a load of several clients
    assert loaded["load"]["errors"] == 0 and loaded["load"]["clients"] == 4
    assert 1 <= loaded["users_per_pass"] <= 4 and loaded["passes_per_s"] > 0
    assert 0 < loaded["search_ms_per_pass"] < loaded["pass_ms"] and loaded["milvus_busy"] > 0
    run = bench["run"]
    res = {"profile": "tiny", "command": "python bench/run.py", "machine": {
        **run.machine(), "loadavg_end": [0.0] * 3}, "serve": out}
    res["targets"] = run.targets(res)
    assert "lite, passes under 4 clients (from /metrics;" in run.markdown(res)
    assert "exact_numpy" in out["limit"]
    if "faiss_ivf" in out["limit"]:  # faiss-cpu comes with bench/requirements.txt
        ann = out["limit"]["faiss_ivf"]
        reaching = [r for r in ann["sweep"] if r["recall@50_vs_exact"] >= 0.98]
        assert ann["setting"]["recall@50_vs_exact"] >= 0.98
        assert ann["setting"]["nprobe"] == max(reaching, key=lambda r: r["vectors_per_s"])["nprobe"]
        assert ann["batched"]["users_per_s"] > 0


@pytest.mark.slow
def test_flood_bench_tiny(bench):
    out = bench["flood"].run(bench["tiny"], backends=("lite",))["lite"]
    assert out["big"]["requests"] == 20 and sum(out["big"]["statuses"].values()) == 20
    assert out["big_body_bytes"] > 1 << 20  # 256 x 1000 ids: over the default 1 MiB limit
    # Every big request was answered: 200, or the overload 503 (never a reset or a 5xx else).
    assert set(out["big"]["statuses"]) <= {"200", "503"}, out["big"]
    for probe in ("small", "healthz"):
        assert out[probe]["flood"]["n"] > 0 and out[probe]["idle"]["n"] > 0
    assert set(out["healthz"]["statuses"]) == {"200"}


def test_bench_data_gets_an_item_map(tmp_path):
    """Data without item_map.tsv gets one from truth.npz (SKU keys, a category column); a map the
    data already has is left as it is."""
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    from recdata.itemmap import read_item_map

    np.savez(tmp_path / "truth.npz", item_category=np.array([-1, 3, 0, 3]))
    path = common.ensure_item_map(tmp_path)
    got = read_item_map(path)
    assert got.keys.tolist() == ["", "SKU-0000001", "SKU-0000002", "SKU-0000003"]
    assert got.columns["category"].tolist() == ["", "C003", "C000", "C003"]
    path.write_text("id\tkey\tcategory\n1\tp1\tBooks\n2\tp2\tMusic\n3\tp3\tBooks\n")
    before = path.read_bytes()
    assert common.ensure_item_map(tmp_path) == path and path.read_bytes() == before


def test_key_path_targets_are_checked():
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    vs = {"keys": (1.05, 0.95), "items": (1.2, 0.95), "where": (1.0, 0.8)}
    kp = {"clients": 16, **{v: {"vs_ids": {"median_ratio": m, "throughput_ratio": t}}
                            for v, (m, t) in vs.items()}}
    rows = {t["target"]: t["status"] for t in run.targets({"serve": {"lite": {"key_path": kp}}})}
    assert rows == {"keys / ids, 1 user median (lite)": "PASS",
                    "keys / ids, 16-client users/s (lite)": "PASS",
                    '"return": "items" / ids, 1 user median (lite)': "MISS",
                    '"return": "items" / ids, 16-client users/s (lite)': "PASS",
                    "where on a category / ids, 1 user median (lite)": "PASS",
                    "where on a category / ids, 16-client users/s (lite)": "MISS"}


def test_flood_targets_are_checked():
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    res = {"flood": {"lite": {"small": {"flood": {"p99_ms": 150.0}},
                              "healthz": {"flood": {"p95_ms": 80.0}}}}}
    rows = {t["target"]: t["status"] for t in run.targets(res)}
    assert rows == {"1 user /rec/recall p99 under the flood (lite)": "PASS",
                    "/healthz p95 under the flood (lite)": "MISS"}


@pytest.mark.slow
def test_run_writes_results_and_targets(bench, tmp_path):
    rc = bench["run"].main(["--profile", "tiny", "--only", "train", "--out-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "latest.json").read_text())
    assert res["machine"]["cores"] >= 1 and res["machine"]["loadavg_start"]
    assert [t["target"] for t in res["targets"]] == ["training samples/s"]
    assert "## Targets" in (tmp_path / "latest.md").read_text()
    # the baseline comparison: a figure 2x slower than its baseline is flagged
    base = json.loads(json.dumps(res))
    base["train"]["samples_per_s"] *= 2
    rows = {r["metric"]: r for r in bench["run"].compare(res, base)}
    assert rows["train.samples_per_s"]["slower"] and abs(rows["train.samples_per_s"]["ratio"] - 0.5) < 1e-9


def test_t_interval_by_hand():
    sys.path.insert(0, str(BENCH))
    try:
        import quality
    finally:
        sys.path.remove(str(BENCH))
    mean, (lo, hi) = quality.t_interval([1.0, 2.0, 3.0])  # sd 1, n 3, t_{0.975,2} = 4.303
    assert mean == 2.0 and abs(hi - 2.0 - 4.303 / np.sqrt(3)) < 1e-9 and abs(lo + hi - 4.0) < 1e-9
    assert quality.t_interval([0.5]) == (0.5, [0.5, 0.5])
    # paired differences: each run of a against b's run of the same split (b: one run per split)
    a = [{"split_seed": 0, "train_seed": 1, "recall": 0.30}, {"split_seed": 1, "train_seed": 1, "recall": 0.40},
         {"split_seed": 0, "train_seed": 2, "recall": 0.32}]
    b = [{"split_seed": 0, "recall": 0.25}, {"split_seed": 1, "recall": 0.31}]
    mean, _ = quality.paired(a, b, "recall", ("split_seed",))
    assert abs(mean - (0.05 + 0.09 + 0.07) / 3) < 1e-12
    mean, _ = quality.paired(a, b[:1], "recall", ("split_seed",))  # split 1 not run yet
    assert abs(mean - 0.06) < 1e-12


def test_compare_pairs_runs_of_the_same_split_and_seed(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import quality
    finally:
        sys.path.remove(str(BENCH))

    def result(path, recalls):  # recalls: {(split, seed): recall} of one MIND method
        runs = [{"split_seed": s, "train_seed": t, "recall": r} for (s, t), r in recalls.items()]
        table = {"MIND K=4 (score merge)": {"runs": runs}, "MostPopular (last 20)": {"runs": runs}}
        path.write_text(json.dumps({"datasets": {"movielens": {"test": {"served": table}}}}))
        return path

    base = result(tmp_path / "base.json", {(0, 1): 0.30, (1, 1): 0.20, (2, 1): 0.50})
    new = result(tmp_path / "new.json", {(1, 1): 0.26, (0, 1): 0.31, (3, 1): 0.90})
    rows = [line for line in quality.compare(base, new).splitlines() if line.startswith("| movielens")]
    assert len(rows) == 1  # baselines are not compared; split 2 and 3 have no partner
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    # pairs (0.30, 0.31) and (0.20, 0.26): differences +0.01 and +0.06, mean +0.035
    assert cells[:7] == ["movielens", "test", "served", "MIND K=4 (score merge)", "2", "0.2500", "0.2850"]
    assert cells[7].startswith("+0.0350 [") and cells[8] == "+0.010 +0.060"


@pytest.mark.slow
def test_quality_reduced_grid(tmp_path, monkeypatch):
    """bench/quality.py on 2 tiny synthetic splits x 1 seed x K=2, 1 epoch: the JSON layout."""
    sys.path.insert(0, str(BENCH))
    try:
        import quality
    finally:
        sys.path.remove(str(BENCH))
    grid = ["--datasets", "synthetic", "--splits", "2", "--seeds", "1", "--epochs", "1",
            "--ks", "2", "--data-arg=--users=200", "--data-arg=--items=300",
            "-o", "runner.samples_per_epoch=256", "-o", "hyper_parameters.neg_samples=64",
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path)]
    assert quality.main(grid) == 0
    res = json.loads((tmp_path / "quality.json").read_text())
    assert res["split_seeds"] == [0, 1] and res["train_seeds"] == [2024]
    syn = res["datasets"]["synthetic"]
    for protocol in ("paper", "served"):
        table = syn["test"][protocol]
        assert {"MIND K=2 (score merge)", "MIND K=2 (slots merge)", "CosineCooccurrence (last 20)",
                "CosineCooccurrence (full history)", "MostPopular (last 20)"} <= set(table)
        for entry in table.values():
            lo, hi = entry["recall@50"]["ci95"]
            assert lo <= entry["recall@50"]["mean"] <= hi and len(entry["runs"]) == 2
            # synthetic data also has the planted-interest coverage of users with 3-4 interests,
            # and (its item map's categories) categories per list and eval-category coverage
            assert set(entry) == {"recall@50", "ndcg@50", "hitrate@50", "coverage_3_4@50",
                                  "categories@50", "category_coverage@50", "runs"}
        # both extractors; ComiRec's controllable aggregation at each lambda, for K=2 and K=1
        assert {"SA K=2 (score merge)", "SA K=2 (controllable λ=0.1 merge)",
                "MIND K=2 (controllable λ=0.2 merge)"} <= set(table)
    assert all(r["cap_binds"] for r in syn["mind_runs"])  # 1 epoch: the cap binds, and says so
    assert "Epoch cap binds" in (tmp_path / "quality.md").read_text()

    # --resume reuses the unchanged runs (nothing retrained) and writes the same result; the
    # command it records is the one that reproduces it, without --resume.
    trained = []
    monkeypatch.setattr(quality, "train_and_pick", lambda *a: trained.append(a))
    assert quality.main([*grid, "--resume"]) == 0
    again = json.loads((tmp_path / "quality.json").read_text())
    assert trained == [] and again["datasets"] == res["datasets"] and again["argv"] == grid
    # another option is another run: not reused
    with pytest.raises(TypeError):  # the stub returns None: proof that training was asked for
        quality.main([*grid, "--resume", "-o", "hyper_parameters.pow_p=2"])
    assert len(trained) == 1
    monkeypatch.undo()

    # A second training seed as a part of its own, then one table from both parts.
    assert quality.main([*grid[:-2], "--out", str(tmp_path / "b"), "--first-seed", "7"]) == 0
    both = tmp_path / "both"
    assert quality.main(["--combine", str(tmp_path / "quality.json"), str(tmp_path / "b" / "quality.json"),
                         "--out", str(both)]) == 0
    combined = json.loads((both / "quality.json").read_text())
    assert combined["train_seeds"] == [7, 2024] and len(combined["parts"]) == 2
    table = combined["datasets"]["synthetic"]["test"]["paper"]
    assert len(table["MIND K=2 (score merge)"]["runs"]) == 4  # 2 splits x 2 seeds
    assert len(table["MostPopular (last 20)"]["runs"]) == 2  # baselines: one run per split
    assert "Part: `python bench/quality.py" in (both / "quality.md").read_text()


def test_the_readme_speed_block_is_the_committed_latest_json():
    """Every speed figure in the README's generated block comes from bench/results/latest.json."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "readme.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, ("README.md's speed block differs from bench/results/latest.json: "
                                  f"run python bench/readme.py\n{done.stderr}")
