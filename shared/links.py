"""Signed links of ours: a URL that does one thing for one user, for a while, followed in a
browser without an Authorization header (the billing-portal link of GET /v1/me); and, the same
way, a trainer's token, good for reporting on its own job only.

A link carries `<uid>.<expiry>.<signature>` (the uid base64url-encoded), HMAC-SHA256 over the
purpose, uid and expiry. The key is derived from the Stripe secret key with a label of its own,
so it needs no new secret and only the functions that hold the Stripe key (the ones that make
and follow these links) can sign; rotating the Stripe key voids every link, which live an hour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from shared.config import Settings
from shared.errors import ApiError, Code

LIFETIME = timedelta(hours=1)
_LABEL = b"yachay signed links v1"


def _key(cfg: Settings) -> bytes:
    if not cfg.stripe_secret_key:
        raise RuntimeError("signed links need YACHAY_STRIPE_SECRET_KEY")
    return hmac.new(cfg.stripe_secret_key.encode(), _LABEL, hashlib.sha256).digest()


def _signature(purpose: str, uid: str, expires: int, cfg: Settings) -> str:
    mac = hmac.new(_key(cfg), f"{purpose}\n{uid}\n{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def sign(
    purpose: str,
    uid: str,
    cfg: Settings,
    now: datetime | None = None,
    lifetime: timedelta = LIFETIME,
) -> str:
    """A token that `verify(purpose, ...)` accepts for `lifetime` from `now`. `uid` is whom
    (or what: a job id) it is for."""
    expires = int(((now or datetime.now(UTC)) + lifetime).timestamp())
    who = base64.urlsafe_b64encode(uid.encode()).decode().rstrip("=")
    return f"{who}.{expires}.{_signature(purpose, uid, expires, cfg)}"


def verify(purpose: str, token: str, cfg: Settings, now: datetime | None = None) -> str:
    """The uid the token was signed for.

    Raises:
        ApiError: invalid_link (400) for anything we did not sign for this purpose;
            link_expired (410) for one of ours past its hour.
    """
    forged = ApiError(
        Code.INVALID_LINK, "This link is not one of ours or was altered.", param="token"
    )
    try:
        who, expires_text, signature = token.split(".")
        uid = base64.urlsafe_b64decode(who + "=" * (-len(who) % 4)).decode()
        expires = int(expires_text)
    except (ValueError, UnicodeDecodeError):
        raise forged from None
    if not hmac.compare_digest(signature, _signature(purpose, uid, expires, cfg)):
        raise forged
    if (now or datetime.now(UTC)).timestamp() >= expires:
        raise ApiError(
            Code.LINK_EXPIRED,
            "This link has expired: open the billing page again (GET /v1/me gives a new link).",
            param="token",
        )
    return uid


PORTAL_LINK = "billing-portal"  # the purpose the billing-portal link is signed for


def portal_link(uid: str, cfg: Settings) -> str:
    """GET /v1/me's portal_url: a link of ours, signed for this user for an hour. Following it
    (shared.card_saving.open_portal) makes the Stripe billing-portal session then, so reading the
    account makes none."""
    from urllib.parse import quote

    from shared.routes import path_of

    token = quote(sign(PORTAL_LINK, uid, cfg))
    return f"{cfg.api_base_url}{path_of('openBillingPortal')}?token={token}"
