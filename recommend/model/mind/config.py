"""config.yaml -> frozen typed dataclasses, parsed once.

PaddleRec's layout and key names are kept (`runner.*`, `hyper_parameters.*`,
`hyper_parameters.capsual.{iters,max_k,init_std}`, `hyper_parameters.optimizer.{class,learning_rate}`).
Unlike PaddleRec's flat string-key lookups with silent defaults, every key is checked: an unknown
or misspelt key, a wrong type or an out-of-range value is a ConfigError that names the key.

    cfg = load_config("mind/config.yaml", overrides=("runner.epochs=3",))

The hyper_parameters keys are the fields of mind.network.HyperConfig, each commented there
(relu_layer, dynamic_k: with PaddleRec's, ComiRec's and the paper's choice).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from recdata.formats import create_hint

from mind.network import CapsualConfig, HyperConfig, OptimizerConfig

__all__ = [
    "CapsualConfig",
    "Config",
    "ConfigError",
    "HyperConfig",
    "OptimizerConfig",
    "RunnerConfig",
    "load_config",
]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class RunnerConfig:
    """runner: data locations, batch sizes, epochs, checkpoints. Paths are absolute after loading."""

    train_data_dir: Path
    model_save_path: Path
    test_data_dir: Path
    train_reader_path: str = "mind.reader"
    use_gpu: bool = False
    cpu_threads: int = 0
    use_auc: bool = False
    train_batch_size: int = 128
    epochs: int = 20
    print_interval: int = 500
    infer_batch_size: int = 128
    infer_reader_path: str = "mind.reader"
    infer_load_path: Path | None = None
    infer_start_epoch: int = 0
    infer_end_epoch: int = 19
    seed: int = 2024
    samples_per_epoch: int | None = None
    min_len: int = 5
    valid_data_dir: Path | None = None
    early_stopping_patience: int = 0
    early_stopping_top_n: int = 50


@dataclass(frozen=True)
class Config:
    runner: RunnerConfig
    hyper_parameters: HyperConfig
    path: Path | None = None  # the YAML file it came from (not a YAML key)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in YAML key spelling (paths as strings), for checkpoints."""
        return {
            "runner": _to_plain(self.runner),
            "hyper_parameters": _to_plain(self.hyper_parameters),
        }

    @staticmethod
    def from_dict(data: dict[str, Any], base_dir: Path | str = ".") -> "Config":
        """Inverse of to_dict (validated the same way as a YAML file)."""
        return _build(data, Path(base_dir).resolve(), None)


# ------------------------------------------------------------------------------------ loading
def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Parse and validate a config YAML; `overrides` are "section.key=value" strings (values are
    YAML scalars, e.g. "runner.epochs=3", "hyper_parameters.capsual.max_k=1")."""
    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'runner' and 'hyper_parameters'")
    for item in overrides:
        _apply_override(data, item)
    return _build(data, path.parent, path)


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. runner.epochs=3")
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not a YAML scalar: {e}") from None


def _build(data: dict[str, Any], base_dir: Path, path: Path | None) -> Config:
    _check_keys(data, ["runner", "hyper_parameters"], "")
    for section in ("runner", "hyper_parameters"):
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"missing section '{section}'")
    runner = _parse(RunnerConfig, data["runner"], "runner", base_dir)
    hyper_raw = dict(data["hyper_parameters"])
    if hyper_raw.get("item_count") == "auto":
        hyper_raw["item_count"] = _item_count_from_meta(runner.train_data_dir)
    hyper = _parse(HyperConfig, hyper_raw, "hyper_parameters", base_dir)
    _validate(runner, hyper)
    return Config(runner=runner, hyper_parameters=hyper, path=path)


def _item_count_from_meta(train_dir: Path) -> int:
    """`item_count: auto` reads meta.json beside the train folder (written by data.sh)."""
    meta = train_dir.parent / "meta.json"
    try:
        value = json.loads(meta.read_text())["item_count"]
    except FileNotFoundError:
        raise ConfigError(
            f"hyper_parameters.item_count is 'auto' but {meta} does not exist; prepare the "
            f"data first: {create_hint(train_dir)} (or set item_count to a number)"
        ) from None
    except (KeyError, ValueError) as e:
        raise ConfigError(f"hyper_parameters.item_count: cannot read item_count from {meta}: {e}")
    if not isinstance(value, int):
        raise ConfigError(f"hyper_parameters.item_count: {meta} item_count is not an integer")
    return value


def _yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _check_keys(raw: dict[str, Any], known: list[str], where: str) -> None:
    for key in raw:
        if key not in known:
            name = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key '{name}'{hint}")


def _parse(cls: type, raw: Any, where: str, base_dir: Path) -> Any:
    """Build dataclass `cls` from mapping `raw`, checking keys and types recursively."""
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {type(raw).__name__}")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    _check_keys(raw, [_yaml_key(f) for f in fields], where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields:
        key = _yaml_key(f)
        name = f"{where}.{key}"
        if key not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required config key '{name}'")
            continue
        kwargs[f.name] = _coerce(hints[f.name], raw[key], name, base_dir)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str, base_dir: Path) -> Any:
    """Check `value` against type `tp`; resolve paths against the config's folder."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, name, base_dir)
    if dataclasses.is_dataclass(tp):
        return _parse(tp, value, name, base_dir)
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"'{name}' must be a path string, got {value!r}")
        return (base_dir / Path(value).expanduser()).resolve()
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{name}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        return value
    if tp is float:
        # PyYAML (YAML 1.1) reads "1e-3" (no dot) as a string; accept it as the number it is.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return value
    raise TypeError(f"config field {name} has unsupported type {tp}")


def _validate(r: RunnerConfig, h: HyperConfig) -> None:
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"'{key}' {msg}")

    for key in ("train_batch_size", "epochs", "print_interval", "infer_batch_size", "min_len",
                "early_stopping_top_n"):
        need(getattr(r, key) >= 1, f"runner.{key}", "must be >= 1")
    need(r.samples_per_epoch is None or r.samples_per_epoch >= 1,
         "runner.samples_per_epoch", "must be >= 1 or null (one sample per training user)")
    need(r.infer_start_epoch >= 0, "runner.infer_start_epoch", "must be >= 0")
    need(r.cpu_threads >= 0, "runner.cpu_threads", "must be >= 0 (0 = every core)")
    need(r.infer_end_epoch >= r.infer_start_epoch, "runner.infer_end_epoch",
         "must be >= runner.infer_start_epoch")
    need(r.early_stopping_patience >= 0, "runner.early_stopping_patience", "must be >= 0 (0 = off)")
    need(r.early_stopping_patience == 0 or r.valid_data_dir is not None,
         "runner.valid_data_dir", "is required when early_stopping_patience > 0")
    need(h.item_count >= 2, "hyper_parameters.item_count", "must be >= 2 (id 0 is padding)")
    for key in ("embedding_dim", "hidden_size", "neg_samples", "maxlen"):
        need(getattr(h, key) >= 1, f"hyper_parameters.{key}", "must be >= 1")
    need(h.hidden_size == h.embedding_dim, "hyper_parameters.hidden_size",
         f"must equal embedding_dim ({h.embedding_dim}): interests and items are compared by "
         "inner product")
    need(h.pow_p > 0, "hyper_parameters.pow_p", "must be > 0")
    need(h.neg_sampler in ("log_uniform", "full"), "hyper_parameters.neg_sampler",
         f"must be log_uniform or full, got {h.neg_sampler!r}")
    need(h.hard_neg_beta >= 0, "hyper_parameters.hard_neg_beta", "must be >= 0 (0 = off)")
    need(h.capsual.iters >= 1, "hyper_parameters.capsual.iters", "must be >= 1")
    need(h.capsual.max_k >= 1, "hyper_parameters.capsual.max_k", "must be >= 1")
    need(h.capsual.init_std > 0, "hyper_parameters.capsual.init_std", "must be > 0")
    need(h.optimizer.class_name in ("Adam", "Adagrad", "SGD"), "hyper_parameters.optimizer.class",
         f"must be Adam, Adagrad or SGD, got {h.optimizer.class_name!r}")
    need(h.optimizer.learning_rate > 0, "hyper_parameters.optimizer.learning_rate", "must be > 0")
    need(0 < h.optimizer.lr_decay <= 1, "hyper_parameters.optimizer.lr_decay",
         "must be in (0, 1] (1 = constant)")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_yaml_key(f): _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    return obj
