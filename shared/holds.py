"""The hold on the card: no GPU work before the quoted price is authorized (typed core).

At submit we place an off-session, manual-capture PaymentIntent for the job's quoted price (a
"hold"); the launch refuses to start a job without one; when the job ends, the charge trigger
(shared.billing, still the one place that settles) captures exactly the amount due from it, or
releases it when nothing is due. A declined hold answers 402 at submit and fails the job for
free, before any Batch job exists.

Stripe cancels a card hold it has held for 7 days. The sweep renews the hold of any job still
active after 6 days (a new hold first, then the old one released); when renewing keeps failing
until the old hold has lapsed, the job is cancelled (charged, like any cancel, for what it
trained, off-session). A capture that finds its hold gone charges the saved card anew.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from shared import batch, logs, payments, store, transitions
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.records import (
    Authorization,
    AuthorizationStatus,
    FailureCode,
    Job,
    JobChange,
    JobFailure,
    JobStatus,
)

HOLD_LIFETIME = timedelta(days=7)  # Stripe: an uncaptured card authorization expires after 7 days
RENEW_AFTER = timedelta(days=6)


def _key(job: Job, renewal: int) -> str:
    """Stripe's idempotency key for a job's hold: a retried call finds the same PaymentIntent."""
    return f"hold-{job.id}-{renewal}"


def _place(job: Job, renewal: int, cfg: Settings) -> Authorization:
    """A new hold of the job's quoted price on the user's saved card.

    Raises:
        payments.Declined: the card refused it, or no card is saved.
        stripe.StripeError: a transient failure.
    """
    user = store.get_or_create_user(job.uid, job.email)
    if user.payment_method is None or not user.stripe_customer_id:
        raise payments.Declined("no_payment_method", "No card is saved.")
    intent = payments.authorize(
        cfg,
        user.stripe_customer_id,
        user.payment_method.id,
        job.quote.price_cents,
        _key(job, renewal),
        metadata={"uid": job.uid, "job_id": job.id, "charge_id": job.id, "kind": "hold"},
    )
    return Authorization(
        payment_intent=intent,
        amount_cents=job.quote.price_cents,
        currency=job.quote.currency,
        status=AuthorizationStatus.AUTHORIZED,
        authorized_at=store.now(),
        renewals=renewal,
    )


def hold(job: Job, cfg: Settings) -> Job:
    """Places the job's hold unless it has one; returns the job as stored.

    A declined hold fails the job (free: nothing was held) in one transition.

    Raises:
        payments.Declined: the card refused the hold; the job is failed.
        stripe.StripeError: a transient failure; nothing was recorded, call again.
    """
    if job.authorization is not None:
        return job
    try:
        placed = _place(job, 0, cfg)
    except payments.Declined as exc:
        _fail_declined(job.id, exc)
        raise
    return _record(job.id, placed, None, cfg)


def hold_at_submit(job: Job, cfg: Settings) -> Job:
    """The hold for a job just created by POST /v1/jobs.

    Raises:
        ApiError: payment_declined (402) with the card's reason; the job is failed.
    """
    try:
        return hold(job, cfg)
    except payments.Declined as exc:
        raise ApiError(Code.PAYMENT_DECLINED, declined_message(exc)) from None
    except Exception as exc:  # Stripe unreachable: the launch places the hold before any GPU
        logs.warning("hold not placed at submit; the launch will", job_id=job.id, error=repr(exc))
        return job


def declined_message(exc: payments.Declined) -> str:
    return (
        f"Your card refused to hold the quoted price ({exc.code}): {exc.message} "
        "Nothing was charged and the job will not run; save a working card "
        "(POST /v1/jobs/setup-card) and submit again with a new Idempotency-Key."
    )


def _fail_declined(job_id: str, exc: payments.Declined) -> None:
    failure = JobFailure(FailureCode.PAYMENT_DECLINED, declined_message(exc))
    with contextlib.suppress(transitions.InvalidTransition):  # it ended meanwhile (a cancel)
        transitions.transition(
            job_id,
            JobStatus.FAILED,
            "the card refused to hold the quoted price",
            change=lambda j: j._replace(failure=failure),
            when=lambda j: j.batch_job is None,  # never fail a job that has compute running
        )


def _record(job_id: str, placed: Authorization, replaces: str | None, cfg: Settings) -> Job:
    """Stores a hold on the job when the job still wants it: active, and holding `replaces`
    (None: no hold yet). A hold nobody wants (the job ended meanwhile, or a concurrent call
    recorded another) is released at once, so no card stays held for nothing."""

    def decide(j: Job) -> JobChange | None:
        current = j.authorization.payment_intent if j.authorization else None
        if j.status.ended or current != replaces:
            return None
        return JobChange.between(j, j._replace(authorization=placed))

    after = store.update_job(job_id, decide)
    if after.authorization is None or after.authorization.payment_intent != placed.payment_intent:
        payments.release(cfg, placed.payment_intent)
        logs.info("unwanted hold released", job_id=job_id, intent=placed.payment_intent)
    return after


def release(job: Job, cfg: Settings) -> bool:
    """Releases a job's hold that nothing will capture; True when there was one.

    Raises:
        stripe.StripeError: Stripe could not cancel it now; the trigger retries.
    """
    held = job.authorization
    if held is None or not held.holding:
        return False
    payments.release(cfg, held.payment_intent)
    mark(job.id, held.payment_intent, AuthorizationStatus.RELEASED)
    return True


def mark(job_id: str, intent: str, status: AuthorizationStatus) -> None:
    """Records how a hold ended, when it is still the job's hold and still holding."""

    def decide(j: Job) -> JobChange | None:
        held = j.authorization
        if held is None or held.payment_intent != intent or not held.holding:
            return None
        return JobChange.between(j, j._replace(authorization=held._replace(status=status)))

    store.update_job(job_id, decide)


# --- holds nobody owns ------------------------------------------------------------------------

ORPHAN_AFTER = timedelta(minutes=15)  # a hold this old that no job records is nobody's


def release_orphan_holds(cfg: Settings, now: datetime | None = None) -> store.Found[str]:
    """Releases every hold at Stripe that no job owns: placed by a call whose answer was lost
    (a submit that timed out while Stripe still placed it, then the launch placed the job's own;
    Stripe's idempotency key prevents that in production, localstripe ignores it), or left by
    a crash between placing and recording. A job owns a hold while its record holds that very
    PaymentIntent; ORPHAN_AFTER leaves time to a submit between placing and recording."""
    t = now or store.now()

    def orphan(hold: dict[str, Any]) -> str | None:
        if t - hold["created"] < ORPHAN_AFTER:
            return None
        job = store.get_job(hold["job_id"]) if hold["job_id"] else None
        held = job.authorization if job is not None else None
        if held is not None and held.payment_intent == hold["id"] and held.holding:
            return None
        payments.release(cfg, hold["id"])
        return f"released (no job holds it; job {hold['job_id']})"

    done = logs.each(payments.open_holds(cfg), lambda h: str(h["id"]), orphan, "orphan holds")
    return store.Found(done, [])


# --- renewal ---------------------------------------------------------------------------------


def renew_holds(cfg: Settings, now: datetime | None = None) -> store.Found[str]:
    """Renews every active job's hold older than RENEW_AFTER; returns what it did per job, and
    the documents skipped because they do not parse. Each job is handled on its own: one that
    fails is logged and retried next sweep."""
    t = now or store.now()
    found = store.jobs_held_since(t - RENEW_AFTER)
    done = logs.each(found.items, lambda j: j.id, lambda j: renew(j, cfg, t), "holds")
    return store.Found(done, found.skipped)


def renew(job: Job, cfg: Settings, now: datetime) -> str:
    """Replaces an active job's ageing hold with a new one, then releases the old one. When the
    card refuses and the old hold has lapsed, the job is cancelled: it is no longer covered."""
    old = job.authorization
    if not job.status.active or old is None or not old.holding:
        return "nothing to renew"
    try:
        placed = _place(job, old.renewals + 1, cfg)
    except payments.Declined as exc:
        if now - old.authorized_at < HOLD_LIFETIME:
            _note_renewal_failure(job.id, old.payment_intent, f"{exc.code}: {exc.message}")
            return f"renewal declined ({exc.code}); retried until the hold lapses"
        _cancel_uncovered(job, exc, cfg)
        return f"renewal declined ({exc.code}); the hold lapsed: job cancelled"
    now_held = _record(job.id, placed, old.payment_intent, cfg).authorization
    if now_held is not None and now_held.payment_intent == placed.payment_intent:
        payments.release(cfg, old.payment_intent)  # a crash here: it lapses by itself in a day
        return f"renewed ({placed.renewals})"
    return "not renewed (the job changed meanwhile)"


def _note_renewal_failure(job_id: str, intent: str, why: str) -> None:
    def decide(j: Job) -> JobChange | None:
        held = j.authorization
        if held is None or held.payment_intent != intent:
            return None
        return JobChange.between(j, j._replace(authorization=held._replace(renewal_failure=why)))

    store.update_job(job_id, decide)


def _cancel_uncovered(job: Job, exc: payments.Declined, cfg: Settings) -> None:
    """Stops a job whose hold lapsed and cannot be renewed: compute first, then the record."""
    batch.backend(cfg).delete(batch.job_name(cfg, batch.job_id_for(job.id)))
    if job.authorization is not None:
        mark(job.id, job.authorization.payment_intent, AuthorizationStatus.LAPSED)
    with contextlib.suppress(transitions.InvalidTransition):
        transitions.transition(
            job.id,
            JobStatus.CANCELLED,
            f"cancelled: the card no longer covers it (renewing its hold failed: {exc.message})",
        )
