"""Saving a card (typed core): the page where a user saves one, the billing portal, and the
card Stripe reports saved. Charging it is shared.billing's; Stripe is behind shared.checkout."""

from __future__ import annotations

from typing import Any

from shared import checkout, store
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.records import PaymentMethod
from shared.routes import valid_id


def setup_card(uid: str, email: str | None, cfg: Settings) -> dict[str, Any]:
    """A page (Checkout in setup mode) where the user saves a card; the webhook records it."""
    user = store.get_or_create_user(uid, email)
    customer = user.stripe_customer_id
    if not customer:
        ours = checkout.create_customer(cfg, uid, email)
        customer = store.set_stripe_customer_once(uid, ours)
        if customer != ours:  # a concurrent call won: ours is an orphan, remove it
            checkout.delete_customer(cfg, ours)
    url, expires = checkout.pages(cfg).setup_page(customer, uid)
    return {"object": "setup_session", "url": url, "expires_at": expires.isoformat()}


def open_portal(token: str | None, cfg: Settings) -> str:
    """GET /v1/billing/portal?token=...: the Stripe billing-portal page the link stands for,
    made now (the function answers a 303 to it).

    Raises:
        ApiError: invalid_link, link_expired; payment_method_required when the user has no
            billing account (erased since, say).
    """
    from shared import links

    if not token:
        raise ApiError(Code.MISSING_FIELD, "Follow the link GET /v1/me gives.", param="token")
    uid = links.verify(links.PORTAL_LINK, token, cfg)
    user = store.get_user(uid)
    if user is None or not user.stripe_customer_id:
        raise ApiError(
            Code.PAYMENT_METHOD_REQUIRED,
            "There is no billing account for this link any more: sign in and save a card.",
        )
    return checkout.pages(cfg).portal_page(user.stripe_customer_id)


def portal_session(uid: str, email: str | None, cfg: Settings) -> dict[str, Any]:
    """POST /v1/billing/portal-session: a Stripe billing-portal page for the user's customer.

    Raises:
        ApiError: payment_method_required (402) when the user never saved a card.
    """
    user = store.get_or_create_user(uid, email)
    if not user.stripe_customer_id:
        raise ApiError(
            Code.PAYMENT_METHOD_REQUIRED,
            "There is no billing account yet: save a card first (POST /v1/jobs/setup-card).",
        )
    url = checkout.pages(cfg).portal_page(user.stripe_customer_id)
    return {"object": "portal_session", "url": url}


def save_card(setup_intent_id: Any, cfg: Settings) -> tuple[str, str | None]:
    """Records the card a succeeded SetupIntent saved as its user's card (and the customer's
    default). Returns what it did and the user's uid, None when nothing was saved."""
    if not valid_id(setup_intent_id):
        return "no setup intent named", None
    card = checkout.card_of_setup_intent(cfg, setup_intent_id)
    if card is None:
        return "no card on the setup intent", None
    uid = store.user_by_customer(card["customer"])
    if uid is None:
        return "unknown customer", None
    checkout.make_default(cfg, card["customer"], card["id"])
    store.set_payment_method(uid, PaymentMethod(card["id"], card["brand"], card["last4"]))
    return f"saved {card['brand']} {card['last4']} for {uid}", uid
