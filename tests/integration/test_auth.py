"""Every authentication failure, over HTTP against the real Auth emulator."""

import time

import pytest
from functions_framework import create_app

from devstack import emulators
from tests.support.tokens import unsigned_token


def code(resp) -> str:
    assert resp.status_code == 401, resp.text
    return resp.json()["error"]["code"]


def test_a_real_emulator_token_is_accepted(api) -> None:
    user = api.new_user()
    assert api.request("GET", "/v1/me", user).status_code == 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "auth_missing"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "auth_not_bearer"),
        ({"Authorization": "Bearer"}, "auth_malformed"),
        ({"Authorization": "Bearer definitely-not-a-jwt"}, "auth_malformed"),
    ],
)
def test_header_problems(api, headers: dict, expected: str) -> None:
    assert code(api.request("GET", "/v1/me", headers=headers)) == expected


def test_expired_token(api) -> None:
    user = api.new_user()
    token = unsigned_token(
        sub=user.uid, user_id=user.uid, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200
    )
    assert code(api.request("GET", "/v1/me", token=token)) == "auth_expired"


def test_token_of_another_project(api) -> None:
    user = api.new_user()
    token = unsigned_token(
        sub=user.uid,
        aud="someone-elses-project",
        iss="https://securetoken.google.com/someone-elses-project",
    )
    assert code(api.request("GET", "/v1/me", token=token)) == "auth_wrong_audience"


def test_revoked_token(api) -> None:
    user = api.new_user()
    assert api.request("GET", "/v1/me", user).status_code == 200
    time.sleep(1.1)  # revocation has one-second resolution: revoke strictly after issue time
    emulators.revoke_tokens(api.auth_host, user.uid, int(time.time()))
    assert code(api.request("GET", "/v1/me", user)) == "auth_revoked"


def test_disabled_user(api) -> None:
    user = api.new_user()
    emulators.disable_user(api.auth_host, user.uid)
    assert code(api.request("GET", "/v1/me", user)) == "auth_user_disabled"


def test_deleted_user(api) -> None:
    user = api.new_user()
    emulators.delete_user(api.auth_host, user.uid)
    assert code(api.request("GET", "/v1/me", user)) == "auth_invalid"


def test_emulator_token_is_refused_when_the_emulator_is_not_configured(api, monkeypatch) -> None:
    user = api.new_user()  # a genuine Auth-emulator token, unsigned
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST")
    client = create_app("me", "functions/me/main.py").test_client()
    resp = client.get("/v1/me", headers={"Authorization": f"Bearer {user.token}"})
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "auth_unsigned_token"


def test_cors_over_http(api) -> None:
    ok = api.request("GET", "/v1/healthz", headers={"Origin": "http://localhost:3000"})
    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    other = api.request("GET", "/v1/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    pre = api.request(
        "OPTIONS",
        "/v1/models",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
    )
    assert pre.status_code == 204 and "GET" in pre.headers["Access-Control-Allow-Methods"]
