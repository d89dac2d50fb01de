"""Hyperparameters resolved against the catalog, and the exact price quote (typed core).

Billing is per trained token: every token of every kept example, once per epoch, exactly as
`shared.tokenization` counts it and the trainer trains it. The price is that count times the
model's rate per 1M tokens, rounded up to a whole cent, with a minimum charge (card networks
refuse smaller charges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared.catalog import ModelSpec
from shared.contract import Hyperparameters
from shared.errors import ApiError, Code
from shared.tokenization import TokenCount

INT_FIELDS = ("epochs", "batch_size", "seed", "max_seq_length")
FLOAT_FIELDS = ("learning_rate", "warmup_ratio")
LORA_FIELDS = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}
KNOWN = (*INT_FIELDS, *FLOAT_FIELDS, *LORA_FIELDS, "lora_target_modules")


def _number(name: str, value: Any, integer: bool) -> float | int:
    param = f"hyperparameters.{name}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(Code.INVALID_VALUE, f"'{param}' must be a number.", param=param)
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise ApiError(Code.INVALID_VALUE, f"'{param}' must be a whole number.", param=param)
    if not math.isfinite(value):
        raise ApiError(Code.INVALID_VALUE, f"'{param}' must be finite.", param=param)
    return int(value) if integer else float(value)


def resolve_hyperparameters(spec: ModelSpec, raw: Any) -> Hyperparameters:
    """The catalog's defaults overlaid with the caller's values, each checked against the
    model's bounds. Raises ApiError naming the field (param `hyperparameters.<name>`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ApiError(
            Code.INVALID_VALUE, "'hyperparameters' must be an object.", param="hyperparameters"
        )
    for key in raw:
        if key not in KNOWN:
            raise ApiError(
                Code.UNKNOWN_FIELD,
                f"Unknown hyperparameter '{key}'; known ones: {', '.join(KNOWN)}.",
                param=f"hyperparameters.{key}",
            )
    values: dict[str, Any] = {}
    bounds = {**spec.hyperparameters, **{k: spec.lora[v] for k, v in LORA_FIELDS.items()}}
    for name, bound in bounds.items():
        integer = name in INT_FIELDS or name in ("lora_rank", "lora_alpha")
        value = _number(name, raw[name], integer) if name in raw else bound.default
        if not bound.min <= value <= bound.max:
            raise ApiError(
                Code.INVALID_VALUE,
                f"'hyperparameters.{name}' must be between "
                f"{bound.min} and {bound.max} for {spec.id}; got {value}.",
                param=f"hyperparameters.{name}",
            )
        values[name] = value
    targets = raw.get("lora_target_modules", spec.lora_target_modules_default)
    if targets != "all-linear":
        ok = (
            isinstance(targets, list)
            and targets
            and all(isinstance(t, str) and t in spec.lora_target_modules_allowed for t in targets)
        )
        if not ok:
            raise ApiError(
                Code.INVALID_VALUE,
                "'hyperparameters.lora_target_modules' must be "
                '"all-linear" or a list drawn from: '
                f"{', '.join(spec.lora_target_modules_allowed)}.",
                param="hyperparameters.lora_target_modules",
            )
        targets = tuple(dict.fromkeys(targets))
    values["lora_target_modules"] = targets
    return Hyperparameters(**values)


@dataclass(frozen=True)
class Quote:
    examples: int
    dropped_examples: int
    truncated_examples: int
    tokens_per_epoch: int
    trained_tokens_per_epoch: int
    epochs: int
    billable_tokens: int
    price_cents: int
    currency: str
    estimated_seconds: int
    gpu_type: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def price_cents(billable_tokens: int, spec: ModelSpec, min_charge_cents: int) -> int:
    exact = math.ceil(billable_tokens * spec.price_per_million_tokens_cents / 1_000_000)
    return max(exact, min_charge_cents)


def quote(
    spec: ModelSpec,
    count: TokenCount,
    hp: Hyperparameters,
    currency: str,
    min_charge_cents: int,
    startup_overhead_s: int,
) -> Quote:
    billable = count.tokens * hp.epochs
    return Quote(
        examples=count.examples,
        dropped_examples=count.dropped,
        truncated_examples=count.truncated,
        tokens_per_epoch=count.tokens,
        trained_tokens_per_epoch=count.trained_tokens,
        epochs=hp.epochs,
        billable_tokens=billable,
        price_cents=price_cents(billable, spec, min_charge_cents),
        currency=currency,
        estimated_seconds=startup_overhead_s + math.ceil(billable / spec.throughput_tokens_per_s),
        gpu_type=spec.gpu_type,
    )
