"""Progress reports: a JSON line on stdout each time, and at a bounded rate the job document."""

from __future__ import annotations

import json
import sys
import time
from functools import lru_cache
from typing import Any

from shared.contract import (
    FAILURE_FIELD,
    PROGRESS_FIELD,
    RESULT_FIELD,
    FailureKind,
    Progress,
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
)


@lru_cache(maxsize=1)
def _firestore(project: str) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=project)


class Reporter:
    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self._last_write = -float("inf")

    def _update(self, fields: dict[str, Any], attempts: int = 1) -> None:
        """Writes fields of the job document, retrying contention (Aborted) and unavailability
        with backoff up to `attempts` times; the last error propagates."""
        if self.cfg.progress_sink != "firestore":
            return
        from google.api_core import exceptions as gexc

        doc = _firestore(self.cfg.project_id).document(self.cfg.job_document)
        for attempt in range(attempts):
            try:
                doc.update(fields)
                return
            except (gexc.Aborted, gexc.ServiceUnavailable, gexc.DeadlineExceeded):
                if attempt == attempts - 1:
                    raise
                time.sleep(min(8.0, 0.5 * 2**attempt))

    @staticmethod
    def log(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        sys.stdout.flush()

    def progress(self, report: Progress, force: bool = False) -> None:
        self.log("progress", **report.to_doc())
        now = time.monotonic()
        if force or now - self._last_write >= self.cfg.progress_interval_s:
            self._last_write = now
            try:  # progress is best effort: a missed update must never stop training
                self._update({PROGRESS_FIELD: report.to_doc()})
            except Exception as exc:
                self.log("progress_not_recorded", error=repr(exc))

    def result(self, result: TrainerResult) -> None:
        self.log("result", **result.to_doc())
        self._update({RESULT_FIELD: result.to_doc()}, attempts=6)

    def failure(self, kind: FailureKind, message: str) -> None:
        failure = TrainerFailure(kind, message)
        self.log("failure", **failure.to_doc())
        try:
            self._update({FAILURE_FIELD: failure.to_doc()}, attempts=6)
        except Exception as exc:  # the exit code still tells Batch; the log keeps the reason
            self.log("failure_not_recorded", error=repr(exc))
