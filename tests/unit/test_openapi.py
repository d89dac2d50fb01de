"""The public OpenAPI 3.1 document: valid, complete, current in the repository, served, and
never breaking the released one."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from functions_framework import create_app
from openapi_spec_validator import validate

from shared import openapi, routes, schemas
from shared.errors import Code
from tests.support.compat import breaking_changes


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return openapi.public_spec()


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on any error (openapi-spec-validator, the 3.1 schema)


def test_the_committed_copy_is_current() -> None:
    assert openapi.PUBLIC_SPEC.read_text() == openapi.render_public_spec(), (
        "docs/openapi.json is stale: run `make openapi`"
    )


def test_every_public_route_is_an_operation_with_its_statuses(spec: dict[str, Any]) -> None:
    seen = set()
    for r in routes.ROUTES:
        if r.internal:
            assert r.path not in spec["paths"]
            continue
        op = spec["paths"][r.path][r.method.lower()]
        seen.add(r.operation_id)
        assert op["operationId"] == r.operation_id and op["summary"] == r.summary
        statuses = set(op["responses"])
        assert str(schemas.operation(r.operation_id).ok_status) in statuses
        assert "500" in statuses
        if r.auth:
            assert {"401", "403"} <= statuses
            assert op["security"][0] == {"firebase": []}
        else:
            assert op["security"] == []
        if r.per_minute:
            assert "429" in statuses
        for p in op.get("parameters", []):
            assert p["in"] != "path" or p["required"] is True
    # no schema for an operation that does not exist
    assert set(schemas.OPERATIONS) <= seen


def test_every_public_route_declares_its_schemas() -> None:
    """An operation without a declaration would be documented as taking and answering nothing
    (schemas.operation's default): every public route must name its own."""
    public = {r.operation_id for r in routes.ROUTES if not r.internal}
    assert public - set(schemas.OPERATIONS) == set()


def test_api_key_scopes_are_in_the_spec(spec: dict[str, Any]) -> None:
    create_job = spec["paths"]["/v1/jobs"]["post"]
    assert {"apiKey": ["jobs:write"]} in create_job["security"]
    mint = spec["paths"]["/v1/api-keys"]["post"]
    assert mint["security"] == [{"firebase": []}]  # a key never mints keys


def test_error_statuses_name_their_codes(spec: dict[str, Any]) -> None:
    create_job = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert "`payment_declined`" in create_job["402"]["description"]
    assert "`too_many_active_jobs`" in create_job["429"]["description"]
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]["code"]["enum"]) == {c.value for c in Code}


def test_request_examples_fit_their_own_schemas(spec: dict[str, Any]) -> None:
    checked = 0
    for op_id, op in schemas.OPERATIONS.items():
        if op.body is not None and op.body.example is not None:
            assert schemas.checked_body(op.body, op.body.example) == op.body.example, op_id
            checked += 1
    assert checked >= 5


def test_the_spec_is_served_without_auth() -> None:
    client = create_app("healthz", "functions/healthz/main.py").test_client()
    resp = client.get("/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json() == json.loads(openapi.render_public_spec())


# --- the compatibility gate ------------------------------------------------------------------


def test_the_spec_breaks_nothing_of_the_released_one(spec: dict[str, Any]) -> None:
    released = json.loads(openapi.RELEASED_SPEC.read_text())
    problems = breaking_changes(released, spec)
    assert not problems, "breaking changes inside /v1:\n" + "\n".join(problems)


def _edit(spec: dict[str, Any], change: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    change(out)
    return out


def _components(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["schemas"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s["paths"]["/v1/jobs"].pop("get"), "GET /v1/jobs: the operation was removed"),
        (
            lambda s: _components(s)["Job"]["properties"].pop("quote"),
            "response field 'quote' was removed",
        ),
        (
            lambda s: _components(s)["JobRequest"]["required"].append("hyperparameters"),
            "the field 'hyperparameters' is now required",
        ),
        (
            lambda s: _components(s)["CreateApiKeyRequest"]["properties"]["scopes"]["items"][
                "enum"
            ].remove("billing:read"),
            "the enum value 'billing:read' was removed",
        ),
        (
            lambda s: _components(s)["ExtendStorageRequest"]["properties"]["days"].update(
                maximum=30
            ),
            "'maximum' narrowed from 365 to 30",
        ),
        (
            lambda s: _components(s)["UpdateAccountRequest"]["properties"][
                "monthly_spend_limit_cents"
            ].update(type="integer"),
            "the type narrowed from ['integer', 'null'] to ['integer']",
        ),
        (
            lambda s: _components(s)["Quote"]["properties"]["price_cents"].update(
                type=["integer", "null"]
            ),
            "the type widened",
        ),
        (
            lambda s: _components(s)["CreateDatasetRequest"]["properties"].pop("size_bytes"),
            "request field 'size_bytes' was removed",
        ),
    ],
)
def test_the_gate_names_each_kind_of_breaking_change(
    spec: dict[str, Any], change: Any, named: str
) -> None:
    problems = breaking_changes(spec, _edit(spec, change))
    assert any(named in p for p in problems), problems


def test_additive_changes_pass_the_gate(spec: dict[str, Any]) -> None:
    def add(s: dict[str, Any]) -> None:
        _components(s)["Job"]["properties"]["new_field"] = {"type": "string"}
        _components(s)["JobRequest"]["properties"]["suffix"] = {"type": "string"}
        s["paths"]["/v1/new"] = {"get": {"operationId": "newOp", "responses": {}}}
        s["paths"]["/v1/jobs"]["post"]["responses"]["418"] = {"description": "new error"}

    assert breaking_changes(spec, _edit(spec, add)) == []
