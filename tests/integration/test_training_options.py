"""Validation, checkpoints, continuing from a result, the GGUF adapter and merged weights, through
the API, the local Batch running the real trainer, the charge and the download."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import requests

from shared import store
from shared.contract import Checkpoint
from shared.pricing import MIN_CHARGE_CENTS, merged_storage_cents
from shared.records import JobStatus, Payment, PaymentStatus
from tests.integration.test_jobs import ENDED, batch_log, ready_user
from tests.support.api import (
    jsonl,
    result_of,
    save_test_card,
    stored_job,
    trainer_reports,
    upload_dataset,
    wait_for,
)
from tests.support.catalog import TINY_ID
from tests.support.tiny import chat_records


def body(ds, **extra):
    return {"model": TINY_ID, "dataset_id": ds["id"], **extra}


def fetch(url: str) -> bytes:
    resp = requests.get(url, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.content


def test_validation_checkpoints_gguf_merged_and_continuing_end_to_end(
    api, stack, tiny_in_store
) -> None:
    user, ds = ready_user(api, n_records=20)
    request = body(
        ds,
        hyperparameters={"epochs": 2, "batch_size": 4},
        validation_split=0.2,
        eval_every_steps=2,
        outputs=["merged"],
    )
    est = api.request("POST", "/v1/jobs/estimate", user, json=request).json()
    assert est["validation_split"] == 0.2 and est["validation_examples"] == 4
    assert est["validation_tokens"] > 0 and est["examples"] == 16
    assert est["storage_cents"] == merged_storage_cents(6_000_000, 30) > 0
    assert est["outputs"] == ["merged"] and est["eval_every_steps"] == 2

    resp = api.request("POST", "/v1/jobs", user, json=request)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    done = wait_for(api, user, job["id"], lambda j: j["status"] in ENDED, timeout=400)
    assert done["status"] == "completed", batch_log(stack, job["id"])[-3000:]
    # Validation tokens are not trained and not billed: the count is the quote's.
    assert done["result"]["trained_tokens"] == est["billable_tokens"]
    assert done["result"]["eval_tokens"] == est["validation_tokens"]
    assert done["result"]["eval_loss"] is not None and done["result"]["checkpoints"] == 2
    assert done["progress"]["eval_loss"] is not None

    paid = wait_for(api, user, job["id"], lambda j: (j["payment"] or {}).get("status") == "paid")
    rate = est["price_per_million_tokens_cents"]
    tokens_cents = max(MIN_CHARGE_CENTS, -(-est["billable_tokens"] * rate // 1_000_000))
    assert paid["payment"]["amount_cents"] == est["price_cents"]
    assert est["price_cents"] == tokens_cents + est["storage_cents"]

    listed = api.request("GET", f"/v1/jobs/{job['id']}/checkpoints", user).json()["data"]
    assert [(c["step"], c["epoch"]) for c in listed] == [(4, 1), (8, 2)]
    assert all(c["eval_loss"] is not None and c["size"] > 0 for c in listed)

    files = api.request("GET", f"/v1/jobs/{job['id']}/download", user).json()["files"]
    by_name = {f["name"]: f for f in files}
    assert {"adapter-lora.gguf", "merged/model.safetensors", "adapter_model.safetensors"} <= set(
        by_name
    )
    gguf = fetch(by_name["adapter-lora.gguf"]["url"])
    assert hashlib.sha256(gguf).hexdigest() == by_name["adapter-lora.gguf"]["sha256"]
    assert gguf[:4] == b"GGUF"

    first = api.request("GET", f"/v1/jobs/{job['id']}/download?checkpoint=4", user).json()
    assert first["checkpoint"] == 4
    assert {f["name"] for f in first["files"]} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    for f in first["files"]:
        assert hashlib.sha256(fetch(f["url"])).hexdigest() == f["sha256"]
    missing = api.request("GET", f"/v1/jobs/{job['id']}/download?checkpoint=5", user)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "checkpoint"
    bad = api.request("GET", f"/v1/jobs/{job['id']}/download?checkpoint=first", user)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"

    # Continue from the first epoch's adapter: it loads it, trains, and is priced like any job.
    cont = api.request(
        "POST",
        "/v1/jobs",
        user,
        json=body(ds, hyperparameters={"epochs": 1}, from_job=listed[0]["from_job"]),
    )
    assert cont.status_code == 201, cont.text
    assert cont.json()["from_job"] == f"{job['id']}:4"
    ended = wait_for(api, user, cont.json()["id"], lambda j: j["status"] in ENDED, timeout=400)
    log = batch_log(stack, cont.json()["id"])
    assert ended["status"] == "completed", log[-3000:]
    assert '"event": "started_from"' in log and "checkpoints/step-000004" in log

    # Another user can neither list nor continue from it (404, as if it did not exist).
    other, other_ds = ready_user(api)
    assert api.request("GET", f"/v1/jobs/{job['id']}/checkpoints", other).status_code == 404
    stolen = api.request("POST", "/v1/jobs", other, json=body(other_ds, from_job=job["id"]))
    assert stolen.status_code == 404 and stolen.json()["error"]["param"] == "from_job"


def paid_job(uid: str, status: JobStatus = JobStatus.COMPLETED, paid: bool = True) -> str:
    """A stored job of `uid` with one checkpoint at step 3: completed and paid, completed with
    a failed payment, or still running (no payment). The payment is stored with the job, so no
    charge runs for it."""
    payment = None
    if status == JobStatus.COMPLETED:
        payment = (
            Payment(PaymentStatus.PAID, 50, "usd", charged_at=store.now())
            if paid
            else Payment(PaymentStatus.FAILED, 50, "usd", reason="Your card was declined.")
        )
    job_id = stored_job(uid, status, expires_at=store.now() + timedelta(days=30), payment=payment)
    kept = Checkpoint(step=3, epoch=1, train_loss=2.0, eval_loss=None, files=())
    trainer_reports(job_id, result=result_of(100)._replace(checkpoints=(kept,)))
    return job_id


@pytest.mark.parametrize(
    ("from_job", "hp", "status", "code", "param"),
    [
        ("{done}:7", {}, 400, "invalid_value", "from_job"),
        ("{done}:x", {}, 400, "invalid_value", "from_job"),
        ("{done}", {"lora_rank": 8}, 400, "invalid_value", "hyperparameters.lora_rank"),
        (
            "{done}",
            {"lora_target_modules": ["q_proj"]},
            400,
            "invalid_value",
            "hyperparameters.lora_target_modules",
        ),
        ("{running}", {}, 409, "job_not_completed", "from_job"),
        ("{unpaid}", {}, 402, "payment_required", "from_job"),
        ("ft-nothing", {}, 404, "not_found", "from_job"),
    ],
)
def test_from_job_refusals_name_the_problem(
    api, tiny_in_store, from_job, hp, status, code, param
) -> None:
    user, ds = ready_user(api)
    jobs = {
        "done": paid_job(user.uid),
        "running": paid_job(user.uid, JobStatus.RUNNING, paid=False),
        "unpaid": paid_job(user.uid, paid=False),
    }
    resp = api.request(
        "POST",
        "/v1/jobs/estimate",
        user,
        json=body(ds, from_job=from_job.format(**jobs), hyperparameters=hp),
    )
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["param"] == param


def test_continuing_keeps_the_source_shape_by_default(api, tiny_in_store) -> None:
    user, ds = ready_user(api)
    done = paid_job(user.uid)
    est = api.request("POST", "/v1/jobs/estimate", user, json=body(ds, from_job=f"{done}:3"))
    assert est.status_code == 200, est.text
    assert est.json()["from_job"] == f"{done}:3"
    assert est.json()["hyperparameters"]["lora_rank"] == 16


def test_validation_options_are_checked(api, tiny_in_store) -> None:
    user, ds = ready_user(api)
    other = upload_dataset(api, user, jsonl(chat_records(4, seed=8, mean_words=10)))

    def estimate(**extra):
        return api.request("POST", "/v1/jobs/estimate", user, json=body(ds, **extra))

    both = estimate(validation_dataset_id=other["id"], validation_split=0.1)
    assert both.status_code == 400 and both.json()["error"]["param"] == "validation_split"
    same = estimate(validation_dataset_id=ds["id"])
    assert same.status_code == 400 and same.json()["error"]["param"] == "validation_dataset_id"
    too_big = estimate(validation_split=0.5)
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "validation_split"
    # 16 records: too few for the default split, so eval_every_steps has nothing to evaluate.
    plain = estimate().json()
    assert plain["validation_split"] == 0 and plain["validation_tokens"] == 0
    lonely = estimate(eval_every_steps=1)
    assert lonely.status_code == 400 and lonely.json()["error"]["param"] == "eval_every_steps"
    ok = estimate(validation_dataset_id=other["id"], eval_every_steps=1).json()
    assert ok["validation_examples"] == 4 and ok["validation_dataset_id"] == other["id"]
    # Validation never changes the billed count.
    assert ok["billable_tokens"] == plain["billable_tokens"]
    frequent = estimate(
        validation_split=0.1, eval_every_steps=1, hyperparameters={"epochs": 10, "batch_size": 1}
    )
    assert frequent.status_code == 400 and "at least" in frequent.json()["error"]["message"]

    stranger = api.new_user()
    save_test_card(stranger.uid)
    theirs = upload_dataset(api, stranger, jsonl(chat_records(4, seed=9, mean_words=10)))
    foreign = estimate(validation_dataset_id=theirs["id"])
    assert foreign.status_code == 404
    assert foreign.json()["error"]["param"] == "validation_dataset_id"


def test_a_large_dataset_holds_out_a_few_percent_by_default(api, tiny_in_store) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    ds = upload_dataset(api, user, jsonl(chat_records(200, seed=5, mean_words=8)))
    est = api.request("POST", "/v1/jobs/estimate", user, json=body(ds)).json()
    assert est["validation_split"] == 0.05
    assert est["validation_examples"] == 10 and est["examples"] == 190
    none = api.request("POST", "/v1/jobs/estimate", user, json=body(ds, validation_split=0)).json()
    assert none["validation_examples"] == 0 and none["examples"] == 200
    assert none["billable_tokens"] == est["billable_tokens"] + est["validation_tokens"]
