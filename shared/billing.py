"""Billing: charging jobs and storage, Stripe webhooks (typed core); saving a card is
shared.card_saving's.

Every Stripe event may arrive more than once and out of order; each handler is idempotent and
the event id is recorded once handled, so a replay is acknowledged without acting twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared import (
    artifacts,
    card_saving,
    holds,
    idempotency,
    logs,
    payments,
    pricing,
    rules,
    store,
)
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.jobs import owned, view
from shared.records import (
    AuthorizationStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Job,
    JobChange,
    JobStatus,
    LedgerEntry,
    Pause,
    Payment,
    PaymentStatus,
    UserRecord,
)
from shared.routes import valid_id


def handle_event(event: dict[str, Any], cfg: Settings) -> str:
    """Acts on one verified Stripe event; returns what it did."""
    event_id, kind = event["id"], event["type"]
    if store.event_seen(event_id):
        return "duplicate"
    obj = event["data"]["object"]
    if kind == "setup_intent.succeeded":
        outcome = _card_saved(obj.get("id"), cfg)
    elif kind == "checkout.session.completed" and obj.get("mode") == "setup":
        outcome = _card_saved(obj.get("setup_intent"), cfg)
    elif kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        outcome = _reconcile(obj, cfg)
    else:
        outcome = "ignored"
    store.mark_event(event_id, kind)
    logs.info("stripe event", event_id=event_id, type=kind, outcome=outcome)
    return outcome


def _card_saved(setup_intent_id: Any, cfg: Settings) -> str:
    outcome, uid = card_saving.save_card(setup_intent_id, cfg)
    if uid is None:
        return outcome
    retried = retry_failed_charges(uid, cfg)  # a new card settles what the old one could not
    return f"{outcome}; retried: {retried}"


# --- charging a job --------------------------------------------------------------------------

CHARGE_LEASE_S = 120.0
PAUSE_PAYMENT = "payment_failed"


class ChargeInProgress(Exception):
    """Another delivery is charging this job right now; retry later."""


def charge_job(job_id: str, cfg: Settings) -> str:
    """Settles an ended job exactly once: captures what pricing.amount_due says from the job's
    card hold (or charges the card, for a job without a usable hold), or releases the hold when
    nothing is due. Idempotent under any number of deliveries.

    Raises:
        ChargeInProgress: a concurrent delivery holds the charge; the trigger should retry.
        Exception: a transient Stripe error; the claim is released and the trigger retries.
    """
    job = store.get_job(job_id)
    if job is None or not job.status.ended:
        return "not chargeable"
    if job.payment is not None and job.payment.settled:
        released = job.payment.status == PaymentStatus.NOT_CHARGED and holds.release(job, cfg)
        return f"already {job.payment.status.value}" + ("; hold released" * released)
    due = pricing.amount_due(job) if job.status != JobStatus.FAILED else None
    if due is None or due.cents == 0:
        if job.payment is None:
            store.set_job_payment(job, Payment(PaymentStatus.NOT_CHARGED, 0, cfg.currency))
        holds.release(job, cfg)
        return "nothing to charge"
    held = job.authorization
    state, charge = store.claim_charge(
        Charge(
            id=job_id,
            uid=job.uid,
            job_id=job_id,
            kind=ChargeKind.TUNING,
            amount_cents=due.cents,
            currency=cfg.currency,
            billable_tokens=due.tokens,
            authorization=held.payment_intent if held is not None and held.holding else None,
        ),
        CHARGE_LEASE_S,
    )
    if state == "done":
        _repair_payment(job, charge)
        return f"already {charge.status.value}"
    if state == "busy":
        raise ChargeInProgress(job_id)
    return _attempt(charge, store.get_or_create_user(job.uid, job.email), cfg)


def _payment_of(charge: Charge) -> Payment:
    """The job's payment record for a finished tuning charge."""
    if charge.status == ChargeStatus.SUCCEEDED:
        return Payment(
            PaymentStatus.PAID, charge.amount_cents, charge.currency, charged_at=charge.finished_at
        )
    return Payment(
        PaymentStatus.FAILED, charge.amount_cents, charge.currency, reason=charge.failure_message
    )


def _repair_payment(job: Job, charge: Charge) -> None:
    """A finished charge whose job lacks the matching payment (written before charge and
    payment were one commit): record it now, so the downloads do not stay locked."""
    payment = _payment_of(charge)
    if job.payment is None or job.payment.status != payment.status:
        store.set_job_payment(job, payment)
        logs.warning("job payment repaired from its charge", job_id=job.id)


def _attempt(charge: Charge, user: UserRecord, cfg: Settings) -> str:
    """One attempt at a claimed charge: a capture from its hold when it has one, else (or when
    the hold is gone) a new off-session charge of the saved card."""
    if charge.authorization:
        try:
            intent = payments.capture(
                cfg, charge.authorization, charge.amount_cents, charge.idempotency_key
            )
        except payments.NotCapturable:
            logs.warning("hold gone; charging the card anew", charge_id=charge.id)
            holds.mark(charge.job_id, charge.authorization, AuthorizationStatus.LAPSED)
        except Exception:
            store.release_charge(charge.id)
            raise
        else:
            _succeeded(charge, intent)
            return f"captured {charge.amount_cents} {charge.currency}"
    if user.payment_method is None or not user.stripe_customer_id:
        reason = "No card is saved; save one (POST /v1/jobs/setup-card) to pay."
        _fail(charge, "no_payment_method", reason)
        return "no card"
    try:
        intent = payments.charge(
            cfg,
            user.stripe_customer_id,
            user.payment_method.id,
            charge.amount_cents,
            idempotency_key=charge.idempotency_key,
            metadata={"uid": user.uid, "charge_id": charge.id, "kind": charge.kind.value},
        )
    except payments.Declined as exc:
        _fail(charge, exc.code, exc.message, card=user.payment_method.id)
        return f"declined ({exc.code})"
    except Exception:
        store.release_charge(charge.id)
        raise
    _succeeded(charge, intent)
    return f"charged {charge.amount_cents} {charge.currency}"


def _succeeded(charge: Charge, intent: str) -> None:
    """Records money that moved, in one commit: the charge, its ledger entry, the job's payment,
    and the end of the payment pause when nothing else is outstanding. Idempotent."""
    done = charge._replace(status=ChargeStatus.SUCCEEDED, payment_intent=intent)
    t = store.now()
    ledger = LedgerEntry(
        id=charge.id,
        uid=charge.uid,
        kind=charge.kind,
        job_id=charge.job_id,
        amount_cents=charge.amount_cents,
        currency=charge.currency,
        payment_intent=intent,
        created_at=t,
    )
    payment = None
    if charge.kind == ChargeKind.TUNING:
        payment = Payment(PaymentStatus.PAID, charge.amount_cents, charge.currency, charged_at=t)
    unpause = None
    if PAUSE_PAYMENT in store.get_or_create_user(charge.uid, None).pauses:
        failed = store.charges_of(charge.uid, ChargeStatus.FAILED)
        if not [c for c in failed if c.id != charge.id]:
            unpause = (PAUSE_PAYMENT, None)
    store.settle_charge(done, ledger, payment, unpause)


def _fail(charge: Charge, code: str, message: str, card: str | None = None) -> None:
    """Records a declined charge in one commit: the charge (with the card that refused it), the
    job's payment, and the pause of the account until a working card is saved."""
    failed = charge._replace(
        status=ChargeStatus.FAILED, failure_code=code, failure_message=message, declined_card=card
    )
    payment = None
    if charge.kind == ChargeKind.TUNING:
        payment = Payment(
            PaymentStatus.FAILED, charge.amount_cents, charge.currency, reason=message
        )
    pause = Pause(
        reason=f"A payment failed ({code}): {message} Save a working card to go on; we retry "
        "the payment when you do.",
        since=store.now(),
    )
    store.settle_charge(failed, None, payment, (PAUSE_PAYMENT, pause))


def _reconcile(event_intent: dict[str, Any], cfg: Settings) -> str:
    """A payment_intent event for one of our charges: settles a charge whose attempt died
    between Stripe's answer and our record of it (the only window our claim cannot close).

    The event only says which PaymentIntent to look at: its status, amount, currency, customer
    and charge are read back from Stripe and must match the charge we claimed, or nothing is
    recorded."""
    metadata = event_intent.get("metadata")
    charge_id = metadata.get("charge_id") if isinstance(metadata, dict) else None
    charge = store.get_charge(charge_id) if isinstance(charge_id, str) else None
    intent_id = event_intent.get("id")
    if charge is None or not isinstance(intent_id, str) or not valid_id(intent_id):
        return "not ours"
    if charge.finished:
        return f"already {charge.status.value}"
    intent = payments.payment_intent(cfg, intent_id)
    if intent is None:
        return "no such PaymentIntent at Stripe"
    if intent["metadata"].get("kind") == "hold" and intent_id != charge.authorization:
        return "a hold this charge does not capture"  # a declined or replaced one: no outcome
    # A capture takes part of a hold: what was taken is `amount_received` (Stripe); localstripe
    # does not report it, so there the hold must at least cover the charge.
    captured = intent.get("amount_received")
    if intent_id != charge.authorization:
        paid = intent["amount"]
    elif captured is not None:
        paid = captured
    else:
        paid = charge.amount_cents if intent["amount"] >= charge.amount_cents else intent["amount"]
    expected = {
        "charge": (intent["metadata"].get("charge_id"), charge.id),
        "amount": (paid, charge.amount_cents),
        "currency": (intent["currency"], charge.currency),
        "customer": (
            intent["customer"],
            store.get_or_create_user(charge.uid, None).stripe_customer_id,
        ),
    }
    wrong = [name for name, (theirs, ours) in expected.items() if theirs != ours]
    if wrong:
        logs.warning("payment intent does not match its charge", intent=intent_id, wrong=wrong)
        return f"refused: the PaymentIntent's {', '.join(wrong)} does not match the charge"
    if intent["status"] == "succeeded":
        _succeeded(charge, intent_id)
        return "settled from Stripe"
    if intent_id == charge.authorization:  # an uncaptured or lapsed hold: the capture decides
        return f"hold {intent['status']}"
    if intent["status"] not in ("requires_payment_method", "canceled"):
        return f"still {intent['status']}"
    _fail(
        charge,
        intent["error_code"] or "card_declined",
        intent["error_message"] or "The payment failed.",
    )
    return "failure recorded from Stripe"


def _retry(charge_id: str, user: UserRecord, cfg: Settings) -> str | None:
    """Attempts a failed charge again; None when it was not failed (or another caller has it)."""
    if not store.reopen_charge(charge_id):
        return None
    charge = store.get_charge(charge_id)
    if charge is None:
        return None
    state, claimed = store.claim_charge(charge, CHARGE_LEASE_S)
    return _attempt(claimed, user, cfg) if state == "claimed" else None


def retry_failed_charges(uid: str, cfg: Settings) -> list[str]:
    """Tries every failed charge of the user again (after a new card, or on request)."""
    user = store.get_or_create_user(uid, None)
    outcomes = (_retry(c.id, user, cfg) for c in store.charges_of(uid, ChargeStatus.FAILED))
    return [o for o in outcomes if o is not None]


def retry_payment(uid: str, job_id: str, cfg: Settings) -> dict[str, Any]:
    """POST /v1/jobs/{id}/retry-payment: charges a declined job again with the saved card.

    Raises:
        ApiError: not_found for another user's job; nothing_to_retry when its payment did not
            fail.
    """
    job = owned(uid, job_id)
    charge = store.get_charge(job_id)
    if charge is None or charge.status != ChargeStatus.FAILED:
        raise ApiError(Code.NOTHING_TO_RETRY, "This job has no failed payment to retry.")
    user = store.get_or_create_user(uid, None)
    card = user.payment_method.id if user.payment_method else None
    if charge.declined_card is not None and card == charge.declined_card:
        # The same card again would only be declined again (and one PaymentIntent each time).
        raise ApiError(
            Code.CARD_UNCHANGED,
            f"The saved card already refused this payment ({charge.failure_code}); save another "
            "card (POST /v1/jobs/setup-card), and the payment is retried by itself.",
        )
    _retry(job_id, user, cfg)  # one attempt in flight: the claim makes concurrent calls wait
    return view(store.get_job(job_id) or job)


# --- storage extensions and the summary --------------------------------------------------------


def extend_storage(
    uid: str, job_id: str, body: dict[str, Any], idempotency_key: str | None, cfg: Settings
) -> dict[str, Any]:
    """POST /v1/jobs/{id}/extend-storage: charges for `days` more of storage at once and moves
    the job's expiry; one charge per Idempotency-Key, however often the request is sent.

    Raises:
        ApiError: a missing or reused key (400, 409), bad `days`, the download gates (409, 402,
            410), a declined payment (402), or a charge in flight or not made yet (503).
    """
    key = idempotency.key_id(
        uid, idempotency_key, required=True, why=": this request charges your card"
    )
    assert key is not None
    days: int = body["days"]  # checked against schemas.ExtendStorage (1 to MAX_EXTENSION_DAYS)
    job = owned(uid, job_id)
    request_hash = idempotency.request_hash(f"POST /v1/jobs/{job_id}/extend-storage", body)
    charge_id = "ext-" + key[:40]
    existing = store.get_charge(charge_id)
    size = job.trainer_result.total_bytes if job.trainer_result else 0
    price = pricing.extension_price(size, days)
    new = Charge(
        id=charge_id,
        uid=uid,
        job_id=job_id,
        kind=ChargeKind.STORAGE_EXTENSION,
        amount_cents=price,
        currency=cfg.currency,
        days=days,
        extends_from=job.expires_at,
        request_hash=request_hash,
    )
    if existing is None:
        artifacts.download_links(job, cfg)  # the same gates: completed, paid, not expired
        user = store.get_or_create_user(uid, None)
        refused = rules.spend_refusals(rules.Spend.of(user, price, rules.EXTENSION))
        if refused:
            raise ApiError(*refused[0])
        limit = user.monthly_spend_limit_cents
        try:  # the limit again, in the commit that creates the charge (concurrent extensions)
            store.reserve_extension(new, limit)
        except store.Conflict as exc:
            message = rules.over_limit(rules.EXTENSION, price, exc.detail, limit or 0)
            raise ApiError(Code.SPEND_LIMIT_REACHED, message) from None
    else:
        idempotency.check_same_request(existing.request_hash, request_hash)
    state, charge = store.claim_charge(new, CHARGE_LEASE_S)
    if state == "busy":
        raise ApiError(
            Code.SERVICE_UNAVAILABLE,
            "This extension is being charged right now; "
            "retry in a moment with the same Idempotency-Key.",
            retry_after_s=2,
        )
    if state == "claimed":
        _attempt(charge, store.get_or_create_user(uid, None), cfg)
        charge = store.get_charge(charge_id) or charge
    if charge.status == ChargeStatus.FAILED:
        raise ApiError(
            Code.PAYMENT_REQUIRED, f"The extension was not paid: {charge.failure_message}"
        )
    if charge.status != ChargeStatus.SUCCEEDED or charge.extends_from is None:
        raise ApiError(
            Code.SERVICE_UNAVAILABLE,
            "The payment could not be made just now; retry with the same Idempotency-Key.",
            retry_after_s=5,
        )
    new_expiry = charge.extends_from + timedelta(days=days)

    def move(j: Job) -> JobChange | None:  # idempotent: only ever moves later
        if j.expires_at and j.expires_at >= new_expiry:
            return None
        return JobChange.between(j, j._replace(expires_at=new_expiry))

    after = store.update_job(job_id, move)
    if after.expires_at is not None:
        artifacts.set_retention(job_id, after.expires_at, cfg)
    return {
        **view(after),
        "extension": {
            "days": days,
            "amount_cents": charge.amount_cents,
            "currency": charge.currency,
        },
    }
