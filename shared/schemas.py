"""Every public shape of the API, defined once: what each operation takes (body, query) and
gives (each status with its schema), keyed by the route table's operation ids.

`shared.http` checks each request against these before the handler runs (so handlers see
typed, checked values), `shared.openapi` writes the OpenAPI 3.1 document from them, and the
tests check every response the views make against them. The views themselves (shared.jobs,
shared.datasets, ...) build the dicts; a test fails when a view and its schema disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.contract import EXTRA_OUTPUTS, Declared, declared
from shared.errors import ApiError, Code
from shared.pricing import MAX_EXTENSION_DAYS
from shared.records import (
    NOTIFICATION_EVENTS,
    WEBHOOK_EVENT_TYPES,
    AuthorizationStatus,
    ChargeKind,
    DatasetStatus,
    DeliveryStatus,
    FailureCode,
    JobStatus,
    PaymentStatus,
)
from shared.routes import ID_CHARS, SCOPES
from shared.schema import (
    AnyOf,
    Array,
    Boolean,
    Const,
    Free,
    Integer,
    Invalid,
    Map,
    Number,
    Object,
    Query,
    Schema,
    String,
    opt,
    req,
    response,
)
from shared.tokenization import (
    DEFAULT_SPLIT_MIN_RECORDS,
    DEFAULT_VALIDATION_SPLIT,
    MAX_VALIDATION_SPLIT,
)

MAX_SPEND_LIMIT_CENTS = 100_000_00  # what PATCH /v1/me accepts as a monthly limit

# --- small pieces ----------------------------------------------------------------------------

Id = String(pattern=ID_CHARS, example="job-5f2b9c0d1e")
Time = String(format="date-time", example="2026-11-29T12:00:00+00:00")
MaybeTime = String(format="date-time", nullable=True)
Cents = Integer(minimum=0, description="An amount in the smallest unit of the currency (cents).")
Currency = String(example="usd", description="ISO 4217 currency code, lower case.")
Url = String(format="uri")
Cursor = String(max_length=512, description="Opaque: the next_cursor of the previous page.")
Limit = Integer(minimum=1, maximum=100, description="Items per page (default 20).")


def list_of(item: Schema, name: str) -> Object:
    """The envelope every list shares (`shared.http.list_reply`)."""
    return response(
        {
            "object": Const("list"),
            "data": Array(item),
            "has_more": Boolean(),
            "next_cursor": String(nullable=True, description="Pass as ?after= for the next page."),
        },
        name,
    )


# --- errors ----------------------------------------------------------------------------------

Error = response(
    {
        "error": response(
            {
                "code": String(
                    enum=[c.value for c in Code],
                    description="Stable machine code: add-only, never renamed.",
                ),
                "message": String(description="What went wrong and what to do, for a person."),
                "param": String(
                    nullable=True, description="The field or parameter at fault (dotted path)."
                ),
                "request_id": String(description="Quote it to support."),
            },
            "ErrorDetail",
        )
    },
    "Error",
    "Every error: a stable code, a message a person can act on, the field at fault.",
)

# --- models ----------------------------------------------------------------------------------

Bound = response({"default": Number(), "min": Number(), "max": Number()}, "Bound")
Model = response(
    {
        "object": Const("model"),
        "id": String(example="smollm2-135m-instruct"),
        "display_name": String(),
        "family": String(),
        "parameters": Integer(minimum=0),
        "context_length": Integer(minimum=1),
        "pricing": response(
            {
                "unit": Const("1M_training_tokens"),
                "price_cents": Cents,
                "currency": Currency,
            },
            "ModelPricing",
        ),
        "gpu_type": String(),
        "max_dataset_tokens": Integer(minimum=0),
        "hyperparameters": Map(Bound),
        "lora": Map(
            AnyOf(
                (
                    Bound,
                    response(
                        {
                            "default": AnyOf((String(), Array(String()))),
                            "allowed": Array(String()),
                        },
                        "TargetModulesBound",
                    ),
                )
            )
        ),
        "license": String(),
        "available": Boolean(description="Whether its weights are in our store right now."),
    },
    "Model",
)
ModelList = response(
    {"object": Const("list"), "catalog_version": String(), "data": Array(Model)}, "ModelList"
)

# --- datasets --------------------------------------------------------------------------------

LineError = response({"line": Integer(minimum=1, nullable=True), "message": String()}, "LineError")
_dataset_fields: dict[str, Schema] = {
    "object": Const("dataset"),
    "id": Id,
    "filename": String(),
    "status": String(enum=[s.value for s in DatasetStatus]),
    "bytes": Integer(minimum=0, nullable=True),
    "rows": Integer(minimum=0, nullable=True),
    "format": String(nullable=True, example="chat"),
    "errors": Array(LineError, description="The first errors, each with its line."),
    "error_count": Integer(minimum=0),
    "created_at": Time,
    "validated_at": MaybeTime,
}
Dataset = response(_dataset_fields, "Dataset")
DatasetCreated = response(
    {
        **_dataset_fields,
        "upload": response(
            {
                "url": Url,
                "method": Const("PUT"),
                "headers": Map(String(), description="Send exactly these headers with the PUT."),
                "expires_at": Time,
            },
            "Upload",
        ),
    },
    "DatasetCreated",
)
CreateDataset = Object(
    {
        "filename": req(
            String(max_length=255, pattern=r"[^/\\\x00]+", not_blank=True, example="train.jsonl"),
            hint='the file\'s name, e.g. "train.jsonl"',
        ),
        "size_bytes": req(
            Integer(minimum=1, description="The file's exact size; the upload may not exceed it."),
            hint="the file's size in bytes",
        ),
    },
    name="CreateDatasetRequest",
    example={"filename": "train.jsonl", "size_bytes": 48213},
)

# --- jobs ------------------------------------------------------------------------------------


def _hyperparameter(d: Declared, request: bool) -> Schema:
    """A declared hyperparameter's schema (shared.contract.Hyperparameters)."""
    if d.kind != "modules":
        return (Integer if d.kind == "integer" else Number)(description=d.knob.help)
    if not request:
        return AnyOf((String(), Array(String())), description=d.knob.help)
    return AnyOf(
        (Const("all-linear"), Array(String(), min_items=1, max_items=64)),
        message='must be "all-linear" or a non-empty list of module names',
        description=d.knob.help,
    )


HyperparametersIn = Object(
    {d.name: opt(_hyperparameter(d, request=True)) for d in declared()},
    name="HyperparametersRequest",
    description="Each optional (the model's default); bounds per model in GET /v1/models.",
)
Hyperparameters = response(
    {d.name: _hyperparameter(d, request=False) for d in declared()}, "Hyperparameters"
)
_quote_fields: dict[str, Schema] = {
    "examples": Integer(minimum=0),
    "dropped_examples": Integer(minimum=0),
    "truncated_examples": Integer(minimum=0),
    "tokens_per_epoch": Integer(minimum=0),
    "trained_tokens_per_epoch": Integer(minimum=0),
    "epochs": Integer(minimum=0),
    "billable_tokens": Integer(minimum=0),
    "price_cents": Cents,
    "currency": Currency,
    "estimated_seconds": Integer(minimum=0),
    "gpu_type": String(),
    "price_per_million_tokens_cents": Cents,
    "validation_split": Number(
        minimum=0, maximum=MAX_VALIDATION_SPLIT, description="The share of records held out."
    ),
    "validation_examples": Integer(minimum=0, description="Evaluated, never billed."),
    "validation_tokens": Integer(minimum=0, description="One pass; never billed."),
    "storage_cents": Integer(
        minimum=0, description="Keeping the extra outputs asked for (merged weights); in price."
    ),
    "evaluated_tokens": Integer(
        minimum=0,
        description=(
            "Validation tokens times evaluations over the run: never billed, and at most a "
            "quarter of billable_tokens (or 200,000 if more)."
        ),
    ),
    "estimated_seconds_basis": String(
        description=(
            "Where estimated_seconds comes from: `measured` (the model's throughput measured on "
            "its GPU) or `estimated` (from its FLOPs per token at an assumed utilisation). "
            "Extensible: expect other values."
        )
    ),
}
Quote = response(_quote_fields, "Quote")
MAX_EVAL_EVERY_STEPS = 1_000_000
JobRequest = Object(
    {
        "model": req(String(max_length=128), hint="a model id from GET /v1/models"),
        # Not pattern-checked: an id that cannot be ours names nothing of ours (404, as in a path)
        "dataset_id": req(String(), hint="a ready dataset's id, from POST /v1/datasets"),
        "hyperparameters": opt(HyperparametersIn),
        "validation_dataset_id": opt(
            String(description="A ready dataset of yours to evaluate on (not billed).")
        ),
        "validation_split": opt(
            Number(
                minimum=0,
                maximum=MAX_VALIDATION_SPLIT,
                description="The share of the dataset's records to hold out for validation "
                "(seeded by hyperparameters.seed; never billed). Default: "
                f"{DEFAULT_VALIDATION_SPLIT} for datasets of {DEFAULT_SPLIT_MIN_RECORDS} records "
                "or more, else none.",
            )
        ),
        "eval_every_steps": opt(
            Integer(
                minimum=1,
                maximum=MAX_EVAL_EVERY_STEPS,
                description="Also evaluate every this many steps (always at epoch ends).",
            )
        ),
        "from_job": opt(
            String(
                max_length=200,
                description="Start from a completed job's adapter: '<job_id>' or "
                "'<job_id>:<step>' (a checkpoint). Same model, rank and target modules.",
            )
        ),
        "outputs": opt(
            Array(
                String(enum=list(EXTRA_OUTPUTS)),
                max_items=len(EXTRA_OUTPUTS),
                description="Extra outputs: 'merged' (weights with the adapter merged in, "
                "priced as their storage).",
            )
        ),
    },
    name="JobRequest",
    example={"model": "smollm2-135m-instruct", "dataset_id": "ds-3c1f0a9b2e"},
)
_options_fields: dict[str, Schema] = {
    "validation_dataset_id": String(nullable=True),
    "eval_every_steps": Integer(minimum=0, description="0: at epoch ends only."),
    "from_job": String(nullable=True),
    "outputs": Array(String()),
}
Reason = response(
    {"code": String(enum=[c.value for c in Code]), "message": String()}, "RefusalReason"
)
Estimate = response(
    {
        "object": Const("estimate"),
        "model": String(),
        "dataset_id": Id,
        "hyperparameters": Hyperparameters,
        **_options_fields,
        **_quote_fields,
        "allowed_to_proceed": Boolean(),
        "reasons": Array(Reason, description="Every rule that would refuse a submission now."),
        "active_job_limit": Integer(minimum=0),
    },
    "Estimate",
)
TokenCounting = response(
    {
        "object": Const("token_count"),
        "status": Const("counting"),
        "dataset_id": Id,
        "model": String(),
        "retry_after_s": Integer(minimum=1),
        "message": String(),
    },
    "TokenCounting",
    "A large dataset's tokens are being counted once, in the background: nothing was "
    "submitted or held. Send the same request again after Retry-After seconds.",
)
Progress = response(
    {
        "step": Integer(minimum=0),
        "total_steps": Integer(minimum=0),
        "epoch": Integer(minimum=0),
        "trained_tokens": Integer(minimum=0),
        "total_tokens": Integer(minimum=0),
        "loss": Number(),
        "learning_rate": Number(),
        "eta_s": Number(),
        "eval_loss": Number(nullable=True, description="The latest validation loss."),
    },
    "Progress",
)
Payment = Object(
    {
        "status": req(String(enum=[s.value for s in PaymentStatus])),
        "amount_cents": req(Cents),
        "currency": req(Currency),
        "charged_at": opt(Time),
        "reason": opt(String(description="Why the charge failed.")),
    },
    name="Payment",
)
_job_fields: dict[str, Schema] = {
    "object": Const("job"),
    "id": Id,
    "status": String(enum=[s.value for s in JobStatus]),
    "model": String(),
    "dataset_id": Id,
    "hyperparameters": Hyperparameters,
    **_options_fields,
    "quote": Quote,
    "progress": Progress.nullable_copy(),
    "failure": response(
        {"code": String(enum=[c.value for c in FailureCode]), "message": String()},
        "JobFailure",
    ).nullable_copy(),
    "result": response(
        {
            "trained_tokens": Integer(minimum=0),
            "steps": Integer(minimum=0),
            "final_loss": Number(nullable=True),
            "eval_loss": Number(nullable=True),
            "eval_tokens": Integer(minimum=0),
            "checkpoints": Integer(minimum=0, description="How many; GET .../checkpoints."),
        },
        "JobResult",
    ).nullable_copy(),
    "events": Array(
        response(
            {
                "at": Time,
                "status": String(enum=[s.value for s in JobStatus]),
                "message": String(),
            },
            "JobEvent",
        )
    ),
    "payment": Payment.nullable_copy(),
    "authorization": response(
        {
            "status": String(enum=[s.value for s in AuthorizationStatus]),
            "amount_cents": Cents,
            "currency": Currency,
            "authorized_at": MaybeTime,
        },
        "CardHold",
        "The hold on the card for the quoted price, captured (at most the quote) at the end.",
    ).nullable_copy(),
    "charge_policy": String(),
    "expires_at": MaybeTime,
    "created_at": MaybeTime,
    "started_at": MaybeTime,
    "ended_at": MaybeTime,
}
Job = response(_job_fields, "Job")
JobExtended = response(
    {
        **_job_fields,
        "extension": response(
            {"days": Integer(minimum=1), "amount_cents": Cents, "currency": Currency},
            "StorageExtension",
        ),
    },
    "JobExtended",
    "The job, with the storage extension this request bought.",
)
Download = response(
    {
        "object": Const("download"),
        "job_id": Id,
        "checkpoint": Integer(nullable=True, description="The checkpoint's step, or null."),
        "files": Array(
            response(
                {
                    "name": String(),
                    "url": Url,
                    "size": Integer(minimum=0, nullable=True),
                    "sha256": String(pattern="[0-9a-f]{64}", nullable=True),
                },
                "DownloadFile",
            )
        ),
        "urls_expire_at": MaybeTime,
        "files_kept_until": MaybeTime,
    },
    "Download",
)
Checkpoint = response(
    {
        "object": Const("checkpoint"),
        "step": Integer(minimum=1),
        "epoch": Integer(minimum=1),
        "train_loss": Number(),
        "eval_loss": Number(nullable=True),
        "size": Integer(minimum=0),
        "from_job": String(description="What POST /v1/jobs takes to continue from it."),
    },
    "Checkpoint",
    "The adapter as it was at an epoch end.",
)
ExtendStorage = Object(
    {
        "days": req(
            Integer(minimum=1, maximum=MAX_EXTENSION_DAYS),
            hint=f"how many more days to keep the files (1-{MAX_EXTENSION_DAYS})",
        )
    },
    name="ExtendStorageRequest",
    example={"days": 30},
)

# --- account and billing ---------------------------------------------------------------------

Account = response(
    {
        "object": Const("account"),
        "uid": String(),
        "email": String(nullable=True),
        "created_at": Time,
        "has_payment_method": Boolean(),
        "payment_method": response(
            {"brand": String(), "last4": String()}, "PaymentMethod"
        ).nullable_copy(),
        "submissions_paused": Boolean(),
        "pauses": Array(response({"code": String(), "reason": String(), "since": Time}, "Pause")),
        "notifications": Map(Boolean(), keys=NOTIFICATION_EVENTS),
        "monthly_spend_limit_cents": Integer(minimum=0, nullable=True),
        "spent_this_month_cents": Cents,
        "portal_url": String(
            format="uri",
            nullable=True,
            description="A link of ours, valid an hour, that opens the billing portal when "
            "followed (signed-in sessions only; null for API keys and without a card).",
        ),
    },
    "Account",
)
UpdateAccount = Object(
    {
        "notifications": opt(
            Map(
                Boolean(),
                keys=NOTIFICATION_EVENTS,
                min_properties=1,
                description='Which emails to get, e.g. {"job_failed": true}.',
            )
        ),
        "monthly_spend_limit_cents": opt(
            Integer(
                minimum=0,
                maximum=MAX_SPEND_LIMIT_CENTS,
                nullable=True,
                description="null for no limit.",
            )
        ),
    },
    name="UpdateAccountRequest",
    min_properties=1,
    empty_message="has nothing to change: send 'notifications' or 'monthly_spend_limit_cents'",
    example={"notifications": {"job_failed": True}, "monthly_spend_limit_cents": 5000},
)
BillingSummary = response(
    {
        "object": Const("billing_summary"),
        "currency": Currency,
        "lifetime_cents": Cents,
        "tuning_cents": Cents,
        "storage_extension_cents": Cents,
        "counts": Map(Integer(minimum=0), keys=[k.value for k in ChargeKind]),
        "outstanding_cents": Cents,
        "outstanding_charges": Array(
            response(
                {"job_id": Id, "amount_cents": Cents, "reason": String(nullable=True)},
                "OutstandingCharge",
            )
        ),
        "months": Array(
            response(
                {
                    "month": String(pattern="[0-9]{4}-[0-9]{2}"),
                    "total_cents": Cents,
                    "tuning_cents": Cents,
                    "storage_extension_cents": Cents,
                    "charges": Integer(minimum=0),
                },
                "MonthSpend",
            )
        ),
    },
    "BillingSummary",
)
SetupSession = response(
    {"object": Const("setup_session"), "url": Url, "expires_at": Time}, "SetupSession"
)
PortalSession = response({"object": Const("portal_session"), "url": Url}, "PortalSession")

# --- API keys --------------------------------------------------------------------------------

_key_fields: dict[str, Schema] = {
    "object": Const("api_key"),
    "id": Id,
    "name": String(),
    "prefix": String(description="The key's first characters, to tell keys apart."),
    "scopes": Array(String(enum=SCOPES)),
    "created_at": Time,
    "last_used_at": MaybeTime,
}
ApiKey = response(_key_fields, "ApiKey")
ApiKeyCreated = response(
    {
        **_key_fields,
        "secret": String(
            description="The key itself: shown this once, never again. Send it as "
            "'Authorization: Bearer <secret>'."
        ),
    },
    "ApiKeyCreated",
)
CreateApiKey = Object(
    {
        "name": req(
            String(max_length=100, not_blank=True, example="nightly-retrain"),
            hint="a name to tell this key apart",
        ),
        "scopes": req(
            Array(String(enum=SCOPES), min_items=1, max_items=len(SCOPES)),
            hint=f"the scopes it may use, from: {', '.join(SCOPES)}",
        ),
    },
    name="CreateApiKeyRequest",
    example={"name": "nightly-retrain", "scopes": ["jobs:read", "jobs:write"]},
)

# --- webhooks --------------------------------------------------------------------------------

_endpoint_fields: dict[str, Schema] = {
    "object": Const("webhook_endpoint"),
    "id": Id,
    "url": Url,
    "events": Array(String(enum=WEBHOOK_EVENT_TYPES)),
    "description": String(),
    "status": String(enum=["enabled", "disabled"]),
    "disabled_reason": String(nullable=True),
    "created_at": Time,
}
WebhookEndpoint = response(_endpoint_fields, "WebhookEndpoint")
WebhookEndpointWithSecret = response(
    {
        **_endpoint_fields,
        "secret": String(
            pattern="whsec_[A-Za-z0-9+/=]+",
            description="The signing secret (Standard Webhooks): shown this once.",
        ),
    },
    "WebhookEndpointWithSecret",
)
CreateWebhookEndpoint = Object(
    {
        "url": req(
            String(max_length=2048, example="https://example.com/hooks/yachay"),
            hint="the https URL to POST events to",
        ),
        "events": req(
            Array(String(enum=WEBHOOK_EVENT_TYPES), min_items=1, max_items=32),
            hint=f"the event types to send, from: {', '.join(WEBHOOK_EVENT_TYPES)}",
        ),
        "description": opt(String(max_length=500)),
    },
    name="CreateWebhookEndpointRequest",
    example={
        "url": "https://example.com/hooks/yachay",
        "events": ["job.completed", "job.failed"],
        "description": "CI",
    },
)
WebhookPing = response(
    {"object": Const("webhook_event"), "id": String(), "type": Const("ping"), "endpoint_id": Id},
    "WebhookPing",
)
WebhookDelivery = response(
    {
        "object": Const("webhook_delivery"),
        "id": String(),
        "event_id": String(),
        "event_type": String(),
        "status": String(enum=[s.value for s in DeliveryStatus]),
        "created_at": Time,
        "attempts": Array(
            response(
                {
                    "attempt": Integer(minimum=1),
                    "at": Time,
                    "status_code": Integer(nullable=True),
                    "latency_ms": Integer(minimum=0),
                    "error": String(nullable=True),
                    "next_retry_at": MaybeTime,
                },
                "WebhookAttempt",
            )
        ),
    },
    "WebhookDelivery",
)

# --- health and the spec ---------------------------------------------------------------------

Health = Object(
    {
        "status": req(Const("ok")),
        "version": req(String()),
        "checks": opt(Map(String(), description="Only with ?ready=true.")),
    },
    name="Health",
    strict=False,
)
OpenApiDocument = Free(description="This document: OpenAPI 3.1.")


# --- operations ------------------------------------------------------------------------------


class Operation:
    """What one route takes and gives beyond what every route shares (shared.openapi adds the
    common errors: auth, rate limit, bad JSON, contention)."""

    def __init__(
        self,
        *,
        ok_status: int = 200,
        ok: Schema | None = None,  # None: no body (204)
        body: Object | None = None,
        query: Query | None = None,
        errors: tuple[Code, ...] = (),  # the operation's own error codes
        idempotent_header: bool = False,  # takes Idempotency-Key
        idempotency_required: bool = False,
        # A body the function reads itself (a signed webhook: its bytes are the signature's
        # input), documented here, never checked by a schema.
        raw_body: Schema | None = None,
        # A 202 answer: the work that decides the result is under way (its schema).
        accepted: Schema | None = None,
    ) -> None:
        self.ok_status = ok_status
        self.ok = ok
        self.body = body
        self.query = query or Query()
        self.errors = errors
        self.idempotent_header = idempotent_header
        self.idempotency_required = idempotency_required
        self.raw_body = raw_body
        self.accepted = accepted


# What continuing from a job (from_job) can answer: the download gates of the source job.
_FROM_JOB = (Code.JOB_NOT_COMPLETED, Code.PAYMENT_REQUIRED, Code.ARTIFACTS_EXPIRED)

OPERATIONS: Mapping[str, Operation] = {
    "getHealth": Operation(
        ok=Health,
        query=Query({"ready": Boolean(description="Also check Firestore.")}),
        errors=(Code.NOT_READY,),
    ),
    "getOpenApi": Operation(ok=OpenApiDocument),
    "listModels": Operation(ok=ModelList),
    "getMe": Operation(ok=Account),
    "updateMe": Operation(ok=Account, body=UpdateAccount),
    "createDataset": Operation(
        ok_status=201,
        ok=DatasetCreated,
        body=CreateDataset,
        errors=(Code.TOO_MANY_DATASETS, Code.DATASET_STORAGE_FULL),
    ),
    "listDatasets": Operation(
        ok=list_of(Dataset, "DatasetList"), query=Query({"limit": Limit, "after": Cursor})
    ),
    "getDataset": Operation(ok=Dataset, errors=(Code.NOT_FOUND,)),
    "deleteDataset": Operation(ok_status=204, errors=(Code.NOT_FOUND,)),
    "validateDataset": Operation(
        ok=Dataset, errors=(Code.NOT_FOUND, Code.UPLOAD_MISSING, Code.PAYLOAD_TOO_LARGE)
    ),
    "estimateJob": Operation(
        ok=Estimate,
        accepted=TokenCounting,
        body=JobRequest,
        errors=(Code.NOT_FOUND, Code.DATASET_NOT_READY, Code.MODEL_UNAVAILABLE, *_FROM_JOB),
    ),
    "createJob": Operation(
        ok_status=201,
        ok=Job,
        accepted=TokenCounting,
        body=JobRequest,
        idempotent_header=True,
        errors=(
            Code.NOT_FOUND,
            Code.DATASET_NOT_READY,
            Code.MODEL_UNAVAILABLE,
            *_FROM_JOB,
            Code.PAYMENT_METHOD_REQUIRED,
            Code.PAYMENT_DECLINED,
            Code.ACCOUNT_PAUSED,
            Code.SPEND_LIMIT_REACHED,
            Code.DATASET_TOO_LARGE,
            Code.TOO_MANY_ACTIVE_JOBS,
            Code.IDEMPOTENCY_CONFLICT,
        ),
    ),
    "listJobs": Operation(
        ok=list_of(Job, "JobList"),
        query=Query(
            {
                "limit": Limit,
                "after": Cursor,
                "status": String(enum=[s.value for s in JobStatus]),
            }
        ),
    ),
    "getJob": Operation(ok=Job, errors=(Code.NOT_FOUND,)),
    "cancelJob": Operation(ok=Job, errors=(Code.NOT_FOUND, Code.JOB_ALREADY_ENDED)),
    "listCheckpoints": Operation(
        ok=list_of(Checkpoint, "CheckpointList"), errors=(Code.NOT_FOUND,)
    ),
    "downloadJob": Operation(
        ok=Download,
        query=Query(
            {"checkpoint": Integer(minimum=1, description="A checkpoint's step: its files.")}
        ),
        errors=(
            Code.NOT_FOUND,
            Code.JOB_NOT_COMPLETED,
            Code.PAYMENT_REQUIRED,
            Code.ARTIFACTS_EXPIRED,
        ),
    ),
    "retryPayment": Operation(
        ok=Job,
        errors=(
            Code.NOT_FOUND,
            Code.NOTHING_TO_RETRY,
            Code.CARD_UNCHANGED,
            Code.PAYMENT_METHOD_REQUIRED,
        ),
    ),
    "extendStorage": Operation(
        ok=JobExtended,
        body=ExtendStorage,
        idempotent_header=True,
        idempotency_required=True,
        errors=(
            Code.NOT_FOUND,
            Code.JOB_NOT_COMPLETED,
            Code.PAYMENT_REQUIRED,
            Code.PAYMENT_DECLINED,
            Code.ARTIFACTS_EXPIRED,
            Code.ACCOUNT_PAUSED,
            Code.SPEND_LIMIT_REACHED,
            Code.IDEMPOTENCY_CONFLICT,
        ),
    ),
    "billingSummary": Operation(ok=BillingSummary),
    "setupCard": Operation(ok_status=201, ok=SetupSession),
    "createPortalSession": Operation(
        ok_status=201, ok=PortalSession, errors=(Code.PAYMENT_METHOD_REQUIRED,)
    ),
    "openBillingPortal": Operation(
        ok_status=303,  # Location: the billing-portal page
        query=Query({"token": String(max_length=1024, description="From portal_url.")}),
        errors=(
            Code.MISSING_FIELD,
            Code.INVALID_LINK,
            Code.LINK_EXPIRED,
            Code.PAYMENT_METHOD_REQUIRED,
        ),
    ),
    "createApiKey": Operation(
        ok_status=201, ok=ApiKeyCreated, body=CreateApiKey, errors=(Code.TOO_MANY_API_KEYS,)
    ),
    "listApiKeys": Operation(ok=list_of(ApiKey, "ApiKeyList")),
    "deleteApiKey": Operation(ok_status=204, errors=(Code.NOT_FOUND,)),
    "createWebhookEndpoint": Operation(
        ok_status=201,
        ok=WebhookEndpointWithSecret,
        body=CreateWebhookEndpoint,
        errors=(Code.TOO_MANY_WEBHOOK_ENDPOINTS,),
    ),
    "listWebhookEndpoints": Operation(ok=list_of(WebhookEndpoint, "WebhookEndpointList")),
    "deleteWebhookEndpoint": Operation(ok_status=204, errors=(Code.NOT_FOUND,)),
    "rotateWebhookSecret": Operation(ok=WebhookEndpointWithSecret, errors=(Code.NOT_FOUND,)),
    "testWebhookEndpoint": Operation(ok_status=202, ok=WebhookPing, errors=(Code.NOT_FOUND,)),
    "listWebhookDeliveries": Operation(
        ok=list_of(WebhookDelivery, "WebhookDeliveryList"),
        query=Query({"limit": Limit}),
        errors=(Code.NOT_FOUND,),
    ),
    "stripeWebhook": Operation(
        ok=response({"received": Const(True), "outcome": String()}, "WebhookReceipt"),
        raw_body=Free(description="A Stripe event, signed in the Stripe-Signature header."),
        errors=(Code.INVALID_SIGNATURE, Code.INVALID_BODY, Code.PAYLOAD_TOO_LARGE),
    ),
}


def checked_body(schema: Object, raw: Any) -> dict[str, Any]:
    """`raw` checked against `schema`, or the ApiError a client gets for it: missing_field,
    unknown_field or invalid_value naming the field in `param` (invalid_body for the whole)."""
    try:
        body: dict[str, Any] = schema.check(raw)
    except Invalid as exc:
        code = {"missing": Code.MISSING_FIELD, "unknown": Code.UNKNOWN_FIELD}.get(
            exc.kind, Code.INVALID_VALUE if exc.path else Code.INVALID_BODY
        )
        raise ApiError(code, exc.message, param=exc.path or None) from None
    return body


def checked_query(query: Query, args: Mapping[str, str]) -> dict[str, Any]:
    """The query string parsed and checked, or invalid_query naming the parameter."""
    try:
        return query.check(args)
    except Invalid as exc:
        raise ApiError(Code.INVALID_QUERY, exc.message, param=exc.path) from None


def operation(operation_id: str) -> Operation:
    return OPERATIONS.get(operation_id) or Operation()


def check_response(operation_id: str, status: int, body: Any) -> None:
    """Raises schema.Invalid when `body` is not what the spec says `operation_id` answers with
    `status` (tests use it on every view; the error object for statuses >= 400)."""
    op = operation(operation_id)
    if status >= 400:
        Error.check(body)
    elif status == op.ok_status and op.ok is not None:
        op.ok.check(body)
    elif status == 202 and op.accepted is not None:
        op.accepted.check(body)
