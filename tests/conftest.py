"""Fixtures for every test: settings that follow the (monkeypatched) environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import config


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads settings from its own environment (tests monkeypatch os.environ)."""
    config.settings.cache_clear()
    yield
    config.settings.cache_clear()
