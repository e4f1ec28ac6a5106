"""Service settings: one typed object (pydantic-settings), read from the environment once.

Every field is named after its environment variable (the tutorial's names kept:
MILVUS_HOST, MILVUS_PORT, VECTOR_DIMENSION, DEFAULT_COLLECTION, MODEL_CONFIG_PATH,
EPOCH_NUM). Relative paths are resolved against this directory (recommend/), the
tutorial's working directory, so the answer does not depend on where the process
was started.

    cd recommend && MILVUS_URI=http://127.0.0.1:19530 uvicorn main:app
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SERVICE_DIR = Path(__file__).resolve().parent

# Milvus refuses a search limit above 16,384 and more than 16,384 query vectors per request.
MILVUS_MAX_TOPK = 16384
MILVUS_MAX_NQ = 16384
INT64_MAX = 2**63 - 1

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_URL = re.compile(r"^https?://[^\s/]+(:\d{1,5})?/?$")


class SettingsError(ValueError):
    """A setting from the environment is unsafe or makes no sense."""


def resolve_path(value: str | Path) -> Path:
    """An absolute path: relative ones are taken from recommend/."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (SERVICE_DIR / path).resolve()


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that resolves elsewhere: assume exposed


class Settings(BaseSettings):
    """The recall service's settings (see the module docstring for path rules)."""

    # Variables are matched by their exact names; an empty one keeps the default.
    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=True,
                                      env_ignore_empty=True)

    # --- Milvus -----------------------------------------------------------------
    MILVUS_HOST: str = Field("", description="Milvus server host; empty = embedded Milvus Lite")
    MILVUS_PORT: Annotated[int, Field(ge=1, le=65535)] = 19530
    MILVUS_URI: str = Field(
        "",
        description="Overrides host/port: a path ending in .db (Milvus Lite) or http(s)://host:port. "
        "Default: recommend/milvus_lite.db unless MILVUS_HOST is set.",
    )
    MILVUS_TOKEN: str = Field("", repr=False, description="Milvus credentials (user:password or API key)")
    MILVUS_TIMEOUT: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Seconds per Milvus call, and the longest a recall request waits (then 503)"
    )
    VECTOR_DIMENSION: Annotated[int, Field(ge=2, le=32768)] = 64
    DEFAULT_COLLECTION: str = "mind_items"

    # --- model --------------------------------------------------------------------
    # The synthetic demo config is the default because it is the model the offline
    # demo (make demo) trains; an AmazonBook model is served with
    # MODEL_CONFIG_PATH=model/mind/config.yaml.
    MODEL_CONFIG_PATH: Path = Path("model/mind/config_synthetic.yaml")
    EPOCH_NUM: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Saved epoch to serve; unset = the latest complete one"
    )
    AUTO_INSERT: bool = Field(
        False, description="At start-up, load this model's items when the collection is empty "
        "or holds another model's (one replica should do it, not all)"
    )
    # inference is the default: as fast alone, and beside a busy thread 0.4-0.7 ms a 1-user pass
    # against dygraph's 7-8 (dygraph gives the GIL up at each op and waits to get it back; the
    # predictor's pass is one C++ call): bench/tower_bench.py.
    TOWER_RUNTIME: Literal["dygraph", "inference"] = Field(
        "inference", description="What runs the user tower: the checkpoint's Paddle layer "
        "(dygraph), or its static export on Paddle Inference (inference; exported on first start "
        "into {checkpoint root}/inference/, remade when the model changes; the 3 newest kept)"
    )

    # --- HTTP ---------------------------------------------------------------------
    API_TOKEN: str = Field(
        "", repr=False, description="Bearer token for the mutating endpoints; empty = open"
    )
    HOST: str = Field("127.0.0.1", description="Address `python main.py` binds to")
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8000
    MAX_BATCH_USERS: Annotated[int, Field(ge=1, le=4096)] = 256
    MAX_HISTORY_LEN: Annotated[int, Field(ge=1, le=100_000)] = 1000
    MAX_TOP_K: Annotated[int, Field(ge=1, le=MILVUS_MAX_TOPK)] = 1000
    MAX_BODY_BYTES: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    MAX_HEADER_BYTES: Annotated[int, Field(ge=1024, le=1024 * 1024)] = Field(
        16384, description="Request line and headers beyond this get 431"
    )
    HEADER_TIMEOUT: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="Seconds for a connection to deliver a request's headers, then 408"
    )
    BODY_TIMEOUT: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Seconds for a request's whole body once its headers are in, then 408"
    )
    MAX_CONNECTIONS: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        512, description="Open connections per process beyond which new ones get 503"
    )
    # --- overload -------------------------------------------------------------------
    MAX_QUEUE_USERS: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1024, description="Users waiting for a recall pass beyond which a request gets 503 "
        "(the service is overloaded); 4 full batches by default, in each of the two lanes "
        "(ordinary and heavy requests)"
    )
    QUEUE_WAIT_SECONDS: Annotated[float, Field(gt=0, le=600)] = Field(
        2.0, description="Longest a recall request waits for a pass to take it, then 503"
    )
    PASSES_IN_FLIGHT: Annotated[int, Field(ge=1, le=8)] | None = Field(
        None, description="Recall passes per lane that may overlap: while one waits for Milvus "
        "the next runs the model (one forward at a time); 1 = one pass after another. Default: "
        "1 on Milvus Lite (it searches one request at a time: one pass after another measured "
        "faster), 2 on a server"
    )
    PACE_PASSES: bool = Field(
        True, description="With PASSES_IN_FLIGHT > 1, the next pass starts its model as the "
        "search in flight is about to end (taking every request that came meanwhile), not as "
        "soon as the model is free (small passes, each paying for a whole search); with 1, a "
        "pass waits (at most 0.6 of a pass) for the users the last pass answered to come back"
    )

    @field_validator("MILVUS_HOST", "HOST")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if value and not _is_host(value):
            raise ValueError(f"not a host name or IP address: {value!r}")
        return value

    @field_validator("MILVUS_URI")
    @classmethod
    def _uri(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        if _URL.match(value):
            return value
        if value.endswith(".db"):
            path = resolve_path(value)
            if not path.parent.is_dir():
                raise ValueError(f"the directory for the Milvus Lite file does not exist: {path.parent}")
            return str(path)
        raise ValueError(
            f"must be a Milvus Lite file ending in .db or http(s)://host:port, got {value!r}"
        )

    @field_validator("DEFAULT_COLLECTION")
    @classmethod
    def _collection(cls, value: str) -> str:
        # Imported here: the itemstore package imports pymilvus, which the body parser's
        # process (it imports this module through the schemas) must not load.
        from itemstore.names import collection_name_problem

        if (problem := collection_name_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("MODEL_CONFIG_PATH")
    @classmethod
    def _model_config(cls, value: Path) -> Path:
        if value.suffix not in {".yaml", ".yml"}:
            raise ValueError(f"must be a .yaml model config, got {str(value)!r}")
        return resolve_path(value)

    @field_validator("API_TOKEN", "MILVUS_TOKEN")
    @classmethod
    def _token(cls, value: str) -> str:
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError("must not contain whitespace")
        return value

    @field_validator("API_TOKEN")
    @classmethod
    def _api_token_strength(cls, value: str) -> str:
        # A short token can be guessed; refuse it rather than give a false sense of safety.
        if value and len(value) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 16`)")
        return value

    @property
    def milvus_uri(self) -> str:
        """Where Milvus is: MILVUS_URI, else MILVUS_HOST:MILVUS_PORT, else the Lite file."""
        if self.MILVUS_URI:
            return self.MILVUS_URI
        if self.MILVUS_HOST:
            host = f"[{self.MILVUS_HOST}]" if ":" in self.MILVUS_HOST else self.MILVUS_HOST
            return f"http://{host}:{self.MILVUS_PORT}"
        return str(SERVICE_DIR / "milvus_lite.db")

    @property
    def passes_in_flight(self) -> int:
        """PASSES_IN_FLIGHT, or its default for the backend of milvus_uri."""
        if self.PASSES_IN_FLIGHT is not None:
            return self.PASSES_IN_FLIGHT
        return 1 if self.milvus_uri.endswith(".db") else 2

    @property
    def auth_required(self) -> bool:
        return bool(self.API_TOKEN)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from the process environment, or from `environ` alone when given (tests)."""
        try:
            if environ is None:
                return cls()
            # The mapping's variables as init values, with every other source switched off
            # (settings_customise_sources); empty ones keep the default, as in the environment.
            only = _GIVEN_ONLY.set(True)
            try:
                return cls(**{k: v for k, v in environ.items() if k in cls.model_fields and v})
            finally:
                _GIVEN_ONLY.reset(only)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _GIVEN_ONLY.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)


# Set while from_env(environ) builds Settings from that mapping alone.
_GIVEN_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("settings_given_only",
                                                                  default=False)


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return True
    except ValueError:
        return bool(_HOSTNAME.match(value))


_SECRETS = {"API_TOKEN", "MILVUS_TOKEN"}


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        shown = "<hidden>" if name in _SECRETS else repr(err["input"])
        lines.append(f"{name}={shown}: {msg}" if name else msg)
    return "invalid service settings:\n  " + "\n  ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()
