"""Progress reports: a JSON line on stdout each time, and at a bounded rate the job document."""

from __future__ import annotations

import json
import sys
import time
from functools import lru_cache
from typing import Any

from shared.contract import FAILURE_FIELD, PROGRESS_FIELD, RESULT_FIELD, TrainerConfig


@lru_cache(maxsize=1)
def _firestore(project: str) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=project)


class Reporter:
    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self._last_write = -float("inf")

    def _update(self, fields: dict[str, Any]) -> None:
        if self.cfg.progress_sink == "firestore":
            doc = _firestore(self.cfg.project_id).collection("jobs").document(self.cfg.job_id)
            doc.update(fields)

    @staticmethod
    def log(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        sys.stdout.flush()

    def progress(self, report: dict[str, Any], force: bool = False) -> None:
        self.log("progress", **report)
        now = time.monotonic()
        if force or now - self._last_write >= self.cfg.progress_interval_s:
            self._last_write = now
            self._update({PROGRESS_FIELD: report})

    def result(self, result: dict[str, Any]) -> None:
        self.log("result", **result)
        self._update({RESULT_FIELD: result})

    def failure(self, kind: str, message: str) -> None:
        self.log("failure", kind=kind, message=message)
        try:
            self._update({FAILURE_FIELD: {"kind": kind, "message": message}})
        except Exception as exc:  # the exit code still tells Batch; the log keeps the reason
            self.log("failure_not_recorded", error=repr(exc))
