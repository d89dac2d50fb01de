"""Configuration, decided in one place: the environment, with local defaults.

Every function reads `settings()` once per process. Local and production differ only in these
values; no code path checks "am I local?" except through them. Production refuses any emulator
setting, so an emulator (whose Auth tokens are unsigned) can never be enabled there by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from shared.routes import path_of

VERSION = "0.1.0"
LAUNCH_PATH = path_of("launchJob")
DELIVER_PATH = path_of("deliverWebhook")
COUNT_PATH = path_of("countTokens")
REPORT_PATH = path_of("trainerReport")
STORAGE_TOKEN_PATH = path_of("trainerStorageToken")

# Variables the Google SDKs read themselves; their presence means "use an emulator".
EMULATOR_VARIABLES = (
    "FIRESTORE_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "YACHAY_TASKS_EMULATOR_HOST",
    "YACHAY_STRIPE_API_BASE",
)


class ConfigError(RuntimeError):
    """The environment describes a configuration we refuse to run with."""


@dataclass(frozen=True)
class Settings:
    env: str
    project_id: str
    region: str
    version: str
    cors_origins: tuple[str, ...]
    auth_header: str
    auth_emulator_host: str | None
    firestore_emulator_host: str | None
    storage_emulator_host: str | None
    models_bucket: str
    models_prefix: str
    datasets_bucket: str
    artifacts_bucket: str
    checkpoints_bucket: str
    catalog_path: str | None
    dataset_max_bytes: int
    dataset_max_count: int  # datasets per user
    dataset_quota_bytes: int  # bytes declared by all of a user's datasets
    max_active_jobs: int
    startup_overhead_s: int
    signing_key_file: str | None  # local only: a locally made service-account key for V4 URLs
    tasks_emulator_host: str | None
    tasks_queue: str
    webhooks_queue: str  # webhook deliveries: their own queue, so a slow receiver delays no launch
    task_target_url: str  # where Cloud Tasks delivers launch tasks (the worker function)
    tasks_service_account: str | None  # OIDC identity Cloud Tasks uses to call the worker
    oidc_certs_url: str  # Google's OIDC signing certificates (internal callers' tokens)
    batch_backend: str  # "local" (a subprocess) or "cloud" (Cloud Batch)
    batch_topic: str  # Pub/Sub topic for Batch job state notifications
    batch_service_account: str | None
    trainer_image: str
    api_base_url: str
    stripe_secret_key: str | None
    stripe_api_base: str | None  # local only: localstripe
    stripe_webhook_secrets: tuple[str, ...]  # several during a rotation
    checkout_backend: str  # "stripe" (Stripe Checkout) or "local" (the local stand-in page)
    checkout_success_url: str
    checkout_cancel_url: str
    currency: str
    retention_days: int
    webhook_target_url: str  # where Cloud Tasks delivers webhook attempts (the worker function)
    # Who wraps the data keys of sealed secrets (shared.secretbox): "kms:<crypto key name>" in
    # production, "local:<key file>" on the local stack.
    secrets_key: str
    trainer_report_url: str  # where trainers report (the worker's trainer-report route)
    trainer_report_audience: str  # production: the ID-token audience (the worker's URL)
    counts_queue: str  # background token counts of large datasets (shared.token_counts)
    count_target_url: str  # where Cloud Tasks delivers them (the count_tokens function)
    # A dataset above this many bytes is counted in the background, not within the request
    # (about 2 s a megabyte on the fraction of a CPU a 1 GiB function gets).
    count_inline_bytes: int
    # Local only: lets webhooks go to 127.0.0.1 (the receivers of the local stack and tests);
    # everywhere else loopback, like every non-public address, is refused at send time.
    webhooks_allow_loopback: bool
    key_owner_check_s: float = 60.0  # how stale a key's view of its user may be (disabled?)

    @property
    def is_local(self) -> bool:
        return self.env == "local"

    @property
    def trainer_storage_token_url(self) -> str:
        """Where trainers get storage tokens: the trainer-report route's sibling on the same
        service (so the same ID-token audience serves both)."""
        return self.trainer_report_url.removesuffix(REPORT_PATH) + STORAGE_TOKEN_PATH


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def load(environ: Mapping[str, str]) -> Settings:
    """Builds Settings from an environment mapping, refusing unsafe combinations.

    Raises:
        ConfigError: unknown YACHAY_ENV, no project in production, or an emulator variable set
            in production.
    """
    env = environ.get("YACHAY_ENV", "local")
    if env not in ("local", "production"):
        raise ConfigError(f"YACHAY_ENV must be 'local' or 'production', not {env!r}")
    if env == "production":
        present = [name for name in EMULATOR_VARIABLES if environ.get(name)]
        if present:
            raise ConfigError(f"emulator settings are not allowed in production: {present}")
        if not environ.get("GOOGLE_CLOUD_PROJECT"):
            raise ConfigError("GOOGLE_CLOUD_PROJECT must be set in production")
        if not environ.get("YACHAY_TASKS_SERVICE_ACCOUNT"):
            raise ConfigError(
                "YACHAY_TASKS_SERVICE_ACCOUNT must be set in production: internal routes verify "
                "their caller's OIDC token against it"
            )
        if not environ.get("YACHAY_SECRETS_KEY", "").startswith("kms:"):
            raise ConfigError(
                "YACHAY_SECRETS_KEY must be kms:<crypto key name> in production: webhook signing "
                "secrets are sealed under it (a local key file is for the local stack only)"
            )
    project = environ.get("GOOGLE_CLOUD_PROJECT", "demo-yachay")
    batch_backend = environ.get("YACHAY_BATCH_BACKEND", "local" if env == "local" else "cloud")
    if batch_backend not in ("local", "cloud"):
        raise ConfigError(f"YACHAY_BATCH_BACKEND must be 'local' or 'cloud', not {batch_backend!r}")
    checkout_backend = environ.get(
        "YACHAY_CHECKOUT_BACKEND", "local" if env == "local" else "stripe"
    )
    if checkout_backend not in ("local", "stripe"):
        raise ConfigError(
            f"YACHAY_CHECKOUT_BACKEND must be 'local' or 'stripe', not {checkout_backend!r}"
        )
    allow_loopback = environ.get("YACHAY_WEBHOOKS_ALLOW_LOOPBACK", "").lower() in ("1", "true")
    if env == "production" and (
        batch_backend == "local"
        or checkout_backend == "local"
        or environ.get("YACHAY_SIGNING_KEY_FILE")
        or allow_loopback
    ):
        raise ConfigError(
            "the local Batch executor, local checkout page, local signing keys and loopback "
            "webhooks are local-only"
        )
    return Settings(
        env=env,
        project_id=project,
        region=environ.get("YACHAY_REGION", "us-central1"),
        version=environ.get("YACHAY_VERSION", VERSION),
        cors_origins=_split(environ.get("YACHAY_CORS_ORIGINS", "http://localhost:3000")),
        # Behind API Gateway the caller's token arrives in X-Forwarded-Authorization, because the
        # gateway puts its own identity token in Authorization; Terraform sets this.
        auth_header=environ.get("YACHAY_AUTH_HEADER", "Authorization"),
        auth_emulator_host=environ.get("FIREBASE_AUTH_EMULATOR_HOST") or None,
        firestore_emulator_host=environ.get("FIRESTORE_EMULATOR_HOST") or None,
        storage_emulator_host=environ.get("STORAGE_EMULATOR_HOST") or None,
        models_bucket=environ.get("YACHAY_MODELS_BUCKET", f"{project}-models"),
        models_prefix=environ.get("YACHAY_MODELS_PREFIX", "models"),
        datasets_bucket=environ.get("YACHAY_DATASETS_BUCKET", f"{project}-datasets"),
        artifacts_bucket=environ.get("YACHAY_ARTIFACTS_BUCKET", f"{project}-adapters"),
        checkpoints_bucket=environ.get("YACHAY_CHECKPOINTS_BUCKET", f"{project}-checkpoints"),
        catalog_path=environ.get("YACHAY_CATALOG_PATH") or None,
        dataset_max_bytes=int(environ.get("YACHAY_DATASET_MAX_BYTES", 100 << 20)),
        dataset_max_count=int(environ.get("YACHAY_DATASET_MAX_COUNT", 100)),
        dataset_quota_bytes=int(environ.get("YACHAY_DATASET_QUOTA_BYTES", 2 << 30)),
        max_active_jobs=int(environ.get("YACHAY_MAX_ACTIVE_JOBS", 3)),
        startup_overhead_s=int(environ.get("YACHAY_STARTUP_OVERHEAD_S", 180)),
        signing_key_file=environ.get("YACHAY_SIGNING_KEY_FILE") or None,
        tasks_emulator_host=environ.get("YACHAY_TASKS_EMULATOR_HOST") or None,
        tasks_queue=environ.get(
            "YACHAY_TASKS_QUEUE",
            f"projects/{project}/locations/{environ.get('YACHAY_REGION', 'us-central1')}"
            "/queues/launch-jobs",
        ),
        webhooks_queue=environ.get(
            "YACHAY_WEBHOOKS_QUEUE",
            f"projects/{project}/locations/{environ.get('YACHAY_REGION', 'us-central1')}"
            "/queues/webhook-deliveries",
        ),
        task_target_url=environ.get(
            "YACHAY_TASK_TARGET_URL",
            environ.get("YACHAY_API_BASE_URL", "http://127.0.0.1:8700") + LAUNCH_PATH,
        ),
        tasks_service_account=environ.get("YACHAY_TASKS_SERVICE_ACCOUNT") or None,
        oidc_certs_url=environ.get(
            "YACHAY_OIDC_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs"
        ),
        batch_backend=batch_backend,
        batch_topic=environ.get("YACHAY_BATCH_TOPIC", "batch-job-states"),
        batch_service_account=environ.get("YACHAY_BATCH_SERVICE_ACCOUNT") or None,
        trainer_image=environ.get("YACHAY_TRAINER_IMAGE", "yachay-trainer:local"),
        api_base_url=environ.get("YACHAY_API_BASE_URL", "http://127.0.0.1:8700"),
        stripe_secret_key=environ.get("YACHAY_STRIPE_SECRET_KEY") or None,
        stripe_api_base=environ.get("YACHAY_STRIPE_API_BASE") or None,
        stripe_webhook_secrets=_split(environ.get("YACHAY_STRIPE_WEBHOOK_SECRETS", "")),
        checkout_backend=checkout_backend,
        checkout_success_url=environ.get(
            "YACHAY_CHECKOUT_SUCCESS_URL", "http://localhost:3000/billing?card=saved"
        ),
        checkout_cancel_url=environ.get(
            "YACHAY_CHECKOUT_CANCEL_URL", "http://localhost:3000/billing?card=cancelled"
        ),
        currency=environ.get("YACHAY_CURRENCY", "usd"),
        retention_days=int(environ.get("YACHAY_RETENTION_DAYS", 30)),
        webhook_target_url=environ.get(
            "YACHAY_WEBHOOK_TARGET_URL",
            environ.get("YACHAY_API_BASE_URL", "http://127.0.0.1:8700") + DELIVER_PATH,
        ),
        webhooks_allow_loopback=allow_loopback,
        secrets_key=environ.get("YACHAY_SECRETS_KEY", ""),
        trainer_report_url=environ.get(
            "YACHAY_TRAINER_REPORT_URL",
            environ.get("YACHAY_API_BASE_URL", "http://127.0.0.1:8700") + REPORT_PATH,
        ),
        trainer_report_audience=environ.get("YACHAY_TRAINER_REPORT_AUDIENCE", ""),
        counts_queue=environ.get(
            "YACHAY_COUNTS_QUEUE",
            f"projects/{project}/locations/{environ.get('YACHAY_REGION', 'us-central1')}"
            "/queues/token-counts",
        ),
        count_target_url=environ.get(
            "YACHAY_COUNT_TARGET_URL",
            environ.get("YACHAY_API_BASE_URL", "http://127.0.0.1:8700") + COUNT_PATH,
        ),
        count_inline_bytes=int(environ.get("YACHAY_COUNT_INLINE_BYTES", 8 << 20)),
        key_owner_check_s=float(environ.get("YACHAY_KEY_OWNER_CHECK_S", 60)),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings, read from os.environ on first use."""
    return load(os.environ)
