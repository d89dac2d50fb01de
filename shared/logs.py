"""Structured JSON logs, one object per line on stdout, as Cloud Logging reads them.

Every line written while a request is handled carries that request's id (a context variable set by
`shared.http`), so one request's lines can be found together in Cloud Logging.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def log(severity: str, message: str, **fields: Any) -> None:
    """Writes one JSON log line. `severity` is a Cloud Logging severity (INFO, WARNING, ERROR)."""
    entry: dict[str, Any] = {
        "severity": severity,
        "message": message,
        "time": datetime.now(UTC).isoformat(),
    }
    request_id = request_id_var.get()
    if request_id:
        entry["request_id"] = request_id
    entry.update(fields)
    sys.stdout.write(json.dumps(entry, default=str) + "\n")
    sys.stdout.flush()


def info(message: str, **fields: Any) -> None:
    log("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("WARNING", message, **fields)


def error(message: str, exc: BaseException | None = None, **fields: Any) -> None:
    if exc is not None:
        fields["stack_trace"] = "".join(traceback.format_exception(exc))
    log("ERROR", message, **fields)


def each(
    items: Iterable[T], key: Callable[[T], str], act: Callable[[T], str | None], step: str
) -> list[str]:
    """The sweeps' per-item loop: `act` on each item on its own; an item that fails is logged
    with its key and reported as `"<key>: error"` (the next sweep retries it), never stopping
    the rest. Returns `"<key>: <what act did>"` for each item that did something."""
    outcomes = []
    for item in items:
        try:
            done = act(item)
        except Exception as exc:
            warning(
                "sweep item failed; the next sweep retries",
                step=step,
                id=key(item),
                error=repr(exc),
            )
            outcomes.append(f"{key(item)}: error")
            continue
        if done is not None:
            outcomes.append(f"{key(item)}: {done}")
    return outcomes
