"""Cold starts: no function imports an SDK it does not use, and none imports one at load time.

Each function is loaded in a fresh interpreter, as functions-framework loads it, then answers one
real request against the emulators; we list the SDKs in sys.modules before and after.
"""

import json
import subprocess
import sys

import pytest

SDKS = (
    "google.cloud.firestore",
    "google.cloud.storage",
    "google.cloud.tasks_v2",
    "google.cloud.batch_v1",
    "google.cloud.pubsub_v1",
    "firebase_admin",
    "stripe",
)

PROBE = """
import json, sys
from functions_framework import create_app
SDKS = {sdks!r}
loaded = lambda: sorted(m for m in SDKS if m in sys.modules)
client = create_app({target!r}, "functions/{target}/main.py").test_client()
at_load = loaded()
resp = client.get({path!r}, headers={{"Authorization": "Bearer {token}"}})
print(json.dumps({{"status": resp.status_code, "at_load": at_load, "after": loaded()}}))
"""


@pytest.mark.parametrize(
    ("target", "path", "needs"),
    [
        ("healthz", "/v1/healthz", []),
        ("models", "/v1/models", ["firebase_admin", "google.cloud.storage"]),
        ("me", "/v1/me", ["firebase_admin", "google.cloud.firestore"]),
        ("datasets", "/v1/datasets", ["firebase_admin", "google.cloud.firestore"]),
        ("jobs", "/v1/jobs", ["firebase_admin", "google.cloud.firestore"]),
        ("billing", "/v1/billing/summary", ["firebase_admin", "google.cloud.firestore"]),
        ("api_keys", "/v1/api-keys", ["firebase_admin", "google.cloud.firestore"]),
        ("webhooks", "/v1/webhook-endpoints", ["firebase_admin", "google.cloud.firestore"]),
    ],
)
def test_function_loads_only_the_sdks_it_uses(api, target: str, path: str, needs: list) -> None:
    user = api.new_user()
    code = PROBE.format(sdks=SDKS, target=target, path=path, token=user.token)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == 200
    assert result["at_load"] == [], "SDKs must be imported lazily, on first use"
    assert result["after"] == sorted(needs)
