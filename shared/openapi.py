"""Documents generated from the route table (shared.routes) and the schemas (shared.schemas).

- `public_spec()`: the API's OpenAPI 3.1 document, served at GET /v1/openapi.json and committed
  as docs/openapi.json for people who read it in the repository.
- `gateway_config()`: the API Gateway config (OpenAPI 2.0) as a Terraform template: Terraform's
  `templatefile()` fills `${project_id}` and one `${backend_<function>}` URL per function.
- `function_table()`: every function Terraform deploys, how it is reached (its trigger's event
  type and source), its service account, memory and secrets, and the internal paths Cloud Tasks
  and Cloud Scheduler call.

All three are committed (PUBLIC_SPEC, GATEWAY_TEMPLATE, FUNCTION_TABLE) and a test fails when
one is stale; regenerate with `make openapi`. docs/openapi-released.json is the last released
spec: the compatibility gate (shared.compat) compares the generated one with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared import documents, routes
from shared.config import VERSION
from shared.errors import Code

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
GATEWAY_TEMPLATE = TERRAFORM / "openapi.json.tftpl"
FUNCTION_TABLE = TERRAFORM / "functions.json"
PUBLIC_SPEC = ROOT / "docs" / "openapi.json"
CLI_HYPERPARAMETERS = ROOT / "cli" / "yachay_cli" / "hyperparameters.json"  # the CLI's options
RELEASED_SPEC = ROOT / "docs" / "openapi-released.json"
BACKEND_DEADLINE_S = 60.0
API_VERSION = "1.1.0"  # of the public contract, not of the code (config.VERSION)

# Errors any route of a kind can give, whatever the operation (shared.http, shared.auth).
_ALWAYS = (Code.INTERNAL, Code.SERVICE_UNAVAILABLE)
_AUTH = (
    Code.AUTH_MISSING,
    Code.AUTH_NOT_BEARER,
    Code.AUTH_MALFORMED,
    Code.AUTH_EXPIRED,
    Code.AUTH_REVOKED,
    Code.AUTH_WRONG_AUDIENCE,
    Code.AUTH_UNSIGNED_TOKEN,
    Code.AUTH_USER_DISABLED,
    Code.AUTH_INVALID,
    Code.AUTH_UNAVAILABLE,
    Code.API_KEY_REVOKED,
    Code.INSUFFICIENT_SCOPE,
    Code.SESSION_REQUIRED,
)
_BODY = (
    Code.INVALID_JSON,
    Code.INVALID_BODY,
    Code.UNKNOWN_FIELD,
    Code.MISSING_FIELD,
    Code.INVALID_VALUE,
    Code.PAYLOAD_TOO_LARGE,
    Code.UNSUPPORTED_MEDIA_TYPE,
)
_STATUS_TEXT = {
    400: "Bad request",
    401: "Not authenticated",
    402: "Payment needed",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict with the resource's state",
    410: "Gone",
    413: "Too large",
    415: "Unsupported media type",
    429: "Too many requests (see Retry-After)",
    500: "Our fault (quote the request id)",
    503: "Unavailable right now; retry (see Retry-After)",
}


def _codes(route: routes.Route) -> list[Code]:
    from shared.schemas import operation

    op = operation(route.operation_id)
    codes: list[Code] = [*_ALWAYS, *op.errors]
    if route.auth:
        codes += _AUTH
    if op.body is not None or op.raw_body is not None:
        codes += _BODY
    if op.query.params:
        codes.append(Code.INVALID_QUERY)
    if "{" in route.path:
        codes.append(Code.NOT_FOUND)
    if route.per_minute is not None:
        codes.append(Code.RATE_LIMITED)
    if op.idempotent_header:
        codes += (Code.MISSING_FIELD, Code.INVALID_VALUE, Code.IDEMPOTENCY_CONFLICT)
    return list(dict.fromkeys(codes))


def _operation(route: routes.Route, components: dict[str, Any]) -> dict[str, Any]:
    from shared.schemas import Error, operation

    op = operation(route.operation_id)
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": f"^{routes.ID_CHARS}$"},
        }
        for name in route.pattern.groupindex
    ]
    for name, schema in op.query.params.items():
        params.append(
            {"name": name, "in": "query", "required": False, "schema": schema.json(components)}
        )
    if op.idempotent_header:
        from shared.idempotency import HEADER, MAX_LENGTH

        params.append(
            {
                "name": HEADER,
                "in": "header",
                "required": op.idempotency_required,
                "description": "Any unique string (a UUID): a retry with the same key and body "
                "answers the first result and never does the work twice.",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH},
            }
        )
    out: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.function],
    }
    if params:
        out["parameters"] = params
    body = op.body or op.raw_body
    if body is not None:
        media: dict[str, Any] = {"schema": body.json(components)}
        if body.example is not None:
            media["example"] = body.example
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    responses: dict[str, Any] = {}
    if op.ok is None:
        responses[str(op.ok_status)] = {"description": "Done; no body."}
    else:
        responses[str(op.ok_status)] = {
            "description": "OK",
            "content": {"application/json": {"schema": op.ok.json(components)}},
        }
    if op.accepted is not None:
        responses["202"] = {
            "description": "Accepted: ask again after Retry-After seconds.",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": {"application/json": {"schema": op.accepted.json(components)}},
        }
    error_ref = Error.json(components)
    by_status: dict[int, list[str]] = {}
    for code in _codes(route):
        by_status.setdefault(code.status, []).append(code.value)
    for status in sorted(by_status):
        responses[str(status)] = {
            "description": f"{_STATUS_TEXT.get(status, 'Error')}: "
            + ", ".join(f"`{c}`" for c in by_status[status]),
            "content": {"application/json": {"schema": error_ref}},
        }
    out["responses"] = responses
    if route.sunset is not None:
        out["deprecated"] = True
        out["summary"] = f"{route.summary} Deprecated: goes on {route.sunset} (Sunset header)."
    if not route.auth:
        out["security"] = []
    elif route.key_scopes is None:
        out["security"] = [{"firebase": []}]
        out["description"] = "A signed-in session only (Firebase ID token); API keys get 403."
    else:
        out["security"] = [{"firebase": []}, {"apiKey": list(route.key_scopes)}]
        if route.key_scopes:
            out["description"] = f"API keys need the scope {' or '.join(route.key_scopes)}."
    return out


def public_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every public route."""
    from shared.routes import SCOPES

    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for path, path_routes in routes.paths().items():
        paths[path] = {r.method.lower(): _operation(r, components) for r in path_routes}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Yachay API",
            "version": API_VERSION,
            "summary": "Hosted LoRA fine-tuning: exact prices before anything runs.",
            "description": "Inside /v1 changes are additive only: new operations, new optional "
            "request fields, new response fields and new error codes. Clients must ignore "
            "response fields they do not know. A breaking change ships as /v2, with at least "
            "six months of overlap; a deprecated operation says `deprecated: true` and answers "
            "with a `Sunset` header.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "The API Gateway of a deployment."}],
        "security": [{"firebase": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "firebase": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Firebase ID token of a signed-in user (one hour).",
                },
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (yk_live_... or yk_test_...) from POST "
                    f"/v1/api-keys, holding some of the scopes: {', '.join(SCOPES)}.",
                },
            },
        },
    }


def render_public_spec() -> str:
    return json.dumps(public_spec(), indent=2, ensure_ascii=False) + "\n"


def backend_variable(function: str) -> str:
    return f"backend_{function}"


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "type": "string"}
        for name in routes.Route("GET", path, "", "", "").pattern.groupindex
    ]


def gateway_config() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, path_routes in routes.paths().items():
        item: dict[str, Any] = {}
        params = _path_parameters(path)
        for r in path_routes:
            op: dict[str, Any] = {
                "operationId": r.operation_id,
                "summary": r.summary,
                "x-google-backend": _backend(r.function, r.backend_path),
                "responses": {"default": {"description": "JSON; errors as {error: {...}}"}},
            }
            if params:
                op["parameters"] = params
            # API Gateway checks Firebase ID tokens itself, and refuses any other bearer: it
            # checks them only on routes no API key may call. Routes open to keys get no gateway
            # check; their function verifies both kinds of token (shared.auth), as it always did.
            if r.auth and r.key_scopes is None:
                op["security"] = [{"firebase": []}]
            item[r.method.lower()] = op
        # Browsers send CORS preflights without credentials: route them, unauthenticated, to the
        # function, which grants CORS only to allow-listed origins.
        first = path_routes[0]
        item["options"] = {
            "operationId": f"preflight{first.operation_id[0].upper()}{first.operation_id[1:]}",
            "summary": "CORS preflight",
            "x-google-backend": _backend(first.function, first.backend_path),
            "responses": {"204": {"description": "CORS preflight answer"}},
            **({"parameters": params} if params else {}),
        }
        paths[path] = item
    return {
        "swagger": "2.0",
        "info": {"title": "Yachay API", "version": VERSION},
        "schemes": ["https"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "firebase": {
                "authorizationUrl": "",
                "flow": "implicit",
                "type": "oauth2",
                "x-google-issuer": "https://securetoken.google.com/${project_id}",
                "x-google-jwks_uri": "https://www.googleapis.com/service_accounts/v1/metadata/"
                "x509/securetoken@system.gserviceaccount.com",
                "x-google-audiences": "${project_id}",
            }
        },
        "paths": paths,
    }


def _backend(function: str, backend_path: str | None = None) -> dict[str, Any]:
    address = "${" + backend_variable(function) + "}"
    if backend_path is not None:  # a fixed path on the function (see Route.backend_path)
        return {
            "address": address + backend_path,
            "path_translation": "CONSTANT_ADDRESS",
            "deadline": BACKEND_DEADLINE_S,
        }
    return {
        "address": address,
        "path_translation": "APPEND_PATH_TO_ADDRESS",
        "deadline": BACKEND_DEADLINE_S,
    }


def render_gateway_config() -> str:
    return json.dumps(gateway_config(), indent=2) + "\n"


def function_table() -> dict[str, Any]:
    """What terraform/functions.tf deploys, read there with jsondecode()."""
    from shared.config import load

    defaults = load({})
    table: dict[str, Any] = {}
    triggers = {t.function: t for t in routes.TRIGGERS}
    for name in routes.all_functions():
        deploy = routes.DEPLOYMENTS[name]
        trigger = triggers.get(name)
        kind = routes.kind_of(name)
        table[name] = {
            "kind": kind,
            "sa": deploy.service_account,
            "memory": deploy.memory,
            "timeout_s": deploy.timeout_s,
            "secrets": routes.secrets_of(name),
            "event_type": trigger.event_type if trigger else None,
            "document": trigger.source if trigger and kind == "firestore" else None,
            "topic": getattr(defaults, trigger.source) if trigger and kind == "pubsub" else None,
            # the bucket's key in terraform/storage.tf: "datasets_bucket" -> "datasets"
            "bucket": trigger.source.removesuffix("_bucket")
            if trigger and kind == "storage"
            else None,
        }
    return {
        "functions": table,
        "paths": {
            "launch_job": routes.path_of("launchJob"),
            "relaunch_stale": routes.path_of("relaunchStale"),
            "deliver_webhook": routes.path_of("deliverWebhook"),
            "count_tokens": routes.path_of("countTokens"),
            "trainer_report": routes.path_of("trainerReport"),
        },
        # Secret Manager secrets and the accounts that read them (routes.SECRETS)
        "secrets": {
            s.name: sorted({routes.DEPLOYMENTS[f].service_account for f in s.functions})
            for s in routes.SECRETS
        },
        # Firestore TTL policies, from the collections' one declaration (shared.documents)
        "firestore_ttl": documents.ttl_fields(),
    }


def render_function_table() -> str:
    return json.dumps(function_table(), indent=2) + "\n"


def render_cli_hyperparameters() -> str:
    """The hyperparameters' declarations as the CLI's options read them (the CLI is a package
    of its own, with no dependency on this project's code)."""
    from shared.contract import declared

    rows = [{"name": d.name, "kind": d.kind, "help": d.knob.help} for d in declared()]
    return json.dumps(rows, indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        GATEWAY_TEMPLATE.write_text(render_gateway_config())
        FUNCTION_TABLE.write_text(render_function_table())
        PUBLIC_SPEC.parent.mkdir(exist_ok=True)
        PUBLIC_SPEC.write_text(render_public_spec())
        CLI_HYPERPARAMETERS.write_text(render_cli_hyperparameters())
        print(
            f"wrote {GATEWAY_TEMPLATE}, {FUNCTION_TABLE}, {PUBLIC_SPEC} and {CLI_HYPERPARAMETERS}"
        )
    else:
        sys.stdout.write(render_gateway_config())
