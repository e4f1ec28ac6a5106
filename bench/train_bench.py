"""Training speed: samples/s, peak RSS, and the time split reading / forward / backward / step.

The loop is trainer.train's (same model, optimizer, sampler and calls), timed per phase; paddle
runs eagerly on CPU so each call has finished when it returns. The limit, measured in the same
repeats: forward + backward of the network alone on batches built beforehand (no reading, no
optimizer step).

    python bench/train_bench.py [--profile full|quick|tiny]
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import common
from common import Profile, log


def run(profile: Profile, **_: Any) -> dict[str, Any]:
    import paddle
    import trainer  # recommend/model/trainer.py: its optimizer, seeding and device choice
    from mind.config import load_config
    from mind.network import MIND
    from mind.reader import TrainSampler, read_train_dir

    config = load_config(common.config_path(profile))
    r, hp = config.runner, config.hyper_parameters
    trainer.select_device(False, r.cpu_threads)
    t0 = time.perf_counter()
    sequences = read_train_dir(r.train_data_dir, item_count=hp.item_count)
    steps, repeats = profile.train_steps, profile.train_repeats
    warmup = min(5, steps)
    sampler = TrainSampler(sequences, r.train_batch_size, maxlen=hp.maxlen, seed=r.seed,
                           samples_per_epoch=(steps + warmup) * r.train_batch_size,
                           min_len=r.min_len)
    load_seconds = time.perf_counter() - t0
    trainer.init_seed(r.seed)
    model = MIND(hp)
    optimizer = trainer.build_optimizer(hp, model)
    model.train()
    bs = r.train_batch_size
    log(f"train: item_count {hp.item_count}, batch {bs}, negatives {hp.neg_samples}, "
        f"maxlen {hp.maxlen}, {steps} steps x {repeats} repeats")

    def full_loop(epoch: int) -> dict[str, float]:
        split = dict.fromkeys(("read", "forward", "backward", "step"), 0.0)
        batches = sampler.epoch(epoch)
        for i in range(warmup + steps):
            ta = time.perf_counter()
            hist, target = next(batches)
            hist_t, target_t = paddle.to_tensor(hist), paddle.to_tensor(target)
            tb = time.perf_counter()
            loss = model(hist_t, target_t)
            tc = time.perf_counter()
            loss.backward()
            td = time.perf_counter()
            optimizer.step()
            optimizer.clear_grad()
            float(loss)  # the trainer reads the loss every step
            te = time.perf_counter()
            if i >= warmup:
                for k, v in zip(split, (tb - ta, tc - tb, td - tc, te - td)):
                    split[k] += v
        return split

    # Pre-built batches for the limit: tensors ready, nothing read during the timing.
    prebuilt = [(paddle.to_tensor(h), paddle.to_tensor(t))
                for h, t in list(sampler.epoch(10_000))[: min(steps, 32)]]

    def limit_loop() -> float:
        total = 0.0
        for i in range(warmup + steps):
            hist_t, target_t = prebuilt[i % len(prebuilt)]
            ta = time.perf_counter()
            loss = model(hist_t, target_t)
            loss.backward()
            tb = time.perf_counter()
            optimizer.clear_grad()
            if i >= warmup:
                total += tb - ta
        return total

    runs = []
    for rep in range(repeats):
        split = full_loop(rep)
        total = sum(split.values())
        limit = limit_loop()
        runs.append({"samples_per_s": steps * bs / total,
                     "limit_fwd_bwd_samples_per_s": steps * bs / limit,
                     "ms_per_step": {k: 1000 * v / steps for k, v in split.items()},
                     "limit_ms_per_step": 1000 * limit / steps})
        log(f"train repeat {rep}: {runs[-1]['samples_per_s']:.0f} samples/s "
            f"(limit fwd+bwd {runs[-1]['limit_fwd_bwd_samples_per_s']:.0f}); ms/step "
            + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1]["ms_per_step"].items()))

    med = statistics.median
    ms = {k: med(x["ms_per_step"][k] for x in runs) for k in runs[0]["ms_per_step"]}
    sps = med(x["samples_per_s"] for x in runs)
    limit = med(x["limit_fwd_bwd_samples_per_s"] for x in runs)
    return {
        "item_count": hp.item_count, "batch_size": bs, "neg_samples": hp.neg_samples,
        "maxlen": hp.maxlen, "steps_per_repeat": steps, "repeats": repeats,
        "data_load_seconds": load_seconds,
        "samples_per_s": sps,
        "ms_per_step": ms,
        "share": {k: v / sum(ms.values()) for k, v in ms.items()},
        "limit_fwd_bwd_samples_per_s": limit,
        "ratio_to_limit": sps / limit,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": runs,
    }


def main() -> None:
    common.cli(run, __doc__)


if __name__ == "__main__":
    main()
