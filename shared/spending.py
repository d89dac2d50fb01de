"""What a user has spent (GET /v1/billing/summary), read from the ledger: a module of its own,
so the billing function's cold start loads the store and the records, not the charging code
(Stripe, Storage, card holds) it never uses to answer.
"""

from __future__ import annotations

from typing import Any

from shared import store
from shared.config import Settings
from shared.records import ChargeKind, ChargeStatus


def summary(uid: str, cfg: Settings) -> dict[str, Any]:
    """GET /v1/billing/summary."""
    entries = store.ledger_entries(uid)
    months: dict[str, dict[str, int]] = {}
    for e in entries:
        m = months.setdefault(
            e.month,
            {"total_cents": 0, "tuning_cents": 0, "storage_extension_cents": 0, "charges": 0},
        )
        m["total_cents"] += e.amount_cents
        m[f"{e.kind.value}_cents"] += e.amount_cents
        m["charges"] += 1
    failed = store.charges_of(uid, ChargeStatus.FAILED)

    def total(kind: ChargeKind) -> int:
        return sum(e.amount_cents for e in entries if e.kind == kind)

    return {
        "object": "billing_summary",
        "currency": cfg.currency,
        "lifetime_cents": sum(e.amount_cents for e in entries),
        "tuning_cents": total(ChargeKind.TUNING),
        "storage_extension_cents": total(ChargeKind.STORAGE_EXTENSION),
        "counts": {kind.value: sum(e.kind == kind for e in entries) for kind in ChargeKind},
        "outstanding_cents": sum(c.amount_cents for c in failed),
        "outstanding_charges": [
            {"job_id": c.job_id, "amount_cents": c.amount_cents, "reason": c.failure_message}
            for c in failed
        ],
        "months": [{"month": k, **v} for k, v in sorted(months.items(), reverse=True)],
    }
