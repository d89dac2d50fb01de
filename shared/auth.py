"""Who is calling: Firebase ID tokens, verified with firebase-admin (the Auth adapter), or our
own API keys (`yk_...`, checked by shared.apikeys), both as `Authorization: Bearer <token>`.

We read the token's header and claims ourselves first, only to *classify* a bad token with its own
error code (expired, wrong project, unsigned, ...); the decision to accept a token is always
firebase-admin's: signature, claims, and revocation or disabled user (`check_revoked=True`).

An unsigned token (`alg: none`, what the Auth emulator issues) is accepted only when the Auth
emulator is configured, which `shared.config` refuses in production.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.errors import ApiError, Code

if TYPE_CHECKING:
    from shared.apikeys import KeyGrant
    from shared.routes import Route

CLOCK_SKEW_S = 60
_app_lock = threading.Lock()
_app: Any = None


@dataclass(frozen=True)
class Principal:
    uid: str
    email: str | None
    email_verified: bool
    key: KeyGrant | None = None  # set when the caller used an API key, not a session


def _b64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def classify(token: str, cfg: Settings, now: float | None = None) -> None:
    """Raises the specific ApiError for a token we can already tell is bad; else returns.

    This is not verification; a token that passes still goes through firebase-admin.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ApiError(
            Code.AUTH_MALFORMED,
            "The bearer token is not a JWT (three dot-separated parts). Send a Firebase ID token.",
        )
    try:
        header, claims = _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, UnicodeError, binascii.Error):
        raise ApiError(
            Code.AUTH_MALFORMED, "The bearer token could not be decoded. Send a Firebase ID token."
        ) from None
    if header.get("alg") == "none" and not cfg.auth_emulator_host:
        raise ApiError(
            Code.AUTH_UNSIGNED_TOKEN,
            "The token is unsigned (an Auth emulator token?). "
            "Sign in against the real Firebase Auth.",
        )
    expected_iss = f"https://securetoken.google.com/{cfg.project_id}"
    if claims.get("aud") != cfg.project_id or claims.get("iss") != expected_iss:
        raise ApiError(
            Code.AUTH_WRONG_AUDIENCE,
            f"The token was issued for another project "
            f"(aud {claims.get('aud')!r}); sign in to project {cfg.project_id!r}.",
        )
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise ApiError(Code.AUTH_MALFORMED, "The token has no expiry ('exp') claim.")
    if exp + CLOCK_SKEW_S < now:
        raise ApiError(
            Code.AUTH_EXPIRED,
            "The ID token has expired; refresh it (the Firebase SDK's getIdToken()) and retry.",
        )


def _firebase_app(cfg: Settings) -> Any:
    """The firebase-admin app, created once per process on first use (lazy: cold starts)."""
    global _app
    with _app_lock:
        if _app is None:
            import firebase_admin

            _app = firebase_admin.initialize_app(
                options={"projectId": cfg.project_id}, name="yachay-auth"
            )
        return _app


def authenticate(header_value: str | None, cfg: Settings) -> Principal:
    """Turns an Authorization header value into a Principal, or raises a 401/503 ApiError."""
    if not header_value or not header_value.strip():
        raise ApiError(Code.AUTH_MISSING, f"Send '{cfg.auth_header}: Bearer <Firebase ID token>'.")
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise ApiError(
            Code.AUTH_NOT_BEARER,
            f"Use the Bearer scheme: '{cfg.auth_header}: Bearer <Firebase ID token>'.",
        )
    token = token.strip()
    if not token:
        raise ApiError(Code.AUTH_MALFORMED, "The Bearer scheme is there but the token is empty.")
    from shared import apikeys

    if apikeys.is_api_key(token):
        uid, grant = apikeys.check(token)
        check_key_owner(uid, cfg)
        return Principal(uid=uid, email=None, email_verified=False, key=grant)
    classify(token, cfg)
    return _verify(token, cfg)


def authorize(route: Route, principal: Principal) -> None:
    """Whether this caller may call `route`: a session may call every route; an API key only
    routes open to keys (Route.key_scopes) and holding one of the scopes the route names.

    Raises:
        ApiError: session_required or insufficient_scope (403).
    """
    key = principal.key
    if key is None:
        return
    needed = route.key_scopes
    where = f"{route.method} {route.path}"
    if needed is None:
        raise ApiError(
            Code.SESSION_REQUIRED,
            f"{where} takes a signed-in session (a Firebase ID token), never an API key.",
        )
    if needed and not set(needed) & set(key.scopes):
        raise ApiError(
            Code.INSUFFICIENT_SCOPE,
            f"This API key lacks the scope {' or '.join(repr(s) for s in needed)} that {where} "
            "needs; mint a key with it (POST /v1/api-keys).",
        )


_owners_lock = threading.Lock()
_owners: dict[str, tuple[float, str | None]] = {}  # uid -> (checked at, refusal or None)


def check_key_owner(uid: str, cfg: Settings) -> None:
    """An API key acts for its Firebase user only while that user may sign in: a disabled or
    deleted user's keys stop working too. Firebase is asked at most once every
    cfg.key_owner_check_s seconds per user and instance (a minute in production), so a key stops
    within that long of its user being disabled, and stays as fast as a key lookup otherwise.

    Raises:
        ApiError: auth_user_disabled (401) for a disabled or deleted user; auth_unavailable
            (503) when Firebase cannot be asked.
    """
    from firebase_admin import auth, exceptions

    now = time.monotonic()
    with _owners_lock:
        cached = _owners.get(uid)
    if cached is None or now - cached[0] >= cfg.key_owner_check_s:
        refusal: str | None = None
        try:
            if auth.get_user(uid, app=_firebase_app(cfg)).disabled:
                refusal = "This API key's account is disabled; contact support."
        except auth.UserNotFoundError:
            refusal = "This API key's account no longer exists."
        except (exceptions.FirebaseError, ValueError):
            raise ApiError(
                Code.AUTH_UNAVAILABLE,
                "We could not check your API key's account just now; retry in a few seconds.",
            ) from None
        cached = (now, refusal)
        with _owners_lock:
            if len(_owners) > 10_000:  # bounded: an instance sees few users per minute
                _owners.clear()
            _owners[uid] = cached
    if cached[1] is not None:
        raise ApiError(Code.AUTH_USER_DISABLED, cached[1])


def _verify(token: str, cfg: Settings) -> Principal:
    from firebase_admin import auth, exceptions

    try:
        claims = auth.verify_id_token(
            token, app=_firebase_app(cfg), check_revoked=True, clock_skew_seconds=CLOCK_SKEW_S
        )
    except auth.ExpiredIdTokenError:
        raise ApiError(
            Code.AUTH_EXPIRED, "The ID token has expired; refresh it and retry."
        ) from None
    except auth.RevokedIdTokenError:
        raise ApiError(Code.AUTH_REVOKED, "This session was revoked; sign in again.") from None
    except auth.UserDisabledError:
        raise ApiError(
            Code.AUTH_USER_DISABLED, "This account is disabled; contact support."
        ) from None
    except auth.UserNotFoundError:
        raise ApiError(
            Code.AUTH_INVALID, "The token's user no longer exists; sign in again."
        ) from None
    except auth.CertificateFetchError:
        raise ApiError(
            Code.AUTH_UNAVAILABLE, "We could not check your token just now; retry in a few seconds."
        ) from None
    except (auth.InvalidIdTokenError, ValueError) as exc:
        raise ApiError(Code.AUTH_INVALID, f"The ID token is not valid: {exc}") from None
    except exceptions.FirebaseError as exc:
        # Revocation lookup failed (Auth unreachable): a retryable condition, not the user's fault.
        if isinstance(
            exc,
            exceptions.UnavailableError
            | exceptions.UnknownError
            | exceptions.DeadlineExceededError,
        ):
            raise ApiError(
                Code.AUTH_UNAVAILABLE,
                "We could not check your token just now; retry in a few seconds.",
            ) from None
        raise ApiError(Code.AUTH_INVALID, f"The ID token was refused: {exc}") from None
    return Principal(
        uid=claims["uid"],
        email=claims.get("email"),
        email_verified=bool(claims.get("email_verified", False)),
    )


# --- internal callers: Cloud Tasks and Cloud Scheduler -------------------------------------------

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CERTS_TTL_S = 3600.0
_certs_lock = threading.Lock()
_certs: tuple[float, str, dict[str, str]] | None = None  # (fetched at, url, kid -> PEM)


def _google_certs(url: str) -> dict[str, str]:
    """Google's OIDC signing certificates (kid -> PEM), fetched at most once an hour."""
    global _certs
    with _certs_lock:
        if _certs is None or _certs[1] != url or time.monotonic() - _certs[0] > CERTS_TTL_S:
            import requests

            resp = requests.get(url, timeout=10)
            resp.raise_for_status()
            _certs = (time.monotonic(), url, dict(resp.json()))
        return _certs[2]


def verify_internal_caller(header: str | None, cfg: Settings) -> None:
    """Internal routes answer only our own infrastructure: an OIDC token signed by Google for the
    tasks service account, with the worker's URL as audience (Cloud Tasks and Cloud Scheduler
    both send one). Checked here in code, besides ingress and IAM, so a mistake in either does
    not open the route. Locally there is no tasks service account (the Tasks emulator sends no
    token) and nothing to check; shared.config requires one in production.

    Raises:
        ApiError: 401 for a missing or malformed header, or a token that is not that caller's.
    """
    if cfg.tasks_service_account is None:
        return
    if not header:
        raise ApiError(Code.AUTH_MISSING, "Internal route: send Google's OIDC token.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(Code.AUTH_NOT_BEARER, "Internal route: send 'Authorization: Bearer ...'.")
    import google.auth.exceptions
    import google.auth.jwt

    try:
        claims = google.auth.jwt.decode(  # type: ignore[no-untyped-call]
            token.strip(),
            certs=_google_certs(cfg.oidc_certs_url),
            audience=cfg.task_target_url,
            clock_skew_in_seconds=CLOCK_SKEW_S,
        )
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise ApiError(
            Code.AUTH_INVALID, f"Internal route: the token is not valid ({exc})."
        ) from None
    if (
        claims.get("iss") not in GOOGLE_ISSUERS
        or claims.get("email") != cfg.tasks_service_account
        or claims.get("email_verified") is not True
    ):
        raise ApiError(Code.AUTH_INVALID, "Internal route: the token is not our tasks identity.")
