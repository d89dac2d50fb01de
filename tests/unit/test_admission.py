"""The admission rules (shared.rules.RULES): estimate and submit refuse by the same list, and
any other new charge (a storage extension) by its money rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.catalog import catalog
from shared.errors import Code
from shared.records import Pause, PaymentMethod, UserRecord
from shared.rules import EXTENSION, JOB, Applicant, Spend, refusals, spend_refusals
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
    quote = values.pop("quote")
    spend = Spend(
        values.pop("user"),  # type: ignore[arg-type]
        quote.price_cents,  # type: ignore[attr-defined]
        JOB,
        values.pop("spent_this_month"),  # type: ignore[arg-type]
        values.pop("committed_this_month"),  # type: ignore[arg-type]
    )
    return Applicant(spend=spend, quote=quote, **values)  # type: ignore[arg-type]


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


@pytest.mark.parametrize(
    ("account", "spent", "committed", "codes"),
    [
        ({}, 0, 0, []),
        ({"pauses": {"payment_failed": Pause("declined", T0)}}, 0, 0, [Code.ACCOUNT_PAUSED]),
        ({"monthly_spend_limit_cents": 1000}, 0, 800, [Code.SPEND_LIMIT_REACHED]),
        ({"monthly_spend_limit_cents": 1000}, 0, 700, []),  # exactly at the limit afterwards
        ({"monthly_spend_limit_cents": 1000}, 1000, 1000, [Code.ACCOUNT_PAUSED]),
    ],
)
def test_a_charge_that_is_not_a_job_obeys_the_same_money_rules(
    account: dict[str, object], spent: int, committed: int, codes: list[Code]
) -> None:
    """A storage extension: the pause flags and the monthly limit of RULES, no job rule (it
    needs no dataset, and its card is the one the job was paid with)."""
    spend = Spend(user(**account)._replace(payment_method=None), 300, EXTENSION, spent, committed)
    found = spend_refusals(spend)
    assert [c for c, _ in found] == codes
    assert all(m.startswith(EXTENSION) for c, m in found if c == Code.SPEND_LIMIT_REACHED)
    as_job = applicant(
        user=spend.user._replace(payment_method=CARD), spent_this_month=spent,
        committed_this_month=committed,
    )  # fmt: skip
    assert [c for c, _ in refusals(as_job)] == codes  # the job rules agree on the money
