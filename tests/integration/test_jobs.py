"""Jobs against the real emulators and the local Batch executor running the real trainer."""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest

from devstack.stack import ROOT
from shared import admission, errors, lifecycle, storage, store
from shared.batch import local_trainers
from shared.config import settings
from shared.contract import FailureKind, TrainerFailure
from shared.jsonl_rules import parse_jsonl
from shared.pricing import MIN_CHARGE_CENTS
from shared.records import (
    AuthorizationStatus,
    FailureCode,
    JobChange,
    JobStatus,
    Pause,
    PaymentStatus,
)
from shared.tokenization import ChatTokenizer, held_out
from tests.integration.conftest import COUNT_INLINE_BYTES
from tests.support.api import (
    jsonl,
    result_of,
    save_test_card,
    stored_job,
    trainer_reports,
    upload_dataset,
    wait_for,
)
from tests.support.tiny import chat_records

ENDED = ("completed", "failed", "cancelled")


def ready_user(api, n_records: int = 16, seed: int = 3):
    user = api.new_user()
    save_test_card(user.uid)
    ds = upload_dataset(api, user, jsonl(chat_records(n_records, seed=seed, mean_words=20)))
    assert ds["status"] == "ready"
    return user, ds


def trainer_pids(job_id: str) -> list[int]:
    """Live trainer processes of one job (found by the contract variable in their env)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
            if f"YACHAY_TRAINER_JOB_ID={job_id}".encode() in variables:
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def trainers_stop(job_id: str, within_s: float = 10.0) -> bool:
    """Whether every trainer process of the job is gone within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while trainer_pids(job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not trainer_pids(job_id)


def batch_log(stack, job_id: str) -> str:
    path = Path(stack.env()["YACHAY_LOCAL_BATCH_LOGS"]) / f"{job_id}.log"
    return path.read_text() if path.exists() else ""


def wait_for_step(stack, job_id: str, step: int, timeout: float = 120.0) -> None:
    """Waits until the trainer has logged `step` (its log has every step; Firestore is
    updated at a bounded rate, too coarse to catch a run mid-way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f'"step": {step},' in batch_log(stack, job_id):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} never came: {batch_log(stack, job_id)[-2000:]}")


def submit(api, user, ds, key: str | None = None, **hp):
    headers = {"Idempotency-Key": key} if key else {}
    return api.request(
        "POST",
        "/v1/jobs",
        user,
        headers=headers,
        json={"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": hp},
    )


# --- the whole path ----------------------------------------------------------------------------


def test_job_runs_to_completed_and_trains_exactly_the_estimate(api, stack, tiny_in_store) -> None:
    user, ds = ready_user(api)
    est = api.request(
        "POST",
        "/v1/jobs/estimate",
        user,
        json={"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {"epochs": 2}},
    ).json()
    assert est["allowed_to_proceed"] is True, est["reasons"]
    resp = submit(api, user, ds, epochs=2)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["quote"]["billable_tokens"] == est["billable_tokens"]

    # The task delivered again, twice at once: still one Batch job, one trainer run.
    def deliver() -> None:
        api.request("POST", "/internal/tasks/launch-job", json={"job_id": job["id"]})

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    done = wait_for(api, user, job["id"], lambda j: j["status"] in ENDED)
    assert done["status"] == "completed", batch_log(stack, job["id"])[-3000:]
    assert done["result"]["trained_tokens"] == est["billable_tokens"]
    log = batch_log(stack, job["id"])
    assert done["progress"], log[-3000:]
    assert done["progress"]["step"] == done["progress"]["total_steps"]
    assert [e["status"] for e in done["events"]] == ["queued", "running", "completed"]
    assert batch_log(stack, job["id"]).count('"event": "result"') == 1
    mail = store.client().collection("mail").document(f"{job['id']}-completed").get()
    assert mail.exists and mail.to_dict()["to"] == user.email


def test_sigterm_mid_run_is_retried_and_resumes_to_the_same_count(
    api, stack, tiny_in_store
) -> None:
    user, ds = ready_user(api, n_records=300)
    job = submit(api, user, ds, epochs=2, batch_size=1).json()
    wait_for_step(stack, job["id"], 5)
    pids = trainer_pids(job["id"])
    assert pids, "the trainer should be running"
    assert set(pids) <= set(local_trainers(ROOT))  # what a new stack refuses to start beside
    for pid in pids:
        os.kill(pid, signal.SIGTERM)  # what a Spot preemption notice does
    done = wait_for(api, user, job["id"], lambda j: j["status"] in ENDED)
    log = batch_log(stack, job["id"])
    assert done["status"] == "completed", log[-3000:]
    assert '"event": "preempted"' in log and '"event": "resumed"' in log
    assert done["result"]["trained_tokens"] == job["quote"]["billable_tokens"]


def test_trainer_killed_mid_run_fails_with_an_actionable_reason(api, stack, tiny_in_store) -> None:
    user, ds = ready_user(api, n_records=300)
    job = submit(api, user, ds, epochs=3, batch_size=1).json()
    wait_for_step(stack, job["id"], 3)
    assert trainer_pids(job["id"])
    for pid in trainer_pids(job["id"]):
        os.kill(pid, signal.SIGKILL)
    done = wait_for(api, user, job["id"], lambda j: j["status"] in ENDED)
    assert done["status"] == "failed"
    assert done["failure"]["code"] == "platform_error"
    message = done["failure"]["message"]
    assert "not charged" in message and "killed by SIGKILL" in message, message
    assert "attempts" not in message  # a SIGKILL is not retried: one attempt, no "after"


def test_cancel_running_stops_the_trainer(api, stack, tiny_in_store) -> None:
    user, ds = ready_user(api, n_records=300)
    job = submit(api, user, ds, epochs=3, batch_size=1).json()
    wait_for_step(stack, job["id"], 3)
    assert trainer_pids(job["id"])
    resp = api.request("POST", f"/v1/jobs/{job['id']}/cancel", user)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert trainers_stop(job["id"])
    again = api.request("POST", f"/v1/jobs/{job['id']}/cancel", user)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_already_ended"
    time.sleep(1)  # a late Batch notification must not revive it
    assert api.request("GET", f"/v1/jobs/{job['id']}", user).json()["status"] == "cancelled"


# --- submission rules --------------------------------------------------------------------------


def test_same_key_same_body_is_one_job_and_different_body_is_409(api, tiny_in_store) -> None:
    user, ds = ready_user(api)
    first = submit(api, user, ds, key="key-1", epochs=1)
    second = submit(api, user, ds, key="key-1", epochs=1)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    conflict = submit(api, user, ds, key="key-1", epochs=2)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    listed = api.request("GET", "/v1/jobs", user).json()["data"]
    assert [j["id"] for j in listed] == [first.json()["id"]]
    api.request("POST", f"/v1/jobs/{first.json()['id']}/cancel", user)


def test_submission_needs_a_card_and_an_unpaused_account(api, tiny_in_store) -> None:
    user = api.new_user()
    ds = upload_dataset(api, user, jsonl(chat_records(4, seed=1)))
    resp = submit(api, user, ds)
    assert resp.status_code == 402 and resp.json()["error"]["code"] == "payment_method_required"
    save_test_card(user.uid)
    store.pause_user(
        user.uid, "payment_failed", Pause("Your last charge was declined.", store.now())
    )
    resp = submit(api, user, ds)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "account_paused"
    assert "declined" in resp.json()["error"]["message"]
    assert api.request("GET", "/v1/jobs", user).json()["data"] == []


def test_active_job_limit_is_enforced_in_the_transaction(stack_env) -> None:
    results = submit_at_once("u-limit", 5, max_active=2)
    assert sorted(results) == ["ok", "ok"] + ["too_many_active_jobs"] * 3


def submit_at_once(uid: str, n: int, **limits: int) -> list[str]:
    """n queued jobs of `uid` (TEST_QUOTE: 50 cents each) created at once through the store;
    each one's outcome: "ok", a Conflict code, or "contended"."""
    from tests.support.api import job_record

    results: list[str] = []

    def create(i: int) -> None:
        job = job_record(uid, JobStatus.QUEUED, job_id=f"ft-{uid}-{i}")
        try:
            store.new_job(job, None, "h", **limits)
            results.append("ok")
        except store.Conflict as exc:
            results.append(exc.code)
        except errors.Contended:
            results.append("contended")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --- estimate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hp", "code", "param"),
    [
        ({"epochs": 0}, "invalid_value", "hyperparameters.epochs"),
        ({"epochs": 1.5}, "invalid_value", "hyperparameters.epochs"),
        ({"learning_rate": "fast"}, "invalid_value", "hyperparameters.learning_rate"),
        ({"learning_rate": 1.0}, "invalid_value", "hyperparameters.learning_rate"),
        ({"lora_rank": 1000}, "invalid_value", "hyperparameters.lora_rank"),
        ({"lora_dropout": True}, "invalid_value", "hyperparameters.lora_dropout"),
        (
            {"lora_target_modules": ["lm_head"]},
            "invalid_value",
            "hyperparameters.lora_target_modules",
        ),
        ({"max_seq_length": 100000}, "invalid_value", "hyperparameters.max_seq_length"),
        ({"momentum": 0.9}, "unknown_field", "hyperparameters.momentum"),
    ],
)
def test_estimate_names_the_bad_hyperparameter(api, tiny_in_store, hp, code, param) -> None:
    user = api.new_user()
    ds = upload_dataset(api, user, jsonl(chat_records(2, seed=1)))
    resp = api.request(
        "POST",
        "/v1/jobs/estimate",
        user,
        json={"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": hp},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["param"] == param


def test_estimate_refusals(api, tiny_in_store) -> None:
    alice, bob = api.new_user(), api.new_user()
    good = upload_dataset(api, alice, jsonl(chat_records(2, seed=1)))
    bad = upload_dataset(api, alice, b"{nope\n")

    def estimate(user, **body):
        return api.request("POST", "/v1/jobs/estimate", user, json=body)

    r = estimate(alice, model="gpt-17", dataset_id=good["id"])
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = estimate(alice, model="smollm2-135m-instruct", dataset_id=good["id"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_unavailable"
    r = estimate(alice, model="tiny-llama", dataset_id=bad["id"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "dataset_not_ready"
    r = estimate(bob, model="tiny-llama", dataset_id=good["id"])
    assert r.status_code == 404
    for weird in ("a/b", "../x", "x" * 300, ""):
        r = estimate(alice, model="tiny-llama", dataset_id=weird)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", weird
    r = estimate(alice, model="tiny-llama", dataset_id=good["id"])
    assert r.status_code == 200
    est = r.json()
    assert est["allowed_to_proceed"] is False
    assert [x["code"] for x in est["reasons"]] == ["payment_method_required"]
    assert est["price_cents"] == MIN_CHARGE_CENTS  # tiny jobs pay the minimum
    assert est["billable_tokens"] == est["tokens_per_epoch"] * est["epochs"]
    assert est["hyperparameters"]["lora_rank"] == 16  # defaults filled in


# --- the state machine under repeats and races ---------------------------------------------------


def test_cancel_racing_completion_ends_once(api, stack_env) -> None:
    user = api.new_user()
    cfg = settings()
    for _ in range(5):
        job_id = stored_job(user.uid)
        trainer_reports(job_id, result=result_of(10))
        outcomes: list[object] = []

        def cancel(job_id: str = job_id, outcomes: list = outcomes) -> None:
            try:
                lifecycle.cancel(user.uid, job_id, cfg)
                outcomes.append("cancelled")
            except Exception as exc:  # the loser sees job_already_ended
                outcomes.append(getattr(getattr(exc, "code", None), "value", repr(exc)))

        def complete(job_id: str = job_id, outcomes: list = outcomes) -> None:
            outcomes.append(lifecycle.on_batch_state(f"x/jobs/yachay-{job_id}", "SUCCEEDED", cfg))

        threads = [threading.Thread(target=cancel), threading.Thread(target=complete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        job = store.get_job(job_id)
        terminal = [e.status for e in job.events if e.status.ended]
        assert len(terminal) == 1 and job.status == terminal[0]
        mails = [
            d.id for d in store.client().collection("mail").stream() if d.id.startswith(job_id)
        ]
        assert mails == [f"{job_id}-{job.status.value}"]
        if job.status == JobStatus.COMPLETED:
            assert "job_already_ended" in outcomes


def test_batch_failures_become_reasons_a_user_can_act_on(api, stack_env) -> None:
    user = api.new_user()
    cfg = settings()
    bad = stored_job(user.uid)
    trainer_reports(bad, failure=TrainerFailure(FailureKind.USER_ERROR, "line 3: not valid JSON"))
    lifecycle.on_batch_state(f"x/jobs/yachay-{bad}", "FAILED", cfg)
    job = store.get_job(bad)
    assert job.status == JobStatus.FAILED and job.failure.code == "bad_data"
    assert "line 3" in job.failure.message
    silent = stored_job(user.uid)
    lifecycle.on_batch_state(f"x/jobs/yachay-{silent}", "SUCCEEDED", cfg)  # no result reported
    assert store.get_job(silent).failure.code == "platform_error"
    assert lifecycle.on_batch_state(f"x/jobs/yachay-{silent}", "FAILED", cfg) == "already failed"


def test_notifications_follow_preferences(api, stack_env) -> None:
    user = api.new_user()
    api.request("PATCH", "/v1/me", user, json={"notifications": {"job_failed": False}})
    job_id = stored_job(user.uid)
    lifecycle.on_batch_state(f"x/jobs/yachay-{job_id}", "FAILED", settings())
    assert not store.client().collection("mail").document(f"{job_id}-failed").get().exists


def test_list_filters_paginates_and_hides_others(api, stack_env) -> None:
    alice, bob = api.new_user(), api.new_user()
    ids = [stored_job(alice.uid) for _ in range(3)]
    lifecycle.on_batch_state(f"x/jobs/yachay-{ids[0]}", "FAILED", settings())
    page = api.request("GET", "/v1/jobs?limit=2", alice).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = api.request("GET", f"/v1/jobs?limit=2&after={page['next_cursor']}", alice).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]]
    failed = api.request("GET", "/v1/jobs?status=failed", alice).json()["data"]
    assert [j["id"] for j in failed] == [ids[0]]
    assert api.request("GET", "/v1/jobs?status=bogus", alice).status_code == 400
    assert api.request("GET", f"/v1/jobs/{ids[1]}", bob).status_code == 404
    assert api.request("POST", f"/v1/jobs/{ids[1]}/cancel", bob).status_code == 404
    assert api.request("GET", "/v1/jobs", bob).json()["data"] == []


def test_a_job_whose_launch_task_was_lost_is_relaunched(api, stack_env) -> None:
    from datetime import timedelta

    user = api.new_user()
    save_test_card(user.uid)
    old = store.now() - timedelta(minutes=30)
    # Its submit stored it and died before placing the hold or enqueueing the launch.
    job_id = stored_job(user.uid, JobStatus.QUEUED, created_at=old)
    fresh = stored_job(user.uid, JobStatus.QUEUED)  # queued just now: left alone
    resp = api.request("POST", "/internal/tasks/relaunch-stale")
    assert resp.status_code == 200
    assert resp.json()["relaunched"] == [f"{job_id}: launch enqueued again"]
    deadline = time.monotonic() + 30
    while not store.get_job(job_id).batch_job and time.monotonic() < deadline:
        time.sleep(0.2)
    job = store.get_job(job_id)
    assert job.batch_job.endswith(f"/jobs/yachay-{job_id}")
    assert job.authorization.status == AuthorizationStatus.AUTHORIZED  # placed before the GPU
    assert store.get_job(fresh).batch_job is None


def test_a_relaunched_job_whose_card_refuses_the_hold_fails_free(api, stack_env) -> None:
    """The launch is the last gate: a job that reached it without a hold gets one or never
    runs (here the card declines: the job fails, free, with no Batch job)."""
    from datetime import timedelta

    user = api.new_user()
    save_test_card(user.uid, card="declining")
    job_id = stored_job(user.uid, JobStatus.QUEUED, created_at=store.now() - timedelta(hours=1))
    outcome = lifecycle.launch(job_id, settings())
    assert outcome.startswith("hold declined (card_declined)")
    job = store.get_job(job_id)
    assert job.status == JobStatus.FAILED and job.batch_job is None
    assert job.failure.code == FailureCode.PAYMENT_DECLINED
    assert job.payment.status == PaymentStatus.NOT_CHARGED
    assert store.get_or_create_user(user.uid, None).active_jobs == {}
    assert lifecycle.launch(job_id, settings()).startswith("nothing to do (failed)")


def test_a_tasks_outage_does_not_fail_the_submission(api, tiny_in_store, monkeypatch) -> None:
    from shared import tasks

    user, ds = ready_user(api, n_records=4)

    def unavailable(job_id, cfg):
        raise ConnectionError("Cloud Tasks is down")

    monkeypatch.setattr(tasks, "enqueue_launch", unavailable)
    body = {"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {}}
    job, created = admission.submit(user.uid, user.email, body, None, settings())
    assert created and job["status"] == "queued"
    assert store.get_job(job["id"]).batch_job is None  # relaunch_stale picks it up later


def test_a_transition_that_keeps_losing_its_race_is_contended_not_lost(api, stack_env) -> None:
    """Another writer changes the job between every read and commit: the transition gives up
    with Contended (a retryable 503 at the edge), and writes nothing."""

    user = api.new_user()
    job_id = stored_job(user.uid)
    attempts = []

    def decide(job):
        attempts.append(job.updated_at)
        # the concurrent writer (e.g. the trainer's progress report) gets there first
        trainer_reports(job_id, progress=progress_at(len(attempts)))
        return JobChange.between(job, job._replace(status=JobStatus.CANCELLED))

    with pytest.raises(errors.Contended):
        store.update_job(job_id, decide, attempts=3)
    assert len(attempts) == 3
    assert store.get_job(job_id).status == JobStatus.RUNNING
    assert store.get_job(job_id).progress.step == 3


def progress_at(step: int):
    from shared.contract import Progress

    return Progress(step, 10, 1, step * 10, 100, 1.0, 1e-4, 1.0)


@pytest.mark.parametrize("status", [JobStatus.RUNNING, JobStatus.QUEUED])
def test_cancel_stops_the_trainer_before_its_launch_is_recorded(
    api, stack, tiny_in_store, status
) -> None:
    """The launch records the Batch job after Batch made it, and the RUNNING notification may
    come before or after that record: cancel must stop the trainer in every order, without
    reading the Batch job's name back (it is derived from the job id)."""
    user, ds = ready_user(api, n_records=300)
    job = submit(api, user, ds, epochs=3, batch_size=1).json()
    wait_for_step(stack, job["id"], 2)
    assert trainer_pids(job["id"])
    # As if the launch's record (and, for QUEUED, the RUNNING notification) had not landed yet:
    store.update_job(
        job["id"], lambda j: JobChange.between(j, j._replace(batch_job=None, status=status))
    )
    resp = api.request("POST", f"/v1/jobs/{job['id']}/cancel", user)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert trainers_stop(job["id"])


def test_the_trainers_outputs_always_carry_a_retention_time(stack_env, tmp_path) -> None:
    """Outputs are written with their customTime, so a run that finishes after a cancel (no
    completion ever sets a retention) still leaves nothing kept for ever."""
    from dataclasses import replace
    from datetime import timedelta

    from shared import storage
    from shared.contract import EXIT_OK
    from tests.support.tiny import build_tiny_model, write_jsonl
    from tests.support.trainer import make_config, trainer_process

    model = build_tiny_model(tmp_path / "model")
    data = write_jsonl(chat_records(8, seed=4), tmp_path / "train.jsonl")
    kept_until = (store.now() + timedelta(days=30)).replace(microsecond=0)
    bucket = settings().artifacts_bucket
    cfg = replace(
        make_config(model, data, tmp_path, epochs=1),
        output_uri=f"gs://{bucket}/jobs/ft-kept",
        outputs_kept_until=kept_until.isoformat(),
    )
    proc = trainer_process(cfg)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, err[-2000:]
    blobs = list(storage.client().list_blobs(bucket, prefix="jobs/ft-kept/"))
    assert {b.name.rsplit("/", 1)[-1] for b in blobs} >= {
        "adapter_model.safetensors",
        "manifest.json",
    }
    assert all(b.custom_time == kept_until for b in blobs), [b.custom_time for b in blobs]


def test_a_dataset_is_tokenized_once_and_every_length_and_split_derives(
    api, stack_env, tiny_in_store
) -> None:
    """The first estimate stores the file's per-record counts beside it; every later one, with
    any max_seq_length, seed or split, derives its totals from them and encodes nothing (shown
    by planting counts: they are what the next estimates bill)."""
    from shared import token_counts
    from shared.tokenization import RecordCounts

    user, ds = ready_user(api, n_records=6)
    body = {"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {}}
    first = api.request("POST", "/v1/jobs/estimate", user, json=body).json()
    stored = store.get_dataset(user.uid, ds["id"])
    cfg = settings()
    [name] = storage.list_names(cfg.datasets_bucket, stored.object_name + token_counts.SUFFIX)
    blob = storage.read_bytes(cfg.datasets_bucket, name, 1 << 20)
    assert (
        RecordCounts.from_bytes(blob[1:]).total(first["hyperparameters"]["max_seq_length"]).tokens
        == first["tokens_per_epoch"]
    )

    planted = RecordCounts()
    for _ in range(6):
        planted.add(20_000, [(5, 20_000)])
    storage.write_bytes(cfg.datasets_bucket, name, b"C" + planted.to_bytes())
    again = api.request("POST", "/v1/jobs/estimate", user, json=body).json()
    assert again["tokens_per_epoch"] == 6 * min(20_000, first["hyperparameters"]["max_seq_length"])
    for hp, split in (({"max_seq_length": 1024}, 0.0), ({"seed": 7}, 0.2), ({"seed": 8}, 0.1)):
        other = api.request(
            "POST",
            "/v1/jobs/estimate",
            user,
            json={**body, "hyperparameters": hp, "validation_split": split},
        )
        assert other.status_code == 200, other.text
        length = other.json()["hyperparameters"]["max_seq_length"]
        held = len(held_out(6, split, hp.get("seed", 42))) if split else 0
        assert other.json()["tokens_per_epoch"] == (6 - held) * length  # planted, not encoded
    assert storage.list_names(cfg.datasets_bucket, stored.object_name + token_counts.SUFFIX) == [
        name
    ]
    api.request("DELETE", f"/v1/datasets/{ds['id']}", user)
    assert storage.list_names(cfg.datasets_bucket, stored.object_name) == []  # counts went too


def large_file(records: list[dict]) -> bytes:
    """Over COUNT_INLINE_BYTES, but few tokens (JSON whitespace pads each line), so a tiny
    model may train it."""
    lines = [json.dumps(r).encode() + b" " * 2000 + b"\n" for r in records]
    return b"".join(lines * (COUNT_INLINE_BYTES // len(b"".join(lines)) + 1))


def test_a_large_file_is_counted_once_in_the_background_while_requests_answer_202(
    api, tiny_in_store, tiny_model_dir
) -> None:
    """Over count_inline_bytes the estimate does not encode within the request: it answers
    202 with Retry-After at once, and so does a submission (nothing stored, nothing held, the
    key not used); one background task counts the file, after which both answer as usual,
    the submission under the same Idempotency-Key."""
    user = api.new_user()
    save_test_card(user.uid)
    content = large_file(chat_records(40, seed=5, mean_words=20))
    ds = upload_dataset(api, user, content)
    assert ds["status"] == "ready" and len(content) > COUNT_INLINE_BYTES
    body = {
        "model": "tiny-llama",
        "dataset_id": ds["id"],
        "hyperparameters": {"epochs": 1},
        "validation_split": 0,
    }
    waiting = [api.request("POST", "/v1/jobs/estimate", user, json=body) for _ in range(3)]
    submitted = api.request(
        "POST", "/v1/jobs", user, json=body, headers={"Idempotency-Key": "big-1"}
    )
    for resp in (*waiting, submitted):
        if resp.status_code == 202:
            assert resp.json()["status"] == "counting" and int(resp.headers["Retry-After"]) >= 1
        else:
            assert resp.status_code in (200, 201), resp.text  # the count already finished
    assert waiting[0].status_code == 202  # the first one cannot have been counted inline
    if submitted.status_code == 202:
        assert store.get_or_create_user(user.uid, None).active_jobs == {}  # nothing held yet

    deadline = time.monotonic() + 120
    while (resp := api.request("POST", "/v1/jobs/estimate", user, json=body)).status_code == 202:
        assert time.monotonic() < deadline, "the background count never finished"
        time.sleep(0.5)
    assert resp.status_code == 200, resp.text
    estimate = resp.json()
    local = ChatTokenizer.from_dir(tiny_model_dir).count(
        [line.record for line in parse_jsonl(content)],
        estimate["hyperparameters"]["max_seq_length"],
    )
    assert estimate["tokens_per_epoch"] == local.tokens  # exact, as an inline count would be
    job = api.request("POST", "/v1/jobs", user, json=body, headers={"Idempotency-Key": "big-1"})
    assert job.status_code == 201, job.text
    assert job.json()["quote"]["price_cents"] == estimate["price_cents"]
    api.request("POST", f"/v1/jobs/{job.json()['id']}/cancel", user)


def test_a_background_count_that_the_template_refuses_answers_the_line(api, tiny_in_store) -> None:
    """A large file with a record spelling a control token: the background count stores the
    refusal, so the next estimate answers it (400, the line named) instead of waiting for
    ever."""
    user = api.new_user()
    filler = large_file(chat_records(40, seed=6, mean_words=20))
    bad = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "done<|im_end|>"},
        ]
    }
    content = filler + jsonl([bad])
    ds = upload_dataset(api, user, content)
    assert ds["status"] == "ready"  # model-independent rules pass
    body = {"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {}}
    deadline = time.monotonic() + 120
    while (resp := api.request("POST", "/v1/jobs/estimate", user, json=body)).status_code == 202:
        assert time.monotonic() < deadline, "the background count never finished"
        time.sleep(0.5)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    lines = content.count(b"\n")
    assert error["code"] == "invalid_value" and f"line {lines}:" in error["message"]
    assert "control token" in error["message"]


def test_concurrent_submissions_cannot_pass_the_spend_limit_together(stack_env) -> None:
    """Five 50-cent jobs submitted at once under a 120-cent limit: the account record read and
    written in each creating commit lets exactly two through."""
    results = submit_at_once("u-spend", 5, max_active=100, spend_limit_cents=120)
    assert sorted(results) == ["ok", "ok"] + ["spend_limit_reached"] * 3
    account = store.get_or_create_user("u-spend", None)
    assert sum(account.reserved.values()) == 100 and len(account.active_jobs) == 2


def test_the_account_record_follows_each_job_to_its_end(api, stack_env) -> None:
    """Active while queued or running; reserved until its payment is known; a failed job is
    free at once (the same commit that ends it)."""
    user = api.new_user()
    failing, cancelled = stored_job(user.uid), stored_job(user.uid, JobStatus.QUEUED)
    account = store.get_or_create_user(user.uid, None)
    assert set(account.active_jobs) == set(account.reserved) == {failing, cancelled}
    lifecycle.on_batch_state(f"x/jobs/yachay-{failing}", "FAILED", settings())
    lifecycle.cancel(user.uid, cancelled, settings())
    account = store.get_or_create_user(user.uid, None)
    assert account.active_jobs == {} and account.reserved == {}
    for job_id in (failing, cancelled):
        assert store.get_job(job_id).payment.status == "not_charged"


LOCAL_BATCH_OF = """
import json, os, time
from shared.batch import LocalBatch
from shared.catalog import catalog
from shared.config import settings
from shared.contract import TrainerConfig

batch = LocalBatch(settings())
for env in json.loads(os.environ["TRAINERS_JSON"]):
    trainer = TrainerConfig.from_env(env)
    batch.submit("yachay-" + trainer.job_id, trainer, catalog().models[0])
time.sleep(600)  # killed by the test long before
"""  # a local Batch in its own process, given the trainers of TRAINERS_JSON


def test_a_trainer_dies_with_the_local_batch_that_started_it(stack_env, tmp_path) -> None:
    """However the local stack stops (here: SIGKILL, so no clean-up code runs), no trainer it
    started keeps running."""
    import json
    import os
    import subprocess
    import sys

    from tests.support.tiny import build_tiny_model, write_jsonl
    from tests.support.trainer import make_config

    model = build_tiny_model(tmp_path / "model")
    data = write_jsonl(chat_records(400, seed=4), tmp_path / "train.jsonl")
    cfg = make_config(model, data, tmp_path, epochs=5, batch_size=1)
    env = {**os.environ, "TRAINERS_JSON": json.dumps([cfg.to_env()])}
    parent = subprocess.Popen(
        [sys.executable, "-c", LOCAL_BATCH_OF], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not trainer_pids(cfg.job_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trainer_pids(cfg.job_id), "the trainer never started"
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert trainers_stop(cfg.job_id)


def test_one_malformed_job_never_stops_the_relaunch_sweep(api, stack_env, monkeypatch) -> None:
    from datetime import timedelta

    from google.cloud import firestore

    from shared import tasks

    user = api.new_user()
    old = store.now() - timedelta(minutes=30)
    broken = stored_job(user.uid, JobStatus.QUEUED, created_at=old)
    # A document written by an older version, without the field the sweep reads.
    store.client().document(store.job_document(broken)).update(
        {"batch_job": firestore.DELETE_FIELD}
    )
    failing = stored_job(user.uid, JobStatus.QUEUED, created_at=old)
    fine = stored_job(user.uid, JobStatus.QUEUED, created_at=old)
    enqueued = []

    def enqueue(job_id, cfg):
        if job_id == failing:
            raise ConnectionError("Cloud Tasks refused this one")
        enqueued.append(job_id)

    monkeypatch.setattr(tasks, "enqueue_launch", enqueue)
    swept = lifecycle.relaunch_stale(settings())
    assert sorted(enqueued) == sorted([broken, fine])
    assert sorted(swept.items) == sorted(
        [f"{broken}: launch enqueued again", f"{fine}: launch enqueued again", f"{failing}: error"]
    )


def test_a_burst_of_submissions_answers_only_created_replayed_or_limited(
    api, tiny_in_store, monkeypatch, capsys
) -> None:
    """3 users x 10 concurrent submissions (5 keys each, every key sent twice), through the
    submit core against the real emulators and localstripe (launches not enqueued: no trainer
    starts). Each user gets exactly their 3 active jobs; every other answer is a replay of one
    of them or 429; never a 5xx."""
    from shared import tasks

    monkeypatch.setattr(tasks, "enqueue_launch", lambda job_id, cfg: None)
    users = [ready_user(api, n_records=4, seed=i) for i in range(3)]
    for user, ds in users:  # the dataset's count is made once, then reused by every submit
        body = {"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {}}
        assert admission.estimate(user.uid, user.email, body, settings())["allowed_to_proceed"]
    outcomes: dict[str, list[str]] = {u.uid: [] for u, _ in users}
    latencies: list[float] = []

    def send(user, ds, key: str) -> None:
        body = {"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {}}
        started = time.monotonic()
        try:
            job, created = admission.submit(user.uid, user.email, body, key, settings())
            outcomes[user.uid].append(f"{201 if created else 200} {job['id']}")
        except errors.ApiError as exc:
            outcomes[user.uid].append(str(exc.status))
        latencies.append(time.monotonic() - started)

    threads = [
        threading.Thread(target=send, args=(user, ds, f"k{i % 5}"))
        for user, ds in users
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for uid, answers in outcomes.items():
        codes = sorted(a.split()[0] for a in answers)
        assert set(codes) <= {"200", "201", "429"}, answers
        created = {a.split()[1] for a in answers if a.startswith("201")}
        replayed = {a.split()[1] for a in answers if a.startswith("200")}
        assert len(created) == 3 and replayed <= created, answers
        assert len(store.get_or_create_user(uid, None).active_jobs) == 3
    with capsys.disabled():
        print(
            f"\n  burst 3x10: median {statistics.median(latencies):.2f} s, "
            f"max {max(latencies):.2f} s per submission"
        )
    assert max(latencies) < 30  # a hang detector; the figure above is what the note quotes


def test_local_batch_runs_one_trainer_at_a_time_in_order(stack_env, tmp_path) -> None:
    """With one slot (the default), the second job waits until the first one ends, then runs
    with all the cores; four trainers at once on two cores made each step 40x slower."""
    import json
    import subprocess
    import sys
    from dataclasses import replace

    from tests.support.tiny import build_tiny_model, write_jsonl
    from tests.support.trainer import make_config

    model = build_tiny_model(tmp_path / "model")
    data = write_jsonl(chat_records(400, seed=4), tmp_path / "train.jsonl")
    first, second = (
        replace(make_config(model, data, tmp_path / name, epochs=5, batch_size=1), job_id=name)
        for name in ("slot-first", "slot-second")
    )
    env = {
        **os.environ,
        "YACHAY_LOCAL_BATCH_SLOTS": "1",
        "TRAINERS_JSON": json.dumps([first.to_env(), second.to_env()]),
    }
    parent = subprocess.Popen(
        [sys.executable, "-c", LOCAL_BATCH_OF], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not trainer_pids(first.job_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trainer_pids(first.job_id), "the first trainer never started"
        time.sleep(2)
        assert trainer_pids(second.job_id) == []  # waiting for the slot
        for pid in trainer_pids(first.job_id):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not trainer_pids(second.job_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        [pid] = trainer_pids(second.job_id)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"OMP_NUM_THREADS={os.cpu_count()}".encode() in environ  # every core, one slot
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert trainers_stop(first.job_id) and trainers_stop(second.job_id)


def test_concurrent_replays_of_a_submit_show_the_hold_the_first_answer_shows(
    api, stack, tiny_in_store
) -> None:
    """Replays racing the first request (same key, same body) answer the job as it is once the
    first has placed its hold, never `authorization: null` beside an authorized first answer.
    Stripe is held still for 2 s (SIGSTOP, under the request path's 8 s try) so that the
    replays really arrive while the first request is placing its hold."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    user, ds = ready_user(api)
    [stripe] = [p for p in stack._procs if p.name == "stripe"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        os.killpg(stripe.popen.pid, signal.SIGSTOP)
        try:
            first = pool.submit(submit, api, user, ds, key="same-key", epochs=1)
            time.sleep(0.5)  # the first has made the job and waits on Stripe
            replays = [
                pool.submit(submit, api, user, ds, key="same-key", epochs=1) for _ in range(6)
            ]
            time.sleep(1.5)
        finally:
            os.killpg(stripe.popen.pid, signal.SIGCONT)
        answers = [first.result(), *(r.result() for r in replays)]
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert [a.headers.get("Idempotent-Replayed") for a in answers[1:]] == ["true"] * 6
    holds = [(a.json()["authorization"] or {}).get("status") for a in answers]
    assert holds == ["authorized"] * 7, holds
    api.request("POST", f"/v1/jobs/{answers[0].json()['id']}/cancel", user)
