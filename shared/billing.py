"""Billing: saving a card, Stripe webhooks (typed core).

Every Stripe event may arrive more than once and out of order; each handler is idempotent and
the event id is recorded once handled, so a replay is acknowledged without acting twice.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta
from typing import Any

from shared import artifacts, logs, payments, store
from shared.catalog import catalog
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.jobs import CHARGE_POLICY, owned, view
from shared.pricing import price_cents


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
    elif kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        outcome = _reconcile(obj)
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
    retried = retry_failed_charges(uid, cfg)  # a new card settles what the old one could not
    return f"saved {card['brand']} {card['last4']} for {uid}; retried: {retried}"


# --- charging a job --------------------------------------------------------------------------

CHARGE_LEASE_S = 120.0
PAUSE_PAYMENT = "payment_failed"


class ChargeInProgress(Exception):
    """Another delivery is charging this job right now; retry later."""


def amount_due(job: dict[str, Any], cfg: Settings) -> tuple[int, int]:
    """(billable tokens, cents) under CHARGE_POLICY."""
    spec = catalog().get(job["model"])
    if spec is None:
        return 0, 0
    if job["status"] == "completed":
        tokens = int((job.get("trainer_result") or {}).get("trained_tokens", 0))
        return tokens, price_cents(tokens, spec, cfg.min_charge_cents)
    if job["status"] == "cancelled" and job.get("started_at"):
        tokens = int((job.get("progress") or {}).get("trained_tokens", 0))
        cents = price_cents(tokens, spec, 0)
        return tokens, cents if cents >= cfg.min_charge_cents else 0
    return 0, 0


def charge_job(job_id: str, cfg: Settings) -> str:
    """Charges an ended job exactly once; idempotent under any number of deliveries.

    Raises:
        ChargeInProgress: a concurrent delivery holds the charge; the trigger should retry.
        Exception: a transient Stripe error; the claim is released and the trigger retries.
    """
    job = store.get_job(job_id)
    if job is None or job["status"] not in ("completed", "cancelled"):
        return "not chargeable"
    tokens, cents = amount_due(job, cfg)
    if cents == 0:
        _set_payment(
            job_id,
            {
                "status": "not_charged",
                "amount_cents": 0,
                "currency": cfg.currency,
                "policy": CHARGE_POLICY,
            },
        )
        return "nothing to charge"
    user = store.get_or_create_user(job["uid"], job.get("email"))
    state, charge = store.claim_charge(
        job_id,
        {
            "uid": job["uid"],
            "job_id": job_id,
            "kind": "tuning",
            "amount_cents": cents,
            "currency": cfg.currency,
            "billable_tokens": tokens,
        },
        CHARGE_LEASE_S,
    )
    if state == "done":
        return f"already {charge['status']}"
    if state == "busy":
        raise ChargeInProgress(job_id)
    return _attempt(job_id, charge, user, cfg)


def _attempt(charge_id: str, charge: dict[str, Any], user: store.UserRecord, cfg: Settings) -> str:
    if user.payment_method is None or not user.stripe_customer_id:
        reason = "No card is saved; save one (POST /v1/jobs/setup-card) to pay."
        _fail(charge_id, charge, "no_payment_method", reason, user.uid)
        return "no card"
    try:
        intent = payments.charge(
            cfg,
            user.stripe_customer_id,
            user.payment_method.id,
            charge["amount_cents"],
            idempotency_key=f"{charge_id}-{charge['attempt']}",
            metadata={"uid": user.uid, "charge_id": charge_id, "kind": charge["kind"]},
        )
    except payments.Declined as exc:
        _fail(charge_id, charge, exc.code, exc.message, user.uid)
        return f"declined ({exc.code})"
    except Exception:
        store.finish_charge(charge_id, {"status": "retry"}, None)  # release the claim
        raise
    _succeeded(charge_id, charge, user.uid, intent)
    return f"charged {charge['amount_cents']} {charge['currency']}"


def _succeeded(charge_id: str, charge: dict[str, Any], uid: str, intent: str) -> None:
    """Records money that moved: the charge, its ledger entry, the job's payment; idempotent."""
    job_id = charge.get("job_id")
    store.finish_charge(
        charge_id,
        {"status": "succeeded", "payment_intent": intent},
        {
            "uid": uid,
            "kind": charge["kind"],
            "job_id": job_id,
            "amount_cents": charge["amount_cents"],
            "currency": charge["currency"],
            "payment_intent": intent,
        },
    )
    if job_id and charge["kind"] == "tuning":
        _set_payment(
            job_id,
            {
                "status": "paid",
                "amount_cents": charge["amount_cents"],
                "currency": charge["currency"],
                "charged_at": store.now(),
            },
        )
    _unpause_if_settled(uid)


def _reconcile(intent: dict[str, Any]) -> str:
    """A payment_intent event for one of our charges: settles a charge whose attempt died
    between Stripe's answer and our record of it (the only window our claim cannot close)."""
    charge_id = (intent.get("metadata") or {}).get("charge_id")
    charge = store.get_charge(charge_id) if charge_id else None
    if charge is None:
        return "not ours"
    if charge["status"] in ("succeeded", "failed"):
        return f"already {charge['status']}"
    if intent.get("status") == "succeeded":
        _succeeded(charge_id, charge, charge["uid"], intent["id"])
        return "settled from the event"
    error = intent.get("last_payment_error") or {}
    _fail(
        charge_id,
        charge,
        error.get("code") or "card_declined",
        error.get("message") or "The payment failed.",
        charge["uid"],
    )
    return "failure recorded from the event"


def _fail(charge_id: str, charge: dict[str, Any], code: str, message: str, uid: str) -> None:
    store.finish_charge(
        charge_id, {"status": "failed", "failure_code": code, "failure_message": message}, None
    )
    if charge.get("job_id") and charge["kind"] == "tuning":
        _set_payment(
            charge["job_id"],
            {
                "status": "failed",
                "amount_cents": charge["amount_cents"],
                "currency": charge["currency"],
                "reason": message,
            },
        )
    store.update_user(
        uid,
        {
            f"pauses.{PAUSE_PAYMENT}": {
                "reason": f"A payment failed ({code}): {message} Save a working card to go on; we "
                "retry the payment when you do.",
                "since": store.now(),
            }
        },
    )


def _unpause_if_settled(uid: str) -> None:
    if not store.charges_of(uid, "failed"):
        store.clear_pause(uid, PAUSE_PAYMENT)


def _set_payment(job_id: str, payment: dict[str, Any]) -> None:
    store.update_job(job_id, lambda job: ({"payment": payment}, []))


def retry_failed_charges(uid: str, cfg: Settings) -> list[str]:
    """Tries every failed charge of the user again (after a new card, or on request)."""
    outcomes = []
    user = store.get_or_create_user(uid, None)
    for failed in store.charges_of(uid, "failed"):
        if store.reopen_charge(failed["id"]):
            state, charge = store.claim_charge(failed["id"], {}, CHARGE_LEASE_S)
            if state == "claimed":
                outcomes.append(_attempt(failed["id"], charge, user, cfg))
    return outcomes


def retry_payment(uid: str, job_id: str, cfg: Settings) -> dict[str, Any]:
    """POST /v1/jobs/{id}/retry-payment."""
    job = owned(uid, job_id)
    charge = store.get_charge(job_id)
    if charge is None or charge["status"] != "failed":
        raise ApiError(Code.NOTHING_TO_RETRY, "This job has no failed payment to retry.")
    if store.reopen_charge(job_id):
        state, charge = store.claim_charge(job_id, {}, CHARGE_LEASE_S)
        if state == "claimed":
            _attempt(job_id, charge, store.get_or_create_user(uid, None), cfg)
    return view(store.get_job(job_id) or job)


# --- storage extensions and the summary --------------------------------------------------------

MAX_EXTENSION_DAYS = 365
STORAGE_CENTS_PER_GB_MONTH = 10


def extension_price(total_bytes: int, days: int, cfg: Settings) -> int:
    exact = math.ceil(total_bytes / 1e9 * days / 30 * STORAGE_CENTS_PER_GB_MONTH)
    return max(exact, cfg.min_charge_cents)


def extend_storage(
    uid: str, job_id: str, body: dict[str, Any], idempotency_key: str | None, cfg: Settings
) -> dict[str, Any]:
    """Charges for `days` more of storage at once and moves the job's expiry; one charge per
    Idempotency-Key, however often the request is sent."""
    if not idempotency_key or len(idempotency_key) > 255:
        raise ApiError(
            Code.MISSING_FIELD,
            "Send an Idempotency-Key header (1-255 characters): this request charges your card.",
            param="Idempotency-Key",
        )
    for key in body:
        if key != "days":
            raise ApiError(Code.UNKNOWN_FIELD, f"Unknown field '{key}'.", param=key)
    days = body.get("days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXTENSION_DAYS:
        raise ApiError(
            Code.INVALID_VALUE,
            f"'days' must be a whole number from 1 to {MAX_EXTENSION_DAYS}.",
            param="days",
        )
    job = owned(uid, job_id)
    charge_id = "ext-" + hashlib.sha256(f"{uid}\n{idempotency_key}".encode()).hexdigest()[:40]
    existing = store.get_charge(charge_id)
    if existing is None:
        artifacts.download_links(job, cfg)  # the same gates: completed, paid, not expired
    elif existing.get("job_id") != job_id or existing.get("days") != days:
        raise ApiError(
            Code.IDEMPOTENCY_CONFLICT,
            "This Idempotency-Key was used with a different request; use a new key.",
            param="Idempotency-Key",
        )
    size = sum(
        int(f.get("size") or 0) for f in (job.get("trainer_result") or {}).get("artifacts", [])
    )
    state, charge = store.claim_charge(
        charge_id,
        {
            "uid": uid,
            "job_id": job_id,
            "kind": "storage_extension",
            "days": days,
            "amount_cents": extension_price(size, days, cfg),
            "currency": cfg.currency,
            "extends_from": job.get("expires_at"),
        },
        CHARGE_LEASE_S,
    )
    if state == "busy":
        raise ApiError(
            Code.SERVICE_UNAVAILABLE,
            "This extension is being charged right now; "
            "retry in a moment with the same Idempotency-Key.",
        )
    if state == "claimed":
        _attempt(charge_id, charge, store.get_or_create_user(uid, None), cfg)
        charge = store.get_charge(charge_id) or charge
    if charge["status"] == "failed":
        raise ApiError(
            Code.PAYMENT_REQUIRED, f"The extension was not paid: {charge.get('failure_message')}"
        )
    if charge["status"] != "succeeded":
        raise ApiError(
            Code.SERVICE_UNAVAILABLE,
            "The payment could not be made just now; retry with the same Idempotency-Key.",
        )
    new_expiry = charge["extends_from"] + timedelta(days=days)

    def move(j: dict[str, Any]) -> Any:  # idempotent: the expiry only ever moves later
        if j.get("expires_at") and j["expires_at"] >= new_expiry:
            return None
        return {"expires_at": new_expiry}, []

    after = store.update_job(job_id, move)
    artifacts.set_retention(job_id, after["expires_at"], cfg)
    return {
        **view(after),
        "extension": {
            "days": days,
            "amount_cents": charge["amount_cents"],
            "currency": charge["currency"],
        },
    }


def summary(uid: str, cfg: Settings) -> dict[str, Any]:
    entries = store.ledger_entries(uid)
    months: dict[str, dict[str, int]] = {}
    for e in entries:
        key = f"{e['created_at'].year:04d}-{e['created_at'].month:02d}"
        m = months.setdefault(
            key, {"total_cents": 0, "tuning_cents": 0, "storage_extension_cents": 0, "charges": 0}
        )
        m["total_cents"] += e["amount_cents"]
        m[f"{e['kind']}_cents"] += e["amount_cents"]
        m["charges"] += 1
    failed = store.charges_of(uid, "failed")
    return {
        "object": "billing_summary",
        "currency": cfg.currency,
        "lifetime_cents": sum(e["amount_cents"] for e in entries),
        "tuning_cents": sum(e["amount_cents"] for e in entries if e["kind"] == "tuning"),
        "storage_extension_cents": sum(
            e["amount_cents"] for e in entries if e["kind"] == "storage_extension"
        ),
        "counts": {
            "tuning": sum(e["kind"] == "tuning" for e in entries),
            "storage_extension": sum(e["kind"] == "storage_extension" for e in entries),
        },
        "outstanding_cents": sum(c["amount_cents"] for c in failed),
        "outstanding_charges": [
            {
                "job_id": c.get("job_id"),
                "amount_cents": c["amount_cents"],
                "reason": c.get("failure_message"),
            }
            for c in failed
        ],
        "months": [{"month": k, **v} for k, v in sorted(months.items(), reverse=True)],
    }
