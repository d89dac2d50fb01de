"""The price of everything we sell, and the charge policy (typed core): the one module that
knows the rates, the minimum charge and what is due when a job ends.

Billing is per trained token: every token of every kept example, once per epoch, exactly as
`shared.tokenization` counts it and the trainer trains it. The price is that count times the
model's rate per 1M tokens, rounded up to a whole cent, with a minimum charge (card networks
refuse smaller charges). Also here: hyperparameters resolved against the catalog (they decide the
count), and the price of keeping a job's files longer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.contract import MERGED_BYTES_PER_PARAMETER, Hyperparameters, declared
from shared.errors import ApiError, Code
from shared.records import Job, JobStatus, Quote

if TYPE_CHECKING:  # annotations only: the job views import this module for CHARGE_POLICY
    from shared.catalog import ModelSpec
    from shared.tokenization import TokenCount

MIN_CHARGE_CENTS = 50  # Stripe's smallest card charge in USD
STORAGE_CENTS_PER_GB_MONTH = 10
MAX_EXTENSION_DAYS = 365
# Evaluation is not billed, so its compute is bounded by what is: the validation tokens times the
# evaluations (each epoch end, and every eval_every_steps) may be at most EVAL_BUDGET_SHARE of
# the billed tokens, or EVAL_BUDGET_FLOOR token-evaluations if that is more (seconds of GPU). An
# evaluated token is a forward pass, about a third of a trained token's FLOPs, so evaluation is
# at most about 8% of the compute billed (or the floor).
EVAL_BUDGET_SHARE = 0.25
EVAL_BUDGET_FLOOR = 200_000
CHARGE_POLICY = (
    "Completed: the tokens trained (equal to the quote), at least the minimum charge, plus the "
    "quoted storage of merged weights when asked for. Validation tokens are never billed; "
    "the tokens evaluated over a run (validation tokens times evaluations) may be at most a "
    f"quarter of the billed tokens, or {EVAL_BUDGET_FLOOR:,} if more. "
    "Cancelled while running: the tokens trained so far (free below the minimum charge). "
    "Cancelled while queued, or failed (bad data or our side): free."
)


def resolve_hyperparameters(spec: ModelSpec, raw: Mapping[str, Any]) -> Hyperparameters:
    """The catalog's defaults overlaid with the caller's values (already checked against
    schemas.HyperparametersIn, so each has its type), each checked against the model's bounds.

    Raises:
        ApiError: naming the field (param `hyperparameters.<name>`).
    """
    values: dict[str, Any] = {}
    for d in declared():
        if d.kind == "modules":
            values[d.name] = _target_modules(spec, raw.get(d.name))
            continue
        bound = spec.bound(d.knob.catalog)
        value = raw.get(d.name, bound.default)
        value = int(value) if d.kind == "integer" else float(value)
        if not bound.min <= value <= bound.max:
            raise ApiError(
                Code.INVALID_VALUE,
                f"'hyperparameters.{d.name}' must be between "
                f"{bound.min} and {bound.max} for {spec.id}; got {value}.",
                param=f"hyperparameters.{d.name}",
            )
        values[d.name] = value
    return Hyperparameters(**values)


def _target_modules(spec: ModelSpec, targets: Any) -> str | tuple[str, ...]:
    if targets is None:
        targets = spec.lora_target_modules_default
    if targets == "all-linear":
        return "all-linear"
    allowed = spec.lora_target_modules_allowed
    if not isinstance(targets, list) or not all(t in allowed for t in targets):
        raise ApiError(
            Code.INVALID_VALUE,
            "'hyperparameters.lora_target_modules' must be "
            f'"all-linear" or a list drawn from: {", ".join(allowed)}.',
            param="hyperparameters.lora_target_modules",
        )
    return tuple(dict.fromkeys(targets))


def price_cents(billable_tokens: int, cents_per_million: int, min_charge_cents: int) -> int:
    """`billable_tokens` at `cents_per_million` tokens, rounded up to a cent, at least
    `min_charge_cents`."""
    exact = math.ceil(billable_tokens * cents_per_million / 1_000_000)
    return max(exact, min_charge_cents)


def evaluation_budget(billable_tokens: int) -> int:
    """The most token-evaluations a job's validation may run (see EVAL_BUDGET_SHARE)."""
    return max(EVAL_BUDGET_FLOOR, int(billable_tokens * EVAL_BUDGET_SHARE))


def merged_storage_cents(parameters: int, retention_days: int) -> int:
    """Keeping a model's merged weights (bf16: 2 bytes a parameter) for the retention period."""
    size = parameters * MERGED_BYTES_PER_PARAMETER
    return math.ceil(size / 1e9 * retention_days / 30 * STORAGE_CENTS_PER_GB_MONTH)


def quote(
    spec: ModelSpec,
    count: TokenCount,
    hp: Hyperparameters,
    currency: str,
    startup_overhead_s: int,
    validation: TokenCount | None = None,
    validation_split: float = 0.0,
    storage_cents: int = 0,
    evaluations: int = 0,
) -> Quote:
    """The exact price of training `count` for `hp.epochs` epochs, plus `storage_cents` for the
    extra outputs asked for. `validation` (the held-out records, or a second file) is reported,
    never billed."""
    billable = count.tokens * hp.epochs
    tokens_cents = price_cents(billable, spec.price_per_million_tokens_cents, MIN_CHARGE_CENTS)
    return Quote(
        examples=count.examples,
        dropped_examples=count.dropped,
        truncated_examples=count.truncated,
        tokens_per_epoch=count.tokens,
        trained_tokens_per_epoch=count.trained_tokens,
        epochs=hp.epochs,
        billable_tokens=billable,
        price_cents=tokens_cents + storage_cents,
        currency=currency,
        estimated_seconds=startup_overhead_s + math.ceil(billable / spec.throughput_tokens_per_s),
        gpu_type=spec.gpu_type,
        price_per_million_tokens_cents=spec.price_per_million_tokens_cents,
        validation_split=validation_split,
        validation_examples=validation.examples if validation else 0,
        validation_tokens=validation.tokens if validation else 0,
        storage_cents=storage_cents,
        estimated_seconds_basis=spec.throughput.basis,
        evaluated_tokens=(validation.tokens if validation else 0) * evaluations,
    )


class Due(NamedTuple):
    """What an ended job owes under CHARGE_POLICY."""

    tokens: int
    cents: int


NOTHING_DUE = Due(0, 0)


def amount_due(job: Job) -> Due:
    """The amount due for `job` under CHARGE_POLICY, from its quote alone: the rate frozen at
    submit, and never more tokens than quoted (a trainer count above the quote is our bug, logged
    and not billed). A price change or the model leaving the catalog after submit changes
    nothing."""
    q = job.quote
    if job.status == JobStatus.COMPLETED:
        trained = job.trainer_result.trained_tokens if job.trainer_result else 0
        tokens = _at_most_quoted(job, trained)
        cents = price_cents(tokens, q.price_per_million_tokens_cents, MIN_CHARGE_CENTS)
        return Due(tokens, cents + q.storage_cents)
    if job.status == JobStatus.CANCELLED and job.started_at is not None:
        tokens = _at_most_quoted(job, job.progress.trained_tokens if job.progress else 0)
        cents = price_cents(tokens, q.price_per_million_tokens_cents, 0)
        return Due(tokens, cents) if cents >= MIN_CHARGE_CENTS else Due(tokens, 0)
    return NOTHING_DUE


def _at_most_quoted(job: Job, tokens: int) -> int:
    if tokens > job.quote.billable_tokens:
        from shared import logs

        logs.warning(
            "trained more tokens than quoted; billing the quote",
            job_id=job.id,
            trained=tokens,
            quoted=job.quote.billable_tokens,
        )
        return job.quote.billable_tokens
    return tokens


def extension_price(total_bytes: int, days: int) -> int:
    """Keeping `total_bytes` for `days` more days, at least the minimum charge."""
    exact = math.ceil(total_bytes / 1e9 * days / 30 * STORAGE_CENTS_PER_GB_MONTH)
    return max(exact, MIN_CHARGE_CENTS)
