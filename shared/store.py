"""Firestore: the one module that knows the document shapes (the Firestore adapter).

Collections:
    users/{uid}   UserRecord: email, notification preferences, pause flags, Stripe references.

The client is created lazily on first use, so functions that never touch Firestore never import
it. Locally FIRESTORE_EMULATOR_HOST points the same client at the emulator (anonymous
credentials); in production it uses the function's service account.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.config import settings

if TYPE_CHECKING:
    from google.cloud import firestore

USERS = "users"
NOTIFICATION_EVENTS = ("job_completed", "job_failed", "job_cancelled")

_lock = threading.Lock()
_client: firestore.Client | None = None


def client() -> firestore.Client:
    global _client
    with _lock:
        if _client is None:
            from google.cloud import firestore

            _client = firestore.Client(project=settings().project_id)
        return _client


def now() -> datetime:
    return datetime.now(UTC)


def ping(timeout_s: float = 2.0) -> None:
    """One cheap read; raises when Firestore does not answer within `timeout_s`."""
    client().collection("_health").document("ping").get(timeout=timeout_s, retry=None)


@dataclass(frozen=True)
class Pause:
    """Why an account's submissions are paused (set by billing; one entry per flag)."""

    reason: str
    since: datetime


@dataclass(frozen=True)
class PaymentMethod:
    id: str
    brand: str
    last4: str


@dataclass(frozen=True)
class UserRecord:
    uid: str
    email: str | None
    created_at: datetime
    updated_at: datetime
    notifications: dict[str, bool] = field(default_factory=dict)
    pauses: dict[str, Pause] = field(default_factory=dict)
    stripe_customer_id: str | None = None
    payment_method: PaymentMethod | None = None

    @staticmethod
    def new(uid: str, email: str | None) -> UserRecord:
        t = now()
        return UserRecord(
            uid=uid,
            email=email,
            created_at=t,
            updated_at=t,
            notifications={event: True for event in NOTIFICATION_EVENTS},
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "email": self.email,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "notifications": dict(self.notifications),
            "pauses": {k: {"reason": p.reason, "since": p.since} for k, p in self.pauses.items()},
            "stripe_customer_id": self.stripe_customer_id,
            "payment_method": (
                None
                if self.payment_method is None
                else {
                    "id": self.payment_method.id,
                    "brand": self.payment_method.brand,
                    "last4": self.payment_method.last4,
                }
            ),
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> UserRecord:
        pm = doc.get("payment_method")
        defaults = {event: True for event in NOTIFICATION_EVENTS}
        return UserRecord(
            uid=doc["uid"],
            email=doc.get("email"),
            created_at=doc["created_at"],
            updated_at=doc.get("updated_at", doc["created_at"]),
            notifications={**defaults, **(doc.get("notifications") or {})},
            pauses={
                k: Pause(reason=v["reason"], since=v["since"])
                for k, v in (doc.get("pauses") or {}).items()
            },
            stripe_customer_id=doc.get("stripe_customer_id"),
            payment_method=(
                None if not pm else PaymentMethod(id=pm["id"], brand=pm["brand"], last4=pm["last4"])
            ),
        )


def get_or_create_user(uid: str, email: str | None) -> UserRecord:
    """The user's record, created on first call.

    Race-safe without a transaction: `create()` succeeds for exactly one of any number of
    concurrent first calls (a precondition that the document does not exist); the others get
    AlreadyExists and read what the winner wrote.
    """
    from google.api_core.exceptions import AlreadyExists

    ref = client().collection(USERS).document(uid)
    snap = ref.get()
    if snap.exists:
        return UserRecord.from_doc(snap.to_dict())
    record = UserRecord.new(uid, email)
    try:
        ref.create(record.to_doc())
        return record
    except AlreadyExists:
        return UserRecord.from_doc(ref.get().to_dict())


def update_notifications(uid: str, email: str | None, changes: dict[str, bool]) -> UserRecord:
    """Sets some notification preferences; other fields, and unnamed preferences, stay."""
    get_or_create_user(uid, email)
    ref = client().collection(USERS).document(uid)
    update: dict[str, Any] = {f"notifications.{k}": v for k, v in changes.items()}
    update["updated_at"] = now()
    ref.update(update)
    return UserRecord.from_doc(ref.get().to_dict())
