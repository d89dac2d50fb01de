"""Firestore: the one module that reads and writes documents (the Firestore adapter).

Collections (declared once, with their owner, erasure and TTL, in shared.documents), each
holding one record type of `shared.records` (its `to_doc`/`from_doc` is the document shape;
nothing outside this module sees a document, a collection or the client):
    users/{uid}            UserRecord
    datasets/{id}          Dataset
    jobs/{id}              Job; the trainer adds progress, trainer_result and trainer_failure
                           (shared.contract) to the document `job_document(id)` names.
    idempotency/{hash}     IdempotencyRecord: one per (user, Idempotency-Key) of a submission.
    charges/{id}           Charge: the at-most-once claim of one charge (a job's or an extension's).
    ledger/{id}            LedgerEntry: one per charge that moved money (the charge's id).
    stripe_events/{id}     Stripe event ids already handled.
    mail/{job}-{status}    Mail for the Firebase "Trigger Email" extension.
    api_keys/{sha256}      ApiKeyRecord: keyed by the hash of the secret (one read per check).
    webhook_endpoints/{id} WebhookEndpoint.
    webhook_events/{id}    WebhookEvent: the outbox, written in the commit of the transition it
                           reports (job.* in new_job/update_job, payment.* in settle_charge).
    webhook_deliveries/{event}--{endpoint}  WebhookDelivery: its attempts (30 days).

Writes that must happen together are one commit here (a transition and its email; a charge's
outcome, its ledger entry, the job's payment and the account's pause flag), so a crash between
two writes cannot lose one of them. A write that loses every attempt to concurrent writers raises
`errors.Contended` (a retryable 503), never anything else.

The client is created lazily on first use, so functions that never touch Firestore never import
it. Locally FIRESTORE_EMULATOR_HOST points the same client at the emulator (anonymous
credentials); in production it uses the function's service account.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from shared.config import settings
from shared.errors import Contended
from shared.records import (
    ACTIVE_STATUSES,
    ApiKeyRecord,
    AuthorizationStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Dataset,
    DatasetStatus,
    DeliveryStatus,
    IdempotencyRecord,
    Job,
    JobChange,
    JobStatus,
    LedgerEntry,
    Mail,
    Outbox,
    Pause,
    Payment,
    PaymentMethod,
    UserRecord,
    ValidationReport,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    month_of,
    settles,
)
from shared.routes import valid_id

if TYPE_CHECKING:
    from google.cloud import firestore

USERS = "users"
DATASETS = "datasets"
JOBS = "jobs"
IDEMPOTENCY = "idempotency"
CHARGES = "charges"
LEDGER = "ledger"
STRIPE_EVENTS = "stripe_events"
MAIL = "mail"
RATE_LIMITS = "rate_limits"
API_KEYS = "api_keys"
WEBHOOK_ENDPOINTS = "webhook_endpoints"
WEBHOOK_EVENTS = "webhook_events"
WEBHOOK_DELIVERIES = "webhook_deliveries"

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
    from datetime import UTC

    return datetime.now(UTC)


def ping(timeout_s: float = 2.0) -> None:
    """One cheap read; raises when Firestore does not answer within `timeout_s`."""
    client().collection("_health").document("ping").get(timeout=timeout_s, retry=None)


def _ref(collection: str, doc_id: str) -> Any:
    return client().collection(collection).document(doc_id)


def _retrying(attempts: int, what: str) -> Iterator[int]:
    """Attempt numbers with a short jittered backoff between them; raises Contended after the
    last one (the caller `continue`s on a lost compare-and-set and returns on success)."""
    import random

    for attempt in range(attempts):
        if attempt:
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        yield attempt
    raise Contended(what)


# --- ids and cursors -------------------------------------------------------------------------


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
    """The (created_at, id) a cursor of ours holds.

    Raises:
        ValueError: for anything we did not make: not base64 JSON, no timezone-aware time, or
            an id that is not one of ours (a '/', '..', empty or Firestore-reserved).
    """
    import base64
    import binascii
    import json

    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        t, doc_id = datetime.fromisoformat(raw["t"]), raw["id"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a cursor: {exc}") from None
    if t.tzinfo is None or not valid_id(doc_id):
        raise ValueError("not a cursor of ours")
    return t, doc_id


def _page(
    collection: str, uid: str, limit: int, cursor: str | None, status: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The user's documents, newest first (created_at, then id, both descending), and the
    cursor of the next page."""
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    q = client().collection(collection).where(filter=FieldFilter("uid", "==", uid))
    if status:
        q = q.where(filter=FieldFilter("status", "==", status))
    q = q.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
        "__name__", direction=firestore.Query.DESCENDING
    )
    if cursor:
        t, doc_id = decode_cursor(cursor)
        q = q.start_after({"created_at": t, "__name__": _ref(collection, doc_id)})
    snaps = list(q.limit(limit + 1).stream())
    more = len(snaps) > limit
    snaps = snaps[:limit]
    next_cursor = encode_cursor(snaps[-1].get("created_at"), snaps[-1].id) if more else None
    return [s.to_dict() or {} for s in snaps], next_cursor


def _owned(collection: str, doc_id: str, uid: str) -> dict[str, Any] | None:
    """The document when it exists and belongs to `uid`; else None (so others' look absent)."""
    if not valid_id(doc_id):
        return None
    snap = _ref(collection, doc_id).get()
    if not snap.exists:
        return None
    doc: dict[str, Any] = snap.to_dict()
    return doc if doc.get("uid") == uid else None


# --- users -----------------------------------------------------------------------------------


def get_user(uid: str) -> UserRecord | None:
    """The user's record, or None (never created, or erased); creates nothing."""
    snap = _ref(USERS, uid).get()
    return UserRecord.from_doc(snap.to_dict()) if snap.exists else None


def get_or_create_user(uid: str, email: str | None) -> UserRecord:
    """The user's record, created on first call. `email` is a verified address from the
    caller's token (or None): when it differs from the stored one (verified since, or changed),
    the record takes it, in one write made only then.

    Race-safe without a transaction: `create()` succeeds for exactly one of any number of
    concurrent first calls (a precondition that the document does not exist); the others get
    AlreadyExists and read what the winner wrote.
    """
    from google.api_core.exceptions import AlreadyExists

    ref = _ref(USERS, uid)
    snap = ref.get()
    if snap.exists:
        user = UserRecord.from_doc(snap.to_dict())
        if email and email != user.email:
            ref.update({"email": email, "updated_at": now()})
            user = user._replace(email=email)
        return user
    record = UserRecord.new(uid, email, now())
    try:
        ref.create(record.to_doc())
        return record
    except AlreadyExists:
        return UserRecord.from_doc(ref.get().to_dict())


_KEEP: Any = object()


def update_account(
    uid: str,
    email: str | None,
    notifications: dict[str, bool],
    monthly_spend_limit_cents: int | None = _KEEP,
) -> UserRecord:
    """Sets some notification preferences and, when given, the monthly spend limit (None: no
    limit); everything else stays."""
    get_or_create_user(uid, email)
    update: dict[str, Any] = {f"notifications.{k}": v for k, v in notifications.items()}
    if monthly_spend_limit_cents is not _KEEP:
        update["monthly_spend_limit_cents"] = monthly_spend_limit_cents
    update["updated_at"] = now()
    ref = _ref(USERS, uid)
    ref.update(update)
    return UserRecord.from_doc(ref.get().to_dict())


def set_stripe_customer_once(uid: str, customer_id: str) -> str:
    """Records `customer_id` as the user's Stripe customer unless one is recorded already;
    returns the one that stands. A compare-and-set on the document's update time, so of any
    number of concurrent callers exactly one customer is ever recorded."""
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = _ref(USERS, uid)
    for _ in _retrying(20, "account"):
        snap = ref.get()
        current = (snap.to_dict() or {}).get("stripe_customer_id")
        if current:
            return str(current)
        try:
            ref.update(
                {"stripe_customer_id": customer_id, "updated_at": now()},
                option=db.write_option(last_update_time=snap.update_time),
            )
            return customer_id
        except FailedPrecondition:
            continue
    raise AssertionError("unreachable")


def set_payment_method(uid: str, card: PaymentMethod) -> None:
    _ref(USERS, uid).update({"payment_method": card.to_doc(), "updated_at": now()})


def pause_user(uid: str, code: str, pause: Pause) -> None:
    _ref(USERS, uid).update({f"pauses.{code}": pause.to_doc(), "updated_at": now()})


def user_by_customer(customer_id: str) -> str | None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(USERS)
        .where(filter=FieldFilter("stripe_customer_id", "==", customer_id))
        .limit(1)
    )
    return next((snap.id for snap in query.stream()), None)


# --- datasets --------------------------------------------------------------------------------


def _create_on_account(
    uid: str,
    created_at: datetime,
    ref: Any,
    doc: dict[str, Any],
    entry: tuple[str, str, Any],
    admit: Callable[[UserRecord], None],
    attempts: int,
) -> None:
    """Creates `doc` at `ref` and its entry on the user's account record (`entry`: the map
    field, the key, the value) in one commit, after `admit(user)` (which raises Conflict to
    refuse). Optimistic on the account record, like new_job: the commit is conditioned on the
    record being unchanged since it was read, so concurrent creations cannot pass a quota
    together, and a lost race reads again.

    Raises:
        Conflict: what `admit` raises.
        Contended: every attempt lost to concurrent writers.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound

    db = client()
    user_ref = _ref(USERS, uid)
    field, key, value = entry
    for _ in _retrying(attempts, "account"):
        snap = user_ref.get()
        user = (
            UserRecord.from_doc(snap.to_dict())
            if snap.exists
            else UserRecord.new(uid, None, created_at)
        )
        admit(user)
        batch = db.batch()
        batch.create(ref, doc)
        if not snap.exists:
            batch.create(user_ref, {**user.to_doc(), field: {key: value}})
        else:
            batch.update(
                user_ref,
                {f"{field}.{key}": value, "updated_at": now()},
                option=db.write_option(last_update_time=snap.update_time),
            )
        try:
            batch.commit()
        except (AlreadyExists, FailedPrecondition, NotFound):
            continue  # another creation changed the account first: read it again
        return
    raise AssertionError("unreachable")


def new_dataset(dataset: Dataset, max_count: int, max_bytes: int, attempts: int = 30) -> None:
    """Creates the dataset and its place on the user's account (UserRecord.datasets) in one
    commit, within the user's quotas: at most `max_count` datasets and `max_bytes` declared in
    all.

    Raises:
        Conflict: "too_many_datasets" (detail: the count) or "dataset_storage_full" (detail: the
            bytes declared already).
        Contended: every attempt lost to concurrent writers.
    """

    def admit(user: UserRecord) -> None:
        if len(user.datasets) >= max_count:
            raise Conflict("too_many_datasets", len(user.datasets))
        used = sum(user.datasets.values())
        if used + dataset.declared_bytes > max_bytes:
            raise Conflict("dataset_storage_full", used)

    _create_on_account(
        dataset.uid,
        dataset.created_at,
        _ref(DATASETS, dataset.id),
        dataset.to_doc(),
        ("datasets", dataset.id, dataset.declared_bytes),
        admit,
        attempts,
    )


def get_dataset(uid: str, dataset_id: str) -> Dataset | None:
    """The user's dataset, or None (also for another user's)."""
    doc = _owned(DATASETS, dataset_id, uid)
    return None if doc is None else Dataset.from_doc(doc)


def list_datasets(uid: str, limit: int, cursor: str | None) -> tuple[list[Dataset], str | None]:
    docs, next_cursor = _page(DATASETS, uid, limit, cursor)
    return [Dataset.from_doc(d) for d in docs], next_cursor


def mark_validating(dataset_id: str) -> None:
    """pending_upload -> validating, only if nobody wrote the dataset since we read it (so a
    validation that finished meanwhile is never overwritten by this intermediate state)."""
    _move_dataset(dataset_id, DatasetStatus.PENDING_UPLOAD, DatasetStatus.VALIDATING)


def unmark_validating(dataset_id: str) -> None:
    """validating -> pending_upload: a validation that failed unexpectedly leaves the dataset
    ready to be validated again, never stuck in `validating`."""
    _move_dataset(dataset_id, DatasetStatus.VALIDATING, DatasetStatus.PENDING_UPLOAD)


def _move_dataset(dataset_id: str, frm: DatasetStatus, to: DatasetStatus) -> None:
    """frm -> to, conditioned on the dataset being unchanged since it was read."""
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = _ref(DATASETS, dataset_id)
    snap = ref.get()
    if not snap.exists or snap.get("status") != frm:
        return
    with contextlib.suppress(FailedPrecondition):
        ref.update(
            {"status": to.value, "updated_at": now()},
            option=db.write_option(last_update_time=snap.update_time),
        )


def record_validation(dataset_id: str, report: ValidationReport, sha256: str) -> Dataset:
    """Stores the report about the file with hash `sha256`; returns the dataset as stored."""
    ref = _ref(DATASETS, dataset_id)
    t = now()
    ref.update(
        {
            "status": report.status.value,
            "report": report.to_doc(),
            "sha256": sha256,
            "validated_at": t,
            "updated_at": t,
        }
    )
    return Dataset.from_doc(ref.get().to_dict())


def delete_dataset(dataset: Dataset) -> None:
    """Deletes the dataset and frees its place in the user's quotas, in one commit."""
    from google.cloud import firestore

    batch = client().batch()
    batch.delete(_ref(DATASETS, dataset.id))
    batch.set(
        _ref(USERS, dataset.uid),
        {"datasets": {dataset.id: firestore.DELETE_FIELD}},
        merge=True,
    )
    batch.commit()


def _in_status_since(collection: str, status: str, before: datetime) -> Iterator[Any]:
    """Snapshots of the documents in `status` created before `before` (one composite index
    each, in terraform/project.tf)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(collection)
        .where(filter=FieldFilter("status", "==", status))
        .where(filter=FieldFilter("created_at", "<", before))
    )
    return iter(query.stream())


T = TypeVar("T")


class MalformedDocument(ValueError):
    """A stored document that does not have the shape of its record (written by hand, or by a
    version that had other fields): named by its id, never acted on."""


class Found(NamedTuple, Generic[T]):
    """What a sweep query found: the records, and the ids of documents that did not parse."""

    items: list[T]
    skipped: list[str]


def _parse(collection: str, doc_id: str, doc: dict[str, Any], parse: Callable[[Any], T]) -> T:
    try:
        return parse(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedDocument(f"{collection}/{doc_id}: {exc!r}") from None


def _parse_each(snaps: Iterable[Any], collection: str, parse: Callable[[Any], T]) -> Found[T]:
    """Each document parsed on its own: one that does not parse is logged with its id and
    skipped, so it can never stop a sweep for everyone else."""
    from shared import logs

    items: list[T] = []
    skipped: list[str] = []
    for snap in snaps:
        try:
            items.append(_parse(collection, snap.id, snap.to_dict() or {}, parse))
        except MalformedDocument as exc:
            logs.warning(
                "malformed document skipped", collection=collection, id=snap.id, error=str(exc)
            )
            skipped.append(snap.id)
    return Found(items, skipped)


def abandoned_uploads(before: datetime) -> Found[Dataset]:
    """Datasets still waiting for their upload that were created before `before`."""
    snaps = _in_status_since(DATASETS, DatasetStatus.PENDING_UPLOAD.value, before)
    return _parse_each(snaps, DATASETS, Dataset.from_doc)


# --- jobs ------------------------------------------------------------------------------------


def record_trainer_report(job_id: str, fields: dict[str, Any]) -> bool:
    """Writes the trainer-owned fields (shared.contract: progress, result, failure) of one job;
    False when there is no such job."""
    from google.api_core.exceptions import NotFound

    try:
        _ref(JOBS, job_id).update(fields)
    except NotFound:
        return False
    return True


def job_document(job_id: str) -> str:
    """The path of the job's document (whose trainer-owned fields record_trainer_report
    writes)."""
    return f"{JOBS}/{job_id}"


def get_job(job_id: str) -> Job | None:
    if not valid_id(job_id):
        return None
    snap = _ref(JOBS, job_id).get()
    return _parse(JOBS, job_id, snap.to_dict() or {}, Job.from_doc) if snap.exists else None


def get_owned_job(uid: str, job_id: str) -> Job | None:
    """The user's job, or None (also for another user's)."""
    doc = _owned(JOBS, job_id, uid)
    return None if doc is None else Job.from_doc(doc)


def list_jobs(
    uid: str, limit: int, cursor: str | None, status: JobStatus | None = None
) -> tuple[list[Job], str | None]:
    docs, next_cursor = _page(JOBS, uid, limit, cursor, None if status is None else status.value)
    return [Job.from_doc(d) for d in docs], next_cursor


def find_idempotent_job(idempotency_id: str) -> tuple[IdempotencyRecord, Job] | None:
    """The submission an Idempotency-Key (hashed with its user) made, with its job."""
    snap = _ref(IDEMPOTENCY, idempotency_id).get()
    if not snap.exists:
        return None
    record = IdempotencyRecord.from_doc(snap.to_dict())
    job = get_job(record.job_id)
    return None if job is None else (record, job)


class Conflict(Exception):
    """A precondition checked inside a transaction failed; `code` says which."""

    def __init__(self, code: str, detail: Any = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def new_job(
    job: Job,
    idempotency_id: str | None,
    request_hash: str,
    max_active: int,
    spend_limit_cents: int | None = None,
    attempts: int = 30,
) -> tuple[Job, bool]:
    """Creates the job, its idempotency record and its place on the user's account in one
    commit, within the user's limits; returns (job, created). A replay of the same key and body
    returns the first job.

    It reads only the user's own documents: the account record holds the user's active jobs and
    the quotes not yet paid (UserRecord.active_jobs, .reserved), and the commit adds the new job
    to both on the condition that the record has not changed since it was read (its update
    time), so concurrent submissions can pass neither the active-job limit nor the monthly spend
    limit together, and users never contend with each other. Optimistic, like update_job: no
    locks (the Firestore emulator times out contended transaction locks), a lost race reads
    again.

    Raises:
        Conflict: "idempotency_conflict" (same key, different body), "too_many_active_jobs"
            (detail: the active count) or "spend_limit_reached" (detail: cents committed).
        Contended: every attempt lost to concurrent writers.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound

    db = client()
    idem_ref = _ref(IDEMPOTENCY, idempotency_id) if idempotency_id else None
    user_ref = _ref(USERS, job.uid)
    record = IdempotencyRecord(job.uid, job.id, request_hash, job.created_at)
    cents = job.quote.price_cents
    active = {job.id: cents} if job.status.active else {}
    reserved = {job.id: cents} if job.payment is None else {}

    def replay() -> tuple[Job, bool] | None:
        seen = idem_ref.get() if idem_ref is not None else None
        if seen is None or not seen.exists:
            return None
        first = IdempotencyRecord.from_doc(seen.to_dict())
        if first.request_hash != request_hash:
            raise Conflict("idempotency_conflict")
        stored = get_job(first.job_id)
        return None if stored is None else (stored, False)

    for _ in _retrying(attempts, "account"):
        found = replay()
        if found is not None:
            return found
        snap = user_ref.get()
        user = (
            UserRecord.from_doc(snap.to_dict())
            if snap.exists
            else UserRecord.new(job.uid, job.email, job.created_at)
        )
        if job.status.active and len(user.active_jobs) >= max_active:
            raise Conflict("too_many_active_jobs", len(user.active_jobs))
        committed = user.committed_in(month_of(job.created_at))
        if spend_limit_cents is not None and committed + cents > spend_limit_cents:
            raise Conflict("spend_limit_reached", committed)
        batch = db.batch()
        batch.create(_ref(JOBS, job.id), job.to_doc())
        _write_outbox(batch, job, JobChange.created(job).outbox)
        if idem_ref is not None:
            batch.create(idem_ref, record.to_doc())
        if not snap.exists:
            batch.create(user_ref, user._replace(active_jobs=active, reserved=reserved).to_doc())
        else:
            fields: dict[str, Any] = {f"active_jobs.{k}": v for k, v in active.items()}
            fields.update({f"reserved.{k}": v for k, v in reserved.items()})
            batch.update(
                user_ref,
                {**fields, "updated_at": now()},
                option=db.write_option(last_update_time=snap.update_time),
            )
        try:
            batch.commit()
        except (AlreadyExists, FailedPrecondition, NotFound):
            continue  # another submission (or a replay of this one) got there first
        return job, True
    raise AssertionError("unreachable")


JobDecision = Callable[[Job], JobChange | None]


def update_job(job_id: str, decide: JobDecision, attempts: int = 20) -> Job:
    """Applies `decide(job) -> JobChange | None` to a job atomically; returns the job as stored.

    An optimistic transaction: read the job, let `decide` choose, then commit the new job with
    its outbox (events, email, account bookkeeping) in one batch whose precondition is that the
    job has not changed since the read (its update time). If another writer got there first the
    batch fails as a whole and we read again, so a decision is never made on stale state. Unlike
    a locking transaction, nothing waits on a lock, so the trainer's progress writes to the same
    document are never blocked (the Firestore emulator holds locks of contended transactions
    for seconds).

    `decide` returns None for "nothing to do" and raises to refuse.

    Raises:
        LookupError: there is no such job.
        Contended: every attempt lost to a concurrent writer.
    """
    from google.api_core.exceptions import FailedPrecondition, NotFound

    db = client()
    ref = _ref(JOBS, job_id)
    for _ in _retrying(attempts, "job"):
        snap = ref.get()
        if not snap.exists:
            raise LookupError(job_id)
        job = Job.from_doc(snap.to_dict())
        decision = decide(job)
        if decision is None:
            return job
        new = decision.job._replace(updated_at=now())
        batch = db.batch()
        batch.update(ref, new.to_doc(), option=db.write_option(last_update_time=snap.update_time))
        _write_outbox(batch, new, decision.outbox)
        try:
            batch.commit()
        except (FailedPrecondition, NotFound):
            continue
        return new
    raise AssertionError("unreachable")


def event_id(job_id: str, event_type: str) -> str:
    """One id per (job, event type): recording a transition twice writes one event."""
    return f"evt-{job_id}-{event_type.replace('.', '-')}"


def _write_outbox(batch: Any, job: Job, outbox: Outbox) -> None:
    """Adds a job's outbox to the commit that stores the job: each webhook event with the job
    as it is after this commit, the email, and the account's bookkeeping."""
    for event_type in outbox.events:
        event = WebhookEvent(
            id=event_id(job.id, event_type),
            uid=job.uid,
            type=event_type,
            job_id=job.id,
            created_at=now(),
            job=job.to_doc(),
        )
        batch.set(_ref(WEBHOOK_EVENTS, event.id), event.to_doc())
    if outbox.mail is not None:
        batch.set(_ref(MAIL, f"{job.id}-{job.status.value}"), outbox.mail.to_doc())
    account = _account_changes(job.id, outbox)
    if account:
        batch.update(_ref(USERS, job.uid), {**account, "updated_at": now()})


def _account_changes(job_id: str, outbox: Outbox) -> dict[str, Any]:
    from google.cloud import firestore

    changes: dict[str, Any] = {}
    if outbox.ends_activity:
        changes[f"active_jobs.{job_id}"] = firestore.DELETE_FIELD
    if outbox.ends_reservation:
        changes[f"reserved.{job_id}"] = firestore.DELETE_FIELD
    return changes


def set_job_payment(job: Job, payment: Payment) -> None:
    """Records the job's payment on its own (only where no charge moved: nothing due, or a
    repair of a payment whose charge is already recorded), with its effect on the account."""
    t = now()
    batch = client().batch()
    batch.update(_ref(JOBS, job.id), {"payment": payment.to_doc(), "updated_at": t})
    outbox = JobChange.between(job, job._replace(payment=payment)).outbox
    account = _account_changes(job.id, outbox)
    if account:
        batch.update(_ref(USERS, job.uid), {**account, "updated_at": t})
    batch.commit()


def stale_queued_jobs(before: datetime) -> Found[Job]:
    """Jobs still queued without a Batch job that were created before `before`."""
    found = _parse_each(_in_status_since(JOBS, JobStatus.QUEUED.value, before), JOBS, Job.from_doc)
    return found._replace(items=[j for j in found.items if not j.batch_job])


def active_jobs_unchanged_since(before: datetime) -> Found[Job]:
    """Queued or running jobs whose record has not changed since `before` (the reconciler's)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(JOBS)
        .where(filter=FieldFilter("status", "in", [s.value for s in ACTIVE_STATUSES]))
        .where(filter=FieldFilter("updated_at", "<", before))
    )
    return _parse_each(query.stream(), JOBS, Job.from_doc)


def ended_jobs_unsettled_since(before: datetime) -> Found[Job]:
    """Jobs ended before `before` whose payment was never recorded, or whose card hold still
    holds (their charge trigger never ran to the end)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    ended = [JobStatus.COMPLETED.value, JobStatus.CANCELLED.value, JobStatus.FAILED.value]
    unpaid = (
        client()
        .collection(JOBS)
        .where(filter=FieldFilter("status", "in", ended))
        .where(filter=FieldFilter("payment", "==", None))
        .where(filter=FieldFilter("ended_at", "<", before))
    )
    first = _parse_each(unpaid.stream(), JOBS, Job.from_doc)
    found = {j.id: j for j in first.items}
    held = jobs_held_since(before)
    for job in held.items:
        if job.status.ended and job.ended_at is not None and job.ended_at < before:
            found[job.id] = job
    return Found(list(found.values()), sorted(set(first.skipped) | set(held.skipped)))


def jobs_held_since(before: datetime) -> Found[Job]:
    """Jobs whose card hold was placed before `before` and still holds (the renewal sweep's)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    holding = AuthorizationStatus.AUTHORIZED.value
    query = (
        client()
        .collection(JOBS)
        .where(filter=FieldFilter("authorization.status", "==", holding))
        .where(filter=FieldFilter("authorization.authorized_at", "<", before))
    )
    return _parse_each(query.stream(), JOBS, Job.from_doc)


# --- erasing an account ----------------------------------------------------------------------


def jobs_of(uid: str) -> list[Job]:
    """Every job of the user (for erasure; the API pages through list_jobs)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = client().collection(JOBS).where(filter=FieldFilter("uid", "==", uid))
    return [Job.from_doc(s.to_dict() or {}) for s in query.stream()]


def erase_user_documents(uid: str) -> int:
    """Deletes the user's documents of every collection shared.documents declares erased (by
    their `uid` field), then the account record; keeps what it declares kept by law (charges
    and ledger entries). Returns how many documents went. Idempotent: a second call finds
    nothing left to delete."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from shared.documents import erased_by_owner

    db = client()
    refs = [
        snap.reference
        for collection in erased_by_owner()
        for snap in db.collection(collection).where(filter=FieldFilter("uid", "==", uid)).stream()
    ]
    refs.append(_ref(USERS, uid))
    for start in range(0, len(refs), 400):  # a batch holds at most 500 writes
        batch = db.batch()
        for ref in refs[start : start + 400]:
            batch.delete(ref)
        batch.commit()
    return len(refs)


# --- API keys ------------------------------------------------------------------------------


def new_api_key(key: ApiKeyRecord, max_live: int, attempts: int = 30) -> None:
    """Stores the key and its place on the account (UserRecord.api_keys) in one commit, at most
    `max_live` live keys per account.

    Raises:
        Conflict: "too_many_api_keys" (detail: the live count).
        Contended: every attempt lost to concurrent writers.
    """

    def admit(user: UserRecord) -> None:
        if len(user.api_keys) >= max_live:
            raise Conflict("too_many_api_keys", len(user.api_keys))

    _create_on_account(
        key.uid,
        key.created_at,
        _ref(API_KEYS, key.secret_sha256),
        key.to_doc(),
        ("api_keys", key.id, key.secret_sha256),
        admit,
        attempts,
    )


def get_api_key(secret_sha256: str) -> tuple[ApiKeyRecord, datetime] | None:
    """The key with this hash and when its document was last written, or None: one read."""
    snap = _ref(API_KEYS, secret_sha256).get()
    if not snap.exists:
        return None
    return ApiKeyRecord.from_doc(snap.to_dict() or {}), snap.update_time


def _docs_of(collection: str, ids: Iterable[str]) -> list[dict[str, Any]]:
    """The documents with these ids that exist, read together (a per-account list: the ids
    come from the account record, bounded by its limit, so there is no paging)."""
    refs = [_ref(collection, i) for i in ids]
    return [s.to_dict() or {} for s in client().get_all(refs) if s.exists] if refs else []


def live_api_keys(uid: str) -> list[ApiKeyRecord]:
    """The user's live keys, newest first."""
    user = get_user(uid)
    docs = _docs_of(API_KEYS, user.api_keys.values()) if user else []
    found = [k for k in map(ApiKeyRecord.from_doc, docs) if k.revoked_at is None]
    return sorted(found, key=lambda k: k.created_at, reverse=True)


def revoke_api_key(uid: str, key_id: str) -> bool:
    """Marks the user's key revoked and frees its place, in one commit; False when the user has
    no live key `key_id` (never had, someone else's, or revoked already)."""
    from google.cloud import firestore

    user = get_user(uid)
    secret_sha256 = None if user is None else user.api_keys.get(key_id)
    if secret_sha256 is None:
        return False
    t = now()
    batch = client().batch()
    batch.update(_ref(API_KEYS, secret_sha256), {"revoked_at": t})
    batch.update(_ref(USERS, uid), {f"api_keys.{key_id}": firestore.DELETE_FIELD, "updated_at": t})
    batch.commit()
    return True


def touch_api_key(secret_sha256: str, t: datetime, read_at: datetime) -> None:
    """Records a use of the key, only if nobody wrote the key since `read_at` (so concurrent
    requests write it once, and a revoke is never overwritten)."""
    from google.api_core.exceptions import FailedPrecondition, NotFound

    db = client()
    with contextlib.suppress(FailedPrecondition, NotFound):
        _ref(API_KEYS, secret_sha256).update(
            {"last_used_at": t}, option=db.write_option(last_update_time=read_at)
        )


# --- webhooks --------------------------------------------------------------------------------


def new_webhook_endpoint(endpoint: WebhookEndpoint, max_count: int, attempts: int = 30) -> None:
    """Stores the endpoint and its place on the account in one commit, at most `max_count`
    per account.

    Raises:
        Conflict: "too_many_webhook_endpoints" (detail: the count).
        Contended: every attempt lost to concurrent writers.
    """

    def admit(user: UserRecord) -> None:
        if len(user.webhook_endpoints) >= max_count:
            raise Conflict("too_many_webhook_endpoints", len(user.webhook_endpoints))

    _create_on_account(
        endpoint.uid,
        endpoint.created_at,
        _ref(WEBHOOK_ENDPOINTS, endpoint.id),
        endpoint.to_doc(),
        ("webhook_endpoints", endpoint.id, True),
        admit,
        attempts,
    )


def get_webhook_endpoint(uid: str | None, endpoint_id: str) -> WebhookEndpoint | None:
    """The endpoint, only if it is `uid`'s (owner first, as every getter here); None as the
    uid for the delivery task, which acts for whoever owns it."""
    if not valid_id(endpoint_id):
        return None
    snap = _ref(WEBHOOK_ENDPOINTS, endpoint_id).get()
    if not snap.exists:
        return None
    endpoint = WebhookEndpoint.from_doc(snap.to_dict() or {})
    return endpoint if uid is None or endpoint.uid == uid else None


def webhook_endpoints_of(uid: str) -> list[WebhookEndpoint]:
    """The user's endpoints, newest first."""
    user = get_user(uid)
    docs = _docs_of(WEBHOOK_ENDPOINTS, user.webhook_endpoints) if user else []
    return sorted(map(WebhookEndpoint.from_doc, docs), key=lambda e: e.created_at, reverse=True)


def save_webhook_endpoint(endpoint: WebhookEndpoint) -> None:
    """Writes the endpoint as given (its secrets, disabled and failing state); a deleted
    endpoint stays deleted."""
    from google.api_core.exceptions import NotFound

    with contextlib.suppress(NotFound):
        _ref(WEBHOOK_ENDPOINTS, endpoint.id).update(endpoint.to_doc())


def delete_webhook_endpoint(endpoint: WebhookEndpoint) -> None:
    """Deletes the endpoint and frees its place on the account, in one commit."""
    from google.cloud import firestore

    batch = client().batch()
    batch.delete(_ref(WEBHOOK_ENDPOINTS, endpoint.id))
    batch.set(
        _ref(USERS, endpoint.uid),
        {"webhook_endpoints": {endpoint.id: firestore.DELETE_FIELD}},
        merge=True,
    )
    batch.commit()


def queue_mail(mail_id: str, mail: Mail) -> None:
    """An email on its own (one id per reason, so a repeat sends one)."""
    _ref(MAIL, mail_id).set(mail.to_doc())


def get_webhook_event(event_id: str) -> WebhookEvent | None:
    snap = _ref(WEBHOOK_EVENTS, event_id).get()
    return WebhookEvent.from_doc(snap.to_dict() or {}) if snap.exists else None


def new_webhook_event(event: WebhookEvent) -> None:
    """An event that reports no transition (a `ping`)."""
    _ref(WEBHOOK_EVENTS, event.id).set(event.to_doc())


def get_delivery(delivery_id: str) -> WebhookDelivery | None:
    snap = _ref(WEBHOOK_DELIVERIES, delivery_id).get()
    return WebhookDelivery.from_doc(snap.to_dict() or {}) if snap.exists else None


def claim_attempt(delivery: WebhookDelivery, attempt: int) -> WebhookDelivery | None:
    """Claims attempt number `attempt` of the delivery (creating its record on the first), so
    a task delivered twice sends once: the stored delivery when this call won the claim; None
    when the attempt was claimed already or the delivery has ended."""
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition

    db = client()
    ref = _ref(WEBHOOK_DELIVERIES, delivery.id)
    for _ in _retrying(10, "delivery"):
        snap = ref.get()
        if not snap.exists:
            try:
                ref.create({**delivery.to_doc(), "claimed": attempt})
            except AlreadyExists:
                continue
            return delivery
        stored = WebhookDelivery.from_doc(snap.to_dict() or {})
        if stored.status != DeliveryStatus.PENDING or (snap.get("claimed") or 0) >= attempt:
            return None
        try:
            ref.update(
                {"claimed": attempt}, option=db.write_option(last_update_time=snap.update_time)
            )
        except FailedPrecondition:
            continue
        return stored
    raise AssertionError("unreachable")


def record_attempt(delivery: WebhookDelivery) -> None:
    """Stores the delivery's attempts and status as the delivering call left them."""
    _ref(WEBHOOK_DELIVERIES, delivery.id).update(
        {
            "status": delivery.status.value,
            "attempts": [a.to_doc() for a in delivery.attempts],
        }
    )


def deliveries_of(endpoint_id: str, limit: int) -> list[WebhookDelivery]:
    """The endpoint's deliveries, newest first (one composite index, terraform/project.tf)."""
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(WEBHOOK_DELIVERIES)
        .where(filter=FieldFilter("endpoint_id", "==", endpoint_id))
        .order_by("created_at", direction=firestore.Query.DESCENDING)
        .limit(limit)
    )
    return [WebhookDelivery.from_doc(s.to_dict() or {}) for s in query.stream()]


# --- rate limits -----------------------------------------------------------------------------


def count_request(key: str, window_start: datetime, window_s: int) -> int:
    """Counts one request of `key` in the window starting at `window_start`; returns the count
    before it, this request's place in the window. The increment is written first and the
    count read after it: increments are serialized, so every request's read sees at least its
    own place and a burst of concurrent requests can never all read a count under the limit
    (reading first let 53 of 60 concurrent estimates through a limit of 30). One write, one
    read. Windows expire by Firestore's TTL on `expires_at`."""
    import hashlib
    from datetime import timedelta

    from google.cloud import firestore

    doc_id = hashlib.sha256(f"{key}\n{window_start.isoformat()}".encode()).hexdigest()[:40]
    ref = _ref(RATE_LIMITS, doc_id)
    ref.set(
        {
            "count": firestore.Increment(1),
            "expires_at": window_start + timedelta(seconds=2 * window_s),
        },
        merge=True,
    )
    after = int((ref.get().to_dict() or {}).get("count", 1))
    return after - 1


# --- Stripe events ---------------------------------------------------------------------------


def event_seen(event_id: str) -> bool:
    """Whether the Stripe event was handled already (an id that cannot be Stripe's never was)."""
    return valid_id(event_id) and bool(_ref(STRIPE_EVENTS, event_id).get().exists)


def mark_event(event_id: str, event_type: str) -> None:
    from google.api_core.exceptions import AlreadyExists

    with contextlib.suppress(AlreadyExists):
        _ref(STRIPE_EVENTS, event_id).create({"type": event_type, "processed_at": now()})


# --- charges and the ledger ------------------------------------------------------------------


def claim_charge(new: Charge, lease_s: float) -> tuple[str, Charge]:
    """Claims the right to charge `new.id` (one charge per job or per extension request).

    Returns ("claimed", charge) for the caller that may now call Stripe, ("done", charge) when
    the charge already succeeded or failed for good, or ("busy", charge) while another caller's
    claim (younger than `lease_s`) is in flight. A claim whose holder died is taken over after
    the lease, keeping its attempt number, so the Stripe idempotency key stays the same.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition

    db = client()
    ref = _ref(CHARGES, new.id)
    t = now()
    claimed = new._replace(status=ChargeStatus.PENDING, attempt=1, claimed_at=t, created_at=t)
    try:
        ref.create(claimed.to_doc())
        return "claimed", claimed
    except AlreadyExists:
        pass
    for _ in _retrying(10, "charge"):
        snap = ref.get()
        current = Charge.from_doc(new.id, snap.to_dict())
        if current.finished:
            return "done", current
        age = None if current.claimed_at is None else (t - current.claimed_at).total_seconds()
        if current.status == ChargeStatus.PENDING and age is not None and age < lease_s:
            return "busy", current
        try:  # "retry" (released after a transient error) or a stale pending claim
            ref.update(
                {"status": ChargeStatus.PENDING.value, "claimed_at": t},
                option=db.write_option(last_update_time=snap.update_time),
            )
            return "claimed", current._replace(status=ChargeStatus.PENDING, claimed_at=t)
        except FailedPrecondition:
            continue
    raise AssertionError("unreachable")


def reserve_extension(new: Charge, limit: int | None) -> None:
    """Creates a storage extension's charge and reserves its amount on the account in one
    commit, conditioned on the account as read: the monthly limit is checked there, so
    concurrent extensions cannot pass it together (as concurrent submits cannot). An existing
    charge of that id (a replay) is left as it is; claim_charge then decides.

    Raises:
        Conflict: "spend_limit_reached" (detail: what is committed this month already).
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound

    db = client()
    ref, user_ref = _ref(CHARGES, new.id), _ref(USERS, new.uid)
    for _ in _retrying(40, "account"):
        snap = user_ref.get()
        user = UserRecord.from_doc(snap.to_dict()) if snap.exists else None
        committed = 0 if user is None else user.committed_in(month_of(now()))
        if limit is not None and committed + new.amount_cents > limit:
            raise Conflict("spend_limit_reached", committed)
        t = now()
        batch = db.batch()
        batch.create(ref, new._replace(status=ChargeStatus.RETRY, attempt=1, created_at=t).to_doc())
        if user is not None:
            batch.update(
                user_ref,
                {f"reserved.{new.id}": new.amount_cents, "updated_at": t},
                option=db.write_option(last_update_time=snap.update_time),
            )
        try:
            batch.commit()
            return
        except AlreadyExists:
            return
        except (FailedPrecondition, NotFound):
            continue
    raise AssertionError("unreachable")


def get_charge(charge_id: str) -> Charge | None:
    if not valid_id(charge_id):
        return None
    snap = _ref(CHARGES, charge_id).get()
    return Charge.from_doc(charge_id, snap.to_dict()) if snap.exists else None


def release_charge(charge_id: str) -> None:
    """Gives a claim back after a transient error; the next delivery claims it again."""
    _ref(CHARGES, charge_id).update({"status": ChargeStatus.RETRY.value})


def settle_charge(
    charge: Charge,
    ledger: LedgerEntry | None,
    payment: Payment | None,
    pause: tuple[str, Pause | None] | None,
) -> bool:
    """Records a charge's outcome in one commit: the charge (`charge` as finished), the ledger
    entry for money that moved and the month's spend total on the account, the job's payment (a
    job's charge) and the end of its reservation once paid, and the account's pause flag
    (`(code, Pause)` sets it, `(code, None)` clears it).

    At most once per outcome: the commit is conditioned on the charge being unchanged since it
    was read and not finished, so two settlers (the charging call and Stripe's event for the same
    PaymentIntent, in either order) record it once; returns False for the one that found it
    recorded already.
    """
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = _ref(CHARGES, charge.id)
    for _ in _retrying(10, "charge"):
        snap = ref.get()
        if not snap.exists or Charge.from_doc(charge.id, snap.to_dict()).finished:
            return False
        batch = db.batch()
        batch.update(
            ref,
            charge._replace(finished_at=now()).to_doc(),
            option=db.write_option(last_update_time=snap.update_time),
        )
        _settlement(batch, charge, ledger, payment, pause)
        try:
            batch.commit()
        except FailedPrecondition:
            continue
        return True
    raise AssertionError("unreachable")


def _settlement(
    batch: Any,
    charge: Charge,
    ledger: LedgerEntry | None,
    payment: Payment | None,
    pause: tuple[str, Pause | None] | None,
) -> None:
    from google.cloud import firestore

    t = now()
    account: dict[str, Any] = {}
    if ledger is not None:
        batch.set(_ref(LEDGER, ledger.id), ledger.to_doc())
        account[f"spend.{ledger.month}"] = firestore.Increment(ledger.amount_cents)
    if payment is not None:
        job: dict[str, Any] = {"payment": payment.to_doc(), "updated_at": t}
        if charge.authorization and charge.payment_intent == charge.authorization:
            job["authorization.status"] = AuthorizationStatus.CAPTURED.value  # paid from the hold
        batch.update(_ref(JOBS, charge.job_id), job)
        if settles(payment):
            account[f"reserved.{charge.job_id}"] = firestore.DELETE_FIELD
        kind = payment.status.event
        if kind is not None:  # the job as it is after this commit is sent (no snapshot)
            event = WebhookEvent(
                id=event_id(charge.job_id, kind),
                uid=charge.uid,
                type=kind,
                job_id=charge.job_id,
                created_at=t,
            )
            batch.set(_ref(WEBHOOK_EVENTS, event.id), event.to_doc())
    if charge.kind == ChargeKind.STORAGE_EXTENSION:  # paid (now in spend) or not owed
        account[f"reserved.{charge.id}"] = firestore.DELETE_FIELD
    if pause is not None:
        code, flag = pause
        account[f"pauses.{code}"] = firestore.DELETE_FIELD if flag is None else flag.to_doc()
    if account:
        batch.update(_ref(USERS, charge.uid), {**account, "updated_at": t})


def reopen_charge(charge_id: str) -> bool:
    """Lets a failed charge be attempted again (a new card, or the user's retry); the attempt
    number moves on, so Stripe sees a new idempotency key."""
    from google.api_core.exceptions import FailedPrecondition

    db = client()
    ref = _ref(CHARGES, charge_id)
    snap = ref.get()
    if not snap.exists or snap.get("status") != ChargeStatus.FAILED:
        return False
    try:
        ref.update(
            {"status": ChargeStatus.RETRY.value, "attempt": snap.get("attempt") + 1},
            option=db.write_option(last_update_time=snap.update_time),
        )
        return True
    except FailedPrecondition:
        return False


def charges_of(uid: str, status: ChargeStatus) -> list[Charge]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        client()
        .collection(CHARGES)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("status", "==", status.value))
    )
    return [Charge.from_doc(s.id, s.to_dict() or {}) for s in query.stream()]


def ledger_entries(uid: str) -> list[LedgerEntry]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = client().collection(LEDGER).where(filter=FieldFilter("uid", "==", uid))
    return [LedgerEntry.from_doc(s.id, s.to_dict() or {}) for s in query.stream()]
