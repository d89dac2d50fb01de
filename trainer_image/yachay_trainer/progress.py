"""Progress reports: a JSON line on stdout each time, and at a bounded rate a POST to the API's
internal trainer-report route, which writes them into this job's document. The trainer has no
database access; its job token (TrainerConfig.report_token) is good for its own job only."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
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


class ReportRefused(Exception):
    """The API refused a report (4xx): retrying would not help."""


class Reporter:
    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self._last_write = -float("inf")

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Yachay-Job-Token": self.cfg.report_token,
        }
        if self.cfg.report_audience:  # production: Cloud Run IAM wants a Google ID token
            import google.auth.transport.requests
            from google.oauth2 import id_token

            token = id_token.fetch_id_token(  # type: ignore[no-untyped-call]
                google.auth.transport.requests.Request(), self.cfg.report_audience
            )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _post(self, url: str, payload: dict[str, Any], attempts: int) -> Any:
        """POSTs to one of our internal trainer routes and answers its JSON, retrying our API's
        unavailability (5xx, no answer) with backoff up to `attempts` times; a 4xx raises
        ReportRefused at once, the last other error propagates."""
        body = json.dumps(payload, default=str).encode()
        for attempt in range(attempts):
            request = urllib.request.Request(url, data=body, method="POST", headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise ReportRefused(f"{exc.code}: {exc.read()[:300]!r}") from None
                if attempt == attempts - 1:
                    raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if attempt == attempts - 1:
                    raise
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _update(self, fields: dict[str, Any], attempts: int = 1) -> None:
        """Reports fields of this job's document (see _post for the retries)."""
        if self.cfg.progress_sink == "api":
            self._post(self.cfg.report_url, {"job_id": self.cfg.job_id, "fields": fields}, attempts)

    def storage_token(self) -> tuple[str, datetime] | None:
        """A fresh storage token limited to this job's objects and its expiry (naive UTC, as
        google-auth keeps it), or None where the API mints none (the local stack)."""
        answer = self._post(self.cfg.storage_token_url, {"job_id": self.cfg.job_id}, attempts=6)
        if not isinstance(answer, dict) or answer.get("token") is None:
            return None
        expires = datetime.fromisoformat(answer["expires_at"]).astimezone(UTC)
        return str(answer["token"]), expires.replace(tzinfo=None)

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
