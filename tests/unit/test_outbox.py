"""A job's change is one value, the job and its outbox (records.JobChange): the core decides the
webhook events, the email and the account's bookkeeping; the store writes them as handed."""

from datetime import UTC, datetime

import pytest

from shared.contract import Hyperparameters
from shared.records import (
    WEBHOOK_EVENT_TYPES,
    Job,
    JobChange,
    JobStatus,
    Mail,
    Payment,
    PaymentStatus,
    Quote,
)

T = datetime(2026, 12, 1, tzinfo=UTC)


def job(status: JobStatus = JobStatus.RUNNING, payment: Payment | None = None) -> Job:
    quote = Quote(10, 0, 0, 100, 100, 1, 100, 50, "usd", 60, "L4", 500)
    return Job(
        "job-1", "uid-1", None, "m", "ds-1", "o", "sha", Hyperparameters(), quote, status, T, T,
        payment=payment,
    )  # fmt: skip


def paid(status: PaymentStatus) -> Payment:
    return Payment(status, 50, "usd")


def test_reaching_a_status_is_its_event_and_an_end_leaves_the_active_set() -> None:
    mail = Mail("a@b.c", "uid-1", "job-1", "done", "done", T)
    change = JobChange.between(job(), job(JobStatus.COMPLETED), mail)
    assert change.job.status == JobStatus.COMPLETED
    assert change.outbox.events == ("job.completed",)
    assert change.outbox.mail == mail
    assert change.outbox.ends_activity and not change.outbox.ends_reservation


def test_a_change_within_a_status_carries_nothing() -> None:
    change = JobChange.between(job(), job()._replace(batch_job="b"))
    assert change.outbox.events == () and change.outbox.mail is None
    assert not change.outbox.ends_activity and not change.outbox.ends_reservation


def test_an_ended_job_ending_again_is_not_a_second_end() -> None:
    done = job(JobStatus.COMPLETED)
    assert not JobChange.between(done, done._replace(batch_job="b")).outbox.ends_activity


@pytest.mark.parametrize(
    ("payment", "ends"),
    [(PaymentStatus.PAID, True), (PaymentStatus.NOT_CHARGED, True), (PaymentStatus.FAILED, False)],
)
def test_a_recorded_payment_ends_the_reservation_unless_declined(
    payment: PaymentStatus, ends: bool
) -> None:
    old = job(JobStatus.COMPLETED)
    change = JobChange.between(old, old._replace(payment=paid(payment)))
    assert change.outbox.ends_reservation is ends
    # a payment recorded a second time is not a second release
    again = change.job._replace(payment=paid(payment))
    assert not JobChange.between(change.job, again).outbox.ends_reservation


def test_a_submission_is_the_event_of_its_first_status() -> None:
    assert JobChange.created(job(JobStatus.QUEUED)).outbox.events == ("job.queued",)


def test_event_names_derive_from_the_status_enums() -> None:
    assert [s.event for s in JobStatus] == [f"job.{s.value}" for s in JobStatus]
    assert set(WEBHOOK_EVENT_TYPES) == {s.event for s in JobStatus} | {
        "payment.succeeded",
        "payment.failed",
    }
    assert PaymentStatus.NOT_CHARGED.event is None  # no money moved: no event
