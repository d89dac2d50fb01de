"""Helpers shared by the tests."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

PROJECT_ID = "demo-yachay"


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def unsigned_token(**overrides: Any) -> str:
    """An `alg: none` Firebase-shaped ID token, as the Auth emulator issues; claims overridable."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": f"https://securetoken.google.com/{PROJECT_ID}",
        "aud": PROJECT_ID,
        "auth_time": now,
        "user_id": "user-1",
        "sub": "user-1",
        "iat": now,
        "exp": now + 3600,
        "email": "user-1@example.com",
        "firebase": {"identities": {}, "sign_in_provider": "password"},
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
