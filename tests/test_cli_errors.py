"""Known mistakes on the command line: one line on stderr, a non-zero exit code, no traceback
unless asked for (--debug or MIND_DEBUG=1). The real scripts run as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import MODEL_DIR, REPO, write_config


def run(cmd: list[str], cwd: Path = MODEL_DIR, **env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MIND_DEBUG"} | env
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def config(tmp_path: Path, item_count: int | str = 100, train: str | None = None,
           test: str | None = None) -> Path:
    """A config over tmp_path/data, whose train/test folders exist only when given content."""
    data = tmp_path / "data"
    for split, text in (("train", train), ("test", test)):
        if text is not None:
            (data / split).mkdir(parents=True)
            (data / split / "part-0").write_text(text)
    return write_config(tmp_path / "c.yaml", data, tmp_path / "model", runner={"epochs": 1},
                        hyper={"item_count": item_count})


def py(script: str, cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-u", script, "-m", str(cfg), *args]


def assert_one_line(res: subprocess.CompletedProcess[str], prog: str, *words: str) -> None:
    assert res.returncode != 0, res.stdout
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"{prog}: ")
    for word in words:
        assert word in res.stderr, res.stderr


TRAIN = "".join(f"{u},{1 + (u + t) % 50},{t}\n" for u in range(8) for t in range(6))
TEST = "user_id:1 hist_item:1 hist_item:2 eval_item:3\n"


@pytest.mark.parametrize("script", ["trainer.py", "infer.py"])
def test_missing_data(tmp_path: Path, script: str) -> None:
    res = run(py(script, config(tmp_path)))
    assert_one_line(res, script, "missing directory", "sh data.sh")


def test_missing_data_with_item_count_auto(tmp_path: Path) -> None:
    res = run(py("trainer.py", config(tmp_path, item_count="auto")))
    assert_one_line(res, "trainer.py", "meta.json does not exist", "sh data.sh")


def test_infer_without_a_saved_model(tmp_path: Path) -> None:
    res = run(py("infer.py", config(tmp_path, test=TEST)))
    assert_one_line(res, "infer.py", "no saved epoch", "train first")


@pytest.mark.parametrize("script", ["trainer.py", "infer.py"])
def test_wrong_item_count(tmp_path: Path, script: str) -> None:
    res = run(py(script, config(tmp_path, item_count=3, train=TRAIN, test=TEST)))
    assert_one_line(res, script, "item_count=3")


def test_serve_sh_without_data(tmp_path: Path) -> None:
    rel = os.path.relpath(config(tmp_path, item_count="auto"), REPO / "recommend")
    res = run(["bash", "scripts/serve.sh", "synthetic"], cwd=REPO, MODEL_CONFIG_PATH=rel)
    assert_one_line(res, "serve.sh", "meta.json does not exist", "sh data.sh")


@pytest.mark.parametrize("how", ["--debug", "MIND_DEBUG=1"])
@pytest.mark.parametrize("script", ["trainer.py", "infer.py"])
def test_debug_shows_the_traceback(tmp_path: Path, script: str, how: str) -> None:
    flag, env = ([how], {}) if how == "--debug" else ([], {"MIND_DEBUG": "1"})
    res = run(py(script, config(tmp_path), *flag), **env)
    assert res.returncode == 2 and "Traceback (most recent call last)" in res.stderr
    assert res.stderr.splitlines()[-1].startswith(f"{script}: ")


@pytest.mark.parametrize("script", ["trainer.py", "infer.py"])
@pytest.mark.parametrize("flag", ["-o", "--override"])
def test_a_misspelt_override_names_the_command_line_and_the_full_key(tmp_path: Path, script: str,
                                                                     flag: str) -> None:
    res = run(py(script, config(tmp_path, train=TRAIN, test=TEST), flag, "runner.epocs=3"))
    assert_one_line(res, script, "command line -o runner.epocs=3: unknown config key "
                    "'runner.epocs'; did you mean 'runner.epochs'?")
    assert res.returncode == 2


def test_infer_writes_its_results_beside_the_model_it_loaded(tiny_model, tmp_path: Path) -> None:
    """-o runner.model_save_path=NEW evaluates the model under infer_load_path: its results and
    Milvus file go there, NEW stays empty, and the first line names the model."""
    cfg, _ = tiny_model
    model = Path(cfg).parent / "model"
    elsewhere = tmp_path / "new"
    res = run(py("infer.py", Path(cfg), "-o", f"runner.model_save_path={elsewhere}",
                 "--json", str(tmp_path / "r.json")))
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"[infer] model {model}, epochs 0-0, run "), first
    assert not elsewhere.exists()
    assert (model / "milvus_eval.db").exists()
