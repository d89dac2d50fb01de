"""Webhooks on the local stack: real transitions, the real fan-out trigger and Cloud Tasks
emulator, and a real receiver that verifies every signature with the `standardwebhooks`
library."""

from __future__ import annotations

import time
from datetime import timedelta

from standardwebhooks.webhooks import Webhook

from shared import outbound, store, webhooks
from shared.config import settings
from shared.records import DeliveryStatus, JobStatus, WebhookEvent
from tests.support.api import (
    Api,
    User,
    complete,
    held_job,
    save_test_card,
    settled,
    stored_job,
)
from tests.support.receiver import Receiver, receiver

JOB_EVENTS = ["job.queued", "job.running", "job.completed", "job.failed", "job.cancelled"]


def add_endpoint(api: Api, user: User, url: str, events: list[str]) -> dict:
    resp = api.request("POST", "/v1/webhook-endpoints", user, json={"url": url, "events": events})
    assert resp.status_code == 201, resp.text
    return resp.json()


def verified(hook: Receiver, secret: str, index: int = 0) -> dict:
    r = hook.received[index]
    return Webhook(secret).verify(r.body, r.headers)


def deliveries(api: Api, user: User, endpoint_id: str) -> list[dict]:
    resp = api.request("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries", user)
    assert resp.status_code == 200
    return resp.json()["data"]


def test_a_job_s_transitions_arrive_signed_once_each(api) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    with receiver() as hook:
        endpoint = add_endpoint(api, user, hook.url, [*JOB_EVENTS, "payment.succeeded"])
        assert endpoint["secret"].startswith("whsec_")
        job = held_job(user.uid)  # created running: job.running
        complete(job.id, trained_tokens=30_000)
        settled(job.id)
        got = hook.wait_for(3)
        time.sleep(2)  # nothing else arrives
        types = sorted(r.event["type"] for r in hook.received)
        assert types == ["job.completed", "job.running", "payment.succeeded"]
        for i in range(len(hook.received)):
            event = verified(hook, endpoint["secret"], i)  # raises unless the signature holds
            assert event["data"]["job"]["id"] == job.id
            assert got[i].headers["webhook-id"] == event["id"]
        done = hook.of_type("job.completed")[0].event["data"]["job"]
        assert done["status"] == "completed"  # the job as it was at that transition
        assert hook.of_type("payment.succeeded")[0].event["data"]["job"]["payment"]["status"] == (
            "paid"
        )
        # another endpoint's secret does not verify it
        other = Webhook(webhooks.new_secret())
        r = hook.received[0]
        try:
            other.verify(r.body, r.headers)
            raise AssertionError("a foreign secret verified the signature")
        except Exception as exc:
            assert "signature" in str(exc).lower()
        log = deliveries(api, user, endpoint["id"])
        assert len(log) == 3 and {d["status"] for d in log} == {"succeeded"}


def test_an_event_delivered_twice_is_sent_once(api) -> None:
    user = api.new_user()
    with receiver() as hook:
        endpoint = add_endpoint(api, user, hook.url, ["job.running"])
        job_id = stored_job(user.uid, JobStatus.RUNNING)
        hook.wait_for(1)
        event_id = store.event_id(job_id, "job.running")
        # the trigger again (Eventarc delivers at least once), and the task itself again
        assert webhooks.fan_out(event_id, settings()) == 1
        assert webhooks.deliver(event_id, endpoint["id"], 1, settings()) == "duplicate"
        time.sleep(3)
        assert len(hook.received) == 1


def test_a_failed_attempt_is_retried_and_logged(api) -> None:
    user = api.new_user()
    with receiver(500) as hook:
        endpoint = add_endpoint(api, user, hook.url, ["job.running"])
        stored_job(user.uid, JobStatus.RUNNING)
        first, second = hook.wait_for(2, timeout=90)  # the retry comes 5 s later
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        time.sleep(1)
        [log] = deliveries(api, user, endpoint["id"])
        assert log["status"] == "succeeded"
        assert [a["status_code"] for a in log["attempts"]] == [500, 200]
        assert log["attempts"][0]["next_retry_at"] is not None
        assert len(hook.received) == 2


def test_410_disables_the_endpoint(api) -> None:
    user = api.new_user()
    with receiver(410) as hook:
        add_endpoint(api, user, hook.url, ["job.running"])
        stored_job(user.uid, JobStatus.RUNNING)
        hook.wait_for(1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            [listed] = api.request("GET", "/v1/webhook-endpoints", user).json()["data"]
            if listed["status"] == "disabled":
                break
            time.sleep(0.2)
        assert listed["status"] == "disabled" and "410" in listed["disabled_reason"]
        stored_job(user.uid, JobStatus.RUNNING)
        time.sleep(3)
        assert len(hook.received) == 1  # nothing more is sent to it


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_owner_told(api) -> None:
    user = api.new_user()
    with receiver(500, 500) as hook:
        endpoint = add_endpoint(api, user, hook.url, ["job.cancelled"])
        stored = store.get_webhook_endpoint(None, endpoint["id"])
        assert stored is not None
        store.save_webhook_endpoint(
            stored._replace(failing_since=store.now() - webhooks.DISABLE_AFTER - timedelta(1))
        )
        stored_job(user.uid, JobStatus.CANCELLED)
        hook.wait_for(1)
        mail = store.client().collection("mail").document(f"webhook-{endpoint['id']}-disabled")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not mail.get().exists:  # written after the disable
            time.sleep(0.2)
        assert user.email in str(mail.get().to_dict())
        stored = store.get_webhook_endpoint(None, endpoint["id"])
        assert stored is not None and stored.disabled_at is not None
        [log] = deliveries(api, user, endpoint["id"])
        assert log["status"] == DeliveryStatus.FAILED.value  # no retry once disabled


def test_ping_rotation_and_both_secrets(api) -> None:
    user = api.new_user()
    with receiver() as hook:
        endpoint = add_endpoint(api, user, hook.url, ["job.completed"])
        rotated = api.request(
            "POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", user
        ).json()
        assert rotated["secret"] != endpoint["secret"]
        ping = api.request("POST", f"/v1/webhook-endpoints/{endpoint['id']}/test", user)
        assert ping.status_code == 202
        hook.wait_for(1)
        # during the overlap both the old and the new secret verify the same delivery
        assert verified(hook, endpoint["secret"])["type"] == "ping"
        assert verified(hook, rotated["secret"])["id"] == ping.json()["id"]
        listed = api.request("GET", "/v1/webhook-endpoints", user).json()["data"]
        assert "secret" not in listed[0] and endpoint["secret"] not in str(listed)
        # what the database holds is sealed: a read of the document yields neither secret
        doc = store.client().collection("webhook_endpoints").document(endpoint["id"]).get()
        raw = str(doc.to_dict())
        for secret in (endpoint["secret"], rotated["secret"]):
            assert secret not in raw and secret.removeprefix("whsec_")[:16] not in raw
        assert [s["sealed"][:9] for s in doc.to_dict()["secrets"]] == ["v1.local."] * 2


def test_unsafe_addresses_are_refused_at_send_time(api) -> None:
    user = api.new_user()
    for url in (
        "http://169.254.169.254/computeMetadata/v1/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.7/hooks",
        "http://192.168.1.1/hooks",
    ):
        endpoint = add_endpoint(api, user, url, ["job.running"])
        event = store.event_id("never", "job.running")
        store.new_webhook_event(WebhookEvent(event, user.uid, "job.running", "never", store.now()))
        assert webhooks.deliver(event, endpoint["id"], 1, settings()).startswith("failed")
        delivery = store.get_delivery(f"{event}--{endpoint['id']}")
        assert delivery is not None
        assert delivery.attempts[0].error == outbound.REFUSED, url  # one message for all
        api.request("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}", user)


def test_endpoints_are_per_user_and_bounded(api) -> None:
    user, other = api.new_user(), api.new_user()
    made = [
        add_endpoint(api, user, f"http://127.0.0.1:9/{i}", ["job.completed"])
        for i in range(webhooks.MAX_ENDPOINTS)
    ]
    over = api.request(
        "POST",
        "/v1/webhook-endpoints",
        user,
        json={"url": "http://127.0.0.1:9/x", "events": ["job.completed"]},
    )
    assert over.status_code == 409 and over.json()["error"]["code"] == "too_many_webhook_endpoints"
    first = made[0]["id"]
    for method, path in (
        ("DELETE", f"/v1/webhook-endpoints/{first}"),
        ("POST", f"/v1/webhook-endpoints/{first}/rotate-secret"),
        ("POST", f"/v1/webhook-endpoints/{first}/test"),
        ("GET", f"/v1/webhook-endpoints/{first}/deliveries"),
    ):
        assert api.request(method, path, other).status_code == 404, path
    assert api.request("DELETE", f"/v1/webhook-endpoints/{first}", user).status_code == 204
    assert len(api.request("GET", "/v1/webhook-endpoints", user).json()["data"]) == 9
    bad = api.request(
        "POST", "/v1/webhook-endpoints", user, json={"url": "ftp://x/y", "events": ["job.x"]}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "events[0]"
