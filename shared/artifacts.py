"""A finished job's files: download links and retention (typed core).

The trainer writes the adapter and its companions under gs://{artifacts}/jobs/{job_id}/ and
reports their names, sizes and sha256 (the manifest). Downloads are one-hour V4 signed GET URLs,
one per file, built only from that job's own manifest and prefix. Retention: each object gets a
customTime of its expiry; a Storage lifecycle rule (daysSinceCustomTime) deletes them in
production, the local sweeper locally.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from shared import storage, store
from shared.config import Settings
from shared.contract import MANIFEST
from shared.errors import ApiError, Code
from shared.records import Job, JobStatus


def prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def check_downloadable(job: Job, now: datetime | None = None) -> None:
    """The gates every download (and continuing from a job) passes: completed, paid, unexpired.

    Raises:
        ApiError: job_not_completed (409), payment_required (402), artifacts_expired (410).
    """
    if job.status != JobStatus.COMPLETED:
        raise ApiError(
            Code.JOB_NOT_COMPLETED,
            f"Job {job.id} is {job.status.value}; only a completed job has files to download.",
        )
    payment = job.payment
    if payment is None or not payment.settled:
        reason = payment.reason if payment is not None else None
        raise ApiError(
            Code.PAYMENT_REQUIRED,
            "The job's payment is not settled yet"
            + (f": {reason}" if reason else "; try again in a moment.")
            + " Downloads open once it is paid.",
        )
    expires_at = job.expires_at
    if expires_at is not None and expires_at <= (now or store.now()):
        raise ApiError(
            Code.ARTIFACTS_EXPIRED,
            f"This job's files were kept until {expires_at.isoformat()} and are gone.",
        )


# A file name from a trainer's manifest: a name, or one folder and a name; never "..".
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)?$")


def download_links(
    job: Job, cfg: Settings, now: datetime | None = None, checkpoint: int | None = None
) -> dict[str, Any]:
    """One-hour signed URLs for each file of a completed, paid, unexpired job: its outputs, or
    the adapter kept at the epoch end `checkpoint` (a step).

    Raises:
        ApiError: what check_downloadable raises; not_found for a step with no checkpoint.
    """
    now = now or store.now()
    check_downloadable(job, now)
    result = job.trainer_result
    if checkpoint is None:
        folder = ""
        files = {a.name: a for a in (result.artifacts if result else ())}
        names = [*files, MANIFEST]
    else:
        kept = result.checkpoint(checkpoint) if result else None
        if kept is None:
            raise ApiError(
                Code.NOT_FOUND,
                f"Job {job.id} has no checkpoint at step {checkpoint}; "
                f"see GET /v1/jobs/{job.id}/checkpoints.",
                param="checkpoint",
            )
        folder = kept.folder + "/"
        files = {f.name: f for f in kept.files}
        names = list(files)
    out = []
    link_expiry = None
    for name in names:
        if not _SAFE_NAME.match(name):  # names come from the trainer: never leave the prefix
            continue
        url, link_expiry = storage.signed_url(
            cfg.artifacts_bucket, prefix(job.id) + folder + name, "GET", now=now
        )
        meta = files.get(name)
        out.append(
            {
                "name": name,
                "url": url,
                "size": None if meta is None else meta.size,
                "sha256": None if meta is None else meta.sha256,
            }
        )
    expires_at = job.expires_at
    return {
        "object": "download",
        "job_id": job.id,
        "checkpoint": checkpoint,
        "files": out,
        "urls_expire_at": link_expiry.isoformat() if link_expiry else None,
        "files_kept_until": expires_at.isoformat() if expires_at else None,
    }


def checkpoints(job: Job) -> list[dict[str, Any]]:
    """GET /v1/jobs/{id}/checkpoints: the adapters kept at each epoch end, for any job of the
    caller's (a running job lists those made so far only once it completes: the trainer reports
    them with its result)."""
    result = job.trainer_result
    return [
        {
            "object": "checkpoint",
            "step": c.step,
            "epoch": c.epoch,
            "train_loss": c.train_loss,
            "eval_loss": c.eval_loss,
            "size": c.size,
            "from_job": f"{job.id}:{c.step}",
        }
        for c in (result.checkpoints if result else ())
    ]


def set_retention(job_id: str, expires_at: datetime, cfg: Settings) -> None:
    """Marks each of the job's objects with customTime = expiry (it may only move later)."""
    storage.set_custom_time(cfg.artifacts_bucket, prefix(job_id), expires_at)


def sweep_expired(cfg: Settings, now: datetime | None = None) -> list[str]:
    """LOCAL stand-in for the Storage lifecycle rule: deletes expired job files; returns the
    names deleted. In production the bucket's rule does this and nothing calls the sweeper."""
    return storage.delete_expired(cfg.artifacts_bucket, "jobs/", now or store.now())
