"""Data-parallel training through real `python -m paddle.distributed.launch` processes (gloo, CPU).

The slow tests start real launchers (about 10 s each on 2 cores): 2 ranks against 1 process on
the same global batches, a rank killed by SIGKILL mid-epoch then --resume, two "nodes" on
loopback, and a 2-rank checkpoint served by UserTower.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recommend" / "model"))
import trainer  # noqa: E402
from test_trainer import make_config  # noqa: E402

from mind import distributed  # noqa: E402
from mind.checkpoint import list_epochs, load_model, read_meta, read_run  # noqa: E402
from mind.config import ConfigError  # noqa: E402
from mind.distributed import World  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "recommend" / "model"
TRAIN_SH = ROOT / "scripts" / "train.sh"
EPOCHS = ("-o", "runner.epochs=2")  # 2 epochs x 20 steps of a global batch of 32


def train_sh(config: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(TRAIN_SH), str(config), *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def max_diff(a_config, b_config, epoch: int) -> float:
    a, b = load_model(a_config, epoch).state_dict(), load_model(b_config, epoch).state_dict()
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: 1 process, in-process, 2 epochs."""
    config = make_config(tmp_path_factory.mktemp("one"), "runner.epochs=2")
    trainer.train(config, log=lambda line: None)
    return config


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The same config trained by 2 ranks through scripts/train.sh --nproc 2."""
    root = tmp_path_factory.mktemp("two")
    config = make_config(root, "runner.epochs=2")
    out = train_sh(config.path, "--nproc", "2", "--log_dir", str(root / "logs"), *EPOCHS)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return config, out


# ------------------------------------------------------------------ fast: no launcher
def test_world_from_the_launchers_environment(tmp_path: Path) -> None:
    assert distributed.detect({}) == World()
    w = distributed.detect({"PADDLE_TRAINER_ID": "3", "PADDLE_TRAINERS_NUM": "4",
                            "PADDLE_LOCAL_RANK": "1", "PADDLE_LOCAL_SIZE": "2",
                            "PADDLE_LOG_DIR": str(tmp_path)})
    assert (w.rank, w.size, w.local_rank, w.local_size, w.log_dir) == (3, 4, 1, 2, tmp_path)
    assert w.launched and not w.main
    assert w.shard(128) == slice(96, 128)
    with pytest.raises(ValueError, match="not divisible by the 4 ranks"):
        w.shard(30)


def test_batch_not_divisible_by_ranks_is_refused_before_any_work(tmp_path: Path) -> None:
    config = make_config(tmp_path, "runner.train_batch_size=33")
    with pytest.raises(ConfigError, match="train_batch_size=33 .* not divisible by the 2 ranks"):
        trainer.train(config, world=World(rank=0, size=2), log=lambda line: None)
    assert not config.runner.model_save_path.exists()


def test_check_workers_names_the_rank_that_did_not_finish(tmp_path: Path) -> None:
    w0 = World(rank=2, size=4, local_rank=0, local_size=2, log_dir=tmp_path)
    distributed.write_status(w0, 0)
    (tmp_path / "workerlog.1").write_text("epoch 0 batch 10\nSegmentation fault\n")
    assert distributed.check_workers(tmp_path, 2, node_rank=1) == [
        (1, f"rank 3 did not finish (no exit status: killed or crashed); last line of "
            f"{tmp_path / 'workerlog.1'}: Segmentation fault")]
    distributed.write_status(World(rank=3, size=4, local_rank=1, log_dir=tmp_path), 2, "refused")
    assert distributed.check_workers(tmp_path, 2, node_rank=1) == [(2, "rank 3 exited 2: refused")]


# ------------------------------------------------------------------ real launcher processes
@pytest.mark.slow
def test_two_ranks_equal_one_process(one_process, two_ranks) -> None:
    config, out = two_ranks
    diffs = [max_diff(one_process, config, e) for e in (0, 1)]
    print(f"max |w(2 ranks) - w(1 process)| after 20 / 40 steps: {diffs[0]:.2e} / {diffs[1]:.2e}")
    assert max(diffs) < 1e-6
    root = config.runner.model_save_path
    log = [json.loads(x) for x in (root / "train_log.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in
           (one_process.runner.model_save_path / "train_log.jsonl").read_text().splitlines()]
    # The logged loss is the global batch's, not rank 0's shard's.
    assert [r["train_loss"] for r in log] == pytest.approx([r["train_loss"] for r in ref], 1e-5)
    assert "2 ranks x 16 rows" in out.stdout and out.stdout.count("train_loss") == 2
    assert {read_meta(root, e)["run_id"] for e in (0, 1)} == {read_run(root)["run_id"]}


@pytest.mark.slow
def test_killed_rank_fails_the_run_then_resume_matches(two_ranks, tmp_path: Path) -> None:
    config = make_config(tmp_path, "runner.epochs=2")
    logs = ("--log_dir", str(tmp_path / "logs"))
    # Rank 1 is SIGKILLed after 25 steps: epoch 0 (20 steps) is saved, epoch 1 is not.
    crashed = train_sh(config.path, "--nproc", "2", *logs, *EPOCHS,
                       env={distributed.CRASH_ENV: "1:25"})
    assert crashed.returncode != 0
    assert "training failed: rank 1 did not finish" in crashed.stderr
    assert "MIND_TEST_CRASH: rank 1 kills itself after 25 steps" in crashed.stderr
    assert list_epochs(config.runner.model_save_path) == [0]
    run_id = read_run(config.runner.model_save_path)["run_id"]

    again = train_sh(config.path, "--nproc", "2", *logs, *EPOCHS)  # forgot --resume
    assert again.returncode == 2 and "holds epoch 0 of another run" in again.stderr

    resumed = train_sh(config.path, "--nproc", "2", *logs, *EPOCHS, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert max_diff(two_ranks[0], config, 1) == 0.0
    assert read_meta(config.runner.model_save_path, 1)["run_id"] == run_id


@pytest.mark.slow
def test_two_nodes_on_loopback_equal_one_process(one_process, tmp_path: Path) -> None:
    config = make_config(tmp_path, "runner.epochs=2")
    master = ("--nnodes", "2", "--master", f"127.0.0.1:{free_port()}")
    nodes = [subprocess.Popen(
        ["bash", str(TRAIN_SH), str(config.path), "--nproc", "1", *master, "--rank", str(r),
         "--log_dir", str(tmp_path / f"node{r}"), *EPOCHS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert max_diff(one_process, config, 1) < 1e-6


@pytest.mark.slow
def test_two_rank_checkpoint_serves_interests(one_process, two_ranks) -> None:
    """The 2-rank checkpoint's user tower gives the 1-process one's interest vectors."""
    from mind.user_tower import UserTower

    config, _ = two_ranks
    tower = UserTower.load(config.path)
    assert tower.epoch == 1
    histories = [[1, 2, 3], [41, 42, 43, 44]]
    vectors = tower.interests(histories)
    assert vectors.shape == (2, 2, 16) and np.abs(vectors).sum() > 0
    reference = UserTower.load(one_process.path).interests(histories)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


@pytest.mark.slow
def test_two_rank_checkpoint_serves_through_rec_recall(two_ranks, tmp_path: Path) -> None:
    """The service loads a 2-rank checkpoint unchanged and answers /rec/recall over HTTP."""
    sys.path.insert(0, str(ROOT / "recommend"))
    import main
    from config import Settings
    from fastapi.testclient import TestClient

    config, _ = two_ranks
    settings = Settings(MODEL_CONFIG_PATH=config.path, MILVUS_URI=str(tmp_path / "items.db"),
                        VECTOR_DIMENSION=16)
    with TestClient(main.create_app(settings)) as http:
        assert http.post("/rec/insert_data").json()["count"] == 60
        answer = http.post("/rec/recall", json={"top_k": 10, "hist_item": [[1, 2, 3], [41, 42]]})
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        assert [len(r) for r in rows] == [10, 10] and all(1 <= i <= 60 for r in rows for i in r)
        checks = http.get("/readyz").json()["checks"]
        assert checks["collection"] == "ok" and checks["model"] == "ok (epoch 1)"
