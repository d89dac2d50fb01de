"""Dataset validation: the rules a JSONL training file must meet, with errors that name the line.

Runs when an upload finishes (before anything is queued or billed). Reports the first
MAX_REPORTED errors and the total count, so a user can fix a file in one pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared import storage, store
from shared.config import Settings
from shared.errors import ApiError, Code
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


# --- the dataset resource --------------------------------------------------------------------

ALLOWED_SUFFIXES = (".jsonl",)
UPLOAD_CONTENT_TYPE = "application/jsonl"


def object_name(uid: str, dataset_id: str) -> str:
    return f"datasets/{uid}/{dataset_id}.jsonl"


def view(doc: dict[str, Any]) -> dict[str, Any]:
    report = doc.get("report") or {}
    return {
        "object": "dataset",
        "id": doc["id"],
        "filename": doc["filename"],
        "status": doc["status"],
        "bytes": report.get("bytes"),
        "rows": report.get("rows"),
        "format": report.get("format"),
        "errors": report.get("errors", []),
        "error_count": report.get("error_count", 0),
        "created_at": doc["created_at"].isoformat(),
        "validated_at": doc["validated_at"].isoformat() if doc.get("validated_at") else None,
    }


def parse_create(body: dict[str, Any], max_bytes: int) -> tuple[str, int]:
    for key in body:
        if key not in ("filename", "size_bytes"):
            raise ApiError(Code.UNKNOWN_FIELD, f"Unknown field '{key}'.", param=key)
    filename = body.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise ApiError(
            Code.MISSING_FIELD, "Send 'filename', e.g. \"train.jsonl\".", param="filename"
        )
    if len(filename) > 255 or any(c in filename for c in "/\\\x00"):
        raise ApiError(
            Code.INVALID_VALUE,
            "'filename' must be a plain file name of at most 255 characters.",
            param="filename",
        )
    if not filename.lower().endswith(ALLOWED_SUFFIXES):
        raise ApiError(
            Code.INVALID_VALUE,
            f"Datasets are JSONL files: 'filename' must end with {', '.join(ALLOWED_SUFFIXES)}.",
            param="filename",
        )
    size = body.get("size_bytes")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ApiError(
            Code.MISSING_FIELD, "Send 'size_bytes', the file's size in bytes.", param="size_bytes"
        )
    if not 0 < size <= max_bytes:
        raise ApiError(
            Code.INVALID_VALUE,
            f"'size_bytes' must be between 1 and {max_bytes}.",
            param="size_bytes",
        )
    return filename.strip(), size


def create(uid: str, body: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    """Registers a dataset and answers with a one-hour signed PUT URL into the user's prefix."""
    filename, size = parse_create(body, cfg.dataset_max_bytes)
    dataset_id = store.new_id("ds-")
    t = store.now()
    doc = {
        "id": dataset_id,
        "uid": uid,
        "filename": filename,
        "declared_bytes": size,
        "object_name": object_name(uid, dataset_id),
        "status": "pending_upload",
        "created_at": t,
        "updated_at": t,
        "report": None,
        "sha256": None,
    }
    store.create_dataset(doc)
    url, expires = storage.signed_url(
        cfg.datasets_bucket, doc["object_name"], "PUT", content_type=UPLOAD_CONTENT_TYPE
    )
    return {
        **view(doc),
        "upload": {
            "url": url,
            "method": "PUT",
            "headers": {"Content-Type": UPLOAD_CONTENT_TYPE},
            "expires_at": expires.isoformat(),
        },
    }


def owned(uid: str, dataset_id: str) -> dict[str, Any]:
    doc = store.get_owned(store.DATASETS, dataset_id, uid)
    if doc is None:
        raise ApiError(Code.NOT_FOUND, f"No dataset '{dataset_id}'.", param="dataset_id")
    return doc


def validate_dataset(doc: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    """Reads the uploaded object and records the validation report; idempotent."""
    data = storage.read_bytes(cfg.datasets_bucket, doc["object_name"], cfg.dataset_max_bytes)
    if data is None:
        raise ApiError(
            Code.UPLOAD_MISSING,
            "Nothing was uploaded yet: PUT the file to the dataset's upload URL, then validate.",
        )
    digest = hashlib.sha256(data).hexdigest()
    if doc.get("sha256") == digest and doc["status"] in ("ready", "invalid"):
        return doc  # this very file was validated already (the trigger and a request may race)
    store.mark_validating(doc["id"])
    report = validate(data, cfg.dataset_max_bytes)
    return store.update_dataset(
        doc["id"],
        {
            "status": report.status,
            "report": report.as_dict(),
            "validated_at": store.now(),
            "sha256": digest,
        },
    )


def validate_uploaded_object(bucket: str, name: str, cfg: Settings) -> dict[str, Any] | None:
    """The Storage finalize trigger's entry: validates the dataset an object belongs to, or
    ignores objects that are not dataset uploads."""
    parts = name.split("/")
    if bucket != cfg.datasets_bucket or len(parts) != 3 or parts[0] != "datasets":
        return None
    dataset_id = parts[2].removesuffix(".jsonl")
    doc = store.get_owned(store.DATASETS, dataset_id, parts[1])
    if doc is None or doc["object_name"] != name:
        return None
    return validate_dataset(doc, cfg)


def delete(uid: str, dataset_id: str, cfg: Settings) -> None:
    doc = owned(uid, dataset_id)
    storage.delete_prefix(cfg.datasets_bucket, doc["object_name"])
    store.delete_dataset(dataset_id)
