from functions_framework import create_app

from devstack.stack import free_port


def test_liveness_and_readiness_over_http(api) -> None:
    live = api.request("GET", "/v1/healthz")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    ready = api.request("GET", "/v1/healthz?ready=true")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"firestore": "ok"}


def test_readiness_is_503_when_firestore_does_not_answer(stack_env, monkeypatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    client = create_app("healthz", "functions/healthz/main.py").test_client()
    assert client.get("/v1/healthz").status_code == 200  # liveness does not touch Firestore
    resp = client.get("/v1/healthz?ready=true")
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "not_ready"


def test_unknown_paths_are_json_404_at_the_gateway(api) -> None:
    for path in ("/", "/v1", "/v2/models", "/v1/models/extra"):
        resp = api.request("GET", path)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "not_found"
