"""A finished job's files: download links and retention (typed core).

The trainer writes the adapter and its companions under gs://{artifacts}/jobs/{job_id}/ and
reports their names, sizes and sha256 (the manifest). Downloads are one-hour V4 signed GET URLs,
one per file, built only from that job's own manifest and prefix. Retention: each object gets a
customTime of its expiry; a Storage lifecycle rule (daysSinceCustomTime) deletes them in
production, the local sweeper locally.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import storage, store
from shared.config import Settings
from shared.contract import MANIFEST
from shared.errors import ApiError, Code
from shared.records import Job, JobStatus


def prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def download_links(job: Job, cfg: Settings, now: datetime | None = None) -> dict[str, Any]:
    """One-hour signed URLs for each file of a completed, paid, unexpired job.

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
    now = now or store.now()
    expires_at = job.expires_at
    if expires_at is not None and expires_at <= now:
        raise ApiError(
            Code.ARTIFACTS_EXPIRED,
            f"This job's files were kept until {expires_at.isoformat()} and are gone.",
        )
    files = {a.name: a for a in (job.trainer_result.artifacts if job.trainer_result else ())}
    out = []
    link_expiry = None
    for name in [*files, MANIFEST]:
        if "/" in name:  # names come from the trainer's manifest: never leave the job's prefix
            continue
        url, link_expiry = storage.signed_url(
            cfg.artifacts_bucket, prefix(job.id) + name, "GET", now=now
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
    return {
        "object": "download",
        "job_id": job.id,
        "files": out,
        "urls_expire_at": link_expiry.isoformat() if link_expiry else None,
        "files_kept_until": expires_at.isoformat() if expires_at else None,
    }


def set_retention(job_id: str, expires_at: datetime, cfg: Settings) -> None:
    """Marks each of the job's objects with customTime = expiry (it may only move later)."""
    storage.set_custom_time(cfg.artifacts_bucket, prefix(job_id), expires_at)


def sweep_expired(cfg: Settings, now: datetime | None = None) -> list[str]:
    """LOCAL stand-in for the Storage lifecycle rule: deletes expired job files; returns the
    names deleted. In production the bucket's rule does this and nothing calls the sweeper."""
    return storage.delete_expired(cfg.artifacts_bucket, "jobs/", now or store.now())
