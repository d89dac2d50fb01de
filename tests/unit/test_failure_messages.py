"""A failed job's message says what happened: a signal by name, an exit code, and retries only
when there were any (lifecycle.failure_of, from how Batch says the attempts ended)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.batch import RunEnd
from shared.contract import FailureKind, TrainerFailure
from shared.lifecycle import failure_of
from shared.records import FailureCode, JobStatus
from tests.support.api import job_record

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("end", "says", "never"),
    [
        (None, "failed on our side", "after"),
        (RunEnd(1, -9), "killed by SIGKILL", "after"),
        (RunEnd(1, 137), "killed by SIGKILL", "after"),
        (RunEnd(3, 137), "killed by SIGKILL (after 3 attempts)", "exit code"),
        (RunEnd(2, -15), "killed by SIGTERM (after 2 attempts)", "exit code"),
        (RunEnd(1, 139), "killed by SIGSEGV", "after"),
        (RunEnd(1, 1), "stopped with exit code 1", "after"),
        (RunEnd(4, 50001), "exit code 50001 (after 4 attempts)", "killed"),
        (RunEnd(2, None), "failed on our side (after 2 attempts)", "exit code"),
    ],
)
def test_platform_failures_say_what_happened(end, says, never) -> None:
    failure = failure_of(job_record("u", JobStatus.RUNNING, T0), end)
    assert failure.code == FailureCode.PLATFORM_ERROR
    assert says in failure.message and never not in failure.message
    assert "not charged" in failure.message


def test_the_trainers_own_reason_wins() -> None:
    job = job_record("u", JobStatus.RUNNING, T0)._replace(
        trainer_failure=TrainerFailure(FailureKind.USER_ERROR, "line 3: no assistant turn")
    )
    failure = failure_of(job, RunEnd(1, 65))
    assert failure.code == FailureCode.BAD_DATA and "line 3" in failure.message
