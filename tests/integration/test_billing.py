"""Saving a card and Stripe webhooks, against localstripe.

localstripe has no Checkout: the local stand-in page (devstack/local_checkout.py, LOCAL-ONLY)
confirms a real SetupIntent on localstripe, which then sends its real signed webhook. The
Stripe Checkout call itself is checked by recording the SDK's request (see the last test).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devstack.stack import STRIPE_WEBHOOK_SECRET
from shared import billing, lifecycle, store
from shared.config import settings
from shared.records import (
    Charge,
    ChargeKind,
    ChargeStatus,
    JobChange,
    JobStatus,
    LedgerEntry,
    Payment,
    PaymentStatus,
)
from tests.support.api import (
    jsonl,
    result_of,
    save_test_card,
    stored_job,
    trainer_reports,
    upload_dataset,
    wait_for,
)
from tests.support.stripe import event, payment_intents, save_card, signed, stripe_customers
from tests.support.tiny import chat_records


def test_saving_a_card_through_the_local_checkout_stand_in(api, stack) -> None:
    user = api.new_user()
    assert api.request("GET", "/v1/me", user).json()["has_payment_method"] is False
    me = save_card(api, user)
    assert me["payment_method"] == {"brand": "visa", "last4": "4242"}
    assert len(stripe_customers(stack, user.uid)) == 1


def test_concurrent_setup_calls_make_one_customer(api, stack) -> None:
    user = api.new_user()
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: api.request("POST", "/v1/jobs/setup-card", user), range(6))
        )
    assert {a.status_code for a in answers} == {201}
    recorded = store.get_or_create_user(user.uid, None).stripe_customer_id
    customers = stripe_customers(stack, user.uid)
    assert [c["id"] for c in customers] == [recorded]


@pytest.mark.parametrize(
    "problem", ["missing", "garbage", "other_payload", "stale", "wrong_secret"]
)
def test_webhooks_without_a_valid_signature_are_refused(api, problem) -> None:
    payload = event("setup_intent.succeeded", {"id": "seti_x"})
    header = {
        "missing": None,
        "garbage": "t=1,v1=deadbeef",
        "other_payload": signed(b'{"id": "evt_other"}'),
        "stale": signed(payload, at=int(time.time()) - 301),
        "wrong_secret": signed(payload, secret="whsec_wrong"),
    }[problem]
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    resp = api.request("POST", "/v1/stripe/webhook", data=payload, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_signature"
    # Not handled, so not recorded (only this event: localstripe may still be delivering the
    # real, signed events of an earlier test's card).
    assert not store.event_seen(json.loads(payload)["id"])


def test_a_replayed_webhook_is_processed_once(api) -> None:
    payload = event("customer.created", {"id": "cus_x"})
    headers = {"Content-Type": "application/json", "Stripe-Signature": signed(payload)}
    first = api.request("POST", "/v1/stripe/webhook", data=payload, headers=headers)
    again = api.request("POST", "/v1/stripe/webhook", data=payload, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["outcome"] == "ignored" and again.json()["outcome"] == "duplicate"


def test_rotated_secrets_both_verify(api, stack, monkeypatch) -> None:
    from shared import payments
    from shared.config import load

    payload = event("customer.created", {"id": "cus_y"})
    cfg = load(
        {**stack.env(), "YACHAY_STRIPE_WEBHOOK_SECRETS": f"whsec_new,{STRIPE_WEBHOOK_SECRET}"}
    )
    two = f"{signed(payload, 'whsec_new')},v1=00ff"
    assert payments.verify_webhook(cfg, payload, two)["type"] == "customer.created"
    assert payments.verify_webhook(cfg, payload, signed(payload))["id"]


def test_stripe_checkout_request_is_setup_mode(monkeypatch, stack) -> None:
    """Recorded, not sent: localstripe has no Checkout. Checks the SDK request we would make."""
    from shared import checkout, payments
    from shared.config import load

    cfg = load({**stack.env(), "YACHAY_CHECKOUT_BACKEND": "stripe"})
    calls = []

    class Sessions:
        def create(self, params, options=None):
            calls.append(params)
            return type(
                "S",
                (),
                {"url": "https://checkout.stripe.com/c/pay/cs_test_1", "expires_at": 1_900_000_000},
            )()

    fake = type(
        "C", (), {"v1": type("V", (), {"checkout": type("K", (), {"sessions": Sessions()})()})()}
    )()
    monkeypatch.setattr(payments, "client", lambda cfg: fake)
    url, expires = checkout.StripePages(cfg).setup_page("cus_123", "uid-1")
    assert url.startswith("https://checkout.stripe.com/")
    assert calls == [
        {
            "mode": "setup",
            "customer": "cus_123",
            "currency": "usd",
            "payment_method_types": ["card"],
            "success_url": cfg.checkout_success_url,
            "cancel_url": cfg.checkout_cancel_url,
            "metadata": {"uid": "uid-1"},
            "setup_intent_data": {"metadata": {"uid": "uid-1"}},
        }
    ]
    assert expires.timestamp() == 1_900_000_000


# --- charging at completion ----------------------------------------------------------------------


def completed_job(api, stack, user, tiny_in_store) -> dict:
    ds = upload_dataset(api, user, jsonl(chat_records(12, seed=5, mean_words=15)))
    job = api.request(
        "POST",
        "/v1/jobs",
        user,
        json={"model": "tiny-llama", "dataset_id": ds["id"], "hyperparameters": {"epochs": 1}},
    ).json()
    return wait_for(
        api,
        user,
        job["id"],
        lambda j: (
            j["status"] in ("completed", "failed")
            and (j.get("payment") or {}).get("status") in ("paid", "failed")
        ),
    )


def test_completed_job_is_charged_once_and_downloads_verify(
    api, stack, tiny_in_store, tmp_path
) -> None:
    user = api.new_user()
    save_card(api, user)
    job = completed_job(api, stack, user, tiny_in_store)
    assert job["status"] == "completed"
    assert job["payment"]["status"] == "paid"
    assert job["payment"]["amount_cents"] == job["quote"]["price_cents"]
    [intent] = payment_intents(stack, job["id"])
    assert intent["amount"] == job["quote"]["price_cents"] and intent["status"] == "succeeded"
    assert intent["capture_method"] == "manual"  # held at submit, captured at completion
    assert job["authorization"]["status"] == "captured"
    ledger = store.ledger_entries(user.uid)
    assert [e.amount_cents for e in ledger] == [job["quote"]["price_cents"]]

    links = api.request("GET", f"/v1/jobs/{job['id']}/download", user).json()
    names = {f["name"] for f in links["files"]}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= names
    for f in links["files"]:
        assert f"/jobs/{job['id']}/" in f["url"] and "X-Goog-Expires=3600" in f["url"]
        body = requests.get(f["url"], timeout=30).content
        if f["sha256"]:
            assert hashlib.sha256(body).hexdigest() == f["sha256"]
            assert len(body) == f["size"]
    other = api.new_user()
    assert api.request("GET", f"/v1/jobs/{job['id']}/download", other).status_code == 404


def test_the_trigger_delivered_many_times_at_once_charges_once(api, stack_env) -> None:
    """Five deliveries race for a charge nobody has claimed yet (the local relay's own delivery
    of the same change races with them too): one Stripe charge, one ledger entry."""
    user = api.new_user()
    save_card(api, user)
    job_id = stored_job(user.uid)
    trainer_reports(job_id, result=result_of(30_000))  # 30 000 tokens at 100 c/M: the minimum
    lifecycle.on_batch_state(f"x/jobs/yachay-{job_id}", "SUCCEEDED", settings())

    def deliver(_: int) -> str:
        try:
            return billing.charge_job(job_id, settings())
        except billing.ChargeInProgress:
            return "busy"

    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(deliver, range(5)))
    assert outcomes.count("charged 50 usd") <= 1
    assert set(outcomes) <= {"charged 50 usd", "already succeeded", "already paid", "busy"}
    deadline = time.monotonic() + 20
    while store.get_job(job_id).payment is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(payment_intents(stack_env, job_id)) == 1
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [50]
    assert store.get_job(job_id).payment.status == PaymentStatus.PAID
    account = store.get_or_create_user(user.uid, None)  # the same commit kept the account's
    assert account.spent_in(store.now().strftime("%Y-%m")) == 50  # month total and ended
    assert account.reserved == {} and account.active_jobs == {}  # the job's reservation


def test_download_refusals(api, stack_env) -> None:
    user = api.new_user()
    job_id = stored_job(user.uid)
    resp = api.request("GET", f"/v1/jobs/{job_id}/download", user)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "job_not_completed"
    gone = stored_job(
        user.uid,
        JobStatus.COMPLETED,
        payment=Payment(PaymentStatus.PAID, 50, "usd"),
        expires_at=store.now().replace(year=2020),
    )
    resp = api.request("GET", f"/v1/jobs/{gone}/download", user)
    assert resp.status_code == 410 and resp.json()["error"]["code"] == "artifacts_expired"


# --- storage extensions, the summary, the spend limit, the portal ------------------------------


def test_extension_sent_twice_with_one_key_charges_once(api, stack, tiny_in_store) -> None:
    user = api.new_user()
    save_card(api, user)
    job = completed_job(api, stack, user, tiny_in_store)
    before = job["expires_at"]
    path = f"/v1/jobs/{job['id']}/extend-storage"
    missing = api.request("POST", path, user, json={"days": 30})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "Idempotency-Key"
    first = api.request("POST", path, user, json={"days": 30}, headers={"Idempotency-Key": "x1"})
    again = api.request("POST", path, user, json={"days": 30}, headers={"Idempotency-Key": "x1"})
    assert first.status_code == again.status_code == 200, first.text
    assert first.json()["expires_at"] == again.json()["expires_at"] > before
    from datetime import datetime, timedelta

    moved = datetime.fromisoformat(first.json()["expires_at"]) - datetime.fromisoformat(before)
    assert moved == timedelta(days=30)
    other = api.request("POST", path, user, json={"days": 7}, headers={"Idempotency-Key": "x1"})
    assert other.status_code == 409
    kinds = sorted(e.kind.value for e in store.ledger_entries(user.uid))
    assert kinds == ["storage_extension", "tuning"]
    bad = api.request("POST", path, user, json={"days": 0}, headers={"Idempotency-Key": "x2"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "days"

    summary = api.request("GET", "/v1/billing/summary", user).json()
    assert summary["counts"] == {"tuning": 1, "storage_extension": 1}
    assert summary["lifetime_cents"] == summary["tuning_cents"] + summary["storage_extension_cents"]
    assert summary["months"][0]["charges"] == 2 and summary["outstanding_cents"] == 0

    me = api.request("GET", "/v1/me", user).json()
    assert me["portal_url"] and "/v1/billing/portal?token=" in me["portal_url"]  # our link
    assert me["spent_this_month_cents"] == summary["lifetime_cents"]


def test_monthly_spend_limit_blocks_and_shows_as_a_pause(api, stack, tiny_in_store) -> None:
    user = api.new_user()
    save_card(api, user)
    ds = upload_dataset(api, user, jsonl(chat_records(4, seed=2)))
    api.request("PATCH", "/v1/me", user, json={"monthly_spend_limit_cents": 40})
    body = {"model": "tiny-llama", "dataset_id": ds["id"]}
    est = api.request("POST", "/v1/jobs/estimate", user, json=body).json()
    assert est["allowed_to_proceed"] is False
    assert [r["code"] for r in est["reasons"]] == ["spend_limit_reached"]
    resp = api.request("POST", "/v1/jobs", user, json=body)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "spend_limit_reached"

    api.request("PATCH", "/v1/me", user, json={"monthly_spend_limit_cents": 50})
    job = completed_job(api, stack, user, tiny_in_store)  # 50 cents: reaches the limit
    assert job["payment"]["status"] == "paid"
    me = api.request("GET", "/v1/me", user).json()
    assert [p["code"] for p in me["pauses"]] == ["spend_limit_reached"]
    assert api.request("POST", "/v1/jobs", user, json=body).status_code == 403
    api.request("PATCH", "/v1/me", user, json={"monthly_spend_limit_cents": None})
    assert api.request("GET", "/v1/me", user).json()["submissions_paused"] is False


def test_the_sweeper_deletes_expired_files(api, stack, tiny_in_store) -> None:
    from datetime import timedelta

    from shared import artifacts, storage

    user = api.new_user()
    save_card(api, user)
    job = completed_job(api, stack, user, tiny_in_store)
    names = storage.list_names(settings().artifacts_bucket, f"jobs/{job['id']}/")
    assert names
    assert artifacts.sweep_expired(settings()) == []  # not expired yet
    later = store.now() + timedelta(days=31)
    assert sorted(artifacts.sweep_expired(settings(), later)) == sorted(names)


def test_a_charge_whose_attempt_died_is_settled_by_the_stripe_event(api, stack_env) -> None:
    """The one window our claim cannot close: Stripe charged, then we died before recording it.
    Stripe's payment_intent.succeeded event settles it, once."""
    from shared import payments

    user = api.new_user()
    save_card(api, user)
    job_id = stored_job(user.uid)
    state, _ = store.claim_charge(
        Charge(job_id, user.uid, job_id, ChargeKind.TUNING, 70, "usd"), 120
    )
    assert state == "claimed"
    account = store.get_or_create_user(user.uid, None)
    assert account.stripe_customer_id is not None and account.payment_method is not None
    complete(job_id)

    def deliver(obj: dict) -> dict:
        payload = event("payment_intent.succeeded", obj)
        headers = {"Content-Type": "application/json", "Stripe-Signature": signed(payload)}
        return api.request("POST", "/v1/stripe/webhook", data=payload, headers=headers).json()

    # The event's claims are not taken on trust: what Stripe says of the intent must match.
    forged = payments.charge(
        settings(),
        account.stripe_customer_id,
        account.payment_method.id,
        10,  # not the charge's amount
        idempotency_key=f"{job_id}-forged",
        metadata={"charge_id": job_id},
    )
    claim = {"object": "payment_intent", "status": "succeeded", "metadata": {"charge_id": job_id}}
    refused = deliver({**claim, "id": forged, "amount": 70})
    assert refused["outcome"].startswith("refused") and "amount" in refused["outcome"]
    assert deliver({**claim, "id": "pi_nowhere"})["outcome"] == "no such PaymentIntent at Stripe"
    assert store.get_charge(job_id).status == ChargeStatus.PENDING
    # Stripe charges (the real call, on localstripe) ... and the process dies before recording.
    intent = payments.charge(
        settings(),
        account.stripe_customer_id,
        account.payment_method.id,
        70,
        idempotency_key=f"{job_id}-1",
        metadata={"charge_id": job_id},
    )
    # localstripe also sends its own event for it, which may come first: either way, once.
    assert deliver({**claim, "id": intent})["outcome"] in (
        "settled from Stripe",
        "already succeeded",
    )
    assert deliver({**claim, "id": intent})["outcome"] == "already succeeded"
    assert store.get_charge(job_id).status == ChargeStatus.SUCCEEDED
    assert store.get_job(job_id).payment.status == PaymentStatus.PAID
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [70]


def complete(job_id: str) -> None:
    """Moves a stored running job to completed (what the Batch notification does)."""

    store.update_job(job_id, lambda j: JobChange.between(j, j._replace(status=JobStatus.COMPLETED)))


def failed_charge(user) -> str:
    """A completed job whose charge was declined: the charge, the job's payment and the pause
    recorded as billing records them. The local relay's delivery for the job finds the claim
    held, then the charge finished."""
    job_id = stored_job(user.uid)
    state, charge = store.claim_charge(
        Charge(job_id, user.uid, job_id, ChargeKind.TUNING, 70, "usd"), 120
    )
    assert state == "claimed"
    complete(job_id)
    billing._fail(charge, "card_declined", "Your card was declined.")
    return job_id


CRASH_AFTER_SETTLE = """
import os, sys
from shared import billing, lifecycle, store
from shared.config import settings
real = store.settle_charge
def settle_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os._exit(137)  # killed right after the commit, before anything else runs
store.settle_charge = settle_then_die
billing.retry_payment(sys.argv[1], sys.argv[2], settings())
"""


def test_a_process_killed_right_after_the_charge_loses_nothing(api, stack_env) -> None:
    """The charge's outcome, its ledger entry, the job's payment and the end of the pause are
    one commit: killing the process right after it leaves all of them (before, the job's payment
    was a second write, and a kill between the two locked the downloads for ever)."""
    import os
    import subprocess
    import sys

    user = api.new_user()
    save_card(api, user)  # a working card; nothing failed yet, so nothing is retried
    job_id = failed_charge(user)
    assert api.request("GET", "/v1/me", user).json()["submissions_paused"] is True
    env = {**os.environ, **stack_env.env()}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_SETTLE, user.uid, job_id],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    assert store.get_charge(job_id).status == ChargeStatus.SUCCEEDED
    assert store.get_job(job_id).payment.status == PaymentStatus.PAID
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [70]
    assert api.request("GET", "/v1/me", user).json()["submissions_paused"] is False
    assert len(payment_intents(stack_env, job_id)) == 1


def test_a_charge_recorded_without_the_jobs_payment_is_repaired(api, stack_env) -> None:
    """A charge settled by the old two-write path (the job's payment never written) is repaired
    by the next delivery of the trigger, which finds the charge done."""

    user = api.new_user()
    job_id = stored_job(user.uid)
    state, charge = store.claim_charge(
        Charge(job_id, user.uid, job_id, ChargeKind.TUNING, 70, "usd"), 120
    )
    complete(job_id)
    paid = charge._replace(status=ChargeStatus.SUCCEEDED, payment_intent="pi_old")
    ledger = LedgerEntry(
        job_id, user.uid, ChargeKind.TUNING, job_id, 70, "usd", "pi_old", store.now()
    )
    store.settle_charge(paid, ledger, None, None)  # the old path died before the payment write
    # The relay's own delivery (retrying since it found the charge claimed) may repair it
    # before this call does: then this call finds it "already paid".
    assert billing.charge_job(job_id, settings()) in ("already succeeded", "already paid")
    assert store.get_job(job_id).payment.status == PaymentStatus.PAID
    assert store.get_job(job_id).payment.amount_cents == 70


def test_billing_portal_request(monkeypatch, stack) -> None:
    """Recorded, not sent: localstripe has no billing portal."""
    from shared import checkout, payments
    from shared.config import load

    cfg = load({**stack.env(), "YACHAY_CHECKOUT_BACKEND": "stripe"})
    calls = []

    class Sessions:
        def create(self, params, options=None):
            calls.append(params)
            return type("S", (), {"url": "https://billing.stripe.com/p/session/test_1"})()

    fake = type(
        "C",
        (),
        {"v1": type("V", (), {"billing_portal": type("P", (), {"sessions": Sessions()})()})()},
    )()
    monkeypatch.setattr(payments, "client", lambda cfg: fake)
    assert checkout.StripePages(cfg).portal_page("cus_9").startswith("https://billing.stripe.com/")
    assert calls == [{"customer": "cus_9", "return_url": cfg.checkout_success_url}]


def test_a_signed_but_malformed_event_is_a_clear_400(api) -> None:
    payload = json.dumps({"id": "evt_bad", "type": "setup_intent.succeeded"}).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": signed(payload)}
    resp = api.request("POST", "/v1/stripe/webhook", data=payload, headers=headers)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_body"


def test_two_settlers_of_one_charge_record_it_once(api, stack_env) -> None:
    """The charging call and Stripe's event for the same PaymentIntent may both settle, in
    either order or at once: one ledger entry, and the month's total counts it once."""
    user = api.new_user()
    job_id = stored_job(user.uid)
    state, charge = store.claim_charge(
        Charge(job_id, user.uid, job_id, ChargeKind.TUNING, 70, "usd"), 120
    )
    assert state == "claimed"
    complete(job_id)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: billing._succeeded(charge, "pi_same"), range(4)))
    billing._succeeded(charge, "pi_same")  # and once more, after
    account = store.get_or_create_user(user.uid, None)
    assert account.spent_in(store.now().strftime("%Y-%m")) == 70
    assert [e.amount_cents for e in store.ledger_entries(user.uid)] == [70]
    assert store.get_job(job_id).payment.status == PaymentStatus.PAID


def test_a_job_whose_payment_is_recorded_is_never_charged_again(api, stack_env) -> None:
    """However the trigger is delivered (created, updated, replayed), a job that is paid or was
    free is not charged: no claim, no Stripe call."""
    user = api.new_user()
    for payment in (
        Payment(PaymentStatus.PAID, 50, "usd"),
        Payment(PaymentStatus.NOT_CHARGED, 0, "usd"),
    ):
        job_id = stored_job(user.uid, JobStatus.COMPLETED, payment=payment)
        assert billing.charge_job(job_id, settings()) == f"already {payment.status.value}"
        assert store.get_charge(job_id) is None
        assert store.get_job(job_id).payment == payment


def test_a_portal_session_is_made_on_demand(api, stack_env) -> None:
    user = api.new_user()
    none = api.request("POST", "/v1/billing/portal-session", user)
    assert none.status_code == 402 and none.json()["error"]["code"] == "payment_method_required"
    save_test_card(user.uid)
    resp = api.request("POST", "/v1/billing/portal-session", user)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["object"] == "portal_session" and "/local/portal/" in body["url"]  # stand-in
    other = api.new_user()
    assert api.request("POST", "/v1/billing/portal-session", other).status_code == 402


def test_the_account_s_portal_url_is_our_link_and_makes_the_session_only_when_followed(
    api, stack_env, monkeypatch
) -> None:
    """GET /v1/me hands out a signed link of ours (no Stripe call per read); following it makes
    the portal session and answers 303 to it. A link that was altered, expired, of a user with
    no billing account, or missing answers a JSON error, never a redirect."""
    from datetime import timedelta

    from shared import accounts, checkout, links
    from shared.config import settings

    user = api.new_user()
    save_test_card(user.uid)
    made: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(checkout.LocalPages, "portal_page", lambda self, c: made.append(c))
        for _ in range(3):
            link = accounts.get_account(user.uid, None, settings())["portal_url"]
    assert made == []  # reading the account made no portal session

    me = api.request("GET", "/v1/me", user).json()
    followed = requests.get(me["portal_url"], allow_redirects=False, timeout=30)
    assert followed.status_code == 303, followed.text
    customer = store.get_or_create_user(user.uid, None).stripe_customer_id
    assert followed.headers["Location"].endswith(f"/local/portal/{customer}")  # stand-in page
    assert followed.headers["Cache-Control"] == "no-store"
    assert link.split("token=")[0] == me["portal_url"].split("token=")[0]

    portal = f"{api.base}/v1/billing/portal"
    token = me["portal_url"].split("token=")[1]
    who, expires, signature = urllib.parse.unquote(token).split(".")
    other = api.new_user()
    forged_for_other = ".".join(
        (links.sign("x", other.uid, settings()).split(".")[0], expires, signature)
    )
    old = links.sign(links.PORTAL_LINK, user.uid, settings(), now=store.now() - timedelta(hours=2))
    no_card = links.sign(links.PORTAL_LINK, other.uid, settings())
    cases = {
        forged_for_other: (400, "invalid_link"),  # another uid under this signature
        f"{who}.{int(expires) + 3600}.{signature}": (400, "invalid_link"),  # a longer life
        links.sign("other-purpose", user.uid, settings()): (400, "invalid_link"),
        "not-a-token": (400, "invalid_link"),
        "é.1.x": (400, "invalid_link"),
        old: (410, "link_expired"),
        no_card: (402, "payment_method_required"),
    }
    for bad, (status, code) in cases.items():
        resp = requests.get(portal, params={"token": bad}, allow_redirects=False, timeout=30)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), bad
    missing = requests.get(portal, allow_redirects=False, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_field"


def test_concurrent_extensions_cannot_pass_the_spend_limit_together(
    api, stack, tiny_in_store
) -> None:
    """Five extensions at once, each under the limit alone: the limit is checked in the commit
    that records each one, so only what fits goes through (three of five passed before)."""
    from concurrent.futures import ThreadPoolExecutor

    user = api.new_user()
    save_card(api, user)
    job = completed_job(api, stack, user, tiny_in_store)  # 50 cents spent
    api.request("PATCH", "/v1/me", user, json={"monthly_spend_limit_cents": 103})
    path = f"/v1/jobs/{job['id']}/extend-storage"

    def extend(i: int):
        return api.request(
            "POST", path, user, json={"days": 1}, headers={"Idempotency-Key": f"burst-{i}"}
        )

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(extend, range(5)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 403, 403, 403, 403], [a.text for a in answers]
    refused = [a.json()["error"]["code"] for a in answers if a.status_code == 403]
    assert set(refused) == {"spend_limit_reached"}
    spent = sum(e.amount_cents for e in store.ledger_entries(user.uid))
    assert spent == 100 <= 103
    assert store.get_or_create_user(user.uid, None).reserved == {}  # nothing left reserved
