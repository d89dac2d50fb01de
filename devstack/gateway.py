"""The local API gateway: one process serving /v1/... the way API Gateway does in production.

It loads every function named in the route table from `functions/<name>/main.py` (the very
objects that deploy as separate functions) and hands each request to the function that owns its
path; that function then checks the method, authenticates and answers, as it does in production.
Local-only: never deployed.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
from cloudevents.http import CloudEvent
from werkzeug.serving import WSGIRequestHandler, make_server

from devstack import local_checkout
from devstack.firestore_relay import FirestoreRelay
from shared import routes
from shared.http import View, not_found_response

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"


def load_function(name: str) -> Callable[..., Any]:
    """Imports functions/<name>/main.py under a unique module name and returns its entry point:
    a View for an HTTP function, a CloudEvent handler for an event function."""
    path = FUNCTIONS_DIR / name / "main.py"
    spec = importlib.util.spec_from_file_location(f"yachay_functions.{name}.main", path)
    assert spec is not None and spec.loader is not None, path
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry: Callable[..., Any] = getattr(module, name)
    return entry


def pubsub_event(envelope: dict[str, Any]) -> CloudEvent:
    """A Pub/Sub push body as the CloudEvent Eventarc delivers for a Pub/Sub trigger."""
    subscription = envelope.get("subscription", "")
    project = subscription.split("/")[1] if subscription.count("/") >= 3 else "local"
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/projects/{project}/topics/unknown",
        },
        {"message": envelope.get("message", {}), "subscription": subscription},
    )


def storage_event(envelope: dict[str, Any]) -> CloudEvent:
    """A Storage notification (from the Storage emulator through Pub/Sub) as the CloudEvent
    Eventarc delivers for a Storage trigger: the object's metadata as the data."""
    message = envelope.get("message", {})
    obj = json.loads(base64.b64decode(message.get("data", "")) or b"{}")
    return CloudEvent(
        {
            "type": "google.cloud.storage.object.v1.finalized",
            "source": f"//storage.googleapis.com/projects/_/buckets/{obj.get('bucket')}",
            "subject": f"objects/{obj.get('name')}",
        },
        obj,
    )


# How a Pub/Sub push body becomes the CloudEvent Eventarc delivers, by trigger kind.
CONVERTERS = {"pubsub": pubsub_event, "storage": storage_event}
# Pub/Sub push subscriptions (made by the local stack) that stand in for Eventarc triggers:
# path -> (the CloudEvent function, how the push body becomes its event).
PUSH_ENDPOINTS = {
    t.local_push_path: (t.function, CONVERTERS[t.kind])
    for t in routes.TRIGGERS
    if t.local_push_path is not None
}


def create_app() -> flask.Flask:
    views: dict[str, View] = {name: load_function(name) for name in routes.functions()}
    events = {
        path: (load_function(name), convert) for path, (name, convert) in PUSH_ENDPOINTS.items()
    }
    app = flask.Flask("yachay-local-gateway")
    local_checkout.register(app)

    @app.post("/internal/pubsub/<name>")
    def push(name: str) -> tuple[str, int]:
        if flask.request.path not in events:
            return "", 404
        handler, convert = events[flask.request.path]
        handler(convert(flask.request.get_json(force=True)))
        return "", 204  # an exception answers 500 instead, and Pub/Sub redelivers

    @app.route(
        "/",
        defaults={"path": ""},
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"],
    )
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
    def dispatch(path: str) -> flask.Response:
        path = flask.request.path
        route = routes.resolve(flask.request.method, path).route
        if route is None:  # wrong method or a preflight: the function owning the path answers
            route = next((r for r in routes.ROUTES if r.match(path) is not None), None)
        if route is None:
            return not_found_response(flask.request)
        return views[route.function](flask.request)

    # What Flask's own routing refuses before `dispatch` (a path with a newline, a method such
    # as TRACE) answers our JSON error too, as API Gateway answers JSON, never an HTML page.
    @app.errorhandler(404)
    @app.errorhandler(405)
    def unrouted(exc: Exception) -> flask.Response:
        return not_found_response(flask.request)

    return app


def _sweep_forever(every_s: float) -> None:
    """Stand-ins for Cloud Scheduler (the sweep, shared.sweep) and for the Storage lifecycle
    rule (expired files), calling the same core functions."""
    from shared import artifacts, logs, store, sweep
    from shared.config import settings

    def expired(cfg: Any, now: Any) -> Any:
        return store.Found(artifacts.sweep_expired(cfg, now), [])

    while True:
        time.sleep(every_s)
        report = sweep.run(settings(), steps={"expired_files": expired, **sweep.STEPS})
        if any(report.values()):
            logs.info("swept", **report)


class _QuietHandler(WSGIRequestHandler):
    """Our functions log every request as JSON already; skip werkzeug's access lines."""

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description="Yachay local API gateway")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Stand-ins: the Eventarc Firestore triggers (a relay per trigger, on the collection its
    # document pattern names), and the Storage lifecycle rule that deletes expired job files.
    for trigger in routes.TRIGGERS:
        if trigger.kind == "firestore":
            collection = trigger.source.split("/", 1)[0]
            FirestoreRelay(collection, load_function(trigger.function), trigger.event_type).start()
    # YACHAY_LOCAL_SWEEP_S=0 turns the scheduler stand-in off (the test stack: each test runs
    # the sweep it checks, so no background sweep races a test's records).
    every_s = float(os.environ.get("YACHAY_LOCAL_SWEEP_S", "30"))
    if every_s > 0:
        threading.Thread(target=_sweep_forever, args=(every_s,), daemon=True).start()
    server = make_server(
        "127.0.0.1", args.port, create_app(), threaded=True, request_handler=_QuietHandler
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
