"""Accounts: the rules behind /v1/me (typed core; no Flask)."""

from __future__ import annotations

from typing import Any

from shared import store
from shared.errors import ApiError, Code
from shared.store import NOTIFICATION_EVENTS, UserRecord

PATCHABLE = ("notifications",)


def account_view(user: UserRecord, portal_url: str | None = None) -> dict[str, Any]:
    """The public JSON shape of an account."""
    pm = user.payment_method
    return {
        "object": "account",
        "uid": user.uid,
        "email": user.email,
        "created_at": user.created_at.isoformat(),
        "has_payment_method": pm is not None,
        "payment_method": None if pm is None else {"brand": pm.brand, "last4": pm.last4},
        "submissions_paused": bool(user.pauses),
        "pauses": [
            {"code": code, "reason": p.reason, "since": p.since.isoformat()}
            for code, p in sorted(user.pauses.items())
        ],
        "notifications": {event: user.notifications[event] for event in NOTIFICATION_EVENTS},
        "portal_url": portal_url,
    }


def parse_update(body: dict[str, Any]) -> dict[str, bool]:
    """Validates a PATCH /v1/me body; returns the notification changes it asks for.

    Raises:
        ApiError: an unknown field (named in `param`), a wrong type, or nothing to change.
    """
    for key in body:
        if key not in PATCHABLE:
            raise ApiError(
                Code.UNKNOWN_FIELD,
                f"'{key}' cannot be changed here; the fields you "
                f"can change are: {', '.join(PATCHABLE)}.",
                param=key,
            )
    if "notifications" not in body:
        raise ApiError(
            Code.MISSING_FIELD, "Nothing to change: send 'notifications'.", param="notifications"
        )
    prefs = body["notifications"]
    if not isinstance(prefs, dict) or not prefs:
        raise ApiError(
            Code.INVALID_VALUE,
            "'notifications' must be a non-empty object such as {\"job_failed\": true}.",
            param="notifications",
        )
    changes: dict[str, bool] = {}
    for event, value in prefs.items():
        param = f"notifications.{event}"
        if event not in NOTIFICATION_EVENTS:
            raise ApiError(
                Code.UNKNOWN_FIELD,
                f"Unknown notification '{event}'; known ones: {', '.join(NOTIFICATION_EVENTS)}.",
                param=param,
            )
        if not isinstance(value, bool):
            raise ApiError(Code.INVALID_VALUE, f"'{param}' must be true or false.", param=param)
        changes[event] = value
    return changes


def get_account(uid: str, email: str | None) -> dict[str, Any]:
    return account_view(store.get_or_create_user(uid, email))


def update_account(uid: str, email: str | None, body: dict[str, Any]) -> dict[str, Any]:
    changes = parse_update(body)
    return account_view(store.update_notifications(uid, email, changes))
