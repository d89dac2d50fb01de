import json
from pathlib import Path

from shared import openapi, routes
from shared.routes import Route, resolve

ROOT = Path(__file__).resolve().parents[2]


def test_resolve_extracts_path_parameters() -> None:
    table = (
        Route("GET", "/v1/jobs/{job_id}", "jobs", "getJob", "x"),
        Route("POST", "/v1/jobs/{job_id}/cancel", "jobs", "cancelJob", "x"),
    )
    res = resolve("GET", "/v1/jobs/abc_123", table)
    assert res.route is table[0] and res.params == {"job_id": "abc_123"}
    assert resolve("POST", "/v1/jobs/abc/cancel", table).params == {"job_id": "abc"}


def test_resolve_distinguishes_unknown_path_from_wrong_method() -> None:
    unknown = resolve("GET", "/v1/nope")
    assert unknown.route is None and unknown.allowed_methods == ()
    wrong = resolve("DELETE", "/v1/me")
    assert wrong.route is None and set(wrong.allowed_methods) == {"GET", "PATCH"}


def test_path_parameters_refuse_slashes_dots_and_overlong_values() -> None:
    route = Route("GET", "/v1/jobs/{job_id}", "jobs", "getJob", "x")
    assert route.match("/v1/jobs/a/b") is None
    assert route.match("/v1/jobs/..") is None
    assert route.match("/v1/jobs/" + "a" * 129) is None


def test_no_backend_path_ends_in_z() -> None:
    """Cloud Run reserves paths ending in "z" on its URLs; what reaches a function must not."""
    for r in routes.ROUTES:
        reaches = r.backend_path or r.path
        assert not reaches.rstrip("/").endswith("z"), r


def test_operation_ids_are_unique_and_method_path_pairs_unique() -> None:
    ids = [r.operation_id for r in routes.ROUTES]
    assert len(ids) == len(set(ids))
    pairs = [(r.method, r.path) for r in routes.ROUTES]
    assert len(pairs) == len(set(pairs))


def test_every_function_has_its_file_and_entry_point() -> None:
    from devstack.gateway import load_function

    for name in routes.functions():
        assert callable(load_function(name)), name
        assert load_function(name).__name__ == name


def test_gateway_config_in_repo_is_current() -> None:
    committed = openapi.GATEWAY_TEMPLATE.read_text()
    assert committed == openapi.render_gateway_config(), "stale: run `make openapi`"


def test_gateway_config_secures_exactly_the_session_only_routes() -> None:
    doc = json.loads(openapi.render_gateway_config())
    for r in routes.ROUTES:
        if r.internal:
            assert r.path not in doc["paths"], "internal routes must not be on the gateway"
            continue
        op = doc["paths"][r.path][r.method.lower()]
        assert op["operationId"] == r.operation_id
        # the gateway checks Firebase tokens only where no API key may call (README: API keys)
        assert (op.get("security") == [{"firebase": []}]) == (r.auth and r.key_scopes is None)
        backend = op["x-google-backend"]
        if r.backend_path:
            assert backend["address"] == "${backend_" + r.function + "}" + r.backend_path
            assert backend["path_translation"] == "CONSTANT_ADDRESS"
        else:
            assert backend["address"] == "${backend_" + r.function + "}"
            assert backend["path_translation"] == "APPEND_PATH_TO_ADDRESS"
    for path, item in doc["paths"].items():
        assert "security" not in item["options"], f"preflight on {path} must be unauthenticated"
    firebase = doc["securityDefinitions"]["firebase"]
    assert firebase["x-google-issuer"] == "https://securetoken.google.com/${project_id}"
    assert firebase["x-google-audiences"] == "${project_id}"


def test_every_function_is_reached_one_way_and_the_gateway_delivers_every_trigger() -> None:
    from devstack import gateway, stack

    names = routes.all_functions()
    assert len(names) == len(set(names)), "a function is both HTTP and an event function"
    assert {routes.kind_of(n) for n in names} <= {
        "public",
        "tasks",
        "firestore",
        "pubsub",
        "storage",
        "auth",
    }
    pushed = {t.function for t in routes.TRIGGERS if t.kind in ("pubsub", "storage")}
    assert {f for f, _ in gateway.PUSH_ENDPOINTS.values()} == pushed
    assert {p for _, p in stack.push_subscriptions()} == set(gateway.PUSH_ENDPOINTS)
    from shared.config import LAUNCH_PATH, load

    assert (
        load({}).task_target_url.endswith(LAUNCH_PATH)
        and routes.path_of("launchJob") == LAUNCH_PATH
    )
