"""Token counting stays linear in the input: caps on a record's messages and characters (with
line-numbered validation errors), and training targets marked in one pass."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from shared.datasets import validate
from shared.tokenization import (
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    ChatTokenizer,
    _in_spans,
)
from tests.support.tiny import build_tokenizer


def conversation(n: int, chars: int = 10) -> dict:
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": "x" * chars} for i in range(n)]}


def jsonl(*records: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_too_many_messages_is_a_line_numbered_validation_error() -> None:
    report = validate(jsonl(conversation(4), conversation(MAX_MESSAGES + 1)), 1 << 30)
    assert report.status == "invalid"
    [error] = report.errors
    assert error.line == 2 and f"at most {MAX_MESSAGES}" in error.message
    assert validate(jsonl(conversation(MAX_MESSAGES)), 1 << 30).status == "ready"


def test_a_too_long_message_is_a_line_numbered_validation_error() -> None:
    report = validate(jsonl(conversation(2, chars=MAX_MESSAGE_CHARS + 1)), 1 << 30)
    [error] = report.errors
    assert error.line == 1 and "messages[0].content" in error.message


def test_targets_are_marked_exactly_as_by_checking_every_span() -> None:
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(200), rng.randrange(0, 12) * 2))
        spans = list(zip(cuts[::2], cuts[1::2], strict=True))
        starts = sorted(rng.randrange(200) for _ in range(rng.randrange(0, 60)))
        assert _in_spans(starts, spans) == [any(a <= s < b for a, b in spans) for s in starts]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> ChatTokenizer:
    folder: Path = tmp_path_factory.mktemp("tok")
    build_tokenizer(folder)
    return ChatTokenizer.from_dir(folder)


def test_the_longest_record_allowed_renders_a_bounded_number_of_times(
    tokenizer, monkeypatch
) -> None:
    """Rendering is the quadratic part; at the cap it is 1 + 2 per assistant turn, so a file's
    work grows linearly with its records."""
    calls = []
    real = tokenizer.render

    def counting(messages, add_generation_prompt=False):
        calls.append(len(messages))
        return real(messages, add_generation_prompt)

    monkeypatch.setattr(tokenizer, "render", counting)
    tokenizer.count([conversation(MAX_MESSAGES)] * 3, max_seq_length=1 << 20)
    assert len(calls) == 3 * (1 + MAX_MESSAGES)
    assert max(calls) == MAX_MESSAGES


def test_a_report_quotes_user_values_briefly_and_stays_small() -> None:
    """A huge bad value on every line must not make a report Firestore cannot store (1 MiB a
    document): each error quotes a short excerpt, and only the first 20 are kept."""
    from shared.datasets import MAX_ERROR_CHARS, MAX_REPORTED

    huge_role = {"messages": [{"role": "r" * 300_000, "content": "hi"}]}
    report = validate(jsonl(*[huge_role] * 30), 1 << 30)
    assert report.error_count == 30 and len(report.errors) == MAX_REPORTED
    assert all(len(e.message) <= MAX_ERROR_CHARS for e in report.errors)
    assert report.errors[0].line == 1 and "messages[0].role" in report.errors[0].message
    assert len(json.dumps(report.to_doc())) < 20_000
