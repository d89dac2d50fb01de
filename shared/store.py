"""Firestore: the one module that knows the document shapes (the Firestore adapter).

Collections (the fields each holds are written only here):
    users/{uid}            UserRecord: email, notification preferences, pause flags, Stripe
                           customer and card, monthly spend limit.
    datasets/{id}          uid, filename, object_name, status, report (validation), sha256.
    jobs/{id}              uid, model, dataset, hyperparameters, quote, status, events,
                           batch_job, payment, expires_at; the trainer adds progress,
                           trainer_result and trainer_failure (shared.contract).
    idempotency/{hash}     uid, job_id, request_hash: one per (user, Idempotency-Key).
    charges/{id}           one per job or storage extension: the at-most-once charge claim.
    ledger/{id}            one per charge that moved money.
    stripe_events/{id}     Stripe event ids already handled.
    mail/{job}-{status}    emails for the Firebase "Trigger Email" extension.

The client is created lazily on first use, so functions that never touch Firestore never import
it. Locally FIRESTORE_EMULATOR_HOST points the same client at the emulator (anonymous
credentials); in production it uses the function's service account.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
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
    monthly_spend_limit_cents: int | None = None

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
            "monthly_spend_limit_cents": self.monthly_spend_limit_cents,
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
            monthly_spend_limit_cents=doc.get("monthly_spend_limit_cents"),
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


def update_account(
    uid: str, email: str | None, notifications: dict[str, bool], fields: dict[str, Any]
) -> UserRecord:
    """Sets some notification preferences and account fields; everything else stays."""
    get_or_create_user(uid, email)
    ref = client().collection(USERS).document(uid)
    update: dict[str, Any] = {f"notifications.{k}": v for k, v in notifications.items()}
    update.update(fields)
    update["updated_at"] = now()
    ref.update(update)
    return UserRecord.from_doc(ref.get().to_dict())


# --- ids and cursors -------------------------------------------------------------------------

DATASETS = "datasets"
JOBS = "jobs"
IDEMPOTENCY = "idempotency"
MAIL = "mail"


def new_id(prefix: str) -> str:
    """A random id safe in URLs and in Cloud Batch job names (lowercase letters and digits)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(20))


def encode_cursor(created_at: datetime, doc_id: str) -> str:
    import base64
    import json

    raw = json.dumps({"t": created_at.isoformat(), "id": doc_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor we did not make."""
    import base64
    import json

    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return datetime.fromisoformat(raw["t"]), str(raw["id"])


def _page(
    collection: str, query: Any, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """Newest first (created_at, then id, both descending); returns snapshots and next cursor."""
    from google.cloud import firestore

    q = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
        "__name__", direction=firestore.Query.DESCENDING
    )
    if cursor:
        t, doc_id = decode_cursor(cursor)
        ref = client().collection(collection).document(doc_id)
        q = q.start_after({"created_at": t, "__name__": ref})
    snaps = list(q.limit(limit + 1).stream())
    more = len(snaps) > limit
    snaps = snaps[:limit]
    next_cursor = encode_cursor(snaps[-1].get("created_at"), snaps[-1].id) if more else None
    return snaps, next_cursor


# --- datasets --------------------------------------------------------------------------------


def dataset_ref(dataset_id: str) -> Any:
    return client().collection(DATASETS).document(dataset_id)


def create_dataset(doc: dict[str, Any]) -> None:
    dataset_ref(doc["id"]).create(doc)


def valid_id(doc_id: Any) -> bool:
    """Ids we hand out are short and URL-safe; anything else names no document of ours (and a
    '/' would even address a different collection)."""
    return isinstance(doc_id, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,128}", doc_id) is not None


def get_owned(collection: str, doc_id: str, uid: str) -> dict[str, Any] | None:
    """The document when it exists and belongs to `uid`; else None (so others' look absent)."""
    if not valid_id(doc_id):
        return None
    snap = client().collection(collection).document(doc_id).get()
    if not snap.exists:
        return None
    doc = snap.to_dict()
    return doc if doc.get("uid") == uid else None


def list_owned(
    collection: str, uid: str, limit: int, cursor: str | None, status: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = client().collection(collection).where(filter=FieldFilter("uid", "==", uid))
    if status:
        query = query.where(filter=FieldFilter("status", "==", status))
    snaps, next_cursor = _page(collection, query, limit, cursor)
    return [s.to_dict() for s in snaps], next_cursor


def update_dataset(dataset_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    ref = dataset_ref(dataset_id)
    ref.update({**fields, "updated_at": now()})
    return ref.get().to_dict()


def mark_validating(dataset_id: str) -> None:
    """pending_upload -> validating, only if nobody wrote the dataset since we read it (so a
    validation that finished meanwhile is never overwritten by this intermediate state)."""
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = dataset_ref(dataset_id)
    snap = ref.get()
    if not snap.exists or snap.get("status") != "pending_upload":
        return
    with contextlib.suppress(FailedPrecondition):
        ref.update(
            {"status": "validating", "updated_at": now()},
            option=db.write_option(last_update_time=snap.update_time),
        )


def delete_dataset(dataset_id: str) -> None:
    dataset_ref(dataset_id).delete()


# --- jobs ------------------------------------------------------------------------------------


def job_ref(job_id: str) -> Any:
    return client().collection(JOBS).document(job_id)


def get_job(job_id: str) -> dict[str, Any] | None:
    if not valid_id(job_id):
        return None
    snap = job_ref(job_id).get()
    return snap.to_dict() if snap.exists else None


class Conflict(Exception):
    """A precondition checked inside a transaction failed; `code` says which."""

    def __init__(self, code: str, detail: Any = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def create_job(
    job: dict[str, Any], idempotency_id: str | None, request_hash: str, max_active: int
) -> tuple[dict[str, Any], bool]:
    """Creates the job in one transaction with its idempotency record and the user's active-job
    limit; returns (job, created). A replay of the same key and body returns the first job.

    Raises:
        Conflict: "idempotency_conflict" (same key, different body) or "too_many_active_jobs".
    """
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    db = client()
    idem_ref = db.collection(IDEMPOTENCY).document(idempotency_id) if idempotency_id else None
    active_query = (
        db.collection(JOBS)
        .where(filter=FieldFilter("uid", "==", job["uid"]))
        .where(filter=FieldFilter("status", "in", ["queued", "running"]))
    )

    @firestore.transactional
    def run(tx: Any) -> tuple[dict[str, Any], bool]:
        if idem_ref is not None:
            seen = idem_ref.get(transaction=tx)
            if seen.exists:
                record = seen.to_dict()
                if record["request_hash"] != request_hash:
                    raise Conflict("idempotency_conflict")
                return job_ref(record["job_id"]).get(transaction=tx).to_dict(), False
        active = list(tx.get(active_query))
        if len(active) >= max_active:
            raise Conflict("too_many_active_jobs", len(active))
        tx.create(job_ref(job["id"]), job)
        if idem_ref is not None:
            tx.create(
                idem_ref,
                {
                    "uid": job["uid"],
                    "job_id": job["id"],
                    "request_hash": request_hash,
                    "created_at": job["created_at"],
                },
            )
        return job, True

    return run(db.transaction(max_attempts=10))


def update_job(job_id: str, mutate: Any, attempts: int = 20) -> dict[str, Any]:
    """Applies `mutate(job) -> (fields, extra_writes) | None` to a job atomically.

    An optimistic transaction: read the job, let `mutate` decide, then commit the job's fields
    together with `extra_writes` ((collection, id, doc) sets, e.g. the email) in one batch whose
    precondition is that the job has not changed since the read (its update time). If another
    writer got there first the batch fails as a whole and we read again, so a decision is never
    made on stale state. Unlike a locking transaction, nothing waits on a lock, so the trainer's
    progress writes to the same document are never blocked (the Firestore emulator holds locks
    of contended transactions for seconds).

    `mutate` returns None for "nothing to do" and raises to refuse. Returns the job as stored.
    """
    from google.api_core.exceptions import FailedPrecondition, NotFound

    db = client()
    ref = job_ref(job_id)
    for attempt in range(attempts):
        snap = ref.get()
        if not snap.exists:
            raise Conflict("not_found")
        job = snap.to_dict()
        result = mutate(job)
        if result is None:
            return job
        fields, extra_writes = result
        fields = {**fields, "updated_at": now()}
        batch = db.batch()
        batch.update(ref, fields, option=db.write_option(last_update_time=snap.update_time))
        for collection, doc_id, doc in extra_writes:
            batch.set(db.collection(collection).document(doc_id), doc)
        try:
            batch.commit()
        except (FailedPrecondition, NotFound):
            time.sleep(min(0.5, 0.01 * 2**attempt))
            continue
        job.update(fields)
        return job
    raise Conflict("contended")


# --- users: fields set once ------------------------------------------------------------------

STRIPE_EVENTS = "stripe_events"


def set_user_field_once(uid: str, field: str, value: Any, attempts: int = 20) -> Any:
    """Sets users/{uid}.field to `value` unless it already has a value; returns the value that
    stands (ours or the one that was there). A compare-and-set on the document's update time,
    so of any number of concurrent callers exactly one value is ever recorded."""
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = db.collection(USERS).document(uid)
    for attempt in range(attempts):
        snap = ref.get()
        current = (snap.to_dict() or {}).get(field)
        if current:
            return current
        try:
            ref.update(
                {field: value, "updated_at": now()},
                option=db.write_option(last_update_time=snap.update_time),
            )
            return value
        except FailedPrecondition:
            time.sleep(min(0.5, 0.01 * 2**attempt))
    raise Conflict("contended")


def update_user(uid: str, fields: dict[str, Any]) -> None:
    client().collection(USERS).document(uid).update({**fields, "updated_at": now()})


def user_by_customer(customer_id: str) -> str | None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(USERS)
        .where(filter=FieldFilter("stripe_customer_id", "==", customer_id))
        .limit(1)
    )
    return next((snap.id for snap in query.stream()), None)


def event_seen(event_id: str) -> bool:
    return client().collection(STRIPE_EVENTS).document(event_id).get().exists


def mark_event(event_id: str, event_type: str) -> None:
    from google.api_core.exceptions import AlreadyExists

    with contextlib.suppress(AlreadyExists):
        client().collection(STRIPE_EVENTS).document(event_id).create(
            {"type": event_type, "processed_at": now()}
        )


# --- charges and the ledger ------------------------------------------------------------------

CHARGES = "charges"
LEDGER = "ledger"


def claim_charge(charge_id: str, doc: dict[str, Any], lease_s: float) -> tuple[str, dict[str, Any]]:
    """Claims the right to charge `charge_id` (one charge per job or per extension request).

    Returns ("claimed", doc) for the caller that may now call Stripe, ("done", doc) when the
    charge already succeeded or failed for good, or ("busy", doc) while another caller's claim
    (younger than `lease_s`) is in flight. A claim whose holder died is taken over after the
    lease, keeping its attempt number, so the Stripe idempotency key stays the same.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition

    db = client()
    ref = db.collection(CHARGES).document(charge_id)
    t = now()
    try:
        ref.create({**doc, "status": "pending", "attempt": 1, "claimed_at": t, "created_at": t})
        return "claimed", ref.get().to_dict()
    except AlreadyExists:
        pass
    for _ in range(10):
        snap = ref.get()
        current = snap.to_dict()
        if current["status"] in ("succeeded", "failed"):
            return "done", current
        if current["status"] == "pending" and (t - current["claimed_at"]).total_seconds() < lease_s:
            return "busy", current
        try:  # "retry" (released after a transient error) or a stale pending claim
            ref.update(
                {"status": "pending", "claimed_at": t},
                option=db.write_option(last_update_time=snap.update_time),
            )
            return "claimed", {**current, "status": "pending", "claimed_at": t}
        except FailedPrecondition:
            continue
    return "busy", current


def finish_charge(charge_id: str, fields: dict[str, Any], ledger: dict[str, Any] | None) -> None:
    """Records the charge's outcome and, for money that moved, its ledger entry, atomically."""
    db = client()
    batch = db.batch()
    batch.update(db.collection(CHARGES).document(charge_id), {**fields, "finished_at": now()})
    if ledger is not None:
        batch.set(db.collection(LEDGER).document(charge_id), {**ledger, "created_at": now()})
    batch.commit()


def get_charge(charge_id: str) -> dict[str, Any] | None:
    snap = client().collection(CHARGES).document(charge_id).get()
    return snap.to_dict() if snap.exists else None


def reopen_charge(charge_id: str) -> bool:
    """Lets a failed charge be attempted again (a new card, or the user's retry); the attempt
    number moves on, so Stripe sees a new idempotency key."""
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = db.collection(CHARGES).document(charge_id)
    snap = ref.get()
    if not snap.exists or snap.get("status") != "failed":
        return False
    try:
        ref.update(
            {"status": "retry", "attempt": snap.get("attempt") + 1},
            option=db.write_option(last_update_time=snap.update_time),
        )
        return True
    except FailedPrecondition:
        return False


def ledger_entries(uid: str) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = client().collection(LEDGER).where(filter=FieldFilter("uid", "==", uid))
    return [s.to_dict() for s in query.stream()]


def charges_of(uid: str, status: str) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(CHARGES)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("status", "==", status))
    )
    return [{**s.to_dict(), "id": s.id} for s in query.stream()]


def clear_pause(uid: str, code: str) -> None:
    from google.cloud import firestore

    update_user(uid, {f"pauses.{code}": firestore.DELETE_FIELD})


def count_active_jobs(uid: str) -> int:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(JOBS)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("status", "in", ["queued", "running"]))
    )
    return len(list(query.select([]).stream()))


def stale_queued_jobs(before: datetime) -> list[str]:
    """Ids of jobs still queued without a Batch job that were created before `before`."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(JOBS)
        .where(filter=FieldFilter("status", "==", "queued"))
        .where(filter=FieldFilter("created_at", "<", before))
    )
    return [s.id for s in query.stream() if not s.get("batch_job")]
