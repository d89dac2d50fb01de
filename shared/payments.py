"""Stripe adapter for charging: card holds, captures, off-session charges, what Stripe says of a
PaymentIntent, and the signatures of Stripe's webhooks; and the one Stripe client, which
shared.checkout (saving a card) uses too. Only these two modules import `stripe`.

Locally YACHAY_STRIPE_API_BASE points the official SDK at localstripe, which ignores
idempotency keys: charging once is guaranteed by our own Firestore guard (shared.billing), not
only by the idempotency key we still send.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings

_lock = threading.Lock()
_client: Any = None
_request_client: Any = None
WEBHOOK_TOLERANCE_S = 300
# On a request path (a user waits, behind a 60 s gateway deadline) a Stripe call gets one try of
# at most this long; elsewhere (tasks, triggers, the sweep) the SDK's 80 s and two retries.
REQUEST_PATH_TIMEOUT_S = 8.0
STRIPE_RETRY_AFTER_S = 10
_on_request_path: ContextVar[bool] = ContextVar("stripe_on_request_path", default=False)


@contextlib.contextmanager
def on_request_path() -> Iterator[None]:
    """Stripe calls made inside give up after REQUEST_PATH_TIMEOUT_S, without retries (the HTTP
    edge wraps every public request in it; `unavailable` tells the edge to answer 503)."""
    token = _on_request_path.set(True)
    try:
        yield
    finally:
        _on_request_path.reset(token)


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` is Stripe not answering (a timeout, a refused connection): the request may
    be retried as it is, with the same Idempotency-Key."""
    import stripe

    return isinstance(exc, stripe.APIConnectionError)


def client(cfg: Settings) -> Any:
    global _client, _request_client
    short = _on_request_path.get()
    with _lock:
        if (_request_client if short else _client) is None:
            import stripe

            if not cfg.stripe_secret_key:
                raise RuntimeError("YACHAY_STRIPE_SECRET_KEY is not set")
            kwargs: dict[str, Any] = {"max_network_retries": 0 if short else 2}
            if short:
                kwargs["http_client"] = stripe.RequestsClient(timeout=REQUEST_PATH_TIMEOUT_S)
            if cfg.stripe_api_base:
                kwargs["base_addresses"] = {"api": cfg.stripe_api_base}
            made = stripe.StripeClient(cfg.stripe_secret_key, **kwargs)
            if short:
                _request_client = made
            else:
                _client = made
        return _request_client if short else _client


def verify_webhook(cfg: Settings, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event, when `Stripe-Signature` is valid for one of our secrets and its time is within
    WEBHOOK_TOLERANCE_S of ours, in the past (Stripe's check) or in the future (ours: the SDK
    accepts any future time); raises ValueError otherwise."""
    import time

    import stripe

    if not signature or not cfg.stripe_webhook_secrets:
        raise ValueError("missing Stripe-Signature header")
    signed_at = [p[2:] for p in signature.split(",") if p.startswith("t=")]
    if not signed_at or not signed_at[0].isascii() or not signed_at[0].isdigit():
        raise ValueError("bad signature: no timestamp")
    if int(signed_at[0]) > time.time() + WEBHOOK_TOLERANCE_S:
        raise ValueError("bad signature: signed in the future")
    last: Exception | None = None
    for secret in cfg.stripe_webhook_secrets:
        try:
            event = stripe.Webhook.construct_event(
                payload, signature, secret, tolerance=WEBHOOK_TOLERANCE_S
            )
            return dict(event.to_dict())
        except stripe.SignatureVerificationError as exc:
            last = exc
        except (ValueError, RecursionError) as exc:  # not JSON, or nested too deeply
            raise ValueError(f"bad payload: {type(exc).__name__}") from None
    raise ValueError(f"bad signature: {last}")


def payment_intent(cfg: Settings, intent_id: str) -> dict[str, Any] | None:
    """What Stripe itself says of a PaymentIntent (never what an event claims), or None when
    Stripe knows no such PaymentIntent."""
    import stripe

    try:
        intent = client(cfg).v1.payment_intents.retrieve(intent_id)
    except stripe.InvalidRequestError:
        return None
    customer = intent.customer if isinstance(intent.customer, str | None) else intent.customer.id
    error = intent.last_payment_error
    return {
        "id": intent.id,
        "status": intent.status,
        "amount": intent.amount,
        "amount_received": getattr(intent, "amount_received", None),
        "currency": intent.currency,
        "customer": customer,
        "metadata": intent.metadata.to_dict() if intent.metadata else {},
        "error_code": getattr(error, "code", None) if error else None,
        "error_message": getattr(error, "message", None) if error else None,
    }


def open_holds(cfg: Settings) -> list[dict[str, Any]]:
    """Our card holds Stripe still holds (uncaptured manual-capture PaymentIntents with
    metadata kind=hold): id, the job id and uid in their metadata, and when they were made.

    Stripe: the Search API (`metadata['kind']:'hold' AND status:'requires_capture'`; its index
    lags by up to a minute, which the sweep's age threshold covers). LOCAL implementation:
    localstripe has no search, so every PaymentIntent is listed and filtered here."""
    c = client(cfg)
    if cfg.stripe_api_base:  # localstripe
        page = c.v1.payment_intents.list({"limit": 100})
        intents = list(page.auto_paging_iter())
    else:
        query = "metadata['kind']:'hold' AND status:'requires_capture'"
        intents = list(c.v1.payment_intents.search({"query": query}).auto_paging_iter())
    out = []
    for pi in intents:
        meta = pi.metadata.to_dict() if pi.metadata else {}
        if pi.status == "requires_capture" and meta.get("kind") == "hold":
            created = datetime.fromtimestamp(int(pi.created), UTC)
            out.append(
                {
                    "id": pi.id,
                    "job_id": meta.get("job_id"),
                    "uid": meta.get("uid"),
                    "created": created,
                }
            )
    return out


class Declined(Exception):
    """The card was refused (declined, or it needs the customer present to authenticate)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def charge(
    cfg: Settings,
    customer_id: str,
    payment_method_id: str,
    amount_cents: int,
    idempotency_key: str,
    metadata: dict[str, str],
) -> str:
    """An off-session PaymentIntent, confirmed and captured now; returns its id.

    Raises:
        Declined: the card refused it (not retryable without the user).
        stripe.StripeError: anything else (network, rate limit, Stripe down): retryable.
    """
    params = _off_session(cfg, customer_id, payment_method_id, amount_cents, metadata)
    return _confirm(cfg, params, idempotency_key, "succeeded")


def authorize(
    cfg: Settings,
    customer_id: str,
    payment_method_id: str,
    amount_cents: int,
    idempotency_key: str,
    metadata: dict[str, str],
) -> str:
    """Holds `amount_cents` on the card off-session (a manual-capture PaymentIntent, confirmed
    now) without taking it; returns its id. Stripe keeps a card hold for 7 days, then cancels it.

    Raises:
        Declined: the card refused the hold.
        stripe.StripeError: anything else: retryable.
    """
    params = _off_session(cfg, customer_id, payment_method_id, amount_cents, metadata)
    params["capture_method"] = "manual"
    return _confirm(cfg, params, idempotency_key, "requires_capture")


class NotCapturable(Exception):
    """The hold is gone (Stripe cancelled it when it expired, or it never existed)."""


def capture(cfg: Settings, intent_id: str, amount_cents: int, idempotency_key: str) -> str:
    """Takes `amount_cents` (at most the amount held) from a hold and releases the rest.

    The hold is read first: one already captured (a capture repeated after a crash) answers as
    captured now, and a cancelled or expired one is refused before asking for a capture
    (localstripe would capture a cancelled hold; Stripe refuses it, which lands in the same
    read-back below).

    Raises:
        NotCapturable: the hold was cancelled or expired; charge the card anew instead.
        stripe.StripeError: anything else: retryable.
    """
    import stripe

    state = payment_intent(cfg, intent_id)
    if state is not None and state["status"] == "succeeded":
        return intent_id
    if state is None or state["status"] != "requires_capture":
        raise NotCapturable(intent_id)
    try:
        client(cfg).v1.payment_intents.capture(
            intent_id, {"amount_to_capture": amount_cents}, {"idempotency_key": idempotency_key}
        )
    except stripe.InvalidRequestError:
        state = payment_intent(cfg, intent_id)
        if state is not None and state["status"] == "succeeded":
            return intent_id
        if state is None or state["status"] == "canceled":
            raise NotCapturable(intent_id) from None
        raise
    return intent_id


def release(cfg: Settings, intent_id: str) -> None:
    """Cancels a hold; releasing one already cancelled (or unknown to Stripe) is done already.

    Raises:
        stripe.StripeError: it could not be cancelled (network, or it was captured meanwhile).
    """
    import stripe

    try:
        client(cfg).v1.payment_intents.cancel(intent_id)
    except stripe.InvalidRequestError:
        state = payment_intent(cfg, intent_id)
        if state is None or state["status"] == "canceled":
            return
        raise


def _off_session(
    cfg: Settings,
    customer_id: str,
    payment_method_id: str,
    amount_cents: int,
    metadata: dict[str, str],
) -> dict[str, Any]:
    return {
        "amount": amount_cents,
        "currency": cfg.currency,
        "customer": customer_id,
        "payment_method": payment_method_id,
        "confirm": True,
        "off_session": True,
        "metadata": metadata,
    }


def _confirm(cfg: Settings, params: dict[str, Any], idempotency_key: str, expected: str) -> str:
    """Creates and confirms a PaymentIntent; its id when it reached `expected`.

    Raises:
        Declined: the card refused, or the bank wants the customer present.
    """
    import stripe

    try:
        intent = client(cfg).v1.payment_intents.create(params, {"idempotency_key": idempotency_key})
    except stripe.CardError as exc:
        code = getattr(exc, "code", None) or "card_declined"
        raise Declined(code, exc.user_message or str(exc)) from None
    except stripe.InvalidRequestError as exc:  # the saved customer or card is gone at Stripe
        raise Declined(
            "payment_method_unusable",
            f"The saved card can no longer be used ({exc.user_message or exc}); save a card again.",
        ) from None
    if intent.status == "requires_action":
        raise Declined(
            "authentication_required",
            "Your bank asks you to confirm this payment; "
            "update or confirm your card, then retry the payment.",
        )
    if intent.status != expected:
        raise Declined(intent.status, f"The payment did not go through ({intent.status}).")
    return str(intent.id)
