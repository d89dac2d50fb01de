"""The scheduled sweep (shared.sweep) never stops on a record: each of four malformed job shapes
(queued, running, ended, held, each missing fields), beside a good job, is logged and skipped
while the good job is still repaired, and the route answers 200 saying what it skipped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests
from google.cloud import firestore

from shared import lifecycle, store, sweep, tasks
from shared.config import settings
from shared.records import JobStatus
from tests.support.api import stored_job

OLD = timedelta(days=7)  # older than every sweep's threshold (stale, stuck, unsettled, ageing)


def malformed(uid: str, shape: str) -> str:
    """A job document of `shape` that matches its sweep query but lacks fields its record
    needs (as a hand edit or an older version would leave it)."""
    old = store.now() - OLD
    status = {
        "queued": JobStatus.QUEUED,
        "running": JobStatus.RUNNING,
        "ended": JobStatus.COMPLETED,
        "held": JobStatus.RUNNING,
    }[shape]
    job_id = stored_job(uid, status, created_at=old)
    changes: dict[str, Any] = {
        "quote": firestore.DELETE_FIELD,
        "hyperparameters": firestore.DELETE_FIELD,
        "updated_at": old,
    }
    if shape == "ended":
        changes.update({"ended_at": old, "payment": None})
    if shape == "held":
        changes["authorization"] = {"status": "authorized", "authorized_at": old}
    store.client().document(store.job_document(job_id)).update(changes)
    return job_id


@pytest.mark.parametrize("shape", ["queued", "running", "ended", "held"])
def test_a_malformed_job_is_skipped_and_the_good_one_still_repaired(
    api, stack_env, monkeypatch, shape
) -> None:
    user = api.new_user()
    bad = malformed(user.uid, shape)
    good = stored_job(user.uid, JobStatus.QUEUED, created_at=store.now() - OLD)
    enqueued: list[str] = []
    monkeypatch.setattr(tasks, "enqueue_launch", lambda job_id, cfg: enqueued.append(job_id))

    report = sweep.run(settings())
    assert report["failed_steps"] == []
    assert report["skipped"] == [bad]
    assert f"{good}: launch enqueued again" in report["relaunched"]
    assert enqueued == [good]  # the malformed queued job never becomes a launch task


def test_a_launch_task_for_a_malformed_job_answers_without_retrying(api, stack_env) -> None:
    bad = malformed(api.new_user().uid, "queued")
    assert lifecycle.launch(bad, settings()) == "skipped: the job's document is malformed"


def test_the_sweep_route_answers_200_with_what_it_skipped(api, stack_env) -> None:
    user = api.new_user()
    bad = [malformed(user.uid, shape) for shape in ("running", "ended", "held")]
    resp = requests.post(f"{stack_env.api_base_url}/internal/tasks/relaunch-stale", timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["skipped"] == sorted(bad)
    assert body["failed_steps"] == []
    assert set(body) >= {"relaunched", "reconciled", "holds", "abandoned_uploads"}


def test_a_step_that_fails_outright_does_not_stop_the_others(stack_env) -> None:
    def broken(cfg: Any, now: Any) -> store.Found[str]:
        raise ConnectionError("Firestore unreachable")

    def fine(cfg: Any, now: Any) -> store.Found[str]:
        return store.Found(["x: done"], ["y"])

    report = sweep.run(settings(), steps={"first": broken, "second": fine})
    assert report == {
        "first": [],
        "second": ["x: done"],
        "skipped": ["y"],
        "failed_steps": ["first: ConnectionError"],
    }
