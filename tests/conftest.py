"""Fixtures shared across the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real Milvus server process (milvus==2.3.5 from PyPI), started once per session
# by the first test that asks for it.
from milvus_server import milvus_server  # noqa: F401
from support import train_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(config path, item_count) of a tiny synthetic model trained for one short epoch."""
    return train_tiny_model(tmp_path_factory.getbasetemp() / "tiny_model")
