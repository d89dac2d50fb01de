"""Dataset validation: the rules a JSONL training file must meet, with errors that name the line.

Runs when an upload finishes (before anything is queued or billed). Reports the first
MAX_REPORTED errors and the total count, so a user can fix a file in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.tokenization import RecordError, check_messages, parse_line, record_format, split_lines

MAX_REPORTED = 20


@dataclass
class Report:
    status: str  # "ready" or "invalid"
    rows: int
    bytes: int
    format: str | None  # "chat" or "prompt_completion"
    errors: list[dict[str, object]] = field(default_factory=list)
    error_count: int = 0
    blank_lines: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "rows": self.rows,
            "bytes": self.bytes,
            "format": self.format,
            "errors": self.errors,
            "error_count": self.error_count,
            "blank_lines": self.blank_lines,
        }


def _line_of(message: str) -> int | None:
    head = message.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else None


def validate(data: bytes, max_bytes: int) -> Report:
    """Checks every line; `status` is ready only when there is no error at all."""
    report = Report(status="invalid", rows=0, bytes=len(data), format=None)

    def error(line: int | None, message: str) -> None:
        report.error_count += 1
        if len(report.errors) < MAX_REPORTED:
            report.errors.append({"line": line, "message": message})

    if not data:
        error(None, "the file is empty")
        return report
    if len(data) > max_bytes:
        error(None, f"the file is {len(data)} bytes; the limit is {max_bytes} bytes")
        return report
    try:
        raw_lines = split_lines(data)
    except RecordError as exc:
        error(1, str(exc))
        return report
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = parse_line(number, raw)
            if line is None:
                report.blank_lines += 1
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
            if report.format is None:
                report.format = fmt
            elif fmt != report.format:
                raise RecordError(
                    f"this record is {fmt} but the file started as "
                    f"{report.format}; use one format per file"
                )
            report.rows += 1
        except RecordError as exc:
            message = str(exc)
            line_no = _line_of(message)
            error(line_no or number, message if line_no else f"line {number}: {message}")
    if report.rows == 0 and report.error_count == 0:
        error(None, "the file has no records, only blank lines")
    if report.error_count == 0:
        report.status = "ready"
    return report
