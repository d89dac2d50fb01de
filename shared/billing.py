"""Billing: saving a card, Stripe webhooks (typed core).

Every Stripe event may arrive more than once and out of order; each handler is idempotent and
the event id is recorded once handled, so a replay is acknowledged without acting twice.
"""

from __future__ import annotations

from typing import Any

from shared import logs, payments, store
from shared.config import Settings


def setup_card(uid: str, email: str | None, cfg: Settings) -> dict[str, Any]:
    """A Checkout page (setup mode) where the user saves a card; the webhook records it."""
    user = store.get_or_create_user(uid, email)
    customer = user.stripe_customer_id
    if not customer:
        ours = payments.create_customer(cfg, uid, email)
        customer = store.set_user_field_once(uid, "stripe_customer_id", ours)
        if customer != ours:  # a concurrent call won: ours is an orphan, remove it
            payments.delete_customer(cfg, ours)
    url, expires = payments.setup_session(cfg, customer, uid)
    return {"object": "setup_session", "url": url, "expires_at": expires.isoformat()}


def handle_event(event: dict[str, Any], cfg: Settings) -> str:
    """Acts on one verified Stripe event; returns what it did."""
    event_id, kind = event["id"], event["type"]
    if store.event_seen(event_id):
        return "duplicate"
    obj = event["data"]["object"]
    if kind == "setup_intent.succeeded":
        outcome = _save_card(obj["id"], cfg)
    elif kind == "checkout.session.completed" and obj.get("mode") == "setup":
        outcome = _save_card(obj["setup_intent"], cfg)
    else:
        outcome = "ignored"
    store.mark_event(event_id, kind)
    logs.info("stripe event", event_id=event_id, type=kind, outcome=outcome)
    return outcome


def _save_card(setup_intent_id: str, cfg: Settings) -> str:
    card = payments.card_of_setup_intent(cfg, setup_intent_id)
    if card is None:
        return "no card on the setup intent"
    uid = store.user_by_customer(card["customer"])
    if uid is None:
        return "unknown customer"
    payments.make_default(cfg, card["customer"], card["id"])
    store.update_user(uid, {"payment_method": {k: card[k] for k in ("id", "brand", "last4")}})
    return f"saved {card['brand']} {card['last4']} for {uid}"
