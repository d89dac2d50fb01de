"""Erasing an account when its Firebase user is deleted (typed core).

The Firebase Auth `user.delete` event calls `erase_account`. What goes: the account record
(email, card, preferences), every dataset and its file, every job with its adapter, checkpoints
and emails. What stays: the user's charges and ledger entries, which accounting and tax law
oblige us to keep (amounts, dates, Stripe ids, job ids; no email, no data), and Stripe's own
customer record with its payment history; the saved card is detached from it, so nothing can
be charged again. Jobs still queued or running are stopped first and settled as any cancel is
(shared.pricing: a running job pays for the tokens it trained, from its hold; a queued one is
free and its hold released), before the card is detached: deleting the account never makes
compute free.

Idempotent: the event may arrive more than once; a second run finds nothing left to erase.
"""

from __future__ import annotations

import contextlib

from shared import artifacts, batch, billing, checkout, datasets, logs, storage, store
from shared.config import Settings
from shared.records import Job, JobStatus
from shared.transitions import InvalidTransition, transition


def erase_account(uid: str, cfg: Settings) -> dict[str, int]:
    """Erases the user's account as the module docstring says; returns what it did."""
    user = store.get_user(uid)
    jobs = store.jobs_of(uid)
    stopped = 0
    for job in jobs:
        if job.status.active:
            _stop(job, cfg)
            stopped += 1
    for job in store.jobs_of(uid):  # again: a redelivered event settles what a first left
        if job.status.ended and not (job.payment is not None and job.payment.settled):
            _settle(job.id, cfg)
    files = storage.delete_prefix(cfg.datasets_bucket, datasets.user_prefix(uid))
    for job in jobs:
        files += storage.delete_prefix(cfg.artifacts_bucket, artifacts.prefix(job.id))
        files += storage.delete_prefix(cfg.checkpoints_bucket, artifacts.prefix(job.id))
    if user is not None and user.payment_method is not None:
        checkout.detach_card(cfg, user.payment_method.id)
    documents = store.erase_user_documents(uid)
    logs.info("account erased", uid=uid, jobs_stopped=stopped, files=files, documents=documents)
    return {"jobs_stopped": stopped, "files": files, "documents": documents}


SETTLE_WAIT_S = 30.0


def _settle(job_id: str, cfg: Settings) -> None:
    """Charges what the ended job owes (billing.charge_job, at most once). The charge trigger
    may be settling the same cancel right now: wait for it, then check again. Raises (and the
    event is redelivered) on a transient Stripe error or a charge still held after the wait."""
    import time

    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
        try:
            billing.charge_job(job_id, cfg)
            return
        except billing.ChargeInProgress:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _stop(job: Job, cfg: Settings) -> None:
    """Stops an active job's compute, then records it cancelled (settled by the caller, as the
    charge trigger settles any cancel)."""
    batch.backend(cfg).delete(batch.job_name(cfg, batch.job_id_for(job.id)))
    with contextlib.suppress(InvalidTransition):  # it ended meanwhile
        transition(job.id, JobStatus.CANCELLED, "cancelled: the account was deleted")
