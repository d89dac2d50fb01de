"""The scheduled sweep: Cloud Scheduler calls it every 10 minutes (POST
/internal/tasks/relaunch-stale); locally the gateway's loop calls the same `run`.

One list of steps, each run on its own (one that fails outright, Firestore unreachable say, is
logged and reported, and the others still run), each item of each step handled on its own
(`shared.logs.each`), and each document parsed on its own (a malformed one is logged with its
id and skipped: `shared.store.Found`). The answer says what each step did, what it skipped and
which steps failed, and is a 200 either way: the next sweep comes in 10 minutes, so nothing is
gained by Cloud Scheduler's retries, and an item that failed is retried by that next sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared import datasets, holds, lifecycle, logs, store
from shared.config import Settings

Step = Callable[[Settings, datetime], store.Found[str]]

STEPS: dict[str, Step] = {
    "relaunched": lambda cfg, now: lifecycle.relaunch_stale(cfg, now),
    "reconciled": lambda cfg, now: lifecycle.reconcile(cfg, now),
    "holds": lambda cfg, now: holds.renew_holds(cfg, now),
    "orphan_holds": lambda cfg, now: holds.release_orphan_holds(cfg, now),
    "abandoned_uploads": lambda cfg, now: datasets.sweep_abandoned(cfg, now),
}


def run(
    cfg: Settings, now: datetime | None = None, steps: dict[str, Step] | None = None
) -> dict[str, Any]:
    """Runs every step; returns {step: [what it did]} plus `skipped` (documents that do not
    parse, by id) and `failed_steps` (steps that raised, with the error)."""
    t = now or store.now()
    report: dict[str, Any] = {}
    skipped: set[str] = set()
    failed: list[str] = []
    for name, step in (steps or STEPS).items():
        try:
            found = step(cfg, t)
        except Exception as exc:  # the next sweep runs it again
            logs.warning("sweep step failed", step=name, error=repr(exc))
            report[name] = []
            failed.append(f"{name}: {type(exc).__name__}")
            continue
        report[name] = found.items
        skipped.update(found.skipped)
    report["skipped"] = sorted(skipped)
    report["failed_steps"] = failed
    return report
