"""Validation is never billed, so its compute is bounded by what is billed: the validation
tokens times the evaluations a run makes may be at most a quarter of the billed tokens (or
pricing.EVAL_BUDGET_FLOOR). The attack this closes: validation_split puts the dataset's
longest records in the held-out part (which records is public and seed-driven) and
eval_every_steps evaluates them 50 times, 63x the billed tokens in unbilled GPU time."""

from __future__ import annotations

import pytest

from shared import admission
from shared.contract import Hyperparameters
from shared.errors import ApiError
from shared.pricing import EVAL_BUDGET_FLOOR, evaluation_budget
from shared.records import TrainingOptions
from shared.tokenization import TokenCount


def count(examples: int, tokens: int) -> TokenCount:
    return TokenCount(
        examples=examples, dropped=0, tokens=tokens, trained_tokens=tokens, truncated=0
    )


def trainer_evaluations(examples: int, hp: Hyperparameters, every: int) -> int:
    """The trainer's own schedule (yachay_trainer.train: evaluate at an epoch end or a
    multiple of eval_every_steps), counted step by step."""
    per_epoch = -(-examples // hp.batch_size)
    steps = range(1, per_epoch * hp.epochs + 1)
    return sum(1 for s in steps if s % per_epoch == 0 or (every and s % every == 0))


@pytest.mark.parametrize(
    "examples,batch,epochs,every", [(100, 8, 3, 0), (100, 8, 3, 5), (64, 8, 4, 8), (7, 2, 10, 3)]
)
def test_the_evaluation_count_is_the_trainers(examples, batch, epochs, every) -> None:
    hp = Hyperparameters(epochs=epochs, batch_size=batch)
    options = TrainingOptions(validation_split=0.1, eval_every_steps=every)
    got = admission.evaluations(hp, options, count(examples, 10_000))
    assert got == trainer_evaluations(examples, hp, every)


def test_the_attack_is_refused_naming_the_setting_to_change() -> None:
    """The observed case: 280k billable tokens, 409,600 validation tokens, 43 evaluations."""
    hp = Hyperparameters(epochs=1, batch_size=1)
    options = TrainingOptions(validation_split=0.2, eval_every_steps=50)
    train, valid = count(2150, 280_000), count(538, 409_600)
    with pytest.raises(ApiError) as raised:
        admission._check_evaluation_budget(hp, options, train, valid)
    assert raised.value.param == "validation_split"  # it cannot afford even the epoch end
    assert "at most 200000 tokens" in raised.value.message


def test_evaluating_too_often_names_the_smallest_interval_that_fits() -> None:
    hp = Hyperparameters(epochs=2, batch_size=8)
    train, valid = count(800, 4_000_000), count(40, 100_000)  # budget 2M: 20 evaluations
    options = TrainingOptions(validation_split=0.05, eval_every_steps=2)  # 100 evaluations
    with pytest.raises(ApiError) as raised:
        admission._check_evaluation_budget(hp, options, train, valid)
    assert raised.value.param == "eval_every_steps"
    least = int(raised.value.message.split("eval_every_steps of at least ")[1].split(")")[0])
    fixed = options._replace(eval_every_steps=least)
    admission._check_evaluation_budget(hp, fixed, train, valid)  # that one fits
    assert admission.evaluations(hp, fixed, train) * valid.tokens <= evaluation_budget(8_000_000)
    tighter = options._replace(eval_every_steps=least - 1)
    with pytest.raises(ApiError):
        admission._check_evaluation_budget(hp, tighter, train, valid)


def test_the_default_split_and_small_jobs_always_fit() -> None:
    hp = Hyperparameters(epochs=3, batch_size=8)
    # 5% held out: a validation pass is about 5% of an epoch, evaluated once an epoch
    admission._check_evaluation_budget(
        hp, TrainingOptions(validation_split=0.05), count(950, 950_000), count(50, 50_000)
    )
    # a tiny job may always evaluate up to the floor
    admission._check_evaluation_budget(
        hp, TrainingOptions(validation_split=0.2, eval_every_steps=1), count(8, 800), count(2, 200)
    )
    assert evaluation_budget(100) == EVAL_BUDGET_FLOOR
