"""Erasing an account when its Firebase user is deleted (typed core).

The Firebase Auth `user.delete` event calls `erase_account`. What goes: the account record
(email, card, preferences), every dataset and its file, every job with its adapter, checkpoints
and emails. What stays: the user's charges and ledger entries, which accounting and tax law
oblige us to keep (amounts, dates, Stripe ids, job ids; no email, no data), and Stripe's own
customer record with its payment history; the saved card is detached from it, so nothing can
be charged again. Jobs still queued or running are stopped first and not charged (their holds
released): the user is gone, and we do not bill a run nobody can download.

Idempotent: the event may arrive more than once; a second run finds nothing left to erase.
"""

from __future__ import annotations

import contextlib

from shared import artifacts, authorization, batch, datasets, logs, payments, storage, store
from shared.config import Settings
from shared.records import Job, JobStatus, Payment, PaymentStatus


def erase_account(uid: str, cfg: Settings) -> dict[str, int]:
    """Erases the user's account as the module docstring says; returns what it did."""
    user = store.find_user(uid)
    jobs = store.jobs_of(uid)
    stopped = 0
    for job in jobs:
        if job.status.active:
            _stop(job, cfg)
            stopped += 1
    files = storage.delete_prefix(cfg.datasets_bucket, datasets.user_prefix(uid))
    for job in jobs:
        files += storage.delete_prefix(cfg.artifacts_bucket, artifacts.prefix(job.id))
        files += storage.delete_prefix(cfg.checkpoints_bucket, artifacts.prefix(job.id))
    if user is not None and user.payment_method is not None:
        payments.detach_card(cfg, user.payment_method.id)
    documents = store.erase_user_documents(uid)
    logs.info("account erased", uid=uid, jobs_stopped=stopped, files=files, documents=documents)
    return {"jobs_stopped": stopped, "files": files, "documents": documents}


def _stop(job: Job, cfg: Settings) -> None:
    """Stops an active job's compute, records it cancelled and free, and releases its hold."""
    from shared.lifecycle import InvalidTransition, transition

    batch.backend(cfg).delete(batch.job_name(cfg, batch.job_id_for(job.id)))
    free = Payment(PaymentStatus.NOT_CHARGED, 0, job.quote.currency)
    with contextlib.suppress(InvalidTransition):  # it ended meanwhile
        job = transition(
            job.id,
            JobStatus.CANCELLED,
            "cancelled: the account was deleted",
            change=lambda j: j._replace(payment=free),
        )
    authorization.release(store.get_job(job.id) or job, cfg)
