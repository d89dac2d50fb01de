"""Who may be charged for something new (typed, pure): one rule list, each rule with one error
code. A job is admitted by all of RULES (shared.admission: the estimate lists every refusal, a
submission is refused by the first); any other new charge the user asks for (a storage
extension, shared.billing) by the money rules, SPENDING, which RULES contains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared import accounts, store
from shared.catalog import ModelSpec
from shared.errors import Code
from shared.records import Quote, UserRecord, month_of

JOB = "This job"
EXTENSION = "This extension"


@dataclass(frozen=True)
class Spend:
    """A new charge: whose, how much, and what the account has spent and committed this month."""

    user: UserRecord
    cents: int
    what: str  # how a message names it: JOB, EXTENSION
    spent_this_month: int  # settled
    committed_this_month: int  # settled, plus what is reserved and not paid yet

    @staticmethod
    def of(user: UserRecord, cents: int, what: str) -> Spend:
        committed = user.committed_in(month_of(store.now()))
        return Spend(user, cents, what, accounts.spent_this_month(user), committed)


@dataclass(frozen=True)
class Applicant:
    """A job: its charge, and what the job-only rules look at."""

    spend: Spend
    quote: Quote
    spec: ModelSpec
    active_jobs: int | None  # None: checked in the creating transaction instead
    max_active_jobs: int


T = TypeVar("T")


@dataclass(frozen=True)
class Rule(Generic[T]):
    code: Code
    refusals: Callable[[T], list[str]]  # a message per reason to refuse; [] to admit


def _paused(s: Spend) -> list[str]:
    flags = accounts.pauses(s.user, s.spent_this_month)
    return [f"New charges are paused ({code}): {p.reason}" for code, p in sorted(flags.items())]


def _spend_limit(s: Spend) -> list[str]:
    limit = s.user.monthly_spend_limit_cents
    if limit is None or s.spent_this_month >= limit:
        return []  # at or over the limit already: the spend-limit pause says so
    if s.committed_this_month + s.cents <= limit:
        return []
    return [over_limit(s.what, s.cents, s.committed_this_month, limit)]


def over_limit(what: str, cents: int, committed: int, limit: int) -> str:
    return (
        f"{what} ({cents} cents) would take this month's spend, with what is not paid yet, to "
        f"{committed + cents} cents, over your limit of {limit}; raise it (PATCH /v1/me) or wait "
        "for next month."
    )


SPENDING: tuple[Rule[Spend], ...] = (
    Rule(Code.ACCOUNT_PAUSED, _paused),
    Rule(Code.SPEND_LIMIT_REACHED, _spend_limit),
)


def _card(a: Applicant) -> list[str]:
    if a.spend.user.payment_method is not None:
        return []
    return ["Save a card before submitting a job: POST /v1/jobs/setup-card."]


def _dataset_size(a: Applicant) -> list[str]:
    if a.quote.tokens_per_epoch <= a.spec.max_dataset_tokens:
        return []
    return [
        f"The dataset has {a.quote.tokens_per_epoch} tokens; {a.spec.id} takes at most "
        f"{a.spec.max_dataset_tokens} per epoch. Split it or choose a larger model."
    ]


def too_many_active(active: int, limit: int) -> str:
    return (
        f"You have {active} active jobs; the limit is {limit}. Wait for one to end or cancel one."
    )


def _active_jobs(a: Applicant) -> list[str]:
    if a.active_jobs is None or a.active_jobs < a.max_active_jobs:
        return []
    return [too_many_active(a.active_jobs, a.max_active_jobs)]


def _of_its_spend(rule: Rule[Spend]) -> Rule[Applicant]:
    return Rule(rule.code, lambda a: rule.refusals(a.spend))


RULES: tuple[Rule[Applicant], ...] = (
    Rule(Code.PAYMENT_METHOD_REQUIRED, _card),
    *(_of_its_spend(r) for r in SPENDING),
    Rule(Code.DATASET_TOO_LARGE, _dataset_size),
    Rule(Code.TOO_MANY_ACTIVE_JOBS, _active_jobs),
)


def refusals(applicant: Applicant) -> list[tuple[Code, str]]:
    """Every (code, message) the rules give, in RULES order."""
    return [(rule.code, m) for rule in RULES for m in rule.refusals(applicant)]


def spend_refusals(spend: Spend) -> list[tuple[Code, str]]:
    """Every (code, message) the money rules give a charge that is not a job."""
    return [(rule.code, m) for rule in SPENDING for m in rule.refusals(spend)]
