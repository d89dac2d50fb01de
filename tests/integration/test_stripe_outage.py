"""No request waits on Stripe, and no hold is left behind.

Stripe frozen (localstripe's process group stopped with SIGSTOP: its socket still accepts, it
answers nothing, as a hung provider does): a submit answers 201 within the gateway's deadline
(the hold is placed by the launch, before any GPU work), and calls that cannot go on without
Stripe answer 503 with Retry-After. Holds no job owns are found at Stripe and released by the
sweep; the hold's create call carries an idempotency key Stripe honours (recorded from the
SDK's requests, since localstripe ignores them)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from shared import holds, payments, store
from shared.config import settings
from tests.support.api import held_job, save_test_card, stored_job
from tests.support.catalog import TINY_ID
from tests.support.stripe import localstripe

# The gateway's deadline is 60 s; a request path gives Stripe one try of 8 s.
DEADLINE_S = 30


@contextlib.contextmanager
def stripe_frozen(stack: Any) -> Iterator[None]:
    [proc] = [p for p in stack._procs if p.name == "stripe"]
    os.killpg(proc.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.popen.pid, signal.SIGCONT)


def test_a_submit_with_stripe_frozen_answers_within_the_deadline(api, stack, tiny_in_store):
    from tests.integration.test_jobs import ready_user

    user, ds = ready_user(api)
    body = {"model": TINY_ID, "dataset_id": ds["id"]}
    with stripe_frozen(stack):
        started = time.monotonic()
        resp = api.request("POST", "/v1/jobs", user, json=body)
        took = time.monotonic() - started
    assert resp.status_code == 201, resp.text
    assert took < DEADLINE_S, took
    job = resp.json()
    assert job["authorization"] is None  # the launch places it, before any GPU work
    cancel = api.request("POST", f"/v1/jobs/{job['id']}/cancel", user)
    assert cancel.status_code == 200, cancel.text


def test_a_call_that_needs_stripe_answers_503_with_retry_after_when_it_is_frozen(
    api, stack
) -> None:
    user = api.new_user()  # no Stripe customer yet: saving a card must make one
    with stripe_frozen(stack):
        started = time.monotonic()
        resp = api.request("POST", "/v1/jobs/setup-card", user)
        took = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "service_unavailable"
    assert int(resp.headers["Retry-After"]) > 0
    assert took < DEADLINE_S, took
    assert api.request("POST", "/v1/jobs/setup-card", user).status_code == 201  # then it works


def test_a_hold_no_job_owns_is_released_by_the_sweep(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    owned = held_job(user.uid)
    # A second hold for the same job, as a lost answer followed by the launch's own would
    # leave: placed at Stripe, recorded nowhere.
    stray = holds._place(owned, 0, settings())
    later = store.now() + holds.ORPHAN_AFTER + timedelta(minutes=1)
    assert holds.release_orphan_holds(settings(), store.now()).items == []  # too young
    done = holds.release_orphan_holds(settings(), later).items
    assert done == [f"{stray.payment_intent}: released (no job holds it; job {owned.id})"]
    pi = localstripe(stack_env, "GET", f"/v1/payment_intents/{stray.payment_intent}")
    assert pi["status"] == "canceled"
    mine = owned.authorization.payment_intent
    assert localstripe(stack_env, "GET", f"/v1/payment_intents/{mine}")["status"] == (
        "requires_capture"
    )
    assert holds.release_orphan_holds(settings(), later).items == []  # once


def test_a_hold_of_an_ended_or_vanished_job_is_released(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    job = store.get_job(stored_job(user.uid))
    assert job is not None
    stray = holds._place(job, 0, settings())  # its job never recorded it
    store.client().document(store.job_document(job.id)).delete()  # and the job is gone
    later = store.now() + holds.ORPHAN_AFTER + timedelta(minutes=1)
    done = holds.release_orphan_holds(settings(), later).items
    assert done == [f"{stray.payment_intent}: released (no job holds it; job {job.id})"]


def test_the_hold_is_created_with_an_idempotency_key_stripe_honours(
    api, stack_env, monkeypatch
) -> None:
    """localstripe ignores idempotency keys, so what the SDK sends is recorded: the same key
    for every attempt at a job's hold (the submit's and the launch's), another per renewal."""
    user = api.new_user()
    save_test_card(user.uid)
    job = store.get_job(stored_job(user.uid))
    assert job is not None
    service = payments.client(settings()).v1.payment_intents
    sent: list[dict[str, Any]] = []
    real = service.create

    def record(params: dict[str, Any], options: dict[str, Any] | None = None) -> Any:
        sent.append({"params": params, "options": dict(options or {})})
        return real(params, options)

    monkeypatch.setattr(service, "create", record)
    holds._place(job, 0, settings())
    holds._place(job, 0, settings())
    holds._place(job, 1, settings())
    keys = [s["options"].get("idempotency_key") for s in sent]
    assert keys == [f"hold-{job.id}-0", f"hold-{job.id}-0", f"hold-{job.id}-1"]
    assert all(s["params"]["metadata"]["kind"] == "hold" for s in sent)
    assert all(s["params"]["capture_method"] == "manual" for s in sent)


def test_a_saved_card_stripe_no_longer_knows_fails_the_submit_free_not_for_ever(
    api, stack_env, tiny_in_store
) -> None:
    """A customer or card gone at Stripe (deleted there, or a Stripe account switched) answers
    404 to the hold: that is a refusal to say (402, job failed free), never a launch retried
    until it gives up with the job queued for ever."""
    from shared.records import PaymentMethod
    from tests.integration.test_jobs import ready_user

    user, ds = ready_user(api)
    store.set_payment_method(user.uid, PaymentMethod("pm_gone_at_stripe", "visa", "4242"))
    resp = api.request("POST", "/v1/jobs", user, json={"model": TINY_ID, "dataset_id": ds["id"]})
    assert resp.status_code == 402, resp.text
    assert resp.json()["error"]["code"] == "payment_declined"
    assert "save a card" in resp.json()["error"]["message"]
    [job] = store.jobs_of(user.uid)
    assert job.status.value == "failed" and job.batch_job is None
