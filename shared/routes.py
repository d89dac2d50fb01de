"""The route table: the single source of truth for every deployed function and how it is
reached.

ROUTES (HTTP) and TRIGGERS (events) drive, so they cannot drift apart:
- the local gateway (devstack/gateway.py), which sends each request to the function object that
  owns its path, exactly as API Gateway does in production, and delivers each trigger's events
  (its Pub/Sub push endpoints and its Firestore relay come from TRIGGERS);
- each function's own dispatch (`shared.http.serve`), which checks the method and path again;
- the API Gateway OpenAPI 2.0 config and the function table Terraform deploys
  (`shared.openapi`: terraform/openapi.json.tftpl and terraform/functions.json, both generated);
- the local stack's Pub/Sub push subscriptions (devstack/stack.py).

A function's name is its folder: its code is `functions/<function>/main.py` and its entry point
is the attribute of the same name in that file. DEPLOYMENTS says how each one runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

# Every id we hand out or accept (path parameters, ids in bodies, cursors): URL-safe, at most
# 128 characters, and never Firestore-reserved (`__name__` style).
ID_CHARS = r"[A-Za-z0-9_-]{1,128}"
_ID = re.compile(ID_CHARS)
_RESERVED = re.compile(r"__.*__")


# API key scopes (shared.schemas.SCOPES lists them for the spec).
JOBS_READ = "jobs:read"
JOBS_WRITE = "jobs:write"
DATASETS_WRITE = "datasets:write"
BILLING_READ = "billing:read"
WEBHOOKS_WRITE = "webhooks:write"
SCOPES = (JOBS_READ, JOBS_WRITE, DATASETS_WRITE, BILLING_READ, WEBHOOKS_WRITE)


def valid_id(value: object) -> bool:
    """Whether `value` can be an id of ours; anything else names nothing of ours."""
    return (
        isinstance(value, str)
        and _ID.fullmatch(value) is not None
        and _RESERVED.fullmatch(value) is None
    )


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # a template: /v1/jobs/{job_id}
    function: str
    operation_id: str
    summary: str
    auth: bool = True
    # Internal routes are called by our own infrastructure (Cloud Tasks), never through API
    # Gateway; in production only IAM-authorised callers reach them.
    internal: bool = False
    # Where API Gateway sends it, when not the public path itself: Cloud Run reserves paths
    # ending in "z" on its own URLs, so /v1/healthz reaches the function as /v1/health.
    backend_path: str | None = None
    # At most this many requests per minute per caller (its uid, or its IP when the route takes
    # no auth); None: unlimited. Over it: 429 rate_limited with Retry-After.
    per_minute: int | None = None
    # What an API key needs to call it: any one of these scopes (shared.schemas.SCOPES); ()
    # lets any key call it; None refuses every key (a signed-in Firebase session only).
    key_scopes: tuple[str, ...] | None = None
    # An internal route called by a trainer (not Cloud Tasks): it proves itself with its job's
    # token, checked by the handler, instead of the tasks account's OIDC token.
    trainer: bool = False
    # A deprecated route: the date (ISO, "2027-06-30") it goes. The spec marks it deprecated and
    # every answer carries a Sunset header (RFC 8594); it must stay at least six months.
    sunset: str | None = None

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\\{(\w+)\\}", rf"(?P<\1>{ID_CHARS})", re.escape(self.path))
        return re.compile(f"^{regex}$")

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` fits this route's template (or is its backend path),
        else None."""
        if self.backend_path is not None and path == self.backend_path:
            return {}
        m = self.pattern.match(path)
        return m.groupdict() if m else None


# fmt: off
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/healthz", "healthz", "getHealth",
          "Liveness; with ?ready=true also checks Firestore.", auth=False,
          backend_path="/v1/health"),
    Route("GET", "/v1/openapi.json", "healthz", "getOpenApi",
          "This API's OpenAPI 3.1 document.", auth=False),
    Route("GET", "/v1/models", "models", "listModels",
          "The model catalog, with each model's price, limits, LoRA defaults and availability.",
          key_scopes=()),
    Route("GET", "/v1/me", "me", "getMe",
          "The caller's account: payment method, pause flags, notification preferences.",
          key_scopes=(BILLING_READ,)),
    Route("PATCH", "/v1/me", "me", "updateMe",
          "Updates the caller's notification preferences and monthly spend limit."),
    Route("POST", "/v1/datasets", "datasets", "createDataset",
          "Registers a JSONL dataset; answers with a one-hour signed upload URL.",
          key_scopes=(DATASETS_WRITE,)),
    Route("GET", "/v1/datasets", "datasets", "listDatasets",
          "The caller's datasets, newest first (cursor pagination).",
          key_scopes=(DATASETS_WRITE, JOBS_READ)),
    Route("GET", "/v1/datasets/{dataset_id}", "datasets", "getDataset",
          "One dataset with its validation report.", key_scopes=(DATASETS_WRITE, JOBS_READ)),
    Route("DELETE", "/v1/datasets/{dataset_id}", "datasets", "deleteDataset",
          "Deletes a dataset and its file.", key_scopes=(DATASETS_WRITE,)),
    Route("POST", "/v1/datasets/{dataset_id}/validate", "datasets", "validateDataset",
          "Validates the uploaded file now (it also runs when the upload finishes).",
          key_scopes=(DATASETS_WRITE,)),
    Route("POST", "/v1/jobs/estimate", "jobs", "estimateJob",
          "The exact price, token counts and duration of a job, before anything runs.",
          per_minute=30, key_scopes=(JOBS_READ, JOBS_WRITE)),
    Route("POST", "/v1/jobs", "jobs", "createJob",
          "Submits a fine-tuning job (honours Idempotency-Key).", per_minute=20,
          key_scopes=(JOBS_WRITE,)),
    Route("GET", "/v1/jobs", "jobs", "listJobs",
          "The caller's jobs, newest first (cursor pagination, filter by status).",
          key_scopes=(JOBS_READ,)),
    Route("GET", "/v1/jobs/{job_id}", "jobs", "getJob",
          "One job: status, progress, events, result.", key_scopes=(JOBS_READ,)),
    Route("POST", "/v1/jobs/{job_id}/cancel", "jobs", "cancelJob",
          "Cancels a queued or running job.", key_scopes=(JOBS_WRITE,)),
    Route("GET", "/v1/jobs/{job_id}/download", "jobs", "downloadJob",
          "One-hour signed URLs for the adapter files (or a checkpoint's: ?checkpoint=<step>), "
          "with size and sha256.",
          key_scopes=(JOBS_READ,)),
    Route("GET", "/v1/jobs/{job_id}/checkpoints", "jobs", "listCheckpoints",
          "The adapters kept at each epoch end: step, epoch, train and eval loss, size.",
          key_scopes=(JOBS_READ,)),
    Route("POST", "/v1/jobs/{job_id}/retry-payment", "jobs", "retryPayment",
          "Retries a failed payment for the job with the saved card, once the card changed.",
          per_minute=5, key_scopes=(JOBS_WRITE,)),
    Route("POST", "/v1/jobs/{job_id}/extend-storage", "jobs", "extendStorage",
          "Keeps the job's files longer: {days}, charged at once (needs Idempotency-Key).",
          key_scopes=(JOBS_WRITE,)),
    Route("GET", "/v1/billing/summary", "billing", "billingSummary",
          "Lifetime and monthly spend, tuning and storage totals, outstanding amounts.",
          key_scopes=(BILLING_READ,)),
    Route("POST", "/v1/jobs/setup-card", "cards", "setupCard",
          "A Stripe Checkout page (setup mode) to save the card jobs are charged to.",
          per_minute=10),
    Route("POST", "/v1/billing/portal-session", "cards", "createPortalSession",
          "A Stripe billing-portal page (cards, receipts), made on demand.", per_minute=10),
    Route("GET", "/v1/billing/portal", "cards", "openBillingPortal",
          "The signed link of GET /v1/me's portal_url: makes the billing-portal page now and "
          "redirects (303) to it. The token is the credential; it lives an hour.",
          auth=False, per_minute=10),
    Route("POST", "/v1/api-keys", "api_keys", "createApiKey",
          "Mints an API key (the secret is shown once); signed-in users only.", per_minute=30),
    Route("GET", "/v1/api-keys", "api_keys", "listApiKeys",
          "The caller's live API keys (never their secrets); signed-in users only."),
    Route("DELETE", "/v1/api-keys/{key_id}", "api_keys", "deleteApiKey",
          "Revokes an API key at once; signed-in users only."),
    Route("POST", "/v1/webhook-endpoints", "webhooks", "createWebhookEndpoint",
          "Adds an endpoint for job and payment events; answers its signing secret once.",
          per_minute=30, key_scopes=(WEBHOOKS_WRITE,)),
    Route("GET", "/v1/webhook-endpoints", "webhooks", "listWebhookEndpoints",
          "The caller's webhook endpoints (never their secrets).", key_scopes=(WEBHOOKS_WRITE,)),
    Route("DELETE", "/v1/webhook-endpoints/{endpoint_id}", "webhooks", "deleteWebhookEndpoint",
          "Removes a webhook endpoint; nothing more is sent to it.",
          key_scopes=(WEBHOOKS_WRITE,)),
    Route("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", "webhooks",
          "rotateWebhookSecret",
          "A new signing secret (answered once); the old one also signs for 24 hours.",
          key_scopes=(WEBHOOKS_WRITE,)),
    Route("POST", "/v1/webhook-endpoints/{endpoint_id}/test", "webhooks", "testWebhookEndpoint",
          "Sends a `ping` event to the endpoint.", per_minute=10, key_scopes=(WEBHOOKS_WRITE,)),
    Route("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries", "webhooks",
          "listWebhookDeliveries",
          "The endpoint's deliveries of the last 30 days, newest first, with every attempt.",
          key_scopes=(WEBHOOKS_WRITE,)),
    Route("POST", "/v1/stripe/webhook", "stripe_webhook", "stripeWebhook",
          "Stripe events (verified by Stripe-Signature, not Firebase).", auth=False),
    Route("POST", "/internal/tasks/launch-job", "worker", "launchJob",
          "Cloud Tasks target: launches a queued job's Batch job.", auth=False, internal=True),
    Route("POST", "/internal/tasks/relaunch-stale", "worker", "relaunchStale",
          "Cloud Scheduler target: the sweep (queued jobs that never launched, the "
          "reconciler, card holds near expiry, dataset uploads that never came).",
          auth=False, internal=True),
    Route("POST", "/internal/tasks/deliver-webhook", "worker", "deliverWebhook",
          "Cloud Tasks target: one attempt of one webhook event to one endpoint.", auth=False,
          internal=True),
    Route("POST", "/internal/trainer/report", "worker", "trainerReport",
          "A trainer's progress, result or failure, for its own job only (its job token).",
          auth=False, internal=True, trainer=True),
    Route("POST", "/internal/trainer/storage-token", "worker", "trainerStorageToken",
          "A short-lived Cloud Storage token limited to its own job's inputs and outputs "
          "(its job token).", auth=False, internal=True, trainer=True),
    Route("POST", "/internal/tasks/count-tokens", "count_tokens", "countTokens",
          "Cloud Tasks target: counts a large dataset's tokens for one model, once.",
          auth=False, internal=True),
)
# fmt: on


@dataclass(frozen=True)
class Trigger:
    """An event function: the Eventarc trigger that calls it in production, and how the local
    stack delivers the same CloudEvent."""

    function: str
    kind: str  # "firestore", "pubsub", "storage" or "auth" (Firebase Auth, a 1st-gen trigger)
    event_type: str
    # firestore: the document pattern; pubsub: the topic (the Settings field naming it);
    # storage: the bucket (the Settings field naming it); auth: unused.
    source: str
    summary: str
    # The local gateway's Pub/Sub push endpoint for it (pubsub and storage; the local stack's
    # Storage emulator publishes finalize events to a topic). Firestore: a local relay instead.
    local_push_path: str | None = None


# fmt: off
TRIGGERS: tuple[Trigger, ...] = (
    Trigger("charge_job", "firestore", "google.cloud.firestore.document.v1.updated",
            "jobs/{jobId}", "Charges a job once when it ends."),
    Trigger("batch_events", "pubsub", "google.cloud.pubsub.topic.v1.messagePublished",
            "batch_topic", "Batch job state notifications drive the job state machine.",
            local_push_path="/internal/pubsub/batch-events"),
    Trigger("dataset_events", "storage", "google.cloud.storage.object.v1.finalized",
            "datasets_bucket", "Validates a dataset when its upload finishes.",
            local_push_path="/internal/pubsub/dataset-uploads"),
    Trigger("webhook_events", "firestore", "google.cloud.firestore.document.v1.created",
            "webhook_events/{eventId}", "Enqueues each recorded event for its endpoints."),
    Trigger("auth_events", "auth", "providers/firebase.auth/eventTypes/user.delete",
            "", "Erases the account of a deleted Firebase user."),
)
# fmt: on


@dataclass(frozen=True)
class Deployment:
    """How one function runs in production."""

    service_account: str  # a role in terraform/iam.tf
    memory: str
    timeout_s: int = 120  # how long one request may run


# fmt: off
DEPLOYMENTS: dict[str, Deployment] = {
    "healthz": Deployment("api", "256M"),
    "models": Deployment("api", "512M"),
    "me": Deployment("api", "512M"),
    "datasets": Deployment("api", "1Gi"),
    "jobs": Deployment("api", "1Gi"),
    "cards": Deployment("api", "512M"),
    "billing": Deployment("api", "512M"),
    "api_keys": Deployment("api", "512M"),
    "webhooks": Deployment("api", "512M"),
    "webhook_events": Deployment("api", "512M"),
    "stripe_webhook": Deployment("webhook", "512M"),
    "worker": Deployment("launcher", "512M"),
    # Encodes a whole dataset (up to YACHAY_DATASET_MAX_BYTES) with a model's tokenizer: the
    # api account (it reads models and datasets), room for the file, time for its size.
    "count_tokens": Deployment("api", "2Gi", timeout_s=1800),
    "charge_job": Deployment("charger", "512M"),
    "batch_events": Deployment("notifier", "512M"),
    "dataset_events": Deployment("api", "1Gi"),
    "auth_events": Deployment("eraser", "512M"),
}
# fmt: on


@dataclass(frozen=True)
class Secret:
    """A value kept in Secret Manager (added there by hand, never in Terraform state) and handed
    to exactly the functions that use it, as the variable shared/config.py reads. `local` is its
    value on the local stack (test-mode values of the local servers, devstack/stack.py)."""

    name: str  # the Secret Manager secret id
    env: str
    functions: tuple[str, ...]
    local: str


# Terraform creates each secret, grants each function's account access, and sets the variable
# on each function from this table (terraform/functions.json); a test checks that no function
# reads one it is not given.
SECRETS = (
    # Stripe calls; also the root of our signed links (shared.links: the portal link of
    # GET /v1/me, trainer report tokens), and a minted API key's live/test prefix
    # (shared.apikeys: api_keys).
    Secret(
        "stripe-secret-key",
        "YACHAY_STRIPE_SECRET_KEY",
        (
            "me",
            "jobs",
            "cards",
            "api_keys",
            "stripe_webhook",
            "worker",
            "charge_job",
            "auth_events",
        ),
        "sk_test_local_yachay",
    ),
    # Comma-separated: during a rotation both the new and the old endpoint secret verify.
    Secret(
        "stripe-webhook-secrets",
        "YACHAY_STRIPE_WEBHOOK_SECRETS",
        ("stripe_webhook",),
        "whsec_local_yachay_stack",
    ),
)


def secret(name: str) -> Secret:
    return next(s for s in SECRETS if s.name == name)


def secrets_of(function: str) -> dict[str, str]:
    """The secrets one function receives: {variable: Secret Manager id}."""
    return {s.env: s.name for s in SECRETS if function in s.functions}


def functions() -> tuple[str, ...]:
    """Every function that serves HTTP, in route-table order."""
    return tuple(dict.fromkeys(r.function for r in ROUTES))


def all_functions() -> tuple[str, ...]:
    """Every deployed function: the HTTP ones, then the event ones."""
    return (*functions(), *(t.function for t in TRIGGERS))


def kind_of(function: str) -> str:
    """How a function is reached: "public" (API Gateway), "tasks" (internal HTTP, our own
    infrastructure), or its trigger's kind."""
    for t in TRIGGERS:
        if t.function == function:
            return t.kind
    own = routes_of(function)
    if not own:
        raise KeyError(function)
    return "tasks" if all(r.internal for r in own) else "public"


def path_of(operation_id: str) -> str:
    """The path of the route with this operation id."""
    return next(r.path for r in ROUTES if r.operation_id == operation_id)


def routes_of(function: str) -> tuple[Route, ...]:
    return tuple(r for r in ROUTES if r.function == function)


def paths() -> dict[str, tuple[Route, ...]]:
    """Public routes grouped by path template, in table order."""
    grouped: dict[str, list[Route]] = {}
    for r in ROUTES:
        if r.internal:
            continue
        grouped.setdefault(r.path, []).append(r)
    return {p: tuple(rs) for p, rs in grouped.items()}


@dataclass(frozen=True)
class Resolution:
    """What the table says about one (method, path): the route, or why there is none."""

    route: Route | None
    params: dict[str, str]
    allowed_methods: tuple[str, ...]  # methods the path accepts; empty when the path is unknown


def resolve(method: str, path: str, table: tuple[Route, ...] = ROUTES) -> Resolution:
    allowed: list[str] = []
    for route in table:
        params = route.match(path)
        if params is None:
            continue
        allowed.append(route.method)
        if route.method == method:
            return Resolution(route, params, tuple(allowed))
    return Resolution(None, {}, tuple(allowed))
