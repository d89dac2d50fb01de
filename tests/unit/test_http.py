"""The HTTP edge (`shared.http`): routing, CORS, request ids, body parsing and error mapping.

Functions are loaded the way functions-framework deploys them (`create_app(target, source)`), or,
for handler behaviour that needs no outside service, built with `serve` around a small handler.
"""

from __future__ import annotations

import json

import flask
import pytest
from functions_framework import create_app

from shared import http
from shared.auth import Principal
from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, serve

ORIGIN = "http://localhost:3000"


@pytest.fixture
def healthz() -> flask.testing.FlaskClient:
    return create_app("healthz", "functions/healthz/main.py").test_client()


def call(view, method: str, path: str, **kw) -> flask.Response:
    app = flask.Flask("t")
    with app.test_request_context(path, method=method, **kw):
        return view(flask.request)


def test_healthz_answers_without_auth(healthz) -> None:
    resp = healthz.get("/v1/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "version": "0.1.0"}
    assert resp.headers["Content-Type"] == "application/json"


def test_healthz_answers_on_its_backend_path_too(healthz) -> None:
    assert healthz.get("/v1/health").get_json()["status"] == "ok"


def test_wrong_method_is_405_with_allow(healthz) -> None:
    resp = healthz.post("/v1/healthz")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET"
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


def test_a_path_the_function_does_not_own_is_404_json(healthz) -> None:
    resp = healthz.get("/v1/healthz/extra")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "not_found"


def test_request_id_is_echoed_when_sane_and_replaced_when_not(healthz) -> None:
    assert (
        healthz.get("/v1/healthz", headers={"X-Request-Id": "abc-12345"}).headers["X-Request-Id"]
        == "abc-12345"
    )
    bad = healthz.get("/v1/healthz", headers={"X-Request-Id": "<script>"}).headers["X-Request-Id"]
    assert bad != "<script>" and len(bad) == 32


def test_cors_grant_only_for_allowed_origins(healthz) -> None:
    ok = healthz.get("/v1/healthz", headers={"Origin": ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in ok.headers["Vary"]
    other = healthz.get("/v1/healthz", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers


def test_preflight_for_allowed_origin_lists_methods_and_headers() -> None:
    app = create_app("me", "functions/me/main.py").test_client()
    resp = app.options(
        "/v1/me", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"}
    )
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {
        "GET",
        "PATCH",
        "OPTIONS",
    }
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]


def test_preflight_from_other_origin_gets_no_grant() -> None:
    app = create_app("me", "functions/me/main.py").test_client()
    resp = app.options(
        "/v1/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"},
    )
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Methods" not in resp.headers


def test_cors_origins_come_from_config(monkeypatch) -> None:
    monkeypatch.setenv("YACHAY_CORS_ORIGINS", "https://app.yachay.dev")
    app = create_app("healthz", "functions/healthz/main.py").test_client()
    assert (
        app.get("/v1/healthz", headers={"Origin": "https://app.yachay.dev"}).headers[
            "Access-Control-Allow-Origin"
        ]
        == "https://app.yachay.dev"
    )
    assert (
        "Access-Control-Allow-Origin"
        not in app.get("/v1/healthz", headers={"Origin": ORIGIN}).headers
    )


def test_unexpected_exception_is_a_json_500_without_internals(capsys) -> None:
    def boom(req: ApiRequest) -> Reply:
        raise KeyError("secret internal detail")

    resp = call(serve("healthz", {"getHealth": boom, "getOpenApi": boom}), "GET", "/v1/healthz")
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["error"]["code"] == "internal_error"
    assert "secret internal detail" not in json.dumps(body)
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    error = next(e for e in logged if e["severity"] == "ERROR")
    assert "secret internal detail" in error["stack_trace"]
    assert error["request_id"] == body["error"]["request_id"]


def test_a_contended_write_is_a_retryable_503_not_a_404() -> None:
    from shared.errors import Contended

    def contended(req: ApiRequest) -> Reply:
        raise Contended("job")

    resp = call(
        serve("healthz", {"getHealth": contended, "getOpenApi": contended}), "GET", "/v1/healthz"
    )
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "1"
    body = resp.get_json()["error"]
    assert body["code"] == "service_unavailable" and "Retry" in body["message"]


def test_api_error_is_mapped_with_its_status_and_param() -> None:
    def refuse(req: ApiRequest) -> Reply:
        raise ApiError(Code.INVALID_VALUE, "no", param="x")

    resp = call(serve("healthz", {"getHealth": refuse, "getOpenApi": refuse}), "GET", "/v1/healthz")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["param"] == "x"


def test_serve_refuses_handlers_that_do_not_match_the_route_table() -> None:
    with pytest.raises(RuntimeError, match="handlers"):
        serve("me", {"getMe": lambda r: Reply({})})


@pytest.fixture
def echo_me(monkeypatch):
    """The `me` function's edge with auth stubbed and a handler that echoes the parsed body."""
    monkeypatch.setattr(http, "authenticate", lambda header, cfg: Principal("u1", None, False))

    def echo(req: ApiRequest) -> Reply:
        return Reply(req.body)

    return serve("me", {"getMe": echo, "updateMe": echo})


@pytest.mark.parametrize(
    ("data", "content_type", "code"),
    [
        ("", "application/json", "invalid_json"),
        ("{not json", "application/json", "invalid_json"),
        ("[1, 2]", "application/json", "invalid_body"),
        ('"text"', "application/json", "invalid_body"),
        ('{"a": 1}', "text/plain", "unsupported_media_type"),
        ('{"a": 1}', "application/x-www-form-urlencoded", "unsupported_media_type"),
        (b'{"a": "\xff"}', "application/json", "invalid_json"),
        ('{"a": "' + "x" * (1 << 20) + '"}', "application/json", "payload_too_large"),
    ],
)
def test_bad_bodies(echo_me, data, content_type: str, code: str) -> None:
    resp = call(echo_me, "PATCH", "/v1/me", data=data, content_type=content_type)
    assert resp.get_json()["error"]["code"] == code
    assert resp.status_code == Code[code.upper()].status


def test_good_body_reaches_the_handler(echo_me) -> None:
    body = {"notifications": {"job_failed": False}, "monthly_spend_limit_cents": 100}
    resp = call(echo_me, "PATCH", "/v1/me", json=body)
    assert resp.status_code == 200 and resp.get_json() == body


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"a": 1}, "unknown_field", "a"),
        ({}, "missing_field", "notifications"),
        ({"monthly_spend_limit_cents": "5"}, "invalid_value", "monthly_spend_limit_cents"),
    ],
)
def test_a_body_that_does_not_fit_its_schema_never_reaches_the_handler(
    echo_me, body: dict, code: str, param: str
) -> None:
    resp = call(echo_me, "PATCH", "/v1/me", json=body)
    assert resp.status_code == 400
    assert (resp.get_json()["error"]["code"], resp.get_json()["error"]["param"]) == (code, param)


def test_a_deprecated_route_answers_with_a_sunset_header(monkeypatch) -> None:
    from dataclasses import replace

    from shared import routes

    table = tuple(
        replace(r, sunset="2027-06-30") if r.operation_id == "getHealth" else r
        for r in routes.ROUTES
    )
    monkeypatch.setattr(routes, "ROUTES", table)
    monkeypatch.setattr(http, "routes_of", lambda f: tuple(r for r in table if r.function == f))
    view = serve("healthz", {"getHealth": lambda r: Reply({}), "getOpenApi": lambda r: Reply({})})
    resp = call(view, "GET", "/v1/healthz")
    assert resp.headers["Sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert resp.headers["Deprecation"] == "true"
    assert "Sunset" not in call(view, "GET", "/v1/openapi.json").headers
    from shared.openapi import public_spec

    spec = public_spec()
    assert spec["paths"]["/v1/healthz"]["get"]["deprecated"] is True
    assert "deprecated" not in spec["paths"]["/v1/models"]["get"]
