"""Webhooks (typed core): endpoints, the fan-out of each recorded event, and its signed delivery.

Each transition of a job (and each payment outcome) writes its event into `webhook_events` in the
commit that makes the transition (shared.store), so none goes unsent and none is recorded twice.
A Firestore trigger (`fan_out`) enqueues one Cloud Task per subscribed endpoint, named by both
ids; the task (`deliver`) claims its attempt before sending, so a task delivered twice sends
once. Payloads are signed with the `standardwebhooks` library (webhook-id, webhook-timestamp,
webhook-signature; during a rotation both secrets sign). A non-2xx answer is retried on the
Standard Webhooks schedule by enqueueing the next attempt ourselves; 410 disables the endpoint;
an endpoint failing for 5 days is disabled and its owner emailed.

Before each send the URL's host is resolved and refused when any address is not public
(private, loopback, link-local, multicast, reserved, the metadata server); the request then
goes to the checked address itself (no second lookup an attacker could answer differently), no
redirect is followed, it times out after 10 s and at most 64 KiB of the answer is read.
Loopback is allowed only with YACHAY_WEBHOOKS_ALLOW_LOOPBACK (the local stack and tests).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from shared import outbound, secretbox, store
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.records import (
    PING,
    DeliveryAttempt,
    DeliveryStatus,
    Job,
    Mail,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookSecret,
)

MAX_ENDPOINTS = 10
# Seconds to wait before attempt n+1 (index n-1): the Standard Webhooks schedule, 8 attempts.
SCHEDULE_S = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
DISABLE_AFTER = timedelta(days=5)
ROTATION_OVERLAP = timedelta(hours=24)
KEEP_DELIVERIES = timedelta(days=30)


# --- endpoints -------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def view(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    """The public JSON shape of an endpoint; the secret only when just made (create, rotate)."""
    out: dict[str, Any] = {
        "object": "webhook_endpoint",
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "status": "disabled" if endpoint.disabled_at else "enabled",
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at.isoformat(),
    }
    if secret is not None:
        out["secret"] = secret
    return out


def check_url(url: str, cfg: Settings) -> None:
    """The URL's shape (its addresses are checked at each send: shared.outbound).

    Raises:
        ApiError: invalid_value (param url) for anything but an absolute https URL (http too on
            the local stack) with a host.
    """
    schemes = ("https", "http") if cfg.is_local else ("https",)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a bracketed host that is no IPv6 address: "http://[::1/", "[zz::1]"
        host = None
        parts = urlsplit("")
    if parts.scheme not in schemes or not host or parts.username or parts.password:
        raise ApiError(
            Code.INVALID_VALUE,
            f"'url' must be an absolute {' or '.join(schemes)} URL with a host and no "
            "credentials, e.g. https://example.com/hooks/yachay.",
            param="url",
        )
    try:
        _ = parts.port
    except ValueError:
        raise ApiError(Code.INVALID_VALUE, "'url' has an invalid port.", param="url") from None


def check_events_readable(events: list[str], key_scopes: tuple[str, ...] | None) -> None:
    """Job and payment events carry the job's whole view: an API key subscribes to them only if
    it may read jobs (a session may read everything of its own).

    Raises:
        ApiError: insufficient_scope (403, param events).
    """
    from shared.routes import JOBS_READ

    if key_scopes is None or JOBS_READ in key_scopes:
        return
    carrying = sorted(e for e in events if e.startswith(("job.", "payment.")))
    if carrying:
        raise ApiError(
            Code.INSUFFICIENT_SCOPE,
            f"{', '.join(carrying)} carry the job's view, which this API key may not read: "
            f"mint a key with '{JOBS_READ}' to subscribe to them.",
            param="events",
        )


def create(
    uid: str,
    email: str | None,
    body: dict[str, Any],
    cfg: Settings,
    key_scopes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """POST /v1/webhook-endpoints: the endpoint, with its signing secret (shown this once).
    `key_scopes`: the API key's scopes when a key calls (None for a session).

    Raises:
        ApiError: a bad URL (400), events the key may not read (403),
            too_many_webhook_endpoints (409).
    """
    check_url(body["url"], cfg)
    check_events_readable(list(body["events"]), key_scopes)
    store.get_or_create_user(uid, email)  # the address we write to if it gets disabled
    t = store.now()
    secret = new_secret()
    endpoint_id = store.new_id("we-")
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        uid=uid,
        url=body["url"],
        events=tuple(dict.fromkeys(body["events"])),
        description=body.get("description", ""),
        secrets=(WebhookSecret(secretbox.seal(secret, endpoint_id, cfg), t),),
        created_at=t,
    )
    try:
        store.new_webhook_endpoint(endpoint, MAX_ENDPOINTS)
    except store.Conflict:
        raise ApiError(
            Code.TOO_MANY_WEBHOOK_ENDPOINTS,
            f"An account may have at most {MAX_ENDPOINTS} webhook endpoints; delete one first.",
        ) from None
    return view(endpoint, secret)


def owned(uid: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = store.get_webhook_endpoint(uid, endpoint_id)
    if endpoint is None:
        raise ApiError(Code.NOT_FOUND, f"No webhook endpoint '{endpoint_id}'.", param="endpoint_id")
    return endpoint


def listed(uid: str) -> list[dict[str, Any]]:
    return [view(e) for e in store.webhook_endpoints_of(uid)]


def delete(uid: str, endpoint_id: str) -> None:
    store.delete_webhook_endpoint(owned(uid, endpoint_id))


def rotate(
    uid: str, endpoint_id: str, cfg: Settings, now: datetime | None = None
) -> dict[str, Any]:
    """POST .../rotate-secret: a new secret signs from now on; the current one keeps signing
    beside it for 24 hours, so receivers can switch without losing a delivery."""
    endpoint = owned(uid, endpoint_id)
    t = now or store.now()
    secret = new_secret()
    kept = tuple(
        s._replace(expires_at=min(s.expires_at or t + ROTATION_OVERLAP, t + ROTATION_OVERLAP))
        for s in endpoint.secrets
        if s.expires_at is None or s.expires_at > t
    )
    sealed = WebhookSecret(secretbox.seal(secret, endpoint.id, cfg), t)
    endpoint = endpoint._replace(secrets=(sealed, *kept))
    store.save_webhook_endpoint(endpoint)
    return view(endpoint, secret)


def send_test(uid: str, endpoint_id: str, cfg: Settings) -> dict[str, Any]:
    """POST .../test: a `ping` to this endpoint only, delivered like any event."""
    from shared import tasks

    endpoint = owned(uid, endpoint_id)
    event = WebhookEvent(
        id=f"evt-ping-{store.new_id('')}",
        uid=uid,
        type=PING,
        job_id="",
        created_at=store.now(),
    )
    store.new_webhook_event(event)
    tasks.enqueue_delivery(event.id, endpoint.id, 1, None, cfg)
    return {"object": "webhook_event", "id": event.id, "type": PING, "endpoint_id": endpoint.id}


def delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    def iso(t: datetime | None) -> str | None:
        return None if t is None else t.isoformat()

    return {
        "object": "webhook_delivery",
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status.value,
        "created_at": delivery.created_at.isoformat(),
        "attempts": [
            {
                "attempt": a.attempt,
                "at": a.at.isoformat(),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
                "next_retry_at": iso(a.next_retry_at),
            }
            for a in delivery.attempts
        ],
    }


def deliveries(uid: str, endpoint_id: str, limit: int) -> list[dict[str, Any]]:
    endpoint = owned(uid, endpoint_id)
    return [delivery_view(d) for d in store.deliveries_of(endpoint.id, limit)]


# --- fan-out and delivery --------------------------------------------------------------------


def fan_out(event_id: str, cfg: Settings) -> int:
    """One delivery task per enabled endpoint of the event's user subscribed to its type
    (named by both ids: a redelivered trigger enqueues each once). Returns how many."""
    from shared import tasks

    event = store.get_webhook_event(event_id)
    if event is None or event.type == PING or not event.uid:
        return 0
    count = 0
    for endpoint in store.webhook_endpoints_of(event.uid):
        if endpoint.disabled_at is None and event.type in endpoint.events:
            tasks.enqueue_delivery(event.id, endpoint.id, 1, None, cfg)
            count += 1
    return count


def envelope(event: WebhookEvent) -> dict[str, Any]:
    """What a receiver gets: {id, type, created_at, data}; data.job is the job as
    GET /v1/jobs/{id} shows it, at the transition (payments: once the payment is recorded)."""
    from shared.jobs import view as job_view

    data: dict[str, Any] = {}
    if event.job is not None:
        data["job"] = job_view(Job.from_doc(event.job))
    elif event.job_id:
        job = store.get_job(event.job_id)
        if job is not None:
            data["job"] = job_view(job)
    return {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "data": data,
    }


def sign(
    endpoint: WebhookEndpoint, msg_id: str, payload: str, now: datetime, cfg: Settings
) -> dict[str, str]:
    """The Standard Webhooks headers; every secret still valid signs (a rotation's overlap),
    each opened from its sealed form only here, for the send."""
    from standardwebhooks.webhooks import Webhook

    signatures = [
        Webhook(secretbox.open_sealed(sealed, endpoint.id, cfg)).sign(msg_id, now, payload)
        for sealed in endpoint.signing_secrets(now)
    ]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def deliver(
    event_id: str, endpoint_id: str, attempt: int, cfg: Settings, now: datetime | None = None
) -> str:
    """Sends attempt number `attempt` of one event to one endpoint, once; records it; enqueues
    the next attempt on failure. Returns what happened (for logs and tests)."""
    from shared import tasks

    t = now or store.now()
    event = store.get_webhook_event(event_id)
    endpoint = store.get_webhook_endpoint(None, endpoint_id)
    if event is None or endpoint is None or endpoint.uid != event.uid:
        return "gone"
    delivery = WebhookDelivery(
        id=f"{event.id}--{endpoint.id}",
        uid=event.uid,
        endpoint_id=endpoint.id,
        event_id=event.id,
        event_type=event.type,
        status=DeliveryStatus.PENDING,
        created_at=t,
        expires_at=t + KEEP_DELIVERIES,
    )
    claimed = store.claim_attempt(delivery, attempt)
    if claimed is None:
        return "duplicate"
    if endpoint.disabled_at is not None:
        store.record_attempt(claimed._replace(status=DeliveryStatus.FAILED))
        return "disabled"
    payload = json.dumps(envelope(event), separators=(",", ":"), default=str)
    started = time.monotonic()
    headers = sign(endpoint, event.id, payload, t, cfg)
    answer = outbound.post(endpoint.url, payload, headers, cfg.webhooks_allow_loopback)
    latency_ms = round((time.monotonic() - started) * 1000)
    ok = answer.status_code is not None and 200 <= answer.status_code < 300
    record = DeliveryAttempt(attempt, t, answer.status_code, latency_ms, answer.error)
    if ok:
        status = DeliveryStatus.SUCCEEDED
        if endpoint.failing_since is not None:
            store.save_webhook_endpoint(endpoint._replace(failing_since=None))
    elif answer.status_code == 410:
        status = DeliveryStatus.FAILED
        _disable(endpoint, "The endpoint answered 410 Gone.", t)
    else:
        failing_since = endpoint.failing_since or t
        if t - failing_since >= DISABLE_AFTER:
            status = DeliveryStatus.FAILED
            _disable(endpoint, "Every delivery failed for 5 days.", t, failing_since)
        elif attempt < len(SCHEDULE_S):
            status = DeliveryStatus.PENDING
            retry_at = t + timedelta(seconds=SCHEDULE_S[attempt])
            record = record._replace(next_retry_at=retry_at)
            tasks.enqueue_delivery(event.id, endpoint.id, attempt + 1, retry_at, cfg)
            if endpoint.failing_since is None:
                store.save_webhook_endpoint(endpoint._replace(failing_since=t))
        else:
            status = DeliveryStatus.FAILED
    store.record_attempt(claimed._replace(status=status, attempts=(*claimed.attempts, record)))
    return "delivered" if ok else f"failed ({answer.status_code or answer.error})"


def _disable(
    endpoint: WebhookEndpoint, reason: str, t: datetime, failing_since: datetime | None = None
) -> None:
    store.save_webhook_endpoint(
        endpoint._replace(disabled_at=t, disabled_reason=reason, failing_since=failing_since)
    )
    user = store.get_user(endpoint.uid)
    if user is not None and user.email:
        store.queue_mail(
            f"webhook-{endpoint.id}-disabled",
            Mail(
                to=user.email,
                uid=user.uid,
                job_id="",
                subject="A Yachay webhook endpoint was disabled",
                text=f"We stopped sending events to {endpoint.url}: {reason} Fix the endpoint, "
                "then create it again (POST /v1/webhook-endpoints).",
                created_at=t,
            ),
        )
