"""Cloud Storage adapter: the only module that imports google.cloud.storage.

Locally STORAGE_EMULATOR_HOST points the same client at the Storage emulator (anonymous
credentials) and V4 URLs are signed with a service-account key the local stack makes for itself
(the emulator does not check signatures; our tests check expiry and scope in our own code). In
production URLs are signed through IAM signBlob as the function's own service account.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.config import settings

if TYPE_CHECKING:
    from google.cloud import storage  # type: ignore[attr-defined]  # ships no types

_lock = threading.Lock()
_client: storage.Client | None = None
SIGNED_URL_LIFETIME = timedelta(hours=1)


def client() -> storage.Client:
    global _client
    with _lock:
        if _client is None:
            from google.cloud import storage  # type: ignore[attr-defined]  # ships no types

            _client = storage.Client(project=settings().project_id)
        return _client


def list_names(bucket: str, prefix: str) -> list[str]:
    """Names of the objects under `prefix`; an absent bucket counts as empty."""
    from google.api_core.exceptions import NotFound

    try:
        return [blob.name for blob in client().list_blobs(bucket, prefix=prefix)]
    except NotFound:
        return []


def read_bytes(bucket: str, name: str, max_bytes: int) -> bytes | None:
    """The object's bytes (at most max_bytes + 1, so a caller can tell it is too big), or None
    when there is no such object."""
    from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable

    try:
        data: bytes = client().bucket(bucket).blob(name).download_as_bytes(start=0, end=max_bytes)
        return data
    except RequestRangeNotSatisfiable:  # an empty object has no byte 0
        return b""
    except NotFound:
        return None


def write_bytes(bucket: str, name: str, data: bytes) -> None:
    """Stores `data` as the object (replacing any object of that name)."""
    client().bucket(bucket).blob(name).upload_from_string(
        data, content_type="application/octet-stream"
    )


def delete_prefix(bucket: str, prefix: str) -> int:
    """Deletes every object under `prefix`; returns how many."""
    from google.api_core.exceptions import NotFound

    count = 0
    for blob in client().list_blobs(bucket, prefix=prefix):
        try:
            blob.delete()
            count += 1
        except NotFound:
            pass
    return count


def signed_url(
    bucket: str,
    name: str,
    method: str,
    headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """A V4 signed URL for one object and one method, valid for one hour; and its expiry.

    `headers` are signed too: the client must send them as given (Content-Type, and
    `x-goog-content-length-range`, which makes Storage refuse a body outside the range)."""
    cfg = settings()
    expires = (now or datetime.now(UTC)) + SIGNED_URL_LIFETIME
    blob = client().bucket(bucket).blob(name)
    signed = dict(headers or {})
    kwargs: dict[str, Any] = {
        "version": "v4",
        "expiration": SIGNED_URL_LIFETIME,
        "method": method,
        "content_type": signed.pop("Content-Type", None),
        "headers": signed or None,
    }
    if cfg.storage_emulator_host:
        kwargs["api_access_endpoint"] = cfg.storage_emulator_host
    if cfg.signing_key_file:
        from google.oauth2 import service_account

        kwargs["credentials"] = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            cfg.signing_key_file
        )
    else:  # production: sign through IAM as the function's own service account
        import google.auth
        import google.auth.transport.requests

        found, _ = google.auth.default()
        credentials: Any = found  # a service account's credentials in production
        credentials.refresh(google.auth.transport.requests.Request())
        kwargs["service_account_email"] = credentials.service_account_email
        kwargs["access_token"] = credentials.token
    return blob.generate_signed_url(**kwargs), expires


def set_custom_time(bucket: str, prefix: str, when: datetime) -> int:
    """Sets customTime on every object under `prefix` (Storage only lets it move later)."""
    count = 0
    for blob in client().list_blobs(bucket, prefix=prefix):
        if blob.custom_time is None or blob.custom_time < when:
            blob.custom_time = when
            blob.patch()
            count += 1
    return count


def delete_expired(bucket: str, prefix: str, now: datetime) -> list[str]:
    """Deletes objects under `prefix` whose customTime has passed (what the production
    lifecycle rule on daysSinceCustomTime does); returns their names."""
    gone = []
    for blob in client().list_blobs(bucket, prefix=prefix):
        if blob.custom_time is not None and blob.custom_time <= now:
            blob.delete()
            gone.append(blob.name)
    return gone
