"""recommend/config.py: defaults, environment overrides, refusals; the exposure warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config import SERVICE_DIR, Settings, SettingsError, get_settings, is_loopback
from service.security import launch_host, warn_if_exposed

TOKEN = "0123456789abcdef0123"


def test_defaults_serve_the_demo_model_from_embedded_milvus():
    s = Settings.from_env({})
    assert s.milvus_uri == str(SERVICE_DIR / "milvus_lite.db")
    assert s.VECTOR_DIMENSION == 64
    assert s.MODEL_CONFIG_PATH == SERVICE_DIR / "model" / "mind" / "config_synthetic.yaml"
    assert s.EPOCH_NUM is None
    assert s.API_TOKEN == "" and not s.auth_required
    assert s.HOST == "127.0.0.1"
    assert (s.MAX_TOP_K, s.MAX_BODY_BYTES) == (1000, 1024 * 1024)


def test_environment_strings_are_converted_and_empty_values_keep_defaults():
    s = Settings.from_env(
        {
            "MILVUS_HOST": "10.0.0.5",
            "MILVUS_PORT": "19531",
            "VECTOR_DIMENSION": "32",
            "EPOCH_NUM": "3",
            "MILVUS_TIMEOUT": "2.5",
            "MAX_TOP_K": "",
            "UNRELATED": "x",
        }
    )
    assert s.milvus_uri == "http://10.0.0.5:19531"
    assert (s.VECTOR_DIMENSION, s.EPOCH_NUM, s.MILVUS_TIMEOUT, s.MAX_TOP_K) == (32, 3, 2.5, 1000)


def test_uri_overrides_host_and_relative_paths_resolve_under_recommend(tmp_path):
    s = Settings.from_env({"MILVUS_HOST": "milvus", "MILVUS_URI": "http://127.0.0.1:19530"})
    assert s.milvus_uri == "http://127.0.0.1:19530"
    assert Settings.from_env({"MILVUS_URI": "x.db"}).milvus_uri == str(SERVICE_DIR / "x.db")
    absolute = tmp_path / "items.db"
    assert Settings.from_env({"MILVUS_URI": str(absolute)}).milvus_uri == str(absolute)
    cfg = Settings.from_env({"MODEL_CONFIG_PATH": "model/mind/config.yaml"}).MODEL_CONFIG_PATH
    assert cfg == SERVICE_DIR / "model" / "mind" / "config.yaml"


def test_passes_in_flight_defaults_to_one_on_lite_and_two_on_a_server():
    assert Settings.from_env({}).passes_in_flight == 1
    assert Settings.from_env({"MILVUS_URI": "http://127.0.0.1:19530"}).passes_in_flight == 2
    assert Settings.from_env({"MILVUS_HOST": "milvus"}).passes_in_flight == 2
    assert Settings.from_env({"PASSES_IN_FLIGHT": "3"}).passes_in_flight == 3
    assert Settings.from_env({"PASSES_IN_FLIGHT": "1", "MILVUS_HOST": "milvus"}).passes_in_flight == 1


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MILVUS_PORT", "0", "MILVUS_PORT"),
        ("MILVUS_PORT", "70000", "less than or equal to 65535"),
        ("MILVUS_PORT", "http", "valid integer"),
        ("MILVUS_HOST", "bad host!", "not a host name"),
        ("MILVUS_URI", "ftp://milvus:19530", "ending in .db or http(s)://host:port"),
        ("MILVUS_URI", "/no/such/dir/items.db", "does not exist"),
        ("MILVUS_TIMEOUT", "0", "greater than 0"),
        ("VECTOR_DIMENSION", "1", "greater than or equal to 2"),
        ("DEFAULT_COLLECTION", "my-items", "collection name"),
        ("DEFAULT_COLLECTION", "1items", "collection name"),
        ("DEFAULT_COLLECTION", "items__v2", "reserves"),
        ("MODEL_CONFIG_PATH", "model/mind/rec.pdparams", ".yaml"),
        ("EPOCH_NUM", "-1", "greater than or equal to 0"),
        ("EPOCH_NUM", "latest", "valid integer"),
        ("API_TOKEN", "short", "at least 16 characters"),
        ("API_TOKEN", "has a space 0123456789", "whitespace"),
        ("HOST", "0.0.0.0;x", "not a host name"),
        ("MAX_TOP_K", "0", "MAX_TOP_K"),
        ("MAX_TOP_K", "20000", "less than or equal to 16384"),
        ("MAX_BATCH_USERS", "5000", "MAX_BATCH_USERS"),
        ("MAX_HISTORY_LEN", "0", "MAX_HISTORY_LEN"),
        ("MAX_BODY_BYTES", "10", "greater than or equal to 1024"),
        ("PASSES_IN_FLIGHT", "0", "greater than or equal to 1"),
    ],
)
def test_unsafe_or_nonsensical_values_are_refused_with_the_name(name, value, says):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert name in str(err.value) and says in str(err.value)


def test_secrets_stay_out_of_repr_and_error_messages():
    s = Settings.from_env({"API_TOKEN": TOKEN, "MILVUS_TOKEN": "root:Milvus"})
    assert TOKEN not in repr(s) and "root:Milvus" not in repr(s)
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"API_TOKEN": "tooshort"})
    assert "tooshort" not in str(err.value)


def test_the_process_environment_is_read_only_when_no_mapping_is_given(monkeypatch):
    monkeypatch.setenv("MAX_TOP_K", "7")
    monkeypatch.setenv("max_batch_users", "9")  # names match exactly
    monkeypatch.setenv("MAX_HISTORY_LEN", "")
    s = Settings.from_env()
    assert (s.MAX_TOP_K, s.MAX_BATCH_USERS, s.MAX_HISTORY_LEN) == (7, 256, 1000)
    assert Settings.from_env({"MAX_HISTORY_LEN": "5"}).MAX_TOP_K == 1000
    monkeypatch.setenv("MAX_TOP_K", "0")
    with pytest.raises(SettingsError, match="MAX_TOP_K='0'"):
        Settings.from_env()


def test_settings_are_read_once_and_frozen():
    assert get_settings() is get_settings()
    with pytest.raises(Exception):
        get_settings().MAX_TOP_K = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.4", False), ("example.org", False)],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_launch_host_reads_uvicorns_command_line_then_env_then_settings():
    s = Settings.from_env({"HOST": "10.1.1.1"})
    assert launch_host(s, ["uvicorn", "main:app", "--host", "0.0.0.0"], {}) == "0.0.0.0"
    assert launch_host(s, ["uvicorn", "main:app", "--host=::"], {}) == "::"
    assert launch_host(s, ["uvicorn", "main:app"], {"UVICORN_HOST": "0.0.0.0"}) == "0.0.0.0"
    assert launch_host(s, ["main.py"], {}) == "10.1.1.1"


def test_warns_only_when_exposed_without_a_token(caplog):
    caplog.set_level(logging.WARNING, logger="recall.service")
    assert warn_if_exposed(Settings.from_env({}), "0.0.0.0")
    assert "without API_TOKEN" in caplog.text
    caplog.clear()
    assert not warn_if_exposed(Settings.from_env({"API_TOKEN": TOKEN}), "0.0.0.0")
    assert not warn_if_exposed(Settings.from_env({}), "127.0.0.1")
    assert caplog.text == ""


def test_default_lite_file_is_ignored_by_git():
    ignore = (SERVICE_DIR.parent / ".gitignore").read_text()
    assert "*.db" in ignore.split() and Path(Settings.from_env({}).milvus_uri).suffix == ".db"
