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

VERSION = "0.1.0"

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

    @property
    def is_local(self) -> bool:
        return self.env == "local"


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
    project = environ.get("GOOGLE_CLOUD_PROJECT", "demo-yachay")
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
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings, read from os.environ on first use."""
    return load(os.environ)
