"""The route table: the single source of truth for the public API.

It drives three things, so they cannot drift apart:
- the local gateway (devstack/gateway.py), which sends each request to the function object that
  owns its path, exactly as API Gateway does in production;
- each function's own dispatch (`shared.http.serve`), which checks the method and path again;
- the API Gateway OpenAPI 2.0 config for Terraform (`shared.openapi`), and later the public spec.

A route's `function` names the deployed function: its code is `functions/<function>/main.py` and
its entry point is the attribute of the same name in that file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # a template: /v1/jobs/{job_id}
    function: str
    operation_id: str
    summary: str
    auth: bool = True
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[A-Za-z0-9_-]{1,128})", re.escape(self.path))
        return re.compile(f"^{regex}$")

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` fits this route's template, else None."""
        m = self.pattern.match(path)
        return m.groupdict() if m else None


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/healthz",
        "healthz",
        "getHealth",
        "Liveness; with ?ready=true also checks Firestore.",
        auth=False,
    ),
    Route(
        "GET",
        "/v1/models",
        "models",
        "listModels",
        "The model catalog, with each model's price, limits, LoRA defaults and availability.",
    ),
    Route(
        "GET",
        "/v1/me",
        "me",
        "getMe",
        "The caller's account: payment method, pause flags, notification preferences.",
    ),
    Route("PATCH", "/v1/me", "me", "updateMe", "Updates the caller's notification preferences."),
)


def functions() -> tuple[str, ...]:
    """Every deployed function name, in route-table order."""
    return tuple(dict.fromkeys(r.function for r in ROUTES))


def routes_of(function: str) -> tuple[Route, ...]:
    return tuple(r for r in ROUTES if r.function == function)


def paths() -> dict[str, tuple[Route, ...]]:
    """Routes grouped by path template, in table order."""
    grouped: dict[str, list[Route]] = {}
    for r in ROUTES:
        grouped.setdefault(r.path, []).append(r)
    return {p: tuple(rs) for p, rs in grouped.items()}


@dataclass(frozen=True)
class Resolution:
    """What the table says about one (method, path): the route, or why there is none."""

    route: Route | None
    params: dict[str, str]
    allowed_methods: tuple[str, ...]  # methods the path accepts; empty when the path is unknown


def resolve(method: str, path: str, table: tuple[Route, ...] = ROUTES) -> Resolution:
    allowed: list[str] = []
    for route in table:
        params = route.match(path)
        if params is None:
            continue
        allowed.append(route.method)
        if route.method == method:
            return Resolution(route, params, tuple(allowed))
    return Resolution(None, {}, tuple(allowed))
