"""API keys on the local stack: minted once, stored only as a hash, scoped per route from the
route table, revoked at once, never able to manage keys, at most 20 live per account."""

from __future__ import annotations

import base64
from datetime import timedelta

from shared import apikeys, store
from tests.support.api import Api, User, save_test_card

ALL = ["jobs:read", "jobs:write", "datasets:write", "billing:read"]


def mint(api: Api, user: User, scopes: list[str], name: str = "ci") -> dict:
    resp = api.request("POST", "/v1/api-keys", user, json={"name": name, "scopes": scopes})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_a_key_is_shown_once_and_stored_only_as_its_hash(api) -> None:
    user = api.new_user()
    key = mint(api, user, ["jobs:read"])
    secret = key["secret"]
    assert secret.startswith("yk_test_")  # localstripe keys are test keys
    assert len(base64.urlsafe_b64decode(secret[len("yk_test_") :] + "=")) >= 32
    assert key["prefix"] == secret[:14] and key["scopes"] == ["jobs:read"]
    doc = store.client().collection("api_keys").document(apikeys.digest(secret)).get()
    assert doc.exists and secret not in str(doc.to_dict())
    listed = api.request("GET", "/v1/api-keys", user).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "secret" not in listed[0] and secret not in str(listed)


def test_a_key_acts_for_its_user_within_its_scopes(api) -> None:
    user, other = api.new_user(), api.new_user()
    reader = mint(api, user, ["jobs:read"])["secret"]
    assert api.request("GET", "/v1/jobs", token=reader).status_code == 200
    assert api.request("GET", "/v1/models", token=reader).status_code == 200
    refused = api.request("POST", "/v1/jobs", token=reader, json={"model": "m", "dataset_id": "d"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert "'jobs:write'" in refused.json()["error"]["message"]
    assert api.request("GET", "/v1/billing/summary", token=reader).status_code == 403
    # the key sees its own user's things, and other users' answer 404 as for a session
    ds = api.request(
        "POST", "/v1/datasets", other, json={"filename": "a.jsonl", "size_bytes": 10}
    ).json()
    writer = mint(api, user, ["datasets:write"])["secret"]
    assert api.request("GET", f"/v1/datasets/{ds['id']}", token=writer).status_code == 404
    mine = api.request(
        "POST", "/v1/datasets", token=writer, json={"filename": "b.jsonl", "size_bytes": 10}
    )
    assert mine.status_code == 201
    assert store.get_dataset(user.uid, mine.json()["id"]) is not None


def test_keys_never_manage_keys_or_cards(api) -> None:
    user = api.new_user()
    key = mint(api, user, ALL)
    for method, path, body in (
        ("POST", "/v1/api-keys", {"name": "x", "scopes": ["jobs:read"]}),
        ("GET", "/v1/api-keys", None),
        ("DELETE", f"/v1/api-keys/{key['id']}", None),
        ("POST", "/v1/jobs/setup-card", None),
        ("PATCH", "/v1/me", {"monthly_spend_limit_cents": 1}),
    ):
        resp = api.request(method, path, token=key["secret"], json=body)
        assert resp.status_code == 403, (method, path)
        assert resp.json()["error"]["code"] == "session_required"
    me = api.request("GET", "/v1/me", token=key["secret"])
    assert me.status_code == 200 and me.json()["uid"] == user.uid


def test_a_key_never_gets_a_billing_portal_link(api) -> None:
    """A portal link can change the card: more than billing:read, so a key's /v1/me has none."""
    user = api.new_user()
    save_test_card(user.uid)
    assert api.request("GET", "/v1/me", user).json()["portal_url"] is not None
    key = mint(api, user, ["billing:read"])["secret"]
    assert api.request("GET", "/v1/me", token=key).json()["portal_url"] is None


def test_a_revoked_key_is_refused_by_the_next_request(api) -> None:
    user, other = api.new_user(), api.new_user()
    key = mint(api, user, ["jobs:read"])
    assert api.request("GET", "/v1/jobs", token=key["secret"]).status_code == 200
    # another user cannot revoke it, and learns nothing about it
    assert api.request("DELETE", f"/v1/api-keys/{key['id']}", other).status_code == 404
    assert api.request("DELETE", f"/v1/api-keys/{key['id']}", user).status_code == 204
    refused = api.request("GET", "/v1/jobs", token=key["secret"])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
    assert api.request("GET", "/v1/api-keys", user).json()["data"] == []
    assert api.request("DELETE", f"/v1/api-keys/{key['id']}", user).status_code == 404


def test_a_key_we_never_issued_is_refused(api) -> None:
    resp = api.request("GET", "/v1/jobs", token="yk_test_" + "A" * 43)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "auth_invalid"


def test_at_most_twenty_live_keys(api) -> None:
    user = api.new_user()
    keys = [mint(api, user, ["jobs:read"], name=f"k{i}") for i in range(apikeys.MAX_LIVE_KEYS)]
    over = api.request("POST", "/v1/api-keys", user, json={"name": "x", "scopes": ["jobs:read"]})
    assert over.status_code == 409 and over.json()["error"]["code"] == "too_many_api_keys"
    api.request("DELETE", f"/v1/api-keys/{keys[0]['id']}", user)
    assert mint(api, user, ["jobs:read"])["name"] == "ci"


def test_last_used_at_is_written_at_most_once_a_minute(api) -> None:
    user = api.new_user()
    key = mint(api, user, ["jobs:read"])
    assert key["last_used_at"] is None
    ref = store.client().collection("api_keys").document(apikeys.digest(key["secret"]))
    api.request("GET", "/v1/jobs", token=key["secret"])
    first = ref.get()
    used = first.to_dict()["last_used_at"]
    assert used is not None
    for _ in range(3):
        api.request("GET", "/v1/jobs", token=key["secret"])
    assert ref.get().update_time == first.update_time  # no write within the minute
    ref.update({"last_used_at": used - timedelta(minutes=2)})
    api.request("GET", "/v1/jobs", token=key["secret"])
    assert ref.get().to_dict()["last_used_at"] > used
    listed = api.request("GET", "/v1/api-keys", user).json()["data"][0]
    assert listed["last_used_at"] is not None


def test_bad_key_requests_name_the_field(api) -> None:
    user = api.new_user()
    for body, code, param in (
        ({"scopes": ["jobs:read"]}, "missing_field", "name"),
        ({"name": " ", "scopes": ["jobs:read"]}, "invalid_value", "name"),
        ({"name": "x", "scopes": []}, "invalid_value", "scopes"),
        ({"name": "x", "scopes": ["jobs:admin"]}, "invalid_value", "scopes[0]"),
        ({"name": "x", "scopes": ["jobs:read"], "ttl": 5}, "unknown_field", "ttl"),
    ):
        resp = api.request("POST", "/v1/api-keys", user, json=body)
        assert resp.status_code == 400, body
        assert (resp.json()["error"]["code"], resp.json()["error"]["param"]) == (code, param)


def _refused_within(api: Api, secret: str, seconds: float) -> dict:
    """The key's answer to GET /v1/jobs once it is refused, within `seconds` (the stack checks
    a key's user every YACHAY_KEY_OWNER_CHECK_S = 1 s; production, every 60 s)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        resp = api.request("GET", "/v1/jobs", token=secret)
        if resp.status_code == 401 or time.monotonic() > deadline:
            return {"status": resp.status_code, **resp.json()}
        time.sleep(0.2)


def test_a_disabled_users_keys_stop_working(api) -> None:
    from devstack import emulators

    user = api.new_user()
    secret = mint(api, user, ALL)["secret"]
    assert api.request("GET", "/v1/jobs", token=secret).status_code == 200
    emulators.disable_user(api.auth_host, user.uid)
    refused = _refused_within(api, secret, 10)
    assert refused["status"] == 401 and refused["error"]["code"] == "auth_user_disabled"
    for method, path, body in (
        ("POST", "/v1/datasets", {"filename": "a.jsonl", "size_bytes": 10}),
        (
            "POST",
            "/v1/webhook-endpoints",
            {"url": "https://example.com/h", "events": ["job.completed"]},
        ),
    ):
        assert api.request(method, path, token=secret, json=body).status_code == 401


def test_a_deleted_users_keys_stop_working_before_the_erasure_event(api) -> None:
    from devstack import emulators

    user = api.new_user()
    secret = mint(api, user, ["jobs:read"])["secret"]
    assert api.request("GET", "/v1/jobs", token=secret).status_code == 200
    emulators.delete_user(api.auth_host, user.uid)  # no erasure event has run: the key is stored
    refused = _refused_within(api, secret, 10)
    assert refused["status"] == 401 and refused["error"]["code"] == "auth_user_disabled"
    assert "no longer exists" in refused["error"]["message"]


def test_a_key_subscribes_only_to_events_it_may_read(api) -> None:
    """A webhooks:write key could subscribe a URL to job events and so receive every job's full
    view, which it may not read: job and payment events need jobs:read too."""
    user = api.new_user()
    hooks_only = mint(api, user, ["webhooks:write"])["secret"]
    body = {"url": "https://example.com/hooks", "events": ["job.completed"]}
    refused = api.request("POST", "/v1/webhook-endpoints", token=hooks_only, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == {
        **refused.json()["error"],
        "code": "insufficient_scope",
        "param": "events",
    }
    both = mint(api, user, ["webhooks:write", "jobs:read"], name="both")["secret"]
    assert api.request("POST", "/v1/webhook-endpoints", token=both, json=body).status_code == 201
    # a session may subscribe to anything of its own
    assert api.request("POST", "/v1/webhook-endpoints", user, json=body).status_code == 201
