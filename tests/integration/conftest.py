"""The integration suite runs against the real local emulators, started once per session.

The session starts the whole stack (Firestore, Pub/Sub, Auth, Storage, Tasks, Stripe and the
local API gateway) on free ports in a temporary folder, and stops every process group at the end.
Each test starts from empty emulators.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.emulators import reset_all
from devstack.stack import Stack
from shared import payments, storage, store, tasks
from tests.support.api import Api
from tests.support.catalog import TINY_ID, seed_model, tiny_catalog


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


# Test datasets above this many bytes are counted in the background (8 MiB in production), so
# a test reaches that path with a file of a megabyte.
COUNT_INLINE_BYTES = 1_000_000


def running_stack(run_dir: Any, **extra_env: str) -> Iterator[Stack]:
    """A whole local stack for tests in `run_dir`, with the test catalog (the tiny model), no
    background sweep (each test runs the sweep it checks, so none races its records), a key's
    user checked every second (a minute in production), large files counted in the background
    from COUNT_INLINE_BYTES, and `extra_env`; stopped at the end."""
    extra = {
        "YACHAY_COUNT_INLINE_BYTES": str(COUNT_INLINE_BYTES),
        "YACHAY_CATALOG_PATH": str(tiny_catalog(run_dir / "catalog.json")),
        "YACHAY_LOCAL_BATCH_LOGS": str(run_dir / "batch-logs"),
        "YACHAY_LOCAL_SWEEP_S": "0",
        "YACHAY_KEY_OWNER_CHECK_S": "1",
        **extra_env,
    }
    s = Stack(run_dir, extra_env=extra)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Trainers of several cases run side by side (a case never waits on an earlier one's).
    yield from running_stack(tmp_path_factory.mktemp("stack"), YACHAY_LOCAL_BATCH_SLOTS="4")


def point_at(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """This process's environment pointed at `stack`, and its emulators emptied."""
    reset_all({name: stack.host(name) for name in ("firestore", "auth", "stripe", "storage")})
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    # Adapters cache their clients per process; drop them so they follow this environment
    # (a test on a second stack would otherwise reach the first one's Stripe or Tasks).
    for module, name in (
        (store, "_client"),
        (storage, "_client"),
        (payments, "_client"),
        (payments, "_request_client"),
        (tasks, "_client"),
    ):
        monkeypatch.setattr(module, name, None)
    return stack


@pytest.fixture
def stack_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """This process's environment pointed at the stack, and emulators emptied."""
    return point_at(stack, monkeypatch)


@pytest.fixture
def api(stack_env: Stack) -> Api:
    return Api(base=stack_env.api_base_url, auth_host=stack_env.host("auth"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.support.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_in_store(stack_env: Stack, tiny_model_dir: Any) -> str:
    """The tiny test model, in the model store under the test catalog's `tiny-llama`."""
    seed_model(tiny_model_dir, TINY_ID)
    return TINY_ID
