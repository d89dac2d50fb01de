"""Stripe adapter for saving a card: customers, the page where a card is saved, the billing
portal, and the saved card itself. Charging it is shared.payments'; both use that module's one
Stripe client, and only these two modules import `stripe`.

Stripe Checkout and the billing portal have no local server (localstripe has neither), so the
pages have two implementations behind `Pages`, chosen by YACHAY_CHECKOUT_BACKEND: Stripe's own,
and a LOCAL-ONLY stand-in that shared.config refuses in production.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared import payments
from shared.config import Settings

CHECKOUT_LIFETIME = timedelta(hours=24)  # the local stand-in's; Stripe says its own


class Pages(Protocol):
    def setup_page(self, customer_id: str, uid: str) -> tuple[str, datetime]:
        """A page where the user saves a card: (url, expires_at). Stripe then sends
        `setup_intent.succeeded` (and, for Checkout, `checkout.session.completed`)."""
        ...

    def portal_page(self, customer_id: str) -> str:
        """A billing-portal page for the customer (cards, receipts), made now."""
        ...


class StripePages:
    """Stripe Checkout in setup mode, and the Stripe billing portal."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg

    def setup_page(self, customer_id: str, uid: str) -> tuple[str, datetime]:
        cfg = self.cfg
        session = payments.client(cfg).v1.checkout.sessions.create(
            {
                "mode": "setup",
                "customer": customer_id,
                "currency": cfg.currency,
                "payment_method_types": ["card"],
                "success_url": cfg.checkout_success_url,
                "cancel_url": cfg.checkout_cancel_url,
                "metadata": {"uid": uid},
                "setup_intent_data": {"metadata": {"uid": uid}},
            }
        )
        return session.url, datetime.fromtimestamp(session.expires_at, UTC)

    def portal_page(self, customer_id: str) -> str:
        session = payments.client(self.cfg).v1.billing_portal.sessions.create(
            {"customer": customer_id, "return_url": self.cfg.checkout_success_url}
        )
        return str(session.url)


class LocalPages:
    """LOCAL-ONLY: makes a SetupIntent and sends the user to a page of the local stack
    (devstack/local_checkout.py) that confirms it with a test card; localstripe then sends the
    same `setup_intent.succeeded` webhook Stripe does. The portal is a local page too."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg

    def setup_page(self, customer_id: str, uid: str) -> tuple[str, datetime]:
        intent = payments.client(self.cfg).v1.setup_intents.create(
            {"customer": customer_id, "payment_method_types": ["card"], "metadata": {"uid": uid}}
        )
        url = f"{self.cfg.api_base_url}/local/checkout/{intent.id}"
        return url, datetime.now(UTC) + CHECKOUT_LIFETIME

    def portal_page(self, customer_id: str) -> str:
        return f"{self.cfg.api_base_url}/local/portal/{customer_id}"


def pages(cfg: Settings) -> Pages:
    """The card-saving pages YACHAY_CHECKOUT_BACKEND names: "stripe" or "local"."""
    return StripePages(cfg) if cfg.checkout_backend == "stripe" else LocalPages(cfg)


def create_customer(cfg: Settings, uid: str, email: str | None) -> str:
    params: dict[str, Any] = {"metadata": {"uid": uid}}
    if email:
        params["email"] = email
    customer = payments.client(cfg).v1.customers.create(
        params, {"idempotency_key": f"customer-{uid}"}
    )
    return str(customer.id)


def delete_customer(cfg: Settings, customer_id: str) -> None:
    payments.client(cfg).v1.customers.delete(customer_id)


def card_of_setup_intent(cfg: Settings, setup_intent_id: str) -> dict[str, str] | None:
    """The customer and card a succeeded SetupIntent saved, or None when it has none (yet), or
    Stripe knows no such SetupIntent."""
    import stripe

    c = payments.client(cfg)
    try:
        intent = c.v1.setup_intents.retrieve(setup_intent_id)
    except stripe.InvalidRequestError:  # no such SetupIntent: nothing to save, ever
        return None
    pm_id = intent.payment_method
    if not pm_id or intent.status != "succeeded":
        return None
    pm_id = pm_id if isinstance(pm_id, str) else pm_id.id
    pm = c.v1.payment_methods.retrieve(pm_id)
    customer = intent.customer if isinstance(intent.customer, str) else intent.customer.id
    return {"customer": customer, "id": pm.id, "brand": pm.card.brand, "last4": pm.card.last4}


def make_default(cfg: Settings, customer_id: str, payment_method_id: str) -> None:
    payments.client(cfg).v1.customers.update(
        customer_id, {"invoice_settings": {"default_payment_method": payment_method_id}}
    )


def detach_card(cfg: Settings, payment_method_id: str) -> None:
    """Removes a saved card from its customer, so it can never be charged again; one already
    detached (or unknown to Stripe) is done already."""
    import stripe

    with contextlib.suppress(stripe.InvalidRequestError):
        payments.client(cfg).v1.payment_methods.detach(payment_method_id)
