"""The peer of the serve bench (bench/peer/app.py, issue 22): the tutorial-style service answers
as ours does, on the collection ours built, and the bench reports it beside ours."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):
    """serve_bench and run, their logs written to a temp dir (not bench/work/)."""
    sys.path.insert(0, str(BENCH))
    try:
        import common
        import run
        import serve_bench
    finally:
        sys.path.remove(str(BENCH))
    work, common.WORK = common.WORK, tmp_path_factory.mktemp("peer_bench_work")
    yield serve_bench, run, common.PROFILES["tiny"]
    common.WORK = work


@pytest.mark.slow
def test_peer_answers_equal_the_service(serve, tiny_model, tmp_path):
    """Real uvicorn processes on one Milvus Lite file, one after the other: ours loads the items
    and answers, stops; the peer answers the same users the same, one request per user and
    all in one, and the bench measures it."""
    serve_bench, run, profile = serve
    from mind.config import load_config
    from mind.reader import read_eval_dir
    from mind.user_tower import UserTower

    cfg, item_count = tiny_model
    tower = UserTower(load_config(cfg), 0)
    test = read_eval_dir(load_config(cfg).runner.test_data_dir, item_count)
    histories = [[int(i) for i in h] for h in test.histories[:10]]
    # A repeated click and an id the model does not know (both services ignore it), and a
    # history of unknown ids only (the most popular items).
    histories += [histories[0] + histories[0][:3] + [item_count + 7], [item_count + 1]]
    db = str(tmp_path / "peer.db")

    ours = serve_bench.Service(cfg, db, tmp_path / "ours.log")
    try:
        ours.wait_ready()
        httpx.post(ours.url + "/rec/insert_data", timeout=300).raise_for_status()
        want = serve_bench.answers(ours.url, histories)
        figures = {"latency": {"1": serve_bench.sequential_latency(ours.url, histories, 1, 5)},
                   "load": {str(max(profile.concurrency)): serve_bench.load_test(
                       ours.url, histories, max(profile.concurrency), 0.5, 50)}}
    finally:
        ours.stop()
    assert all(len(row) == 50 for row in want)
    assert want[-1] == tower.popular_items(50).tolist()

    peer = serve_bench.bench_peer("lite", profile, cfg, db, tower, histories, figures, want)
    ag = peer["agreement"]
    assert ag["identical"] == ag["users"] == len(histories) and ag["agree"], ag
    assert ag["one_request_equals_single"]
    load = peer["load"][str(max(profile.concurrency))]
    assert load["errors"] == 0 and load["requests"] > 0
    assert peer["latency"]["1"]["n"] == dict(profile.lat_reps)[1]
    assert peer["ours_after"]["load"][str(max(profile.concurrency))]["errors"] == 0
    vs = peer["ours_over_peer"]
    assert set(vs) == {"clients", "median_ratio", "p99_ratio", "throughput_ratio", "before_after"}
    assert min(vs["before_after"]["median_ratio"]) <= vs["median_ratio"] \
        <= max(vs["before_after"]["median_ratio"])
    table = "\n".join(run.peer_markdown({"lite": {**figures, "peer": peer}}))
    assert "| lite | peer |" in table and "| lite | ours (mean of both) / peer |" in table


class _Tower:
    """Two items on one axis, a third of the same score as the second, one interest."""

    item_count = 4
    dim = 2

    def item_embeddings(self):
        return np.arange(1, 4), np.array([[3, 0], [1, 0], [1, 0]], np.float32)

    def interests(self, histories):
        return np.array([[[1, 0], [0, 0]]] * len(histories), np.float32)  # one masked


def test_agreement_counts_ties_apart(serve):
    serve_bench = serve[0]
    got = serve_bench.agreement(_Tower(), [[1], [1], [1]], [[1, 2, 3], [1, 2, 3], [1, 2, 3]],
                                [[1, 2, 3], [1, 3, 2], [2, 1, 3]])
    assert (got["identical"], got["equal_up_to_ties"], got["agree"]) == (1, 2, False)
    assert got["differences"] == [{"user": 2, "lengths": [3, 3], "first_difference": 0}]
