"""Idempotency-Key: read, checked, hashed and compared here, for every request that takes one.

A key is scoped to its user (hashed with the uid, so two users' keys never meet) and bound to
the request it was first used with (the hash of its body and target): the same key with the same
request replays the first result; with another request it is a 409.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.errors import ApiError, Code

HEADER = "Idempotency-Key"
MAX_LENGTH = 255


def key_id(uid: str, key: str | None, *, required: bool, why: str = "") -> str | None:
    """The stored id of the user's key (None when none was sent and none is required).

    Raises:
        ApiError: missing_field when required and absent; invalid_value when too long.
    """
    if key is None or key == "":
        if not required:
            return None
        raise ApiError(
            Code.MISSING_FIELD,
            f"Send an {HEADER} header (1-{MAX_LENGTH} characters){why}.",
            param=HEADER,
        )
    if len(key) > MAX_LENGTH:
        raise ApiError(
            Code.INVALID_VALUE,
            f"The {HEADER} header must be 1 to {MAX_LENGTH} characters.",
            param=HEADER,
        )
    return hashlib.sha256(f"{uid}\n{key}".encode()).hexdigest()


def request_hash(target: str, body: dict[str, Any]) -> str:
    """What a key is bound to: the operation's target and its body."""
    canonical = json.dumps({"target": target, "body": body}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_same_request(first_hash: str | None, this_hash: str) -> None:
    """Raises idempotency_conflict when a key comes back with a different request."""
    if first_hash != this_hash:
        raise ApiError(
            Code.IDEMPOTENCY_CONFLICT,
            f"This {HEADER} was used with a different request; use a new key.",
            param=HEADER,
        )
