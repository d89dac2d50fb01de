"""Stripe as tests see it: webhook events signed as Stripe signs them (with the local stack's
webhook secret), saving a card through the local Checkout stand-in, and what localstripe holds."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import requests

from devstack.stack import STRIPE_WEBHOOK_SECRET


def signed(payload: bytes, secret: str = STRIPE_WEBHOOK_SECRET, at: int | None = None) -> str:
    ts = int(time.time()) if at is None else at
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={sig}"


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": f"evt_{time.time_ns()}", "object": "event", "type": kind, "data": {"object": obj}}
    ).encode()


def save_card(api: Any, user: Any, card: str = "visa") -> dict[str, Any]:
    """Saves a test card through the local Checkout stand-in (a real SetupIntent on localstripe,
    then its real signed webhook); returns GET /v1/me once the card is recorded."""
    from devstack.local_checkout import TEST_CARDS

    last4 = TEST_CARDS[card][0][-4:]
    session = api.request("POST", "/v1/jobs/setup-card", user)
    assert session.status_code == 201, session.text
    page = requests.post(session.json()["url"], data={"card": card}, timeout=30)
    assert page.status_code == 200, page.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        me: dict[str, Any] = api.request("GET", "/v1/me", user).json()
        if (me.get("payment_method") or {}).get("last4") == last4:
            return me
        time.sleep(0.2)
    raise AssertionError("the card was never recorded")


def localstripe(stack: Any, method: str, path: str) -> Any:
    resp = requests.request(
        method,
        f"http://{stack.host('stripe')}{path}",
        timeout=10,
        headers={"Authorization": f"Bearer {stack.env()['YACHAY_STRIPE_SECRET_KEY']}"},
    )
    resp.raise_for_status()
    return resp.json()


def stripe_customers(stack: Any, uid: str) -> list[dict[str, Any]]:
    customers = localstripe(stack, "GET", "/v1/customers?limit=100")["data"]
    return [c for c in customers if (c.get("metadata") or {}).get("uid") == uid]


def payment_intents(stack: Any, charge_id: str) -> list[dict[str, Any]]:
    """The PaymentIntents made for one charge (a job's holds and charges carry its id)."""
    intents = localstripe(stack, "GET", "/v1/payment_intents?limit=100")["data"]
    return [p for p in intents if (p.get("metadata") or {}).get("charge_id") == charge_id]
