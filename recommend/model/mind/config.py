"""config.yaml -> frozen pydantic models, one per section, parsed once.

PaddleRec's layout and key names are kept (`runner.*`, `hyper_parameters.*`,
`hyper_parameters.capsual.{iters,max_k,init_std}`, `hyper_parameters.optimizer.{class,learning_rate}`).
Every key is checked: an unknown or misspelt key, a wrong type or an out-of-range value is a
ConfigError that names the key and the file.

    cfg = load_config("mind/config.yaml", overrides=("runner.epochs=3",))
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from recdata.formats import create_hint

__all__ = ["CapsualConfig", "Config", "ConfigError", "HyperConfig", "OptimizerConfig", "RunnerConfig",
           "load_config"]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"'{key}' {msg}")


def _resolve(value: Any, info: ValidationInfo) -> Any:
    """Paths resolve against the config file's folder (the validation context's base_dir)."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"must be a path string, got {value!r}")
    base = (info.context or {}).get("base_dir", Path("."))
    return (base / Path(value).expanduser()).resolve()


def _yaml_float(value: Any) -> Any:
    # PyYAML (YAML 1.1) reads "1e-3" (no dot) as a string; accept it as the number it is.
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


ConfigPath = Annotated[Path, BeforeValidator(_resolve)]
Number = Annotated[float, BeforeValidator(_yaml_float)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic raises a ValidationError here; a frozen object raises AttributeError.
        if not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} is frozen; use model_copy(update=...)")
        super().__setattr__(name, value)


class RunnerConfig(_Section):
    """runner: data locations, batch sizes, epochs, checkpoints. Paths are absolute after loading."""

    train_data_dir: ConfigPath
    model_save_path: ConfigPath
    test_data_dir: ConfigPath
    train_reader_path: str = "mind.reader"
    use_gpu: bool = False
    cpu_threads: int = Field(0, ge=0, description="0 = every core")
    use_auc: bool = False
    train_batch_size: int = Field(128, ge=1)
    epochs: int = Field(20, ge=1)
    print_interval: int = Field(500, ge=1)
    infer_batch_size: int = Field(128, ge=1)
    infer_reader_path: str = "mind.reader"
    infer_load_path: ConfigPath | None = None
    infer_start_epoch: int = Field(0, ge=0)
    infer_end_epoch: int = 19
    seed: int = 2024
    samples_per_epoch: int | None = Field(None, ge=1, description="null = one per target position")
    min_len: int = Field(5, ge=1)
    valid_data_dir: ConfigPath | None = None
    early_stopping_patience: int = Field(0, ge=0, description="0 = off")
    early_stopping_top_n: int = Field(50, ge=1)
    # ComiRec's controllable aggregation (mind/retrieval.py, "controllable"): the lambda a recall
    # uses when its request names none (0 = the plain score merge), and the catalogue column the
    # categories come from ("" = the first of category, genre the item map has).
    merge_lambda: Number = Field(0.0, ge=0, le=100, description="0 = off; <= 100 (retrieval.MAX_DIVERSITY)")
    merge_category: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> RunnerConfig:
        _need(self.infer_end_epoch >= self.infer_start_epoch, "runner.infer_end_epoch",
              "must be >= runner.infer_start_epoch")
        _need(self.early_stopping_patience == 0 or self.valid_data_dir is not None,
              "runner.valid_data_dir", "is required when early_stopping_patience > 0")
        return self


class OptimizerConfig(_Section):
    """hyper_parameters.optimizer: YAML key `class` is stored as `class_name`."""

    class_name: Literal["Adam", "Adagrad", "SGD"] = Field("Adam", alias="class")
    learning_rate: Number = Field(0.005, gt=0)
    # epoch e trains at learning_rate * lr_decay^e; PaddleRec and ComiRec keep it constant.
    lr_decay: Number = Field(1.0, gt=0, le=1, description="1 = constant")


class CapsualConfig(_Section):
    """hyper_parameters.capsual (PaddleRec's spelling): the B2I routing."""

    iters: int = Field(3, ge=1)
    max_k: int = Field(4, ge=1)
    init_std: Number = Field(1.0, gt=0)


class HyperConfig(_Section):
    """hyper_parameters: everything that shapes the network and its optimisation (each key is
    explained in config_synthetic.yaml)."""

    item_count: int = Field(ge=2, description="id 0 is padding")
    optimizer: OptimizerConfig = OptimizerConfig()
    embedding_dim: int = Field(64, ge=1)
    hidden_size: int = Field(64, ge=1)
    neg_samples: int = Field(1280, ge=1)
    maxlen: int = Field(20, ge=1)
    pow_p: Number = Field(1.0, gt=0)
    capsual: CapsualConfig = CapsualConfig()
    sparse_embedding: bool = True
    hard_readout: bool = False
    neg_sampler: Literal["log_uniform", "full"] = "log_uniform"
    hard_neg_beta: Number = Field(0.0, ge=0, description="0 = off")
    relu_layer: bool = False
    dynamic_k: bool = False
    # How the K interests are drawn from the history: MIND's B2I routing (capsual.*) or
    # ComiRec's self-attention (mind/self_attention.py; attention_hidden_size).
    extractor: Literal["routing", "self_attention"] = "routing"
    attention_hidden_size: int = Field(0, ge=0, description="0 = 4 x embedding_dim (ComiRec)")

    @model_validator(mode="after")
    def _consistent(self) -> HyperConfig:
        _need(self.hidden_size == self.embedding_dim, "hyper_parameters.hidden_size",
              f"must equal embedding_dim ({self.embedding_dim}): interests and items are compared "
              "by inner product")
        _need(self.attention_hidden_size == 0 or self.extractor == "self_attention",
              "hyper_parameters.attention_hidden_size",
              "is only used with extractor: self_attention (routing has no attention layer)")
        return self

    @property
    def attention_hidden(self) -> int:
        """Width of the self-attention's tanh layer W1 (ComiRec: 4 x embedding_dim)."""
        return self.attention_hidden_size or 4 * self.embedding_dim

    @property
    def interest_num(self) -> int:
        """K, the number of interests (PaddleRec spells it capsual.max_k)."""
        return self.capsual.max_k


class Config(_Section):
    runner: RunnerConfig
    hyper_parameters: HyperConfig
    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The YAML file it came from (not a YAML key)."""
        return self._path

    @field_validator("hyper_parameters", mode="before")
    @classmethod
    def _item_count_auto(cls, hyper: Any, info: ValidationInfo) -> Any:
        if isinstance(hyper, dict) and hyper.get("item_count") == "auto" and "runner" in info.data:
            hyper = {**hyper, "item_count": _item_count_from_meta(info.data["runner"].train_data_dir)}
        return hyper

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in YAML key spelling (paths as strings), for checkpoints."""
        return self.model_dump(mode="json", by_alias=True)

    @staticmethod
    def from_dict(data: dict[str, Any], base_dir: Path | str = ".") -> Config:
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
    _check_key(parts, item)
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


def _check_key(parts: list[str], item: str) -> None:
    """A misspelt override names the command line (not the file) and the full key it meant."""
    for depth in range(len(parts)):
        try:
            known = _fields(parts[:depth])
        except (KeyError, AttributeError):
            return  # below a leaf: the model's own validation says what is wrong
        if parts[depth] not in known:
            full = [".".join([*parts[:depth], k]) for k in known]
            close = difflib.get_close_matches(".".join(parts[: depth + 1]), full, n=1,
                                              cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(full)}"
            raise ConfigError(f"command line -o {item}: unknown config key "
                              f"'{'.'.join(parts[: depth + 1])}'; {hint}")
        if not hasattr(getattr(known[parts[depth]], "annotation", None), "model_fields"):
            return  # a leaf value (or a free-form mapping): nothing deeper to check


def _build(data: dict[str, Any], base_dir: Path, path: Path | None) -> Config:
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        # A misspelt key also leaves its right spelling missing: name the misspelling.
        first = min(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        raise ConfigError((f"{path}: " if path else "") + _message(first)) from None
    config._path = path
    return config


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


_MUST = {
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "model_type": "must be a mapping",
    "greater_than_equal": "must be >= {ge:g}",
    "greater_than": "must be > {gt:g}",
    "less_than_equal": "must be <= {le:g}",
    "literal_error": "must be {expected}",
}


def _message(err: Any) -> str:
    """One pydantic error in this module's words: the key first, with its dotted name."""
    loc, kind, ctx = [str(p) for p in err["loc"]], err["type"], err.get("ctx", {})
    name = ".".join(loc)
    if kind == "extra_forbidden":
        known = list(_fields(loc[:-1]))
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        return f"unknown config key '{name}'; {hint}"
    if kind == "missing":
        return f"missing {'section' if len(loc) == 1 else 'required config key'} '{name}'"
    if kind == "value_error":  # ours: a ConfigError says it all, a ValueError follows the key
        error = ctx["error"]
        return str(error) if isinstance(error, ConfigError) else f"'{name}' {error}"
    must = _MUST[kind].format(**ctx).replace("'", "") if kind in _MUST else err["msg"]
    why = getattr(_fields(loc[:-1]).get(loc[-1]), "description", None)
    return f"'{name}' {must}, got {err['input']!r}" + (f" ({why})" if why else "")


def _fields(loc: list[str]) -> dict[str, Any]:
    """The fields of the section at `loc` (e.g. ["hyper_parameters", "capsual"]), by YAML key."""
    model: Any = Config
    for part in [*loc, None]:
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part is None:
            return fields
        model = fields[part].annotation
