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
from tests.integration.support import TINY_ID, seed_model, tiny_catalog


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    extra = {
        "YACHAY_CATALOG_PATH": str(tiny_catalog(run_dir / "catalog.json")),
        "YACHAY_LOCAL_BATCH_LOGS": str(run_dir / "batch-logs"),
    }
    s = Stack(run_dir, extra_env=extra)
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from yachay_trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_in_store(stack_env: Stack, tiny_model_dir: Any) -> str:
    """The tiny test model, in the model store under the test catalog's `tiny-llama`."""
    seed_model(tiny_model_dir, TINY_ID)
    return TINY_ID


def save_test_card(uid: str) -> None:
    """Test shortcut: marks the user as having a saved card (the card-saving flow itself is
    tested in test_billing; job tests need only its outcome)."""
    store.get_or_create_user(uid, None)
    store.client().collection("users").document(uid).update(
        {"payment_method": {"id": "pm_test", "brand": "visa", "last4": "4242"}}
    )


def upload_dataset(
    api: Api, user: User, content: bytes, filename: str = "train.jsonl", validate: bool = True
) -> dict[str, Any]:
    created = api.request(
        "POST",
        "/v1/datasets",
        user,
        json={"filename": filename, "size_bytes": max(1, len(content))},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    put = requests.put(
        body["upload"]["url"], data=content, headers=body["upload"]["headers"], timeout=30
    )
    assert put.status_code == 200, put.text
    if not validate:
        return body
    resp = api.request("POST", f"/v1/datasets/{body['id']}/validate", user)
    assert resp.status_code == 200, resp.text
    return resp.json()
