"""The local API gateway: one process serving /v1/... the way API Gateway does in production.

It loads every function named in the route table from `functions/<name>/main.py` (the very
objects that deploy as separate functions) and hands each request to the function that owns its
path; that function then checks the method, authenticates and answers, as it does in production.
Local-only: never deployed.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

import flask
from werkzeug.serving import make_server

from shared import routes
from shared.http import View, not_found_response

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"


def load_function(name: str) -> View:
    """Imports functions/<name>/main.py under a unique module name and returns its entry point."""
    path = FUNCTIONS_DIR / name / "main.py"
    spec = importlib.util.spec_from_file_location(f"yachay_functions.{name}.main", path)
    assert spec is not None and spec.loader is not None, path
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def create_app() -> flask.Flask:
    views = {name: load_function(name) for name in routes.functions()}
    app = flask.Flask("yachay-local-gateway")

    @app.route(
        "/",
        defaults={"path": ""},
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"],
    )
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
    def dispatch(path: str) -> flask.Response:
        for route in routes.ROUTES:
            if route.match(flask.request.path) is not None:
                return views[route.function](flask.request)
        return not_found_response(flask.request)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Yachay local API gateway")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, create_app(), threaded=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
