"""API errors: every stable machine code and its HTTP status, in one place.

Handlers raise `ApiError(Code.X, "message a person can act on", param="field")`; `shared.http`
turns it into `{"error": {"code", "message", "param", "request_id"}}`. Codes are part of the
public `/v1` contract: add new ones, never rename or re-purpose one.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """Stable error codes. The value is the code; `status` is its HTTP status."""

    def __new__(cls, value: str, status: int) -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    status: int

    # Request shape
    INVALID_JSON = ("invalid_json", 400)
    INVALID_BODY = ("invalid_body", 400)
    UNKNOWN_FIELD = ("unknown_field", 400)
    MISSING_FIELD = ("missing_field", 400)
    INVALID_VALUE = ("invalid_value", 400)
    INVALID_QUERY = ("invalid_query", 400)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413)
    INVALID_SIGNATURE = ("invalid_signature", 400)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415)
    # Authentication: each failure its own code, all 401 (503 when we cannot check at all)
    AUTH_MISSING = ("auth_missing", 401)
    AUTH_NOT_BEARER = ("auth_not_bearer", 401)
    AUTH_MALFORMED = ("auth_malformed", 401)
    AUTH_EXPIRED = ("auth_expired", 401)
    AUTH_REVOKED = ("auth_revoked", 401)
    AUTH_WRONG_AUDIENCE = ("auth_wrong_audience", 401)
    AUTH_UNSIGNED_TOKEN = ("auth_unsigned_token", 401)
    AUTH_USER_DISABLED = ("auth_user_disabled", 401)
    AUTH_INVALID = ("auth_invalid", 401)
    AUTH_UNAVAILABLE = ("auth_unavailable", 503)
    API_KEY_REVOKED = ("api_key_revoked", 401)
    # Authorization: who may do what
    INSUFFICIENT_SCOPE = ("insufficient_scope", 403)
    SESSION_REQUIRED = ("session_required", 403)  # only a signed-in user, never an API key
    # Routing
    NOT_FOUND = ("not_found", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    # Resources and their states
    UPLOAD_MISSING = ("upload_missing", 409)
    DATASET_NOT_READY = ("dataset_not_ready", 409)
    MODEL_UNAVAILABLE = ("model_unavailable", 409)
    JOB_ALREADY_ENDED = ("job_already_ended", 409)
    IDEMPOTENCY_CONFLICT = ("idempotency_conflict", 409)
    PAYMENT_METHOD_REQUIRED = ("payment_method_required", 402)
    ACCOUNT_PAUSED = ("account_paused", 403)
    SPEND_LIMIT_REACHED = ("spend_limit_reached", 403)
    TOO_MANY_ACTIVE_JOBS = ("too_many_active_jobs", 429)
    RATE_LIMITED = ("rate_limited", 429)
    DATASET_TOO_LARGE = ("dataset_too_large", 400)
    TOO_MANY_DATASETS = ("too_many_datasets", 409)
    DATASET_STORAGE_FULL = ("dataset_storage_full", 413)
    TOO_MANY_API_KEYS = ("too_many_api_keys", 409)
    TOO_MANY_WEBHOOK_ENDPOINTS = ("too_many_webhook_endpoints", 409)
    NOTHING_TO_RETRY = ("nothing_to_retry", 409)
    CARD_UNCHANGED = ("card_unchanged", 409)  # retry-payment with the card that refused it
    JOB_NOT_COMPLETED = ("job_not_completed", 409)
    PAYMENT_REQUIRED = ("payment_required", 402)
    PAYMENT_DECLINED = ("payment_declined", 402)
    ARTIFACTS_EXPIRED = ("artifacts_expired", 410)
    INVALID_LINK = ("invalid_link", 400)  # a link of ours that we did not sign
    LINK_EXPIRED = ("link_expired", 410)
    # Server side
    SERVICE_UNAVAILABLE = ("service_unavailable", 503)
    NOT_READY = ("not_ready", 503)
    INTERNAL = ("internal_error", 500)


class ApiError(Exception):
    """An error the API answers with; the only exception type handlers raise on purpose."""

    def __init__(
        self,
        code: Code,
        message: str,
        param: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s  # sent as Retry-After when set

    @property
    def status(self) -> int:
        return self.code.status

    def body(self, request_id: str) -> dict[str, object]:
        return {
            "error": {
                "code": self.code.value,
                "message": self.message,
                "param": self.param,
                "request_id": request_id,
            }
        }


class Contended(ApiError):
    """A state write lost every attempt to concurrent writers. Nothing was stored, so the
    client may simply retry (with the same Idempotency-Key where it sent one); event handlers
    let it propagate so their trigger retries."""

    def __init__(self, what: str) -> None:
        super().__init__(
            Code.SERVICE_UNAVAILABLE,
            f"The {what} is being changed by another request right now; nothing was changed. "
            "Retry in a second.",
            retry_after_s=1,
        )
