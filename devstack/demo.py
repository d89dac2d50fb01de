"""`make demo`: the main flow end to end against the running local stack, as a user would.

Signs a user up in the Auth emulator, then calls the API through the local gateway exactly as the
dashboard or CLI does. Exits non-zero at the first answer that is not what it should be.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import requests

from devstack.emulators import sign_up
from devstack.seed_models import seed


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def call(method: str, path: str, token: str | None = None, expect: int = 200, **kw) -> dict:
    base = os.environ["YACHAY_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.request(method, base + path, headers=headers, timeout=60, **kw)
    body = resp.json() if resp.content else {}
    print(f"{method} {path} -> {resp.status_code}")
    if resp.status_code != expect:
        print(json.dumps(body, indent=2))
        raise SystemExit(f"demo failed: expected {expect} from {method} {path}")
    return body


def main(model_folders: list[str]) -> int:
    step("model store: our local models (converted once, uploaded once)")
    for folder in model_folders:
        done = seed(Path(folder))
        print(f"  {Path(folder).name}: {'uploaded' if done else 'already there'}")

    step("health")
    print(call("GET", "/v1/healthz?ready=true"))

    step("sign up a user in the Auth emulator")
    email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
    user = sign_up(email)
    token = user["idToken"]
    print(f"signed up {email} (uid {user['localId']})")

    step("the model catalog")
    models = call("GET", "/v1/models", token)
    for m in models["data"]:
        price = m["pricing"]["price_cents"]
        state = "available" if m["available"] else "not in the model store"
        print(f"  {m['id']:28s} {price:>4d} cents / 1M tokens   {state}")

    step("the account (created on first call)")
    print(json.dumps(call("GET", "/v1/me", token), indent=2))
    me = call("PATCH", "/v1/me", token, json={"notifications": {"job_cancelled": False}})
    assert me["notifications"]["job_cancelled"] is False

    step("bad input gets a clear error")
    err = call("GET", "/v1/me", "not-a-token", expect=401)["error"]
    print(f"  {err['code']}: {err['message']}")

    print("\ndemo finished: every call answered as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
