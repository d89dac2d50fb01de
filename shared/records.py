"""The typed records the store keeps: one immutable record per document shape.

Each record turns into its Firestore document with `to_doc()` and back with `from_doc()`; only
`shared.store` calls either, so a field's name is written in exactly one place. The rest of the
core reads and builds records, never documents; a changed copy is `record._replace(...)`.
Pure data: no SDK is imported here.

Records are typed NamedTuples rather than frozen dataclasses: every function imports them, and
building fifteen dataclasses costs about 30 ms of each cold start here, NamedTuples about 3 ms
(measured with `python -X importtime`; the cold-start goal is 1.2x a bare function).
"""

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from shared.contract import Hyperparameters, Progress, TrainerFailure, TrainerResult

NOTIFICATION_EVENTS = ("job_completed", "job_failed", "job_cancelled")


# --- users -----------------------------------------------------------------------------------


class Pause(NamedTuple):
    """Why an account's submissions are paused (set by billing; one entry per flag)."""

    reason: str
    since: datetime

    def to_doc(self) -> dict[str, Any]:
        return {"reason": self.reason, "since": self.since}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "Pause":
        return Pause(reason=doc["reason"], since=doc["since"])


class PaymentMethod(NamedTuple):
    id: str
    brand: str
    last4: str

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "brand": self.brand, "last4": self.last4}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "PaymentMethod":
        return PaymentMethod(id=doc["id"], brand=doc["brand"], last4=doc["last4"])


class UserRecord(NamedTuple):
    uid: str
    email: str | None
    created_at: datetime
    updated_at: datetime
    notifications: Mapping[str, bool] = MappingProxyType({})
    pauses: Mapping[str, Pause] = MappingProxyType({})
    stripe_customer_id: str | None = None
    payment_method: PaymentMethod | None = None
    monthly_spend_limit_cents: int | None = None
    # Kept by the store in the same commits that change them, so admission reads one document:
    active_jobs: Mapping[str, int] = MappingProxyType({})  # queued or running: id -> quote cents
    reserved: Mapping[str, int] = MappingProxyType({})  # submitted, payment not recorded or failed
    spend: Mapping[str, int] = MappingProxyType({})  # month ("2026-11") -> cents settled
    datasets: Mapping[str, int] = MappingProxyType({})  # dataset id -> bytes declared (quotas)
    api_keys: Mapping[str, str] = MappingProxyType({})  # live key id -> its api_keys document
    webhook_endpoints: Mapping[str, bool] = MappingProxyType({})  # endpoint id -> True

    def spent_in(self, month: str) -> int:
        """Cents settled (ledger entries) in `month`."""
        return self.spend.get(month, 0)

    def committed_in(self, month: str) -> int:
        """What the spend limit counts: settled this month, plus the quotes of jobs submitted and
        not yet paid (active, awaiting their charge, or declined)."""
        return self.spent_in(month) + sum(self.reserved.values())

    @staticmethod
    def new(uid: str, email: str | None, t: datetime) -> "UserRecord":
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
            "pauses": {k: p.to_doc() for k, p in self.pauses.items()},
            "stripe_customer_id": self.stripe_customer_id,
            "monthly_spend_limit_cents": self.monthly_spend_limit_cents,
            "payment_method": None if self.payment_method is None else self.payment_method.to_doc(),
            "active_jobs": dict(self.active_jobs),
            "reserved": dict(self.reserved),
            "spend": dict(self.spend),
            "datasets": dict(self.datasets),
            "api_keys": dict(self.api_keys),
            "webhook_endpoints": dict(self.webhook_endpoints),
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "UserRecord":
        pm = doc.get("payment_method")
        defaults = {event: True for event in NOTIFICATION_EVENTS}
        return UserRecord(
            uid=doc["uid"],
            email=doc.get("email"),
            created_at=doc["created_at"],
            updated_at=doc.get("updated_at", doc["created_at"]),
            notifications={**defaults, **(doc.get("notifications") or {})},
            pauses={k: Pause.from_doc(v) for k, v in (doc.get("pauses") or {}).items()},
            stripe_customer_id=doc.get("stripe_customer_id"),
            monthly_spend_limit_cents=doc.get("monthly_spend_limit_cents"),
            payment_method=None if not pm else PaymentMethod.from_doc(pm),
            active_jobs=dict(doc.get("active_jobs") or {}),
            reserved=dict(doc.get("reserved") or {}),
            spend=dict(doc.get("spend") or {}),
            datasets=dict(doc.get("datasets") or {}),
            api_keys=dict(doc.get("api_keys") or {}),
            webhook_endpoints=dict(doc.get("webhook_endpoints") or {}),
        )


class ApiKeyRecord(NamedTuple):
    """An API key as stored: never the secret, only its sha256 (the document id, so checking a
    key is one read) and the first characters people recognise it by."""

    id: str  # public id, for listing and revoking
    uid: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    secret_sha256: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return {**self._asdict(), "scopes": list(self.scopes)}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "ApiKeyRecord":
        return ApiKeyRecord(
            id=doc["id"],
            uid=doc["uid"],
            name=doc["name"],
            prefix=doc["prefix"],
            scopes=tuple(doc.get("scopes") or ()),
            secret_sha256=doc["secret_sha256"],
            created_at=doc["created_at"],
            last_used_at=doc.get("last_used_at"),
            revoked_at=doc.get("revoked_at"),
        )


def month_of(t: datetime) -> str:
    """The calendar month (UTC) a time falls in, as the spend totals key it."""
    return f"{t.year:04d}-{t.month:02d}"


# --- datasets --------------------------------------------------------------------------------


class DatasetStatus(StrEnum):
    PENDING_UPLOAD = "pending_upload"
    VALIDATING = "validating"
    READY = "ready"
    INVALID = "invalid"


class LineError(NamedTuple):
    line: int | None  # 1-based; None for an error about the whole file
    message: str

    def to_doc(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "LineError":
        return LineError(line=doc.get("line"), message=doc["message"])


class ValidationReport(NamedTuple):
    """What validating a dataset file found: ready only when there is no error at all."""

    status: DatasetStatus  # READY or INVALID
    rows: int
    bytes: int
    format: str | None  # "chat" or "prompt_completion"
    errors: tuple[LineError, ...] = ()  # the first few (jsonl_rules.MAX_REPORTED)
    error_count: int = 0
    blank_lines: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "rows": self.rows,
            "bytes": self.bytes,
            "format": self.format,
            "errors": [e.to_doc() for e in self.errors],
            "error_count": self.error_count,
            "blank_lines": self.blank_lines,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "ValidationReport":
        return ValidationReport(
            status=DatasetStatus(doc["status"]),
            rows=doc["rows"],
            bytes=doc["bytes"],
            format=doc.get("format"),
            errors=tuple(LineError.from_doc(e) for e in doc.get("errors") or ()),
            error_count=doc.get("error_count", 0),
            blank_lines=doc.get("blank_lines", 0),
        )


class Dataset(NamedTuple):
    id: str
    uid: str
    filename: str
    declared_bytes: int
    object_name: str
    status: DatasetStatus
    created_at: datetime
    updated_at: datetime
    report: ValidationReport | None = None
    sha256: str | None = None  # of the file the report is about
    validated_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uid": self.uid,
            "filename": self.filename,
            "declared_bytes": self.declared_bytes,
            "object_name": self.object_name,
            "status": self.status.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "report": None if self.report is None else self.report.to_doc(),
            "sha256": self.sha256,
            "validated_at": self.validated_at,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "Dataset":
        report = doc.get("report")
        return Dataset(
            id=doc["id"],
            uid=doc["uid"],
            filename=doc["filename"],
            declared_bytes=doc.get("declared_bytes", 0),
            object_name=doc["object_name"],
            status=DatasetStatus(doc["status"]),
            created_at=doc["created_at"],
            updated_at=doc.get("updated_at", doc["created_at"]),
            report=None if not report else ValidationReport.from_doc(report),
            sha256=doc.get("sha256"),
            validated_at=doc.get("validated_at"),
        )


# --- jobs ------------------------------------------------------------------------------------


class Quote(NamedTuple):
    """The exact price of a job, computed before it runs (shared.pricing) and kept on it: the
    job is charged from it (its rate is frozen at submit), never from the live catalog."""

    examples: int
    dropped_examples: int
    truncated_examples: int
    tokens_per_epoch: int
    trained_tokens_per_epoch: int
    epochs: int
    billable_tokens: int
    price_cents: int
    currency: str
    estimated_seconds: int
    gpu_type: str
    price_per_million_tokens_cents: int  # the model's rate when quoted
    # Validation: the held-out (or second) file's share, evaluated and never billed.
    validation_split: float = 0.0
    validation_examples: int = 0
    validation_tokens: int = 0
    # Outputs beyond the adapter (merged weights), priced as their storage for the retention
    # period and included in price_cents.
    storage_cents: int = 0
    # Where estimated_seconds comes from: the model's throughput "measured" on its GPU, or
    # "estimated" from its FLOPs (the catalog says which; quotes from before it: estimated).
    estimated_seconds_basis: str = "estimated"
    # Validation tokens times evaluations: the unbilled evaluation a run does, within
    # pricing.evaluation_budget of the billed tokens.
    evaluated_tokens: int = 0

    def to_doc(self) -> dict[str, Any]:
        return self._asdict()

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "Quote":
        return Quote(**{name: doc[name] for name in Quote._fields if name in doc})


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def ended(self) -> bool:
        return not self.active

    @property
    def event(self) -> str:
        """The webhook event type of reaching this status."""
        return f"job.{self.value}"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobEvent(NamedTuple):
    at: datetime
    status: JobStatus
    message: str

    def to_doc(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status.value, "message": self.message}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "JobEvent":
        return JobEvent(at=doc["at"], status=JobStatus(doc["status"]), message=doc["message"])


class FailureCode(StrEnum):
    """Why a job failed, as the user sees it."""

    BAD_DATA = "bad_data"
    OUT_OF_MEMORY = "out_of_memory"
    PLATFORM_ERROR = "platform_error"
    PAYMENT_DECLINED = "payment_declined"  # the card refused to hold the quoted price


class JobFailure(NamedTuple):
    code: FailureCode
    message: str

    def to_doc(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "JobFailure":
        return JobFailure(code=FailureCode(doc["code"]), message=doc["message"])


class PaymentStatus(StrEnum):
    PAID = "paid"
    FAILED = "failed"
    NOT_CHARGED = "not_charged"  # nothing was due under the charge policy

    @property
    def event(self) -> str | None:
        """The webhook event type of recording this payment (none where no money moved)."""
        return {"paid": "payment.succeeded", "failed": "payment.failed"}.get(self.value)


class Payment(NamedTuple):
    """The job's payment as the user sees it; written in the same commit as the charge."""

    status: PaymentStatus
    amount_cents: int
    currency: str
    charged_at: datetime | None = None
    reason: str | None = None  # why it failed

    @property
    def settled(self) -> bool:
        """Paid, or nothing was due: downloads may open."""
        return self.status in (PaymentStatus.PAID, PaymentStatus.NOT_CHARGED)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": self.status.value,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
        }
        if self.charged_at is not None:
            doc["charged_at"] = self.charged_at
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "Payment":
        return Payment(
            status=PaymentStatus(doc["status"]),
            amount_cents=doc["amount_cents"],
            currency=doc["currency"],
            charged_at=doc.get("charged_at"),
            reason=doc.get("reason"),
        )


class AuthorizationStatus(StrEnum):
    AUTHORIZED = "authorized"  # the quoted price is held on the card
    CAPTURED = "captured"  # the amount due was taken from the hold
    RELEASED = "released"  # cancelled: nothing was due, or a renewal replaced it
    LAPSED = "lapsed"  # Stripe ended it (expired) before we captured


class Authorization(NamedTuple):
    """The hold placed on the user's card for a job's quoted price at submit (a manual-capture
    PaymentIntent), captured for the amount due when the job ends."""

    payment_intent: str
    amount_cents: int
    currency: str
    status: AuthorizationStatus
    authorized_at: datetime
    renewals: int = 0  # how many times it was replaced before it could expire
    renewal_failure: str | None = None  # why the last renewal failed, while it is retried

    @property
    def holding(self) -> bool:
        return self.status == AuthorizationStatus.AUTHORIZED

    def to_doc(self) -> dict[str, Any]:
        return {
            "payment_intent": self.payment_intent,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "status": self.status.value,
            "authorized_at": self.authorized_at,
            "renewals": self.renewals,
            "renewal_failure": self.renewal_failure,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "Authorization":
        return Authorization(
            payment_intent=doc["payment_intent"],
            amount_cents=doc["amount_cents"],
            currency=doc["currency"],
            status=AuthorizationStatus(doc["status"]),
            authorized_at=doc["authorized_at"],
            renewals=doc.get("renewals", 0),
            renewal_failure=doc.get("renewal_failure"),
        )


class TrainingOptions(NamedTuple):
    """What a job asked for beyond the model, the dataset and the hyperparameters."""

    validation_split: float = 0.0  # resolved: the default is already applied
    validation_dataset_id: str | None = None
    validation_object: str | None = None
    validation_sha256: str | None = None
    eval_every_steps: int = 0  # 0: at epoch ends only
    from_job: str | None = None  # the completed job whose adapter this one starts from
    from_step: int | None = None  # one of its checkpoints; None: its final adapter
    outputs: tuple[str, ...] = ()  # contract.EXTRA_OUTPUTS asked for

    def to_doc(self) -> dict[str, Any]:
        return {**self._asdict(), "outputs": list(self.outputs)}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "TrainingOptions":
        values = {k: v for k, v in doc.items() if k in TrainingOptions._fields}
        values["outputs"] = tuple(values.get("outputs") or ())
        return TrainingOptions(**values)

    @property
    def has_validation(self) -> bool:
        return self.validation_split > 0 or self.validation_dataset_id is not None


class Job(NamedTuple):
    id: str
    uid: str
    email: str | None
    model: str
    dataset_id: str
    dataset_object: str
    dataset_sha256: str
    hyperparameters: Hyperparameters
    quote: Quote
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    events: tuple[JobEvent, ...] = ()
    batch_job: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    expires_at: datetime | None = None  # when its files are deleted (completed jobs)
    failure: JobFailure | None = None
    payment: Payment | None = None
    authorization: Authorization | None = None
    # Written by the trainer (shared.contract), never by the API:
    progress: Progress | None = None
    trainer_result: TrainerResult | None = None
    trainer_failure: TrainerFailure | None = None
    options: TrainingOptions = TrainingOptions()

    def to_doc(self) -> dict[str, Any]:
        """Every field the API owns. The trainer's fields are left out: the store never
        overwrites what the trainer wrote."""
        return {
            "id": self.id,
            "uid": self.uid,
            "email": self.email,
            "model": self.model,
            "dataset_id": self.dataset_id,
            "dataset_object": self.dataset_object,
            "dataset_sha256": self.dataset_sha256,
            "hyperparameters": self.hyperparameters.to_dict(),
            "quote": self.quote.to_doc(),
            "status": self.status.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "events": [e.to_doc() for e in self.events],
            "batch_job": self.batch_job,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "expires_at": self.expires_at,
            "failure": None if self.failure is None else self.failure.to_doc(),
            "payment": None if self.payment is None else self.payment.to_doc(),
            "authorization": None if self.authorization is None else self.authorization.to_doc(),
            "options": self.options.to_doc(),
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "Job":
        def opt(key: str, parse: Any) -> Any:
            value = doc.get(key)
            return None if not value else parse(value)

        return Job(
            id=doc["id"],
            uid=doc["uid"],
            email=doc.get("email"),
            model=doc["model"],
            dataset_id=doc["dataset_id"],
            dataset_object=doc["dataset_object"],
            dataset_sha256=doc.get("dataset_sha256") or "",
            hyperparameters=Hyperparameters.from_dict(doc["hyperparameters"]),
            quote=Quote.from_doc(doc["quote"]),
            status=JobStatus(doc["status"]),
            created_at=doc["created_at"],
            updated_at=doc.get("updated_at", doc["created_at"]),
            events=tuple(JobEvent.from_doc(e) for e in doc.get("events") or ()),
            batch_job=doc.get("batch_job"),
            started_at=doc.get("started_at"),
            ended_at=doc.get("ended_at"),
            expires_at=doc.get("expires_at"),
            failure=opt("failure", JobFailure.from_doc),
            payment=opt("payment", Payment.from_doc),
            authorization=opt("authorization", Authorization.from_doc),
            progress=opt("progress", Progress.from_doc),
            trainer_result=opt("trainer_result", TrainerResult.from_doc),
            trainer_failure=opt("trainer_failure", TrainerFailure.from_doc),
            options=opt("options", TrainingOptions.from_doc) or TrainingOptions(),
        )


class Mail(NamedTuple):
    """An email in the Firebase "Trigger Email" extension's format."""

    to: str
    uid: str
    job_id: str
    subject: str
    text: str
    created_at: datetime

    def to_doc(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "uid": self.uid,
            "job_id": self.job_id,
            "created_at": self.created_at,
            "message": {"subject": self.subject, "text": self.text, "html": f"<p>{self.text}</p>"},
        }


class Outbox(NamedTuple):
    """What a job's commit carries besides the job: its webhook events, the user's email, and
    what it does to the account's bookkeeping. The core decides it; the store writes it as
    handed, in the same commit as the job."""

    events: tuple[str, ...] = ()
    mail: Mail | None = None
    ends_activity: bool = False  # the job leaves the account's active set
    ends_reservation: bool = False  # its price no longer counts against the spend limit


class JobChange(NamedTuple):
    """A job as it is to be stored, with its outbox: the one value a job's commit takes."""

    job: Job
    outbox: Outbox = Outbox()

    @staticmethod
    def created(job: Job) -> "JobChange":
        return JobChange(job, Outbox(events=(job.status.event,)))

    @staticmethod
    def between(old: Job, new: Job, mail: Mail | None = None) -> "JobChange":
        """`old` becoming `new`: a status reached is an event; an ended job is no longer active;
        a payment recorded (other than a declined one) ends its reservation."""
        return JobChange(
            new,
            Outbox(
                events=(new.status.event,) if new.status != old.status else (),
                mail=mail,
                ends_activity=new.status.ended and not old.status.ended,
                ends_reservation=settles(new.payment) and not settles(old.payment),
            ),
        )


def settles(payment: Payment | None) -> bool:
    """Whether a payment ends the job's reservation: recorded and not declined."""
    return payment is not None and payment.settled


class IdempotencyRecord(NamedTuple):
    """One per (user, Idempotency-Key) of a submission: the job it made and the request's hash."""

    uid: str
    job_id: str
    request_hash: str
    created_at: datetime

    def to_doc(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "job_id": self.job_id,
            "request_hash": self.request_hash,
            "created_at": self.created_at,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "IdempotencyRecord":
        return IdempotencyRecord(
            uid=doc["uid"],
            job_id=doc["job_id"],
            request_hash=doc["request_hash"],
            created_at=doc["created_at"],
        )


# --- charges and the ledger ------------------------------------------------------------------


class ChargeKind(StrEnum):
    TUNING = "tuning"
    STORAGE_EXTENSION = "storage_extension"


class ChargeStatus(StrEnum):
    PENDING = "pending"  # claimed: a caller is talking to Stripe
    RETRY = "retry"  # released after a transient error; the next delivery claims it
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # declined; reopened by a new card or the user's retry


class Charge(NamedTuple):
    """The at-most-once claim on one charge (a job's, or one storage extension's)."""

    id: str
    uid: str
    job_id: str
    kind: ChargeKind
    amount_cents: int
    currency: str
    status: ChargeStatus = ChargeStatus.PENDING
    attempt: int = 1  # part of the Stripe idempotency key; moves on when reopened
    billable_tokens: int | None = None  # tuning
    days: int | None = None  # storage extension
    extends_from: datetime | None = None  # storage extension: the expiry it extends
    request_hash: str | None = None  # storage extension: the request its key was used with
    claimed_at: datetime | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    payment_intent: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    authorization: str | None = None  # tuning: the held PaymentIntent this charge captures
    declined_card: str | None = None  # the saved card (payment method id) that refused it

    @property
    def idempotency_key(self) -> str:
        """Stripe's idempotency key for this attempt."""
        return f"{self.id}-{self.attempt}"

    @property
    def finished(self) -> bool:
        return self.status in (ChargeStatus.SUCCEEDED, ChargeStatus.FAILED)

    def to_doc(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "job_id": self.job_id,
            "kind": self.kind.value,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "status": self.status.value,
            "attempt": self.attempt,
            "billable_tokens": self.billable_tokens,
            "days": self.days,
            "extends_from": self.extends_from,
            "request_hash": self.request_hash,
            "claimed_at": self.claimed_at,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "payment_intent": self.payment_intent,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "authorization": self.authorization,
            "declined_card": self.declined_card,
        }

    @staticmethod
    def from_doc(charge_id: str, doc: Mapping[str, Any]) -> "Charge":
        return Charge(
            id=charge_id,
            uid=doc["uid"],
            job_id=doc["job_id"],
            kind=ChargeKind(doc["kind"]),
            amount_cents=doc["amount_cents"],
            currency=doc["currency"],
            status=ChargeStatus(doc["status"]),
            attempt=doc.get("attempt", 1),
            billable_tokens=doc.get("billable_tokens"),
            days=doc.get("days"),
            extends_from=doc.get("extends_from"),
            request_hash=doc.get("request_hash"),
            claimed_at=doc.get("claimed_at"),
            created_at=doc.get("created_at"),
            finished_at=doc.get("finished_at"),
            payment_intent=doc.get("payment_intent"),
            failure_code=doc.get("failure_code"),
            failure_message=doc.get("failure_message"),
            authorization=doc.get("authorization"),
            declined_card=doc.get("declined_card"),
        )


class LedgerEntry(NamedTuple):
    """Money that moved: one per succeeded charge (same id)."""

    id: str
    uid: str
    kind: ChargeKind
    job_id: str
    amount_cents: int
    currency: str
    payment_intent: str
    created_at: datetime

    @property
    def month(self) -> str:
        return month_of(self.created_at)

    def to_doc(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "kind": self.kind.value,
            "job_id": self.job_id,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "created_at": self.created_at,
        }

    @staticmethod
    def from_doc(entry_id: str, doc: Mapping[str, Any]) -> "LedgerEntry":
        return LedgerEntry(
            id=entry_id,
            uid=doc["uid"],
            kind=ChargeKind(doc["kind"]),
            job_id=doc.get("job_id") or "",
            amount_cents=doc["amount_cents"],
            currency=doc["currency"],
            payment_intent=doc.get("payment_intent") or "",
            created_at=doc["created_at"],
        )


# --- webhooks --------------------------------------------------------------------------------

# What an endpoint may subscribe to; `ping` is sent only by POST .../test.
WEBHOOK_EVENT_TYPES = (
    *(s.event for s in JobStatus),
    *(e for p in PaymentStatus if (e := p.event) is not None),
)
PING = "ping"


class WebhookSecret(NamedTuple):
    """One signing secret (`whsec_` + base64 of 32 random bytes), kept only sealed (envelope
    encryption bound to the endpoint id: shared.secretbox), so a database read does not yield
    it. During a rotation the old one keeps signing until `expires_at`, beside the new one
    (None: no end)."""

    sealed: str
    created_at: datetime
    expires_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return self._asdict()

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "WebhookSecret":
        return WebhookSecret(doc["sealed"], doc["created_at"], doc.get("expires_at"))


class WebhookEndpoint(NamedTuple):
    id: str
    uid: str
    url: str
    events: tuple[str, ...]
    description: str
    secrets: tuple[WebhookSecret, ...]  # newest first
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    failing_since: datetime | None = None  # first failure of the current run of failures

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The sealed secrets that still sign at `now`."""
        return tuple(s.sealed for s in self.secrets if s.expires_at is None or s.expires_at > now)

    def to_doc(self) -> dict[str, Any]:
        return {
            **self._asdict(),
            "events": list(self.events),
            "secrets": [s.to_doc() for s in self.secrets],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "WebhookEndpoint":
        return WebhookEndpoint(
            id=doc["id"],
            uid=doc["uid"],
            url=doc["url"],
            events=tuple(doc.get("events") or ()),
            description=doc.get("description", ""),
            secrets=tuple(WebhookSecret.from_doc(s) for s in doc.get("secrets") or ()),
            created_at=doc["created_at"],
            disabled_at=doc.get("disabled_at"),
            disabled_reason=doc.get("disabled_reason"),
            failing_since=doc.get("failing_since"),
        )


class WebhookEvent(NamedTuple):
    """One event to send (webhook_events/{id}), written in the same commit as the transition
    it reports, so no transition goes unsent; its id is made from the transition (the job and
    its new status), so no transition is recorded twice."""

    id: str
    uid: str
    type: str
    job_id: str
    created_at: datetime
    job: Mapping[str, Any] | None = None  # the job's document at the transition

    def to_doc(self) -> dict[str, Any]:
        from datetime import timedelta

        return {
            **self._asdict(),
            "job": None if self.job is None else dict(self.job),
            "expires_at": self.created_at + timedelta(days=30),  # Firestore TTL
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "WebhookEvent":
        return WebhookEvent(
            id=doc["id"],
            uid=doc["uid"],
            type=doc["type"],
            job_id=doc.get("job_id", ""),
            created_at=doc["created_at"],
            job=doc.get("job"),
        )


class DeliveryAttempt(NamedTuple):
    attempt: int  # 1-based
    at: datetime
    status_code: int | None  # None: no answer (refused, timed out, unsafe address)
    latency_ms: int
    error: str | None = None
    next_retry_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return self._asdict()

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "DeliveryAttempt":
        return DeliveryAttempt(
            attempt=int(doc["attempt"]),
            at=doc["at"],
            status_code=doc.get("status_code"),
            latency_ms=int(doc.get("latency_ms", 0)),
            error=doc.get("error"),
            next_retry_at=doc.get("next_retry_at"),
        )


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # attempted and to be retried, or not attempted yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt of the schedule failed, or the endpoint was disabled


class WebhookDelivery(NamedTuple):
    """One event to one endpoint (webhook_deliveries/{event}--{endpoint}) and its attempts;
    kept 30 days (a TTL on `expires_at`)."""

    id: str
    uid: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    created_at: datetime
    expires_at: datetime
    attempts: tuple[DeliveryAttempt, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {
            **self._asdict(),
            "status": self.status.value,
            "attempts": [a.to_doc() for a in self.attempts],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> "WebhookDelivery":
        return WebhookDelivery(
            id=doc["id"],
            uid=doc["uid"],
            endpoint_id=doc["endpoint_id"],
            event_id=doc["event_id"],
            event_type=doc["event_type"],
            status=DeliveryStatus(doc["status"]),
            created_at=doc["created_at"],
            expires_at=doc["expires_at"],
            attempts=tuple(DeliveryAttempt.from_doc(a) for a in doc.get("attempts") or ()),
        )
