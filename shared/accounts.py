"""Accounts: the rules behind /v1/me and the monthly spend limit (typed core; no Flask)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import store
from shared.config import Settings
from shared.records import NOTIFICATION_EVENTS, Pause, UserRecord, month_of

PAUSE_SPEND_LIMIT = "spend_limit_reached"


def spent_this_month(user: UserRecord, now: datetime | None = None) -> int:
    """Cents charged to the user in the current calendar month (UTC): the account's total, kept
    in the same commit as each ledger entry (no read of the user's whole history)."""
    return user.spent_in(month_of(now or store.now()))


def pauses(user: UserRecord, spent: int) -> dict[str, Pause]:
    """The stored pause flags plus the computed one for a reached monthly limit."""
    out = dict(user.pauses)
    limit = user.monthly_spend_limit_cents
    if limit is not None and spent >= limit:
        out[PAUSE_SPEND_LIMIT] = Pause(
            reason=f"You reached your monthly spend limit ({spent} of {limit} cents); raise it "
            "(PATCH /v1/me monthly_spend_limit_cents) or wait for next month.",
            since=store.now(),
        )
    return out


def account_view(user: UserRecord, spent: int, portal_url: str | None = None) -> dict[str, Any]:
    """The public JSON shape of an account."""
    pm = user.payment_method
    flags = pauses(user, spent)
    return {
        "object": "account",
        "uid": user.uid,
        "email": user.email,
        "created_at": user.created_at.isoformat(),
        "has_payment_method": pm is not None,
        "payment_method": None if pm is None else {"brand": pm.brand, "last4": pm.last4},
        "submissions_paused": bool(flags),
        "pauses": [
            {"code": code, "reason": p.reason, "since": p.since.isoformat()}
            for code, p in sorted(flags.items())
        ],
        "notifications": {event: user.notifications[event] for event in NOTIFICATION_EVENTS},
        "monthly_spend_limit_cents": user.monthly_spend_limit_cents,
        "spent_this_month_cents": spent,
        "portal_url": portal_url,
    }


@dataclass(frozen=True)
class AccountUpdate:
    notifications: dict[str, bool]
    set_spend_limit: bool  # whether the body named monthly_spend_limit_cents
    monthly_spend_limit_cents: int | None  # None: no limit


def parse_update(body: dict[str, Any]) -> AccountUpdate:
    """The change a PATCH /v1/me body (already checked against schemas.UpdateAccount) asks for."""
    return AccountUpdate(
        dict(body.get("notifications") or {}),
        "monthly_spend_limit_cents" in body,
        body.get("monthly_spend_limit_cents"),
    )


def _portal(user: UserRecord, cfg: Settings) -> str | None:
    """Our signed link to the billing portal (shared.links.portal_link): no Stripe call."""
    if not user.stripe_customer_id:
        return None
    from shared import links

    return links.portal_link(user.uid, cfg)


def get_account(
    uid: str, email: str | None, cfg: Settings, with_portal: bool = True
) -> dict[str, Any]:
    """GET /v1/me. `with_portal` is False for an API key: a billing-portal link can change the
    card and cancel things, far more than the key's billing:read (portal_url is then null)."""
    user = store.get_or_create_user(uid, email)
    portal = _portal(user, cfg) if with_portal else None
    return account_view(user, spent_this_month(user), portal)


def update_account(
    uid: str, email: str | None, body: dict[str, Any], cfg: Settings
) -> dict[str, Any]:
    update = parse_update(body)
    if update.set_spend_limit:
        user = store.update_account(
            uid, email, update.notifications, update.monthly_spend_limit_cents
        )
    else:
        user = store.update_account(uid, email, update.notifications)
    return account_view(user, spent_this_month(user), _portal(user, cfg))
