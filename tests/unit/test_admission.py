"""The admission rules (shared.admission.RULES): estimate and submit refuse by the same list."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.admission import Applicant, refusals
from shared.catalog import catalog
from shared.errors import Code
from shared.records import Pause, PaymentMethod, UserRecord
from tests.support.api import TEST_QUOTE

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CARD = PaymentMethod("pm_1", "visa", "4242")
SPEC = replace(catalog().models[0], max_dataset_tokens=10_000)


def applicant(**kw: object) -> Applicant:
    user = UserRecord.new("u", "u@example.com", T0)._replace(payment_method=CARD)
    values: dict[str, object] = {
        "user": user,
        "spent_this_month": 0,
        "committed_this_month": 0,
        "quote": TEST_QUOTE._replace(tokens_per_epoch=1_000, price_cents=300),
        "spec": SPEC,
        "active_jobs": 0,
        "max_active_jobs": 3,
    }
    values.update(kw)
    return Applicant(**values)  # type: ignore[arg-type]


def user(**kw: object) -> UserRecord:
    return UserRecord.new("u", None, T0)._replace(payment_method=CARD, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "codes"),
    [
        ({}, []),
        ({"user": UserRecord.new("u", None, T0)}, [Code.PAYMENT_METHOD_REQUIRED]),
        (
            {"user": user(pauses={"payment_failed": Pause("declined", T0)})},
            [Code.ACCOUNT_PAUSED],
        ),
        # under the limit, but this job would cross it
        (
            {
                "user": user(monthly_spend_limit_cents=1000),
                "spent_this_month": 800,
                "committed_this_month": 800,
            },
            [Code.SPEND_LIMIT_REACHED],
        ),
        # exactly at the limit afterwards is allowed
        (
            {
                "user": user(monthly_spend_limit_cents=1000),
                "spent_this_month": 700,
                "committed_this_month": 700,
            },
            [],
        ),
        # settled 0, but 800 cents of jobs not paid yet: this 300-cent job would cross it
        (
            {"user": user(monthly_spend_limit_cents=1000), "committed_this_month": 800},
            [Code.SPEND_LIMIT_REACHED],
        ),
        # already at the limit: the spend-limit pause says so, once
        (
            {
                "user": user(monthly_spend_limit_cents=1000),
                "spent_this_month": 1000,
                "committed_this_month": 1000,
            },
            [Code.ACCOUNT_PAUSED],
        ),
        ({"quote": TEST_QUOTE._replace(tokens_per_epoch=10_001)}, [Code.DATASET_TOO_LARGE]),
        ({"active_jobs": 3}, [Code.TOO_MANY_ACTIVE_JOBS]),
        ({"active_jobs": None}, []),  # submit: checked in the creating transaction instead
        (
            {"user": UserRecord.new("u", None, T0), "active_jobs": 5},
            [Code.PAYMENT_METHOD_REQUIRED, Code.TOO_MANY_ACTIVE_JOBS],
        ),
    ],
)
def test_each_rule_refuses_with_its_own_code(changes: dict[str, object], codes: list[Code]) -> None:
    assert [code for code, _ in refusals(applicant(**changes))] == codes


def test_every_refusal_says_what_to_do() -> None:
    worst = applicant(
        user=UserRecord.new("u", None, T0)._replace(
            pauses={"payment_failed": Pause("declined", T0)},
            monthly_spend_limit_cents=100,
        ),
        spent_this_month=50,
        committed_this_month=50,
        quote=TEST_QUOTE._replace(tokens_per_epoch=20_000, price_cents=300),
        active_jobs=3,
    )
    found = refusals(worst)
    assert [c for c, _ in found] == [
        Code.PAYMENT_METHOD_REQUIRED,
        Code.ACCOUNT_PAUSED,
        Code.SPEND_LIMIT_REACHED,
        Code.DATASET_TOO_LARGE,
        Code.TOO_MANY_ACTIVE_JOBS,
    ]
    assert all(len(message) > 30 for _, message in found)
