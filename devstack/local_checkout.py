"""LOCAL-ONLY stand-ins for Stripe Checkout (setup mode) and the Stripe billing portal.

localstripe implements neither. shared.payments sends users here when YACHAY_CHECKOUT_BACKEND is
"local" (which shared.config refuses in production). The page confirms the SetupIntent that
shared.payments made, with a Stripe test card, against localstripe; localstripe then sends the
signed `setup_intent.succeeded` webhook real Stripe sends after Checkout: localstripe confirms
SetupIntents but emits no event for them, so this page signs and sends that event itself, with
the webhook secret, exactly as Stripe would.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import time
import uuid
from typing import Any

import flask
import requests
from werkzeug.wrappers import Response as WerkzeugResponse

TEST_CARDS = {
    "visa": ("4242424242424242", "Visa 4242: charges succeed"),
    "declining": ("4000000000000341", "Visa 0341: saves, then every charge is declined"),
}


def _stripe(method: str, path: str, **data: str) -> dict[str, Any]:
    base = os.environ["YACHAY_STRIPE_API_BASE"]
    key = os.environ["YACHAY_STRIPE_SECRET_KEY"]
    resp = requests.request(
        method, f"{base}{path}", data=data, timeout=10, headers={"Authorization": f"Bearer {key}"}
    )
    resp.raise_for_status()
    answer: dict[str, Any] = resp.json()
    return answer


def _send_event(kind: str, obj: dict[str, Any]) -> None:
    """Delivers a Stripe-signed event to our webhook receiver, as Stripe does."""
    payload = json.dumps(
        {
            "id": f"evt_local_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()
    secret = os.environ["YACHAY_STRIPE_WEBHOOK_SECRETS"].split(",")[0]
    ts = int(time.time())
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    resp = requests.post(
        f"{os.environ['YACHAY_API_BASE_URL']}/v1/stripe/webhook",
        data=payload,
        timeout=30,
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={ts},v1={sig}"},
    )
    resp.raise_for_status()


def register(app: flask.Flask) -> None:
    @app.get("/local/checkout/<intent_id>")
    def checkout_page(intent_id: str) -> str:
        options = "".join(
            f'<label><input type="radio" name="card" value="{key}"{" checked" * (key == "visa")}>'
            f" {html.escape(label)}</label><br>"
            for key, (_, label) in TEST_CARDS.items()
        )
        return (
            "<!doctype html><title>Save a card (local stand-in)</title>"
            "<h1>Save a card</h1><p><b>Local-only stand-in for Stripe Checkout.</b> "
            "No real card is involved.</p>"
            f'<form method="post">{options}<button type="submit">Save card</button></form>'
        )

    @app.post("/local/checkout/<intent_id>")
    def checkout_confirm(intent_id: str) -> tuple[str, int] | WerkzeugResponse:
        card = flask.request.form.get("card", "visa")
        if card not in TEST_CARDS:
            return "unknown test card", 400
        number = TEST_CARDS[card][0]
        pm = _stripe(
            "POST",
            "/v1/payment_methods",
            type="card",
            **{
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        intent = _stripe("POST", f"/v1/setup_intents/{intent_id}/confirm", payment_method=pm["id"])
        if intent.get("status") != "succeeded":
            return f"the card was not saved: {intent.get('status')}", 402
        _send_event("setup_intent.succeeded", intent)
        success = os.environ.get("YACHAY_CHECKOUT_SUCCESS_URL")
        if success and flask.request.args.get("redirect") == "1":
            return flask.redirect(success)
        return f"Card saved (test card {number[-4:]}). You can close this page.", 200

    @app.get("/local/portal/<customer_id>")
    def portal(customer_id: str) -> str:
        customer = _stripe("GET", f"/v1/customers/{customer_id}")
        return (
            "<!doctype html><title>Billing (local stand-in)</title><h1>Billing</h1>"
            "<p><b>Local-only stand-in for the Stripe billing portal.</b></p>"
            f"<p>Customer {html.escape(customer['id'])}</p>"
        )
