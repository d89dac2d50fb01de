"""The rules a JSONL training file must follow, line by line: the one definition that dataset
validation (shared.datasets), the token count and the trainer (shared.tokenization) and the CLI's
check before an upload all apply.

Standard library only and no import of ours: the CLI ships an exact copy of this file
(cli/yachay_cli/jsonl_rules.py, written by `make openapi`; a test fails when it differs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 4 << 20  # one record; a longer line is refused rather than read
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 200_000


class RecordError(ValueError):
    """A record the trainer cannot train on; the message is meant for the dataset's owner."""


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the file
    record: Any


def split_lines(data: bytes) -> list[bytes]:
    """The raw lines of a JSONL file: a UTF-8 byte-order mark dropped, split on newlines (CRLF's
    carriage return is JSON whitespace, so it needs no special case)."""
    if b"\x00" in data[:8192]:
        raise RecordError("line 1: this looks like a binary file, not JSONL text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.split(b"\n")


def parse_line(number: int, raw: bytes) -> Line | None:
    """One raw line parsed; None for a blank line; RecordError naming the line otherwise."""
    if len(raw) > MAX_LINE_BYTES:
        raise RecordError(
            f"line {number}: {len(raw)} bytes; a record may be at most {MAX_LINE_BYTES} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"line {number}: not UTF-8 text (byte {exc.start + 1} of the line); "
            "save the file as UTF-8"
        ) from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"line {number}: not valid JSON ({exc})") from None
    except RecursionError:  # json's C parser nests one frame per level
        raise RecordError(
            f"line {number}: nested too deeply; a record is an object of messages, a few "
            "levels deep"
        ) from None
    if "\\u" in text and _LONE_SURROGATE.search(text):
        try:  # a \uD800-\uDFFF escape outside a pair is no character any tokenizer takes
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(
                f"line {number}: a \\u escape names half of a surrogate pair (\\uD800-\\uDFFF) "
                "without its other half; that is no character: fix or remove it"
            ) from None
    return Line(number, record)


_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_jsonl(data: bytes) -> Iterator[Line]:
    """Yields each non-blank line of a JSONL file; the one reader that validation, the estimate
    and the trainer share. Raises RecordError naming the first line it cannot read."""
    for number, raw in enumerate(split_lines(data), start=1):
        line = parse_line(number, raw)
        if line is not None:
            yield line


def record_format(record: Any) -> str:
    """'chat' or 'prompt_completion'; raises RecordError for anything else."""
    if not isinstance(record, dict):
        raise RecordError("each line must be a JSON object")
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    raise RecordError("expected 'messages' (chat) or 'prompt' and 'completion'")


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validates a chat record's messages; returns them as plain role/content dicts."""
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise RecordError(
            f"{len(messages)} messages; a record may hold at most {MAX_MESSAGES}: split the "
            "conversation into several records"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RecordError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, not {excerpt(role)}"
            )
        if not isinstance(content, str):
            raise RecordError(f"messages[{i}].content must be a string")
        if len(content) > MAX_MESSAGE_CHARS:
            raise RecordError(
                f"messages[{i}].content has {len(content)} characters; at most "
                f"{MAX_MESSAGE_CHARS} per message"
            )
        if role == "system" and i != 0:
            raise RecordError(f"messages[{i}]: a system message may only come first")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise RecordError("a chat record needs at least one assistant message to train on")
    return out


def excerpt(value: Any, limit: int = 40) -> str:
    """A short quote of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_REPORTED = 20
MAX_ERROR_CHARS = 300  # per reported error: the report (one Firestore field) stays small


@dataclass
class Findings:
    """What checking a file found: its rows, format and errors (the first MAX_REPORTED, each
    with its line, and the count of all)."""

    bytes: int
    rows: int = 0
    format: str | None = None
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    error_count: int = 0
    blank_lines: int = 0

    def error(self, line: int | None, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            if len(message) > MAX_ERROR_CHARS:
                message = message[: MAX_ERROR_CHARS - 1] + "…"
            self.errors.append((line, message))


def _line_of(message: str) -> int | None:
    head = message.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else None


def check_file(data: bytes, max_bytes: int, declared: int | None = None) -> Findings:
    """Checks every line of a file; it is ready to train on only when no error was found."""
    found = Findings(bytes=len(data))
    error = found.error
    if not data:
        error(None, "the file is empty")
        return found
    if declared is not None and len(data) > declared:
        error(
            None,
            f"the file is larger than the {declared} bytes declared when the dataset was "
            "created; create a new dataset with the file's real size",
        )
        return found
    if len(data) > max_bytes:
        error(None, f"the file is {len(data)} bytes; the limit is {max_bytes} bytes")
        return found
    try:
        raw_lines = split_lines(data)
    except RecordError as exc:
        error(1, str(exc))
        return found
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = parse_line(number, raw)
            if line is None:
                found.blank_lines += 1
                continue
            fmt = record_format(line.record)
            if fmt == "chat":
                check_messages(line.record["messages"])
            elif not (
                isinstance(line.record["prompt"], str)
                and isinstance(line.record["completion"], str)
                and line.record["completion"]
            ):
                raise RecordError(
                    "'prompt' and 'completion' must be strings, and the completion not empty"
                )
            if found.format is None:
                found.format = fmt
            elif fmt != found.format:
                raise RecordError(
                    f"this record is {fmt} but the file started as "
                    f"{found.format}; use one format per file"
                )
            found.rows += 1
        except RecordError as exc:
            message = str(exc)
            line_no = _line_of(message)
            error(line_no or number, message if line_no else f"line {number}: {message}")
    if found.rows == 0 and found.error_count == 0:
        error(None, "the file has no records, only blank lines")
    return found
