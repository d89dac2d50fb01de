"""API keys (typed core): minting, listing, revoking, and checking a key on a request.

A key is `yk_live_` or `yk_test_` (live only when the deployment charges real cards) followed by
32 random bytes, URL-safe base64. It is shown once, when minted; we keep only its sha256, which
is also the key's document id, so checking a key is one Firestore read, and nothing is cached:
a revoked key is refused by the very next request. SHA-256 without a salt or a slow hash is
enough here because the secret is 256 random bits, not a password someone chose.

Only a signed-in user (a Firebase session) can mint, list or revoke keys (`Route.key_scopes` is
None for those routes); a key acts for its user within its scopes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import store
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.records import ApiKeyRecord

MARK = "yk_"
MAX_LIVE_KEYS = 20
PREFIX_CHARS = 14  # "yk_test_" and the first 6 characters of the secret
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often


@dataclass(frozen=True)
class KeyGrant:
    """What a request made with an API key may do."""

    key_id: str
    scopes: tuple[str, ...]


def is_api_key(token: str) -> bool:
    return token.startswith(MARK)


def _mode(cfg: Settings) -> str:
    key = cfg.stripe_secret_key or ""
    return "live" if key.startswith(("sk_live_", "rk_live_")) else "test"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def view(key: ApiKeyRecord) -> dict[str, Any]:
    """The public JSON shape of a key (never its secret)."""
    return {
        "object": "api_key",
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
    }


def mint(uid: str, name: str, scopes: list[str], cfg: Settings) -> dict[str, Any]:
    """POST /v1/api-keys: a new key, its secret in the answer and nowhere else.

    Raises:
        ApiError: too_many_api_keys (409) at MAX_LIVE_KEYS live keys.
    """
    secret = f"{MARK}{_mode(cfg)}_{secrets.token_urlsafe(32)}"
    key = ApiKeyRecord(
        id=store.new_id("key-"),
        uid=uid,
        name=name.strip(),
        prefix=secret[:PREFIX_CHARS],
        scopes=tuple(dict.fromkeys(scopes)),
        secret_sha256=digest(secret),
        created_at=store.now(),
    )
    try:
        store.new_api_key(key, MAX_LIVE_KEYS)
    except store.Conflict:
        raise ApiError(
            Code.TOO_MANY_API_KEYS,
            f"You have {MAX_LIVE_KEYS} live API keys, the most an account may have; revoke one "
            "(DELETE /v1/api-keys/{id}) first.",
        ) from None
    return {**view(key), "secret": secret}


def listed(uid: str) -> list[dict[str, Any]]:
    return [view(k) for k in store.live_api_keys(uid)]


def revoke(uid: str, key_id: str) -> None:
    """DELETE /v1/api-keys/{id}.

    Raises:
        ApiError: not_found for a key that is not the caller's live key.
    """
    if not store.revoke_api_key(uid, key_id):
        raise ApiError(Code.NOT_FOUND, f"No live API key '{key_id}'.", param="key_id")


def check(secret: str, now: datetime | None = None) -> tuple[str, KeyGrant]:
    """The user a key acts for and what it may do; one read, plus a write at most once a
    minute to record its use.

    Raises:
        ApiError: auth_invalid for a key we never issued, api_key_revoked for a revoked one.
    """
    found = store.get_api_key(digest(secret))
    if found is None:
        raise ApiError(Code.AUTH_INVALID, "This API key is not valid; check it, or mint a new one.")
    key, written_at = found
    if key.revoked_at is not None:
        raise ApiError(
            Code.API_KEY_REVOKED,
            f"API key {key.prefix}... was revoked on {key.revoked_at.date().isoformat()}; "
            "use another key.",
        )
    t = now or store.now()
    if key.last_used_at is None or t - key.last_used_at >= TOUCH_EVERY:
        store.touch_api_key(key.secret_sha256, t, written_at)
    return key.uid, KeyGrant(key.id, key.scopes)
