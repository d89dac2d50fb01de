"""OpenAPI documents generated from the route table.

`gateway_config()` is the API Gateway config (OpenAPI 2.0) as a Terraform template: Terraform's
`templatefile()` fills `${project_id}` and one `${backend_<function>}` URL per function. It is
committed at GATEWAY_TEMPLATE and a test fails when it is stale; regenerate with `make openapi`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared import routes
from shared.config import VERSION

GATEWAY_TEMPLATE = Path(__file__).resolve().parent.parent / "terraform" / "openapi.json.tftpl"
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


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        GATEWAY_TEMPLATE.write_text(render_gateway_config())
        print(f"wrote {GATEWAY_TEMPLATE}")
    else:
        sys.stdout.write(render_gateway_config())
