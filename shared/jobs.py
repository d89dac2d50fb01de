"""A job as the API shows it: the public view, ownership and listing (typed core).

The rest of a job's life is in two modules: `shared.admission` (estimate and submit) and
`shared.lifecycle` (launch, the state machine, Batch notifications, cancel). Charging is in
`shared.billing`, the charge policy in `shared.pricing`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import store
from shared.errors import ApiError, Code
from shared.pricing import CHARGE_POLICY
from shared.records import Job, JobStatus, TrainingOptions


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def view(job: Job) -> dict[str, Any]:
    """The public JSON shape of a job."""
    result = job.trainer_result
    payment = job.payment
    held = job.authorization
    return {
        "object": "job",
        "id": job.id,
        "status": job.status.value,
        "model": job.model,
        "dataset_id": job.dataset_id,
        "hyperparameters": job.hyperparameters.to_dict(),
        **options_view(job.options),
        "quote": job.quote.to_doc(),
        "progress": None if job.progress is None else job.progress.to_doc(),
        "failure": None if job.failure is None else job.failure.to_doc(),
        "result": None
        if result is None
        else {
            "trained_tokens": result.trained_tokens,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "eval_loss": result.eval_loss,
            "eval_tokens": result.eval_tokens,
            "checkpoints": len(result.checkpoints),
        },
        "events": [
            {"at": e.at.isoformat(), "status": e.status.value, "message": e.message}
            for e in job.events
        ],
        "payment": None
        if payment is None
        else {
            **payment.to_doc(),
            **({"charged_at": _iso(payment.charged_at)} if payment.charged_at else {}),
        },
        "authorization": None
        if held is None
        else {
            "status": held.status.value,
            "amount_cents": held.amount_cents,
            "currency": held.currency,
            "authorized_at": _iso(held.authorized_at),
        },
        "charge_policy": CHARGE_POLICY,
        "expires_at": _iso(job.expires_at),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
    }


def options_view(options: TrainingOptions) -> dict[str, Any]:
    """The training options as a job and an estimate show them (the split is in the quote)."""
    source = options.from_job
    if source is not None and options.from_step is not None:
        source = f"{source}:{options.from_step}"
    return {
        "validation_dataset_id": options.validation_dataset_id,
        "eval_every_steps": options.eval_every_steps,
        "from_job": source,
        "outputs": list(options.outputs),
    }


def owned(uid: str, job_id: str) -> Job:
    """The user's job; not_found for anyone else's (as if it did not exist)."""
    job = store.get_owned_job(uid, job_id)
    if job is None:
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}'.", param="job_id")
    return job


def list_page(
    uid: str, limit: int, cursor: str | None, status: JobStatus | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the user's jobs (views), newest first, and the next page's cursor."""
    found, next_cursor = store.list_jobs(uid, limit, cursor, status)
    return [view(j) for j in found], next_cursor
