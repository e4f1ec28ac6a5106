"""config.yaml parsing: typed, validated, overrides, relative paths, the shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mind.config import Config, ConfigError, load_config

MIND_DIR = Path(__file__).resolve().parents[1] / "recommend" / "model" / "mind"

MINIMAL = """
runner:
  train_data_dir: "data/train"
  test_data_dir: "data/test"
  model_save_path: "out"
hyper_parameters:
  item_count: 100
  capsual:
    max_k: 4
"""


def write(tmp_path: Path, text: str = MINIMAL) -> Path:
    p = tmp_path / "conf" / "c.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_minimal_defaults_and_relative_paths(tmp_path: Path) -> None:
    c = load_config(write(tmp_path))
    assert c.runner.train_data_dir == (tmp_path / "conf" / "data" / "train").resolve()
    assert c.runner.model_save_path == (tmp_path / "conf" / "out").resolve()
    assert c.runner.epochs == 20 and c.hyper_parameters.neg_samples == 1280
    assert c.hyper_parameters.optimizer.class_name == "Adam"
    assert c.hyper_parameters.optimizer.learning_rate == 0.005
    assert c.hyper_parameters.interest_num == 4


def test_unknown_key_is_named_with_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL.replace("  item_count: 100", "  item_count: 100\n  neg_sample: 5"))
    with pytest.raises(ConfigError, match=r"hyper_parameters\.neg_sample.*neg_samples"):
        load_config(p)
    p = write(tmp_path, MINIMAL.replace("    max_k: 4", "    max_kk: 4"))
    with pytest.raises(ConfigError, match=r"capsual\.max_kk.*max_k"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"runner\.epoch'.*epochs"):
        load_config(write(tmp_path), ["runner.epoch=3"])


def test_overrides_are_yaml_scalars(tmp_path: Path) -> None:
    c = load_config(write(tmp_path), ["runner.epochs=3", "hyper_parameters.capsual.max_k=1",
                                      "hyper_parameters.optimizer.learning_rate=1e-3",
                                      "runner.use_gpu=true", "runner.samples_per_epoch=null"])
    assert c.runner.epochs == 3 and c.hyper_parameters.capsual.max_k == 1
    assert c.hyper_parameters.optimizer.learning_rate == 0.001 and c.runner.use_gpu is True
    with pytest.raises(ConfigError, match="key=value"):
        load_config(write(tmp_path), ["runner.epochs"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("runner.epochs=two", r"runner\.epochs.*integer"),
        ("runner.epochs=0", r"runner\.epochs.*>= 1"),
        ("runner.use_gpu=1", r"runner\.use_gpu.*true or false"),
        ("hyper_parameters.hidden_size=32", r"hidden_size.*must equal embedding_dim"),
        ("hyper_parameters.capsual.init_std=0", r"init_std"),
        ("hyper_parameters.optimizer.class=Adamw", r"optimizer\.class"),
        ("runner.early_stopping_patience=2", r"valid_data_dir"),
        ("hyper_parameters.neg_sampler=uniform", r"neg_sampler.*log_uniform or full"),
        ("hyper_parameters.hard_neg_beta=-1", r"hard_neg_beta.*>= 0"),
        ("hyper_parameters.hard_readout=yes_please", r"hard_readout.*true or false"),
        ("hyper_parameters.optimizer.lr_decay=1.5", r"lr_decay' must be <= 1, got 1.5 \(1 = constant\)"),
        ("hyper_parameters.optimizer.lr_decay=0", r"lr_decay' must be > 0"),
    ],
)
def test_validation_names_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path), [override])


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hyper_parameters\.item_count"):
        load_config(write(tmp_path, MINIMAL.replace("  item_count: 100\n", "")))


def test_item_count_auto_reads_meta_json(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL.replace("item_count: 100", "item_count: auto"))
    with pytest.raises(ConfigError, match="meta.json"):
        load_config(p)
    (tmp_path / "conf" / "data").mkdir()
    (tmp_path / "conf" / "data" / "meta.json").write_text(json.dumps({"item_count": 3001}))
    assert load_config(p).hyper_parameters.item_count == 3001


def test_frozen_and_dict_round_trip(tmp_path: Path) -> None:
    c = load_config(write(tmp_path))
    with pytest.raises(AttributeError):
        c.runner.epochs = 3  # type: ignore[misc]
    d = json.loads(json.dumps(c.to_dict()))
    assert d["hyper_parameters"]["optimizer"]["class"] == "Adam"
    assert d["hyper_parameters"]["capsual"]["max_k"] == 4
    again = Config.from_dict(d)
    assert again.runner == c.runner and again.hyper_parameters == c.hyper_parameters


@pytest.mark.parametrize("name", ["config.yaml", "config_synthetic.yaml", "config_movielens.yaml"])
def test_shipped_configs_parse(name: str) -> None:
    c = load_config(MIND_DIR / name, ["hyper_parameters.item_count=500"])
    assert c.runner.train_data_dir.is_absolute()
    assert c.runner.train_data_dir.parts[-3:-1] == ("data", c.runner.train_data_dir.parts[-2])
    assert c.hyper_parameters.capsual.max_k == 4 and c.hyper_parameters.embedding_dim == 64
    # Every key in the shipped files is commented with its type.
    for line in (MIND_DIR / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "# (" in line, line


def test_amazonbook_config_is_the_tutorials() -> None:
    c = load_config(MIND_DIR / "config.yaml")
    hp = c.hyper_parameters
    assert (hp.item_count, hp.neg_samples, hp.maxlen, hp.pow_p) == (367983, 1280, 20, 1.0)
    assert c.runner.train_data_dir == (MIND_DIR / "../../data/amazonbook/train").resolve()


def test_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    p = write(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(p, ["runner.epochs=two"])
    assert str(e.value) == f"{p.resolve()}: 'runner.epochs' must be an integer, got 'two'"
    # A misspelt override is the command line's, and names the full key it meant.
    with pytest.raises(ConfigError, match=r"^command line -o hyper_parameters\.maxln=3: unknown "
                       r"config key 'hyper_parameters\.maxln'; did you mean "
                       r"'hyper_parameters\.maxlen'\?$"):
        load_config(p, ["hyper_parameters.maxln=3"])
    # A misspelt key in the file still names the file.
    p.write_text(p.read_text().replace("  item_count: 100\n", "  item_count: 100\n  maxln: 3\n"))
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'hyper_parameters\.maxln'"):
        load_config(p)
