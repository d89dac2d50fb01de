"""Stripe webhook events as Stripe signs them (with the local stack's webhook secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from devstack.stack import STRIPE_WEBHOOK_SECRET


def signed(payload: bytes, secret: str = STRIPE_WEBHOOK_SECRET, at: int | None = None) -> str:
    ts = int(time.time()) if at is None else at
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={sig}"


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": f"evt_{time.time_ns()}", "object": "event", "type": kind, "data": {"object": obj}}
    ).encode()
