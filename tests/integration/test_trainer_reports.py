"""A trainer writes only its own job, and only the fields it owns: it has no database access
and reports through the launcher's trainer-report route with the token signed for its job at
launch (shared.lifecycle.trainer_report). Every job test's trainer reports this way; these
cases are the refusals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import requests

from shared import lifecycle, links, store
from shared.config import settings
from shared.contract import PROGRESS_FIELD, RESULT_FIELD
from shared.records import Job, JobStatus
from tests.support.api import stored_job

PROGRESS = {
    "step": 3,
    "total_steps": 10,
    "epoch": 1,
    "trained_tokens": 300,
    "total_tokens": 1000,
    "loss": 1.5,
    "learning_rate": 0.0002,
    "eta_s": 12.0,
}


def stored(job_id: str) -> Job:
    job = store.get_job(job_id)
    assert job is not None
    return job


def report(stack, token: str | None, body: dict) -> requests.Response:
    headers = {} if token is None else {"X-Yachay-Job-Token": token}
    return requests.post(
        f"{stack.api_base_url}/internal/trainer/report", json=body, headers=headers, timeout=30
    )


def test_a_trainer_reports_its_own_job_and_nothing_else(stack_env) -> None:
    cfg = settings()
    mine, other = stored_job("u-trainer"), stored_job("u-other", JobStatus.RUNNING)
    token = lifecycle.trainer_config(stored(mine), cfg).report_token
    ok = report(stack_env, token, {"job_id": mine, "fields": {PROGRESS_FIELD: PROGRESS}})
    assert ok.status_code == 200, ok.text
    assert store.get_job(mine).progress.step == 3

    expired = links.sign(lifecycle.TRAINER_REPORT, mine, cfg, now=store.now() - timedelta(days=8))
    portal = links.sign("billing-portal", mine, cfg)  # ours, but for another purpose
    refusals: list[tuple[str | None, dict[str, Any], int]] = [
        (token, {"job_id": other, "fields": {PROGRESS_FIELD: PROGRESS}}, 404),  # another job
        (None, {"job_id": mine, "fields": {PROGRESS_FIELD: PROGRESS}}, 400),
        ("forged", {"job_id": mine, "fields": {PROGRESS_FIELD: PROGRESS}}, 400),
        (portal, {"job_id": mine, "fields": {PROGRESS_FIELD: PROGRESS}}, 400),
        (expired, {"job_id": mine, "fields": {PROGRESS_FIELD: PROGRESS}}, 410),
        (token, {"job_id": mine, "fields": {"status": "completed"}}, 400),  # not its field
        (token, {"job_id": mine, "fields": {"quote": {"price_cents": 0}}}, 400),
        (token, {"job_id": mine, "fields": {PROGRESS_FIELD: {"step": "x"}}}, 400),
        (token, {"job_id": mine, "fields": {RESULT_FIELD: "not an object"}}, 400),
        (token, {"job_id": mine}, 400),
    ]
    for bad_token, body, status in refusals:
        resp = report(stack_env, bad_token, body)
        assert resp.status_code == status, (body, resp.text)
        assert "error" in resp.json()
    job = store.get_job(mine)
    assert job.status == JobStatus.RUNNING and job.progress.step == 3  # nothing else changed
    assert job.quote.price_cents > 0 and store.get_job(other).progress is None


def storage_token(stack, token: str | None, job_id: str) -> requests.Response:
    headers = {} if token is None else {"X-Yachay-Job-Token": token}
    return requests.post(
        f"{stack.api_base_url}/internal/trainer/storage-token",
        json={"job_id": job_id},
        headers=headers,
        timeout=30,
    )


def test_storage_tokens_go_to_a_running_job_own_trainer_only(stack_env) -> None:
    """Locally the answer carries no token (the Storage emulator checks none, so the trainer
    keeps its default client), but the refusals are the production ones: another job's token,
    a forged one, and any job that has ended get nothing."""
    cfg = settings()
    mine, other = stored_job("u-storage"), stored_job("u-storage-2", JobStatus.RUNNING)
    token = lifecycle.trainer_config(stored(mine), cfg).report_token
    ok = storage_token(stack_env, token, mine)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"token": None, "expires_at": None}

    assert storage_token(stack_env, token, other).status_code == 404
    assert storage_token(stack_env, "forged", mine).status_code == 400
    assert storage_token(stack_env, None, mine).status_code == 400
    assert storage_token(stack_env, token, "ft-gone").status_code == 404

    ended = stored_job("u-storage", JobStatus.CANCELLED)
    ended_token = lifecycle.trainer_config(stored(ended), cfg).report_token
    refused = storage_token(stack_env, ended_token, ended)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_already_ended"
