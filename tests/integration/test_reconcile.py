"""The reconciler (lifecycle.reconcile): what at-least-once delivery can still lose is repaired
from Batch's own state and the job records, each path shown by making its first attempt fail.

Batch has no emulator: the local Batch executor (`shared.batch.LocalBatch`, our local
implementation of the same interface) answers for the state of the jobs it knows, and knows
nothing of a job whose run never came to be, as Batch would."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from shared import artifacts, batch, lifecycle, store
from shared.config import settings
from shared.records import FailureCode, JobChange, JobStatus, PaymentStatus
from tests.support.api import result_of, save_test_card, stored_job, trainer_reports

LONG_AGO = timedelta(hours=1)


def batch_name(job_id: str) -> str:
    return batch.job_name(settings(), batch.job_id_for(job_id))


def test_a_queued_job_whose_batch_job_never_came_to_be_is_launched_again(api, stack_env) -> None:
    """The first launch recorded its Batch job, then the executor died before the trainer
    started (the job stayed queued for ever before the reconciler)."""
    user = api.new_user()
    save_test_card(user.uid)
    old = store.now() - LONG_AGO
    job_id = _with_batch_job(stored_job(user.uid, JobStatus.QUEUED, created_at=old))
    outcomes = lifecycle.reconcile(settings()).items
    assert f"{job_id}: its Batch job never came to be: launched again" in outcomes
    deadline = time.monotonic() + 60
    while store.get_job(job_id).status == JobStatus.QUEUED and time.monotonic() < deadline:
        time.sleep(0.5)  # the launch task reaches the stack's launcher and Batch runs it
    job = store.get_job(job_id)
    assert job.batch_job == batch_name(job_id) and job.status != JobStatus.QUEUED
    assert job.authorization is not None  # launched through the same gate: hold first


def _with_batch_job(job_id: str) -> str:
    """Records a Batch job on a stored job, as its first launch did."""
    name = batch_name(job_id)
    store.update_job(job_id, lambda j: JobChange.between(j, j._replace(batch_job=name)))
    _age(job_id)
    return job_id


def _age(job_id: str) -> None:
    """Dates the job's last change back, as if nothing had happened to it for an hour."""
    ref = store.client().document(store.job_document(job_id))
    ref.update({"updated_at": store.now() - LONG_AGO})


def test_a_running_job_that_batch_lost_fails_free(api, stack_env) -> None:
    user = api.new_user()
    job_id = _with_batch_job(stored_job(user.uid, created_at=store.now() - LONG_AGO))
    [outcome] = lifecycle.reconcile(settings()).items
    assert outcome.startswith(f"{job_id}: Batch knows no such job")
    job = store.get_job(job_id)
    assert job.status == JobStatus.FAILED and job.failure.code == FailureCode.PLATFORM_ERROR
    assert job.payment.status == PaymentStatus.NOT_CHARGED


def test_a_dropped_success_notification_is_applied_from_batchs_state(api, stack_env) -> None:
    """Batch finished the job, but its notification never arrived."""
    user = api.new_user()
    job_id = stored_job(user.uid, created_at=store.now() - LONG_AGO)
    trainer_reports(job_id, result=result_of(30_000))
    _with_batch_job(job_id)
    local = batch.LocalBatch(settings())
    local._jobs[batch_name(job_id)] = done = batch._LocalJob()
    done.state = "SUCCEEDED"
    try:
        original = batch._backend
        batch._backend = local  # this process's Batch: the one that ran it
        [outcome] = lifecycle.reconcile(settings()).items
    finally:
        batch._backend = original
        local._jobs.pop(batch_name(job_id), None)
    assert outcome.startswith(f"{job_id}: Batch says SUCCEEDED")
    assert store.get_job(job_id).status == JobStatus.COMPLETED


def test_a_job_that_ended_while_its_trigger_was_down_is_charged(api, stack_env) -> None:
    """The local Firestore relay gives up after its retries and drops the event; a job ended
    then was never charged before the reconciler."""
    user = api.new_user()
    save_test_card(user.uid)
    old = store.now() - LONG_AGO
    # Stored as already completed: no update event ever reaches the charge trigger.
    job_id = stored_job(user.uid, JobStatus.COMPLETED, created_at=old, ended_at=old)
    trainer_reports(job_id, result=result_of(30_000))
    assert store.get_job(job_id).payment is None
    outcomes = lifecycle.reconcile(settings()).items
    assert f"{job_id}: settled: charged 50 usd" in outcomes
    assert store.get_job(job_id).payment.status == PaymentStatus.PAID
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [50]
    assert lifecycle.reconcile(settings()).items == []  # settled: nothing left to do


def test_a_failed_retention_write_is_retried_by_the_redelivery(api, stack_env, monkeypatch) -> None:
    user = api.new_user()
    job_id = stored_job(user.uid)
    trainer_reports(job_id, result=result_of(30_000))
    applied: list[object] = []
    real = artifacts.set_retention

    def flaky(job, until, cfg):
        if not applied:
            applied.append("failed")
            raise ConnectionError("Storage unavailable")
        applied.append(until)
        return real(job, until, cfg)

    monkeypatch.setattr(artifacts, "set_retention", flaky)
    with pytest.raises(ConnectionError):  # the push fails, so Pub/Sub delivers it again
        lifecycle.on_batch_state(batch_name(job_id), "SUCCEEDED", settings())
    assert store.get_job(job_id).status == JobStatus.COMPLETED
    assert lifecycle.on_batch_state(batch_name(job_id), "SUCCEEDED", settings()) == (
        "already completed"
    )
    assert applied == ["failed", store.get_job(job_id).expires_at]
