"""A dataset's token counts: each file encoded once per tokenizer, every total derived from that.

The estimate and the submission bill the exact tokens the trainer trains on, which takes
encoding the whole file with the model's tokenizer (seconds per ten megabytes). That is done
once per (validated file, tokenizer): the per-record counts (`RecordCounts`) are stored beside
the file, in `<dataset object>.counts/`, so they go with the dataset when it is deleted or the
account erased. Every estimate then derives its totals, whatever its seed, split or
`max_seq_length`, by arithmetic over those counts: a new combination costs no encoding, so
asking for many of them is not a way to spend our CPU.

A file too large to encode within the request (over `count_inline_bytes`) is counted in the
background: the request enqueues one named Cloud Task (`count_task`, to the internal
`countTokens` route) and raises `Counting`, which the jobs function answers 202 with
Retry-After; the client asks again and gets the estimate once the counts are stored. A file the
template refuses stores the refusal instead, so asking again answers it at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from shared import modelstore, storage
from shared.config import Settings
from shared.errors import ApiError, Code
from shared.jsonl_rules import RecordError, parse_jsonl
from shared.records import Dataset
from shared.tokenization import ChatTokenizer, RecordCounts

SUFFIX = ".counts/"
_COUNTS, _REFUSED = b"C", b"R"  # the first byte of a stored object says which it holds
MAX_STORED_BYTES = 256 << 20  # counts are far smaller than the file they count
RETRY_AFTER_S = 5


class Counting(Exception):
    """The file is being counted in the background: ask again in `retry_after_s` seconds."""

    def __init__(self, dataset: Dataset, model: str) -> None:
        super().__init__(f"counting the tokens of {dataset.id} for {model}")
        self.dataset_id = dataset.id
        self.model = model
        self.retry_after_s = RETRY_AFTER_S

    def view(self) -> dict[str, Any]:
        return {
            "object": "token_count",
            "status": "counting",
            "dataset_id": self.dataset_id,
            "model": self.model,
            "retry_after_s": self.retry_after_s,
            "message": f"{self.dataset_id} is large: its tokens for {self.model} are being "
            f"counted once, in the background. Send the same request again in "
            f"{self.retry_after_s} seconds; nothing was submitted or held yet.",
        }


def object_name(dataset: Dataset, tok: ChatTokenizer) -> str:
    """Where the counts of this validated file for this tokenizer live."""
    return f"{dataset.object_name}{SUFFIX}{(dataset.sha256 or '')[:16]}-{tok.fingerprint}"


def record_counts(model: str, dataset: Dataset, cfg: Settings) -> RecordCounts:
    """The dataset's per-record counts for the model's tokenizer: stored ones, or counted now
    when the file is small enough to count within a request.

    Raises:
        Counting: a large file not counted yet (a background count is enqueued).
        ApiError: model_unavailable; dataset_not_ready when the file changed since it was
            validated; invalid_value when the model's template or tokenizer refuses a record
            (with its line number).
    """
    tok = _tokenizer(model, cfg)
    stored = _stored(dataset, tok, cfg)
    if stored is None:
        size = dataset.report.bytes if dataset.report else dataset.declared_bytes
        if size > cfg.count_inline_bytes:
            from shared import tasks

            tasks.enqueue_count(dataset.uid, dataset.id, dataset.sha256 or "", model, cfg)
            raise Counting(dataset, model)
        stored = count_and_store(tok, dataset, cfg)
    if isinstance(stored, str):
        raise ApiError(
            Code.INVALID_VALUE,
            f"{model} cannot train on this dataset: {stored}",
            param="dataset_id",
        )
    return stored


def count_in_background(uid: str, dataset_id: str, model: str, cfg: Settings) -> str:
    """The Cloud Task's work: counts the dataset for the model unless already stored (tasks
    may arrive more than once). Returns what it did, "skipped: ..." when there is nothing to
    count (the dataset gone or changed, the model unavailable): the task is done either way.
    Other errors propagate, so Cloud Tasks retries."""
    from shared import store

    dataset = store.get_dataset(uid, dataset_id)
    if dataset is None or dataset.sha256 is None:
        return "skipped: no such validated dataset"
    try:
        tok = _tokenizer(model, cfg)
        if _stored(dataset, tok, cfg) is not None:
            return "already counted"
        result = count_and_store(tok, dataset, cfg)
    except ApiError as exc:  # a retry would change nothing; the next request says why
        return f"skipped: {exc.message}"
    return "refused" if isinstance(result, str) else f"counted {len(result)} records"


def count_and_store(tok: ChatTokenizer, dataset: Dataset, cfg: Settings) -> RecordCounts | str:
    """Encodes every record of the file and stores the counts, or the refusal (a message
    naming the line) when the template or tokenizer refuses a record."""
    data = storage.read_bytes(cfg.datasets_bucket, dataset.object_name, cfg.dataset_max_bytes)
    if data is None or hashlib.sha256(data).hexdigest() != dataset.sha256:
        raise ApiError(
            Code.DATASET_NOT_READY,
            "The dataset's file changed after validation; validate it again.",
            param="dataset_id",
        )
    result: RecordCounts | str
    try:
        result = tok.count_records((line.number, line.record) for line in parse_jsonl(data))
        blob = _COUNTS + result.to_bytes()
    except RecordError as exc:
        result = str(exc)
        blob = _REFUSED + result.encode()
    storage.write_bytes(cfg.datasets_bucket, object_name(dataset, tok), blob)
    return result


def _stored(dataset: Dataset, tok: ChatTokenizer, cfg: Settings) -> RecordCounts | str | None:
    """The stored counts or refusal; None when there are none (or they do not read, so they
    are made again)."""
    blob = storage.read_bytes(cfg.datasets_bucket, object_name(dataset, tok), MAX_STORED_BYTES)
    if not blob:
        return None
    if blob[:1] == _REFUSED:
        return blob[1:].decode(errors="replace")
    try:
        return RecordCounts.from_bytes(blob[1:]) if blob[:1] == _COUNTS else None
    except ValueError:
        return None


def _tokenizer(model: str, cfg: Settings) -> ChatTokenizer:
    tok = modelstore.tokenizer_for(cfg, model)
    if tok is None:
        raise ApiError(
            Code.MODEL_UNAVAILABLE,
            f"{model} is not available right now; choose an available model from GET /v1/models.",
            param="model",
        )
    return tok
