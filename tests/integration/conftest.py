"""The integration suite runs against the real local emulators, started once per session.

The session starts the whole stack (Firestore, Pub/Sub, Auth, Storage, Tasks, Stripe and the
local API gateway) on free ports in a temporary folder, and stops every process group at the end.
Each test starts from empty emulators.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devstack.emulators import reset_all, sign_up
from devstack.stack import Stack
from shared import storage, store


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def stack_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """This process's environment pointed at the stack, and emulators emptied."""
    reset_all({name: stack.host(name) for name in ("firestore", "auth", "stripe", "storage")})
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    # Adapters cache their clients per process; drop them so they follow this environment.
    monkeypatch.setattr(store, "_client", None)
    monkeypatch.setattr(storage, "_client", None)
    return stack


@dataclass
class User:
    uid: str
    email: str
    token: str


@dataclass
class Api:
    base: str
    auth_host: str

    def new_user(self) -> User:
        email = f"u-{uuid.uuid4().hex[:10]}@example.com"
        data = sign_up(email, auth_host=self.auth_host)
        return User(uid=data["localId"], email=email, token=data["idToken"])

    def request(
        self, method: str, path: str, user: User | None = None, token: str | None = None, **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if user is not None:
            headers["Authorization"] = f"Bearer {user.token}"
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kw)


@pytest.fixture
def api(stack_env: Stack) -> Api:
    return Api(base=stack_env.api_base_url, auth_host=stack_env.host("auth"))
