"""Data-parallel training on Paddle's own launcher: collective mode, gloo on CPU, NCCL on GPU.

    cd recommend/model
    python -m paddle.distributed.launch --nproc_per_node 2 trainer.py -m mind/config.yaml
    scripts/train.sh synthetic --nproc 2     # the same, then checks that every rank finished

Every rank draws the same global batch (same seeded TrainSampler) and trains on its contiguous
shard; gradients are averaged by paddle.DataParallel; rank 0 logs and saves. A process not
started by the launcher gets World() (rank 0 of 1) and nothing here touches paddle.distributed.

The launcher's exit code does not prove that every worker finished, so each launched rank writes
`{log_dir}/exit.{local_rank}` (JSON: rank, exit code, last error line) when it ends, and
`python -m mind.distributed check` (run by scripts/train.sh) fails if any rank has none or a
non-zero one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paddle

STATUS_PREFIX = "exit."  # beside the launcher's workerlog.{local_rank}
CRASH_ENV = "MIND_TEST_CRASH"  # "RANK:STEPS": that rank kills itself after STEPS steps (tests)


class PeerLost(RuntimeError):
    """A collective failed: another rank died or stopped answering."""


@dataclass(frozen=True)
class World:
    """Where this process sits in a launched run; World() = a single, unlaunched process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    log_dir: Path | None = None  # the launcher's --log_dir (where exit statuses go)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def launched(self) -> bool:
        return self.log_dir is not None

    def shard(self, batch_size: int) -> slice:
        """This rank's rows of a global batch: [r*B/N, (r+1)*B/N)."""
        if batch_size % self.size:
            raise ValueError(
                f"runner.train_batch_size={batch_size} (the global batch) is not divisible by "
                f"the {self.size} ranks; pick a multiple of {self.size}")
        n = batch_size // self.size
        return slice(self.rank * n, (self.rank + 1) * n)


def detect(environ: Mapping[str, str] = os.environ) -> World:
    """The World described by the variables paddle.distributed.launch sets for its workers."""
    if "PADDLE_TRAINER_ID" not in environ:
        return World()
    log_dir = environ.get("PADDLE_LOG_DIR")
    return World(
        rank=int(environ["PADDLE_TRAINER_ID"]),
        size=int(environ.get("PADDLE_TRAINERS_NUM", "1")),
        local_rank=int(environ.get("PADDLE_LOCAL_RANK", "0")),
        local_size=int(environ.get("PADDLE_LOCAL_SIZE", "1")),
        log_dir=Path(log_dir).resolve() if log_dir else Path.cwd() / "log",
    )


def init(world: World) -> None:
    """Join the process group (gloo on CPU, NCCL on GPU: the launcher picks the backend)."""
    if world.size > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()


def wrap(model: paddle.nn.Layer, world: World) -> paddle.nn.Layer:
    """paddle.DataParallel(model) across ranks (gradients averaged in backward), else model."""
    return paddle.DataParallel(model) if world.size > 1 else model


def _collective(world: World, what: str, op, *args) -> None:
    try:
        op(*args)
    except RuntimeError as e:  # gloo reports a dead peer as a RuntimeError (closed pair/timeout)
        raise PeerLost(describe(e, world, what)) from e


def all_mean(values: Sequence[float], world: World) -> list[float]:
    """The mean over ranks of each value (the values themselves in a single process)."""
    if world.size == 1:
        return list(values)
    t = paddle.to_tensor(list(values), dtype="float64")
    _collective(world, "all_reduce", paddle.distributed.all_reduce, t)
    return [v / world.size for v in t.numpy().tolist()]


def broadcast(value: int, world: World) -> int:
    """Rank 0's value on every rank: its decisions (stop, refuse) reach all of them."""
    if world.size == 1:
        return value
    t = paddle.to_tensor([value], dtype="int64")
    _collective(world, "broadcast", paddle.distributed.broadcast, t, 0)
    return int(t.item())


def barrier(world: World) -> None:
    if world.size > 1:
        _collective(world, "barrier", paddle.distributed.barrier)


def describe(error: BaseException, world: World, what: str = "training") -> str:
    """One line for a rank's failure; a gloo/NCCL error is named for what it usually means."""
    text = str(error).strip().splitlines()
    last = text[-1] if text else type(error).__name__
    if isinstance(error, PeerLost):
        return str(error)
    if any(w in str(error) for w in ("gloo", "Connection closed", "NCCL", "TIMEOUT")):
        return f"rank {world.rank}: {what} failed, a peer rank died or stopped answering ({last})"
    return f"rank {world.rank}: {type(error).__name__}: {last}"


def write_status(world: World, code: int, error: str | None = None) -> None:
    """Record how this rank ended, for `check` (launched runs only)."""
    if not world.launched:
        return
    world.log_dir.mkdir(parents=True, exist_ok=True)
    status = {"rank": world.rank, "local_rank": world.local_rank, "exit": code, "error": error}
    path = world.log_dir / f"{STATUS_PREFIX}{world.local_rank}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status) + "\n")
    os.replace(tmp, path)


def crash_hook(world: World, steps: int, environ: Mapping[str, str] = os.environ) -> None:
    """Test hook: MIND_TEST_CRASH=R:K makes rank R die by SIGKILL after K steps of this process
    (a real crash: no exception, no cleanup, no exit status)."""
    spec = environ.get(CRASH_ENV)
    if spec and spec == f"{world.rank}:{steps}":
        print(f"{CRASH_ENV}: rank {world.rank} kills itself after {steps} steps",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------ check
def _last_line(path: Path) -> str:
    try:
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except FileNotFoundError:
        return f"({path.name} missing)"
    return lines[-1] if lines else f"({path.name} is empty)"


def check_workers(log_dir: Path, nproc: int, node_rank: int = 0) -> list[tuple[int, str]]:
    """(exit code, line) per local worker that did not finish cleanly (none = all finished);
    code 1 for a worker that left no exit status.

    Global ranks are node_rank * nproc + local rank, as the launcher numbers them.
    """
    problems = []
    for local in range(nproc):
        rank = node_rank * nproc + local
        log = log_dir / f"workerlog.{local}"
        try:
            status = json.loads((log_dir / f"{STATUS_PREFIX}{local}").read_text())
        except (FileNotFoundError, ValueError):
            problems.append((1, f"rank {rank} did not finish (no exit status: killed or "
                                f"crashed); last line of {log}: {_last_line(log)}"))
            continue
        if status["exit"] != 0:
            problems.append((status["exit"], f"rank {status['rank']} exited {status['exit']}: "
                                             f"{status['error'] or _last_line(log)}"))
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mind.distributed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="fail unless every local rank of a launched run finished")
    c.add_argument("--log_dir", type=Path, required=True, help="the launcher's --log_dir")
    c.add_argument("--nproc", type=int, required=True, help="--nproc_per_node of the launch")
    c.add_argument("--node_rank", type=int, default=0, help="--rank of this node (multi-node)")
    args = ap.parse_args(argv)
    problems = check_workers(args.log_dir, args.nproc, args.node_rank)
    for _, line in problems:
        print(f"training failed: {line}", file=sys.stderr)
    # Rank 0's code when it has one (2 = refused, as trainer.py alone), else the first failure's.
    return problems[0][0] if problems else 0


if __name__ == "__main__":
    sys.exit(main())
