"""Deleting a Firebase user erases their account (shared.erasure), delivered as the Firebase
Auth `user.delete` event to functions/auth_events. The local stack has no Auth-event delivery
(the Auth emulator emits none), so the test delivers the same event to the function; every
service behind it is the real local one."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from shared import apikeys, storage, store
from shared.config import settings
from shared.contract import Progress
from shared.records import AuthorizationStatus, JobStatus, PaymentStatus
from tests.integration.test_holds import BIG_QUOTE
from tests.support.api import (
    complete,
    held_job,
    save_test_card,
    settled,
    trainer_reports,
    upload_dataset,
)
from tests.support.stripe import localstripe, payment_intents

GOOD = b'{"prompt": "a", "completion": "b"}\n'


def owned_documents(uid: str) -> dict[str, int]:
    """How many documents of each declared collection name `uid` as their owner."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from shared.documents import COLLECTIONS

    found = {}
    for c in COLLECTIONS:
        if c.owner == "uid":
            query = store.client().collection(c.name).where(filter=FieldFilter("uid", "==", uid))
            n = len(list(query.stream()))
        elif c.owner == "__id__":
            n = int(store.client().collection(c.name).document(uid).get().exists)
        else:
            continue
        if n:
            found[c.name] = n
    return found


def deleted(uid: str) -> CloudEvent:
    return CloudEvent(
        {"type": "google.firebase.auth.user.v1.deleted", "source": "firebaseauth.googleapis.com"},
        {"uid": uid, "email": "gone@example.com"},
    )


def test_a_deleted_user_leaves_only_their_accounting_records(api, stack_env) -> None:
    from functions.auth_events.main import auth_events

    cfg = settings()
    user, other = api.new_user(), api.new_user()
    for u in (user, other):
        save_test_card(u.uid)
        upload_dataset(api, u, GOOD)
    paid = held_job(user.uid)
    complete(paid.id, trained_tokens=30_000)
    assert settled(paid.id).payment.status == PaymentStatus.PAID
    bucket = storage.client().bucket(cfg.artifacts_bucket)
    bucket.blob(f"jobs/{paid.id}/adapter_model.safetensors").upload_from_string(b"w")
    running = held_job(user.uid)
    trained = held_job(user.uid, quote=BIG_QUOTE)  # running, 2M of its 5M tokens trained
    trainer_reports(trained.id, progress=Progress(4, 10, 1, 2_000_000, 5_000_000, 1.0, 1e-4, 9))
    others_job = held_job(other.uid)
    card = store.get_or_create_user(user.uid, None).payment_method.id
    key = api.request(
        "POST", "/v1/api-keys", user, json={"name": "k", "scopes": ["jobs:read"]}
    ).json()["secret"]
    ledger = store.ledger_entries(user.uid)
    assert [e.amount_cents for e in ledger] == [50]
    # One of everything else a user has: a webhook endpoint (URL and signing secrets), an event
    # and its delivery log, an Idempotency-Key record, an email (the completed job's).
    from tests.support.api import job_record
    from tests.support.receiver import receiver

    with receiver() as hook:
        endpoint = api.request(
            "POST",
            "/v1/webhook-endpoints",
            user,
            json={"url": hook.url, "events": ["job.completed"]},
        )
        assert endpoint.status_code == 201, endpoint.text
        ping = api.request("POST", f"/v1/webhook-endpoints/{endpoint.json()['id']}/test", user)
        assert ping.status_code == 202
        hook.wait_for(1)
    store.new_job(job_record(user.uid, JobStatus.CANCELLED), "idem-" + user.uid, "h", 1000)
    before = owned_documents(user.uid)
    assert {
        "webhook_endpoints",
        "webhook_events",
        "webhook_deliveries",
        "idempotency",
        "mail",
        "api_keys",
        "datasets",
        "jobs",
        "charges",
        "ledger",
    } <= set(before), before

    auth_events(deleted(user.uid))
    after = owned_documents(user.uid)
    assert set(after) == {"charges", "ledger"}, after  # only what the law keeps

    assert store.get_user(user.uid) is None
    assert store.get_api_key(apikeys.digest(key)) is None  # its keys are gone with it
    assert api.request("GET", "/v1/jobs", token=key).status_code == 401
    assert store.jobs_of(user.uid) == []
    assert store.list_datasets(user.uid, 10, None)[0] == []
    assert storage.list_names(cfg.datasets_bucket, f"datasets/{user.uid}/") == []
    assert storage.list_names(cfg.artifacts_bucket, f"jobs/{paid.id}/") == []
    kept_entries = store.ledger_entries(user.uid)
    assert all(e in kept_entries for e in ledger)  # kept: accounting records
    assert store.get_charge(paid.id) is not None
    [hold] = payment_intents(stack_env, running.id)  # stopped before training anything: free
    assert hold["status"] == "canceled"
    # Stopped after 2M tokens: charged what it trained, as a cancel is, from its hold; the
    # charge is kept with the accounting records.
    [hold] = payment_intents(stack_env, trained.id)
    charge = hold["latest_charge"]  # localstripe expands it
    assert hold["status"] == "succeeded" and charge["amount"] - charge["amount_refunded"] == 200
    assert store.get_charge(trained.id).amount_cents == 200
    assert sorted(e.amount_cents for e in store.ledger_entries(user.uid)) == [50, 200]
    assert localstripe(stack_env, "GET", f"/v1/payment_methods/{card}")["customer"] is None
    # Another user's account is untouched.
    assert store.get_user(other.uid) is not None
    assert len(store.list_datasets(other.uid, 10, None)[0]) == 1
    kept = store.get_job(others_job.id)
    assert kept.status == JobStatus.RUNNING and kept.authorization.status == (
        AuthorizationStatus.AUTHORIZED
    )

    auth_events(deleted(user.uid))  # delivered again: nothing left, nothing fails
    assert store.get_user(user.uid) is None


def test_an_event_without_a_user_erases_nothing(api, stack_env) -> None:
    from functions.auth_events.main import auth_events

    user = api.new_user()
    api.request("GET", "/v1/me", user)
    for data in ({}, {"uid": ""}, {"uid": "../users"}, {"uid": 7}):
        auth_events(
            CloudEvent({"type": "google.firebase.auth.user.v1.deleted", "source": "t"}, data)
        )
    assert store.get_user(user.uid) is not None
