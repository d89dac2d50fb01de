"""The whole price and charge policy (shared.pricing), table by table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared import pricing
from shared.catalog import catalog
from shared.contract import Hyperparameters, Progress
from shared.pricing import MIN_CHARGE_CENTS, Due, amount_due, extension_price, price_cents
from shared.records import Job, JobStatus
from shared.tokenization import TokenCount
from tests.support.api import TEST_QUOTE, result_of

T0 = datetime(2026, 11, 1, tzinfo=UTC)
# 100 cents per 1M tokens: 10 000 tokens cost exactly one cent.
SPEC = replace(
    catalog().models[0],
    price_per_million_tokens_cents=100,
    throughput=replace(catalog().models[0].throughput, tokens_per_s=100),
)


@pytest.mark.parametrize(
    ("tokens", "minimum", "cents"),
    [
        (0, 50, 50),  # the minimum charge
        (0, 0, 0),
        (1, 0, 1),  # any part of a cent rounds up
        (10_000, 0, 1),
        (10_001, 0, 2),
        (4_990_000, 50, 499),
        (5_000_000, 50, 500),
    ],
)
def test_price_is_the_rate_rounded_up_with_a_minimum(tokens: int, minimum: int, cents: int) -> None:
    assert price_cents(tokens, 100, minimum) == cents


def test_the_quote_bills_every_kept_token_once_per_epoch() -> None:
    count = TokenCount(
        examples=10, dropped=1, tokens=2_000_000, trained_tokens=900_000, truncated=2
    )
    q = pricing.quote(SPEC, count, Hyperparameters(epochs=3), "usd", startup_overhead_s=180)
    assert q.billable_tokens == 6_000_000 and q.price_cents == 600
    assert (q.examples, q.dropped_examples, q.truncated_examples) == (10, 1, 2)
    assert q.estimated_seconds == 180 + 60_000
    assert q.price_per_million_tokens_cents == 100  # frozen on the job with the quote
    small = TokenCount(examples=1, dropped=0, tokens=10, trained_tokens=5, truncated=0)
    assert pricing.quote(SPEC, small, Hyperparameters(epochs=1), "usd", 0).price_cents == 50


QUOTED = TEST_QUOTE._replace(billable_tokens=6_000_000, price_cents=600)


def job(status: JobStatus, started: bool, trained: int | None, progress: int | None) -> Job:
    return Job(
        id="ft-x",
        uid="u",
        email=None,
        model=SPEC.id,
        dataset_id="ds-x",
        dataset_object="datasets/u/ds-x.jsonl",
        dataset_sha256="0" * 64,
        hyperparameters=Hyperparameters(),
        quote=QUOTED,
        status=status,
        created_at=T0,
        updated_at=T0,
        started_at=T0 if started else None,
        trainer_result=None if trained is None else result_of(trained),
        progress=None
        if progress is None
        else Progress(1, 10, 1, progress, 10 * progress, 1.0, 1e-4, 1.0),
    )


@pytest.mark.parametrize(
    ("status", "started", "trained", "progress", "due"),
    [
        # Completed: the tokens trained, at least the minimum charge.
        (JobStatus.COMPLETED, True, 6_000_000, None, Due(6_000_000, 600)),
        (JobStatus.COMPLETED, True, 1_000, None, Due(1_000, MIN_CHARGE_CENTS)),
        # Cancelled while running: the tokens trained so far, free below the minimum.
        (JobStatus.CANCELLED, True, None, 800_000, Due(800_000, 80)),
        (JobStatus.CANCELLED, True, None, 490_000, Due(490_000, 0)),
        (JobStatus.CANCELLED, True, None, 499_999, Due(499_999, 50)),  # 49.9999 rounds up
        (JobStatus.CANCELLED, True, None, None, Due(0, 0)),
        # Cancelled while queued, or failed: free.
        (JobStatus.CANCELLED, False, None, None, Due(0, 0)),
        (JobStatus.FAILED, True, None, 900_000, Due(0, 0)),
        (JobStatus.FAILED, False, None, None, Due(0, 0)),
        # Not ended: nothing is due yet.
        (JobStatus.RUNNING, True, None, 900_000, Due(0, 0)),
        (JobStatus.QUEUED, False, None, None, Due(0, 0)),
    ],
)
def test_amount_due_follows_the_charge_policy(
    status: JobStatus, started: bool, trained: int | None, progress: int | None, due: Due
) -> None:
    assert amount_due(job(status, started, trained, progress)) == due


def test_more_tokens_than_quoted_are_never_billed() -> None:
    assert amount_due(job(JobStatus.COMPLETED, True, 9_000_000, None)) == Due(6_000_000, 600)
    assert amount_due(job(JobStatus.CANCELLED, True, None, 7_000_000)) == Due(6_000_000, 600)


def test_the_rate_is_the_one_frozen_in_the_quote() -> None:
    """A price change, or the model leaving the catalog, after submit changes nothing: the
    amount due is computed from the job alone."""
    done = job(JobStatus.COMPLETED, True, 6_000_000, None)
    assert amount_due(done._replace(model="gone-from-the-catalog")) == Due(6_000_000, 600)
    dearer = done._replace(quote=QUOTED._replace(price_per_million_tokens_cents=300))
    assert amount_due(dearer) == Due(6_000_000, 1800)


@pytest.mark.parametrize(
    ("size", "days", "cents"),
    [
        (1_000_000, 30, MIN_CHARGE_CENTS),  # 1 MB for a month: the minimum
        (10_000_000_000, 30, 100),  # 10 GB for a month at 10 c/GB-month
        (10_000_000_000, 365, 1217),  # rounded up
        (0, 1, MIN_CHARGE_CENTS),
    ],
)
def test_storage_extension_price(size: int, days: int, cents: int) -> None:
    assert extension_price(size, days) == cents
