"""Trainer tests run on a tiny random-weight Llama built from a config in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny import build_tiny_model, chat_records, write_jsonl


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/trainer/" in str(item.fspath):
            item.add_marker(pytest.mark.trainer)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(chat_records(48, seed=3), tmp_path_factory.mktemp("data") / "train.jsonl")
