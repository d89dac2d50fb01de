"""The card hold: the quoted price is authorized at submit, the amount due captured at the end,
and the hold released when nothing is due; against localstripe (real manual-capture
PaymentIntents, partial captures and cancels).

localstripe cannot age a hold: Stripe cancels an uncaptured card hold after 7 days, and these
tests stand in for that by cancelling the hold on localstripe (a lapsed hold is a cancelled
PaymentIntent, as at Stripe), or by dating the recorded hold back for the renewal sweep.
"""

from __future__ import annotations

import time
from datetime import timedelta

from shared import billing, holds, lifecycle, store, transitions
from shared.config import settings
from shared.records import (
    AuthorizationStatus,
    Job,
    JobChange,
    JobStatus,
    PaymentStatus,
)
from tests.support.api import (
    TEST_QUOTE,
    complete,
    held_job,
    jsonl,
    save_test_card,
    settled,
    stored_job,
    upload_dataset,
)
from tests.support.stripe import localstripe, payment_intents, save_card
from tests.support.tiny import chat_records

# 5 million tokens at 100 cents a million: a 500-cent hold, so a smaller capture shows.
BIG_QUOTE = TEST_QUOTE._replace(billable_tokens=5_000_000, price_cents=500)


def intent(stack, intent_id: str) -> dict:
    return localstripe(stack, "GET", f"/v1/payment_intents/{intent_id}")


def test_a_declined_hold_answers_402_and_nothing_runs(api, stack_env, tiny_in_store) -> None:
    user = api.new_user()
    save_card(api, user, card="declining")
    ds = upload_dataset(api, user, jsonl(chat_records(4, seed=2)))
    body = {"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {}}
    key = {"Idempotency-Key": "declined-1"}
    resp = api.request("POST", "/v1/jobs", user, json=body, headers=key)
    assert resp.status_code == 402, resp.text
    error = resp.json()["error"]
    assert error["code"] == "payment_declined" and "card_declined" in error["message"]
    # The same key answers the same refusal; nothing new is held or stored.
    again = api.request("POST", "/v1/jobs", user, json=body, headers=key)
    assert again.status_code == 402 and again.json()["error"]["message"] == error["message"]
    [job] = api.request("GET", "/v1/jobs", user).json()["data"]
    assert job["status"] == "failed" and job["failure"]["code"] == "payment_declined"
    assert job["payment"]["status"] == "not_charged" and job["authorization"] is None
    stored = store.get_job(job["id"])
    assert stored.batch_job is None  # no Batch job was ever made
    assert lifecycle.launch(job["id"], settings()).startswith("nothing to do (failed)")
    [declined] = payment_intents(stack_env, job["id"])
    assert declined["capture_method"] == "manual" and declined["status"] != "requires_capture"
    account = store.get_or_create_user(user.uid, None)
    assert account.pauses == {} and account.active_jobs == {} and account.reserved == {}
    assert store.ledger_entries(user.uid) == []


def test_a_job_is_charged_from_its_hold_never_above_the_quote(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    job = held_job(user.uid, quote=BIG_QUOTE)
    held = job.authorization
    assert held.status == AuthorizationStatus.AUTHORIZED and held.amount_cents == 500
    assert intent(stack_env, held.payment_intent)["status"] == "requires_capture"
    complete(job.id, trained_tokens=2_000_000)  # 2M of the 5M quoted: 200 cents due
    job = settled(job.id)
    assert job.payment.status == PaymentStatus.PAID and job.payment.amount_cents == 200
    assert job.authorization.status == AuthorizationStatus.CAPTURED
    captured = intent(stack_env, held.payment_intent)
    assert captured["status"] == "succeeded"
    charge = captured["latest_charge"]  # localstripe expands it
    assert charge["amount"] - charge["amount_refunded"] == 200  # the rest of the hold released
    assert len(payment_intents(stack_env, job.id)) == 1  # captured, never charged anew
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [200]


def test_many_deliveries_capture_once(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    job = held_job(user.uid, quote=BIG_QUOTE)
    complete(job.id, trained_tokens=5_000_000)
    outcomes = []
    for _ in range(4):  # the relay delivers too; every delivery after the first finds it done
        try:
            outcomes.append(billing.charge_job(job.id, settings()))
        except billing.ChargeInProgress:
            outcomes.append("busy")
    job = settled(job.id)
    assert job.payment.status == PaymentStatus.PAID and job.payment.amount_cents == 500
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [500]
    assert len(payment_intents(stack_env, job.id)) == 1
    assert billing.charge_job(job.id, settings()) == "already paid"


def test_holds_of_jobs_that_owe_nothing_are_released(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    queued = held_job(user.uid, JobStatus.QUEUED)
    resp = api.request("POST", f"/v1/jobs/{queued.id}/cancel", user)
    assert resp.status_code == 200, resp.text
    failed = held_job(user.uid)
    lifecycle.on_batch_state(f"x/jobs/yachay-{failed.id}", "FAILED", settings())
    for job in (queued, failed):
        after = settled(job.id)
        assert after.payment.status == PaymentStatus.NOT_CHARGED
        assert after.authorization.status == AuthorizationStatus.RELEASED
        assert intent(stack_env, job.authorization.payment_intent)["status"] == "canceled"
        assert billing.charge_job(job.id, settings()).startswith("already not_charged")
    assert store.ledger_entries(user.uid) == []


def test_a_hold_placed_after_its_job_ended_is_released(api, stack_env) -> None:
    """A hold that lands after the job was cancelled (a slow submit racing a cancel) is not
    recorded, and not left on the card."""
    user = api.new_user()
    save_test_card(user.uid)
    job_id = stored_job(user.uid, JobStatus.QUEUED)
    before = store.get_job(job_id)
    assert before is not None
    transitions.transition(job_id, JobStatus.CANCELLED, "cancelled by you")
    after = holds.hold(before, settings())
    assert after.authorization is None
    [orphan] = payment_intents(stack_env, job_id)
    assert orphan["status"] == "canceled"


def test_a_lapsed_hold_is_charged_anew_and_a_decline_pauses_until_a_new_card(
    api, stack_env
) -> None:
    user = api.new_user()
    save_card(api, user)
    job = held_job(user.uid)
    localstripe(stack_env, "POST", f"/v1/payment_intents/{job.authorization.payment_intent}/cancel")
    save_card(api, user, card="declining")  # and the card on file no longer pays
    complete(job.id, trained_tokens=30_000)
    after = settled(job.id)
    assert after.payment.status == PaymentStatus.FAILED
    assert after.authorization.status == AuthorizationStatus.LAPSED
    me = api.request("GET", "/v1/me", user).json()
    assert me["submissions_paused"] and me["pauses"][0]["code"] == "payment_failed"
    resp = api.request("GET", f"/v1/jobs/{job.id}/download", user)
    assert resp.status_code == 402 and resp.json()["error"]["code"] == "payment_required"
    assert store.ledger_entries(user.uid) == []

    save_card(api, user, card="visa")  # a working card settles what the old one could not
    deadline = time.monotonic() + 30
    while store.get_job(job.id).payment.status != PaymentStatus.PAID:
        assert time.monotonic() < deadline, store.get_job(job.id).payment
        time.sleep(0.3)
    assert api.request("GET", "/v1/me", user).json()["submissions_paused"] is False
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [50]
    retry = api.request("POST", f"/v1/jobs/{job.id}/retry-payment", user)
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "nothing_to_retry"


def _date_hold_back(job_id: str, age: timedelta) -> None:
    def decide(j: Job) -> JobChange:
        held = j.authorization
        return JobChange.between(
            j, j._replace(authorization=held._replace(authorized_at=store.now() - age))
        )

    store.update_job(job_id, decide)


def test_an_ageing_hold_is_renewed_before_stripe_cancels_it(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    old = held_job(user.uid)
    young = held_job(user.uid)
    _date_hold_back(old.id, timedelta(days=6, hours=1))
    outcomes = holds.renew_holds(settings()).items
    assert outcomes == [f"{old.id}: renewed (1)"]  # the young hold is left alone
    renewed = store.get_job(old.id).authorization
    assert renewed.renewals == 1 and renewed.holding
    assert renewed.payment_intent != old.authorization.payment_intent
    assert intent(stack_env, renewed.payment_intent)["status"] == "requires_capture"
    assert intent(stack_env, old.authorization.payment_intent)["status"] == "canceled"
    assert store.get_job(young.id).authorization == young.authorization
    complete(old.id, trained_tokens=30_000)  # the renewed hold is the one captured
    assert settled(old.id).authorization.status == AuthorizationStatus.CAPTURED
    assert intent(stack_env, renewed.payment_intent)["status"] == "succeeded"


def test_a_hold_that_cannot_be_renewed_stops_the_job_once_it_lapses(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    job = held_job(user.uid)
    save_test_card(user.uid, card="declining")  # the card on file refuses from now on
    _date_hold_back(job.id, timedelta(days=6, hours=1))
    [outcome] = holds.renew_holds(settings()).items
    assert "renewal declined (card_declined); retried" in outcome
    still = store.get_job(job.id)
    assert still.status == JobStatus.RUNNING
    assert "card_declined" in (still.authorization.renewal_failure or "")
    _date_hold_back(job.id, timedelta(days=7, minutes=1))
    [outcome] = holds.renew_holds(settings()).items
    assert outcome.endswith("the hold lapsed: job cancelled")
    stopped = store.get_job(job.id)
    assert stopped.status == JobStatus.CANCELLED
    assert stopped.authorization.status == AuthorizationStatus.LAPSED
    assert "no longer covers it" in stopped.events[-1].message


def test_the_view_shows_the_hold(api, stack_env) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    job = held_job(user.uid, quote=BIG_QUOTE)
    shown = api.request("GET", f"/v1/jobs/{job.id}", user).json()["authorization"]
    assert shown["status"] == "authorized" and shown["amount_cents"] == 500


def test_retry_payment_with_the_card_that_refused_makes_no_payment_intent(api, stack_env) -> None:
    """15 retries once made 15 PaymentIntents in 2.3 s: the card that refused is not tried
    again (409 card_unchanged) until another is saved, and the route is rate limited."""
    user = api.new_user()
    save_card(api, user)
    job = held_job(user.uid)
    localstripe(stack_env, "POST", f"/v1/payment_intents/{job.authorization.payment_intent}/cancel")
    save_card(api, user, card="declining")
    complete(job.id, trained_tokens=30_000)
    assert settled(job.id).payment.status == PaymentStatus.FAILED
    before = len(payment_intents(stack_env, job.id))
    answers = [api.request("POST", f"/v1/jobs/{job.id}/retry-payment", user) for _ in range(7)]
    codes = [a.status_code for a in answers]
    assert codes[:5] == [409] * 5 and codes[5:] == [429, 429], codes
    assert {a.json()["error"]["code"] for a in answers[:5]} == {"card_unchanged"}
    assert "Retry-After" in answers[-1].headers
    assert len(payment_intents(stack_env, job.id)) == before  # Stripe was not asked again
