"""Deployment documents generated from the route table (shared.routes).

- `gateway_config()`: the API Gateway config (OpenAPI 2.0) as a Terraform template: Terraform's
  `templatefile()` fills `${project_id}` and one `${backend_<function>}` URL per function.
- `function_table()`: every function Terraform deploys, how it is reached (its trigger's event
  type and source), its service account, memory and secrets, and the internal paths Cloud Tasks
  and Cloud Scheduler call.

Both are committed (GATEWAY_TEMPLATE, FUNCTION_TABLE) and a test fails when either is stale;
regenerate with `make openapi`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared import routes
from shared.config import VERSION

TERRAFORM = Path(__file__).resolve().parent.parent / "terraform"
GATEWAY_TEMPLATE = TERRAFORM / "openapi.json.tftpl"
FUNCTION_TABLE = TERRAFORM / "functions.json"
BACKEND_DEADLINE_S = 60.0


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
            if r.auth:
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
            "stripe": deploy.stripe,
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
        },
    }


def render_function_table() -> str:
    return json.dumps(function_table(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        GATEWAY_TEMPLATE.write_text(render_gateway_config())
        FUNCTION_TABLE.write_text(render_function_table())
        print(f"wrote {GATEWAY_TEMPLATE} and {FUNCTION_TABLE}")
    else:
        sys.stdout.write(render_gateway_config())
