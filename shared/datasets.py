"""Dataset validation: the rules a JSONL training file must meet, with errors that name the line.

Runs when an upload finishes (before anything is queued or billed). Reports the first
jsonl_rules.MAX_REPORTED errors and the total count, so a user can fix a file in one pass.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from shared import logs, storage, store
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.jsonl_rules import check_file
from shared.records import Dataset, DatasetStatus, LineError, ValidationReport


def validate(data: bytes, max_bytes: int, declared: int | None = None) -> ValidationReport:
    """Checks every line (shared.jsonl_rules); `status` is ready only when there is no error."""
    found = check_file(data, max_bytes, declared)
    return ValidationReport(
        status=DatasetStatus.INVALID if found.error_count else DatasetStatus.READY,
        rows=found.rows,
        bytes=found.bytes,
        format=found.format,
        errors=tuple(LineError(line, message) for line, message in found.errors),
        error_count=found.error_count,
        blank_lines=found.blank_lines,
    )


# --- the dataset resource --------------------------------------------------------------------

ALLOWED_SUFFIXES = (".jsonl",)
UPLOAD_CONTENT_TYPE = "application/jsonl"
LENGTH_RANGE = "x-goog-content-length-range"
ABANDONED_AFTER = timedelta(days=1)  # the upload URL lives an hour; a day later nothing comes


def user_prefix(uid: str) -> str:
    """Where all of a user's dataset files live."""
    return f"datasets/{uid}/"


def object_name(uid: str, dataset_id: str) -> str:
    return f"{user_prefix(uid)}{dataset_id}.jsonl"


def view(dataset: Dataset) -> dict[str, Any]:
    """The public JSON shape of a dataset."""
    report = dataset.report
    return {
        "object": "dataset",
        "id": dataset.id,
        "filename": dataset.filename,
        "status": dataset.status.value,
        "bytes": None if report is None else report.bytes,
        "rows": None if report is None else report.rows,
        "format": None if report is None else report.format,
        "errors": [] if report is None else [e.to_doc() for e in report.errors],
        "error_count": 0 if report is None else report.error_count,
        "created_at": dataset.created_at.isoformat(),
        "validated_at": dataset.validated_at.isoformat() if dataset.validated_at else None,
    }


def parse_create(body: dict[str, Any], max_bytes: int) -> tuple[str, int]:
    """The filename and declared size of a body already checked against schemas.CreateDataset,
    held to the rules the schema cannot know (the suffix, this deployment's size limit)."""
    filename, size = body["filename"].strip(), body["size_bytes"]
    if not filename.lower().endswith(ALLOWED_SUFFIXES):
        raise ApiError(
            Code.INVALID_VALUE,
            f"Datasets are JSONL files: 'filename' must end with {', '.join(ALLOWED_SUFFIXES)}.",
            param="filename",
        )
    if size > max_bytes:
        raise ApiError(
            Code.INVALID_VALUE,
            f"'size_bytes' must be between 1 and {max_bytes}.",
            param="size_bytes",
        )
    return filename, size


def create(uid: str, body: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    """POST /v1/datasets: registers a dataset and answers with a one-hour signed PUT URL into
    the user's prefix.

    Raises:
        ApiError: an unknown field, a missing or unsafe filename, or a size out of bounds.
    """
    filename, size = parse_create(body, cfg.dataset_max_bytes)
    dataset_id = store.new_id("ds-")
    t = store.now()
    dataset = Dataset(
        id=dataset_id,
        uid=uid,
        filename=filename,
        declared_bytes=size,
        object_name=object_name(uid, dataset_id),
        status=DatasetStatus.PENDING_UPLOAD,
        created_at=t,
        updated_at=t,
    )
    try:
        store.new_dataset(dataset, cfg.dataset_max_count, cfg.dataset_quota_bytes)
    except store.Conflict as exc:
        raise _over_quota(exc, size, cfg) from None
    # Storage itself refuses a PUT larger than declared: the range is part of the signature.
    headers = {"Content-Type": UPLOAD_CONTENT_TYPE, LENGTH_RANGE: f"0,{size}"}
    url, expires = storage.signed_url(cfg.datasets_bucket, dataset.object_name, "PUT", headers)
    return {
        **view(dataset),
        "upload": {
            "url": url,
            "method": "PUT",
            "headers": headers,
            "expires_at": expires.isoformat(),
        },
    }


def _over_quota(exc: Exception, size: int, cfg: Settings) -> ApiError:
    if getattr(exc, "code", None) == "too_many_datasets":
        return ApiError(
            Code.TOO_MANY_DATASETS,
            f"You have {cfg.dataset_max_count} datasets, the most an account keeps; delete "
            "one you no longer need (DELETE /v1/datasets/{id}) and try again.",
        )
    used = getattr(exc, "detail", 0)
    return ApiError(
        Code.DATASET_STORAGE_FULL,
        f"Your datasets take {used} of your {cfg.dataset_quota_bytes} bytes; this one "
        f"({size} bytes) does not fit. Delete datasets you no longer need and try again.",
        param="size_bytes",
    )


def owned(uid: str, dataset_id: str) -> Dataset:
    """The user's dataset; not_found for anyone else's (as if it did not exist)."""
    dataset = store.get_dataset(uid, dataset_id)
    if dataset is None:
        raise ApiError(Code.NOT_FOUND, f"No dataset '{dataset_id}'.", param="dataset_id")
    return dataset


def list_page(uid: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the user's datasets (views), newest first, and the next page's cursor."""
    found, next_cursor = store.list_datasets(uid, limit, cursor)
    return [view(d) for d in found], next_cursor


def validate_dataset(dataset: Dataset, cfg: Settings) -> Dataset:
    """Reads the uploaded object and records the validation report; idempotent. A dataset never
    stays `validating`: if validating fails unexpectedly it goes back to `pending_upload` (the
    user, or the trigger's retry, validates it again)."""
    limit = min(cfg.dataset_max_bytes, dataset.declared_bytes or cfg.dataset_max_bytes)
    data = storage.read_bytes(cfg.datasets_bucket, dataset.object_name, limit)
    if data is None:
        raise ApiError(
            Code.UPLOAD_MISSING,
            "Nothing was uploaded yet: PUT the file to the dataset's upload URL, then validate.",
        )
    digest = hashlib.sha256(data).hexdigest()
    done = (DatasetStatus.READY, DatasetStatus.INVALID)
    if dataset.sha256 == digest and dataset.status in done:
        return dataset  # this very file was validated already (the trigger and a request race)
    store.mark_validating(dataset.id)
    try:
        report = validate(data, cfg.dataset_max_bytes, declared=dataset.declared_bytes)
        return store.record_validation(dataset.id, report, digest)
    except Exception:
        store.unmark_validating(dataset.id)
        raise


def validate_uploaded_object(bucket: str, name: str, cfg: Settings) -> Dataset | None:
    """The Storage finalize trigger's entry: validates the dataset an object belongs to, or
    ignores objects that are not dataset uploads."""
    parts = name.split("/")
    if bucket != cfg.datasets_bucket or len(parts) != 3 or parts[0] != "datasets":
        return None
    dataset_id = parts[2].removesuffix(".jsonl")
    dataset = store.get_dataset(parts[1], dataset_id)
    if dataset is None or dataset.object_name != name:
        return None
    return validate_dataset(dataset, cfg)


def delete(uid: str, dataset_id: str, cfg: Settings) -> None:
    """DELETE /v1/datasets/{id}: deletes the user's dataset and its file.

    Raises:
        ApiError: not_found for another user's dataset or one that does not exist.
    """
    dataset = owned(uid, dataset_id)
    storage.delete_prefix(cfg.datasets_bucket, dataset.object_name)
    store.delete_dataset(dataset)


def sweep_abandoned(cfg: Settings, now: datetime | None = None) -> store.Found[str]:
    """Datasets whose upload never came (their URL died long ago) are deleted, so they stop
    counting against the user's quotas; one whose file did arrive (its finalize event was lost)
    is validated instead. Each is handled on its own; returns what was done, and the documents
    skipped because they do not parse."""
    found = store.abandoned_uploads((now or store.now()) - ABANDONED_AFTER)

    def sweep(dataset: Dataset) -> str:
        if storage.read_bytes(cfg.datasets_bucket, dataset.object_name, 0) is None:
            store.delete_dataset(dataset)
            return "deleted (never uploaded)"
        return f"validated ({validate_dataset(dataset, cfg).status.value})"

    done = logs.each(found.items, lambda d: d.id, sweep, "abandoned uploads")
    return store.Found(done, found.skipped)
