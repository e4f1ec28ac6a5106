"""Judging a recall model: metrics (pure functions), the baselines, exact in-process search,
and the evaluation loop infer.py and bench/quality.py share (evaluate)."""
