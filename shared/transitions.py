"""The job state machine: queued -> running -> completed | failed | cancelled (and queued ->
cancelled or failed). Every transition is one atomic Firestore write conditioned on the state
it read (store.update_job: an optimistic transaction), which appends a timestamped event; its
outbox (records.JobChange: the webhook event, and when the job ends the user's email) goes in
the same commit.

Below every module that ends jobs (the lifecycle, holds, erasure), so none of them imports
another to do it.
"""

from __future__ import annotations

from collections.abc import Callable

from shared import store
from shared.records import Job, JobChange, JobEvent, JobStatus, Mail, Payment, PaymentStatus

TRANSITIONS = {
    JobStatus.QUEUED: (JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED),
    JobStatus.RUNNING: (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED),
}


class InvalidTransition(Exception):
    def __init__(self, current: JobStatus, wanted: JobStatus) -> None:
        super().__init__(f"{current} -> {wanted}")
        self.current = current
        self.wanted = wanted


def can_transition(current: JobStatus, wanted: JobStatus) -> bool:
    return wanted in TRANSITIONS.get(current, ())


def transition(
    job_id: str,
    wanted: JobStatus,
    message: str,
    change: Callable[[Job], Job] | None = None,
    when: Callable[[Job], bool] | None = None,
) -> Job:
    """Moves a job to `wanted` in one conditional write, with `change` applied to it too.

    Args:
        when: a condition on the job as read; when false, nothing is written.

    Raises:
        InvalidTransition: the job's current state does not lead to `wanted` (including when
            it is already there: callers that may repeat treat that as done).
        LookupError: there is no such job.
        Contended: concurrent writers won every attempt.
    """
    t = store.now()

    def decide(job: Job) -> JobChange | None:
        if when is not None and not when(job):
            return None
        if not can_transition(job.status, wanted):
            raise InvalidTransition(job.status, wanted)
        new = (change(job) if change else job)._replace(
            status=wanted,
            events=(*job.events, JobEvent(t, wanted, message)),
        )
        if wanted == JobStatus.RUNNING:
            new = new._replace(started_at=t)
        mail = None
        if wanted.ended:
            new = new._replace(ended_at=t)
            mail = _mail(job, wanted, message)
            if _free(new):  # its payment is known now: nothing (ends its reservation)
                new = new._replace(
                    payment=Payment(PaymentStatus.NOT_CHARGED, 0, job.quote.currency)
                )
        return JobChange.between(job, new, mail)

    return store.update_job(job_id, decide)


def _free(job: Job) -> bool:
    """Ended where the charge policy makes it free whatever it trained: failed, or cancelled
    before it ran (the charge trigger settles the rest)."""
    return job.status == JobStatus.FAILED or (
        job.status == JobStatus.CANCELLED and job.started_at is None
    )


def _mail(job: Job, status: JobStatus, message: str) -> Mail | None:
    """The email for an ended job, when the user wants it, to their verified address (only
    verified addresses are ever stored: shared.http.ApiRequest.email)."""
    user = store.get_or_create_user(job.uid, job.email)
    to = user.email or job.email
    if not user.notifications.get(f"job_{status.value}", True) or not to:
        return None
    subject = {
        JobStatus.COMPLETED: "Your fine-tune is ready",
        JobStatus.FAILED: "Your fine-tune failed",
        JobStatus.CANCELLED: "Your fine-tune was cancelled",
    }[status]
    text = f"Job {job.id} on {job.model}: {status.value}. {message}"
    return Mail(
        to=to, uid=job.uid, job_id=job.id, subject=subject, text=text, created_at=store.now()
    )
