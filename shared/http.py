"""The HTTP edge shared by every function: routing, CORS, auth, JSON errors, request logs.

A function file is a handful of lines:

    def get_me(req: ApiRequest) -> Reply: ...
    me = serve("me", {"getMe": get_me, "updateMe": update_me})

`serve` returns the Flask view that functions-framework (and the local gateway) calls. All error
mapping happens here, in one place: an `ApiError` becomes its JSON error, anything else a logged
`internal_error` with the request id, never a stack trace in the response.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flask

from shared import logs, payments
from shared.auth import Principal, authenticate, authorize, verify_internal_caller
from shared.config import Settings, settings
from shared.errors import ApiError, Code
from shared.routes import Route, resolve, routes_of
from shared.schemas import Operation, checked_body, checked_query, operation

MAX_BODY_BYTES = 1 << 20
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.-]{8,64}$")
_ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id"


@dataclass
class Reply:
    body: Mapping[str, Any] | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiRequest:
    """What a handler sees of a request: already routed and authenticated."""

    route: Route
    params: dict[str, str]
    principal: Principal | None
    request_id: str
    settings: Settings
    _flask: flask.Request
    # The body and query string, checked against the operation's schemas (shared.schemas)
    # before the handler runs; filled by `serve`.
    body: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        assert self.principal is not None, "route is not authenticated"
        return self.principal.uid

    @property
    def email(self) -> str | None:
        """The caller's email when Firebase says it is verified, else None: we never store or
        write to an address its owner has not proven."""
        p = self.principal
        return p.email if p is not None and p.email_verified else None

    @property
    def query(self) -> Mapping[str, str]:
        return self._flask.args

    def header(self, name: str) -> str | None:
        return self._flask.headers.get(name)

    def raw_body(self) -> bytes:
        """The body exactly as sent (signatures are computed over these bytes)."""
        req = self._flask
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise ApiError(
                Code.PAYLOAD_TOO_LARGE, f"The body may be at most {MAX_BODY_BYTES} bytes."
            )
        return req.get_data(cache=True)

    def page(self) -> tuple[int, str | None]:
        """`limit` (default 20) and `after` (a cursor we gave out) from the checked query."""
        cursor = self.args.get("after") or None
        if cursor is not None:
            from shared.store import decode_cursor

            try:
                decode_cursor(cursor)
            except ValueError:
                raise ApiError(
                    Code.INVALID_QUERY,
                    "'after' is not a cursor we gave out; pass "
                    "the 'next_cursor' of the previous page.",
                    param="after",
                ) from None
        return int(self.args.get("limit", 20)), cursor

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or an ApiError a person can act on."""
        req = self._flask
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise ApiError(
                Code.PAYLOAD_TOO_LARGE, f"The body may be at most {MAX_BODY_BYTES} bytes."
            )
        raw = req.get_data(cache=True)
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(
                Code.PAYLOAD_TOO_LARGE, f"The body may be at most {MAX_BODY_BYTES} bytes."
            )
        if not raw.strip():
            raise ApiError(Code.INVALID_JSON, "The request needs a JSON object body.")
        if req.mimetype != "application/json":
            raise ApiError(
                Code.UNSUPPORTED_MEDIA_TYPE,
                "Send the body as JSON with the header 'Content-Type: application/json'.",
            )
        try:
            body = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise ApiError(Code.INVALID_JSON, "The body is nested too deeply.") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(Code.INVALID_JSON, f"The body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise ApiError(Code.INVALID_BODY, "The body must be a JSON object ({...}).")
        try:  # JSON may spell a lone surrogate (\ud800), which is not text: nothing can store it
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                Code.INVALID_JSON, "The body holds a lone UTF-16 surrogate (\\ud800-\\udfff)."
            ) from None
        except RecursionError:
            raise ApiError(Code.INVALID_JSON, "The body is nested too deeply.") from None
        return body


def list_reply(data: list[Any], next_cursor: str | None) -> Reply:
    """One page of a list endpoint, in the shape every list shares."""
    return Reply(
        {
            "object": "list",
            "data": data,
            "has_more": next_cursor is not None,
            "next_cursor": next_cursor,
        }
    )


Handler = Callable[[ApiRequest], Reply]
View = Callable[[flask.Request], flask.Response]


def serve(function: str, handlers: Mapping[str, Handler]) -> View:
    """Builds the entry point of one deployed function from its operation handlers.

    Raises:
        RuntimeError: at import time, when `handlers` does not cover exactly the operations the
            route table gives this function.
    """
    routes = routes_of(function)
    expected = {r.operation_id for r in routes}
    if set(handlers) != expected:
        raise RuntimeError(f"{function}: handlers {sorted(handlers)} != routes {sorted(expected)}")

    def view(request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = logs.request_id_var.set(request_id)
        cfg = settings()
        principal: Principal | None = None
        code: str | None = None
        try:
            try:
                if request.method == "OPTIONS":
                    response = _preflight(request, routes, cfg)
                else:
                    resolution = resolve(request.method, request.path, routes)
                    route = resolution.route
                    if route is None:
                        _raise_unrouted(request, resolution.allowed_methods)
                    assert route is not None
                    if route.auth:
                        principal = authenticate(request.headers.get(cfg.auth_header), cfg)
                        authorize(route, principal)
                    elif route.internal and not route.trainer:  # a trainer: its job token
                        verify_internal_caller(request.headers.get("Authorization"), cfg)
                    if route.per_minute is not None:
                        _rate_limit(route, principal, request)
                    api_request = ApiRequest(
                        route, resolution.params, principal, request_id, cfg, request
                    )
                    _check_request(api_request, operation(route.operation_id))
                    if route.internal:
                        reply = handlers[route.operation_id](api_request)
                    else:  # a user waits: Stripe gets one short try (payments)
                        with payments.on_request_path():
                            reply = handlers[route.operation_id](api_request)
                    response = _json_response(reply.body, reply.status, reply.headers)
                    if route.sunset is not None:
                        _mark_deprecated(response, route.sunset)
            except ApiError as exc:
                code = exc.code.value
                headers = {"Allow": exc.allow} if isinstance(exc, _MethodNotAllowed) else {}
                if exc.retry_after_s is not None:
                    headers["Retry-After"] = str(exc.retry_after_s)
                response = _json_response(exc.body(request_id), exc.status, headers)
            except Exception as exc:  # the one place an unexpected error becomes a response
                headers = {}
                if payments.unavailable(exc):  # Stripe did not answer within its short try
                    code = Code.SERVICE_UNAVAILABLE.value
                    logs.warning("Stripe did not answer in time", path=request.path)
                    err = ApiError(
                        Code.SERVICE_UNAVAILABLE,
                        "Our payment provider did not answer in time; nothing was charged. "
                        "Retry shortly (with the same Idempotency-Key, where you sent one).",
                        retry_after_s=payments.STRIPE_RETRY_AFTER_S,
                    )
                    headers["Retry-After"] = str(payments.STRIPE_RETRY_AFTER_S)
                else:
                    code = Code.INTERNAL.value
                    logs.error("unhandled error", exc, function=function, path=request.path)
                    err = ApiError(
                        Code.INTERNAL,
                        "Something went wrong on our side; retry later, "
                        "and quote the request id if it persists.",
                    )
                response = _json_response(err.body(request_id), err.status, headers)
            response.headers["X-Request-Id"] = request_id
            _grant_cors(request, response, cfg)
            logs.info(
                "request",
                function=function,
                method=request.method,
                path=request.path,
                status=response.status_code,
                code=code,
                uid=principal.uid if principal else None,
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return response
        finally:
            logs.request_id_var.reset(token)

    view.__name__ = function
    return view


def _mark_deprecated(response: flask.Response, sunset: str) -> None:
    """RFC 8594: the date a deprecated route stops answering, as an HTTP date."""
    from datetime import UTC, datetime
    from email.utils import format_datetime

    day = datetime.fromisoformat(sunset).replace(tzinfo=UTC)
    response.headers["Sunset"] = format_datetime(day, usegmt=True)
    response.headers["Deprecation"] = "true"


def _check_request(req: ApiRequest, op: Operation) -> None:
    """Fills req.body and req.args from the request, checked against the operation's schemas.

    Raises:
        ApiError: the schema's complaint, with its code and the field at fault in `param`.
    """
    req.args = checked_query(op.query, req.query)
    if op.body is not None:
        req.body = checked_body(op.body, req.json_object())


class _MethodNotAllowed(ApiError):
    def __init__(self, method: str, path: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            Code.METHOD_NOT_ALLOWED,
            f"{method} is not allowed on {path}; use {', '.join(allowed)}.",
        )
        self.allow = ", ".join(allowed)


def _rate_limit(route: Route, principal: Principal | None, request: flask.Request) -> None:
    """At most route.per_minute requests per caller and minute (fixed windows).

    Raises:
        ApiError: rate_limited (429) with Retry-After: the seconds to the next window.
    """
    from shared import store

    assert route.per_minute is not None
    caller = principal.uid if principal else f"ip:{request.remote_addr}"
    now = store.now()
    window_start = now.replace(second=0, microsecond=0)
    if store.count_request(f"{route.operation_id}\n{caller}", window_start, 60) < route.per_minute:
        return
    retry_after = max(1, 60 - now.second)
    raise ApiError(
        Code.RATE_LIMITED,
        f"Too many requests: {route.method} {route.path} takes at most {route.per_minute} a "
        f"minute; retry in {retry_after} s.",
        retry_after_s=retry_after,
    )


def _raise_unrouted(request: flask.Request, allowed: tuple[str, ...]) -> None:
    if allowed:
        raise _MethodNotAllowed(request.method, request.path, allowed)
    raise ApiError(Code.NOT_FOUND, f"No such endpoint: {request.method} {request.path}.")


def not_found_response(request: flask.Request) -> flask.Response:
    """The answer for a path no function owns (used by the local gateway; API Gateway in prod)."""
    request_id = uuid.uuid4().hex
    err = ApiError(Code.NOT_FOUND, f"No such endpoint: {request.method} {request.path}.")
    response = _json_response(err.body(request_id), err.status, {"X-Request-Id": request_id})
    _grant_cors(request, response, settings())
    return response


def _preflight(request: flask.Request, routes: tuple[Route, ...], cfg: Settings) -> flask.Response:
    allowed = resolve("OPTIONS", request.path, routes).allowed_methods
    if not allowed:
        raise ApiError(Code.NOT_FOUND, f"No such endpoint: {request.path}.")
    response = flask.Response(status=204)
    if request.headers.get("Origin") in cfg.cors_origins:
        response.headers["Access-Control-Allow-Methods"] = ", ".join((*allowed, "OPTIONS"))
        response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "3600"
    return response


def _grant_cors(request: flask.Request, response: flask.Response, cfg: Settings) -> None:
    """Grants CORS to allow-listed dashboard origins only; others get no grant at all."""
    response.headers["Vary"] = "Origin"
    origin = request.headers.get("Origin")
    if origin and origin in cfg.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"


def _json_response(
    body: Mapping[str, Any] | None, status: int, headers: dict[str, str]
) -> flask.Response:
    data = "" if body is None else json.dumps(body, separators=(",", ":"), default=str)
    response = flask.Response(data, status=status, mimetype="application/json")
    for name, value in headers.items():
        response.headers[name] = value
    return response
