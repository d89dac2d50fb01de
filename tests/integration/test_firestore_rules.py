"""Firestore security rules (terraform/firestore.rules), loaded into the local Firestore
emulator exactly as Terraform deploys them: no client reaches a document directly, not even its
owner; only our functions (server credentials, to which rules do not apply) do."""

from __future__ import annotations

import requests

from devstack.emulators import PROJECT_ID


def documents(stack, path: str) -> str:
    return (
        f"http://{stack.host('firestore')}/v1/projects/{PROJECT_ID}"
        f"/databases/(default)/documents/{path}"
    )


def test_clients_can_neither_read_nor_write_any_document(api, stack_env) -> None:
    user = api.new_user()
    assert api.request("GET", "/v1/me", user).status_code == 200  # the account document exists
    mine = documents(stack_env, f"users/{user.uid}")
    as_server = {"Authorization": "Bearer owner"}  # the emulator's admin: what functions are
    assert requests.get(mine, headers=as_server, timeout=10).status_code == 200
    for headers in ({"Authorization": f"Bearer {user.token}"}, {}):  # the owner; nobody
        read = requests.get(mine, headers=headers, timeout=10)
        assert read.status_code == 403, read.text
        assert "PERMISSION_DENIED" in read.text
        listing = requests.get(documents(stack_env, "jobs"), headers=headers, timeout=10)
        assert listing.status_code == 403
        write = requests.patch(
            mine,
            headers=headers,
            json={"fields": {"monthly_spend_limit_cents": {"integerValue": "999999"}}},
            timeout=10,
        )
        assert write.status_code == 403
        create = requests.post(
            documents(stack_env, "charges"), headers=headers, json={"fields": {}}, timeout=10
        )
        assert create.status_code == 403
