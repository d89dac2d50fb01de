"""The HTTP side of the CLI: every call it makes to the public API (CALLS, checked against the
published spec by a test), uploads to and downloads from signed URLs. Standard library only."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# name -> (method, path template): the whole surface the CLI uses.
CALLS: dict[str, tuple[str, str]] = {
    "models": ("GET", "/v1/models"),
    "create_dataset": ("POST", "/v1/datasets"),
    "validate_dataset": ("POST", "/v1/datasets/{dataset_id}/validate"),
    "list_datasets": ("GET", "/v1/datasets"),
    "estimate": ("POST", "/v1/jobs/estimate"),
    "submit": ("POST", "/v1/jobs"),
    "list_jobs": ("GET", "/v1/jobs"),
    "get_job": ("GET", "/v1/jobs/{job_id}"),
    "cancel_job": ("POST", "/v1/jobs/{job_id}/cancel"),
    "download": ("GET", "/v1/jobs/{job_id}/download"),
    "list_checkpoints": ("GET", "/v1/jobs/{job_id}/checkpoints"),
    "billing": ("GET", "/v1/billing/summary"),
    "list_keys": ("GET", "/v1/api-keys"),
    "list_webhooks": ("GET", "/v1/webhook-endpoints"),
    "add_webhook": ("POST", "/v1/webhook-endpoints"),
    "remove_webhook": ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"),
    "test_webhook": ("POST", "/v1/webhook-endpoints/{endpoint_id}/test"),
    "webhook_deliveries": ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"),
}
CHUNK = 1 << 16
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class ApiError(Exception):
    """The API's error answer (or no answer at all: status 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Client:
    base_url: str
    api_key: str
    timeout_s: float = 60.0
    # A 202 (a large dataset's tokens being counted) is asked again after its Retry-After, for
    # at most this long; `waiting` is told each time (the CLI prints it once).
    wait_s: float = 1800.0
    waiting: Callable[[dict[str, Any]], None] | None = None

    def call(
        self,
        name: str,
        path: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + self.wait_s
        while True:
            status, answer, retry_after = self._once(name, path, query, body, headers)
            if status != 202 or time.monotonic() + retry_after > deadline:
                return answer
            if self.waiting is not None:
                self.waiting(answer)
            time.sleep(retry_after)

    def _once(
        self,
        name: str,
        path: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, float]:
        """(status, the JSON answer, Retry-After seconds) of one request."""
        method, template = CALLS[name]
        url = self.base_url.rstrip("/") + template.format(
            **{k: urllib.parse.quote(v, safe="") for k, v in (path or {}).items()}
        )
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.api_key}")
        request.add_header("User-Agent", "yachay-cli/0.1")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                raw = resp.read()
                status, retry = resp.status, resp.headers.get("Retry-After", "")
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable", f"{self.base_url} does not answer: {reason}") from None
        retry_after = min(60.0, max(1.0, float(retry))) if retry.isdigit() else 5.0
        return status, json.loads(raw) if raw else None, retry_after


def _error(status: int, raw: bytes) -> ApiError:
    try:
        err = json.loads(raw)["error"]
        return ApiError(status, err["code"], err["message"])
    except (ValueError, KeyError, TypeError):
        return ApiError(status, f"http_{status}", raw[:200].decode("utf-8", "replace"))


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = parts.path + ("?" + parts.query if parts.query else "")
    return cls(parts.netloc, timeout=timeout_s), target


def upload(url: str, file: Path, headers: dict[str, str], progress: Progress) -> None:
    """PUTs the file to a signed URL in chunks, reporting progress."""
    size = file.stat().st_size
    conn, target = _connection(url, 300)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        for key, value in {**headers, "Content-Length": str(size)}.items():
            conn.putheader(key, value)
        conn.endheaders()
        done = 0
        with file.open("rb") as f:
            while chunk := f.read(CHUNK):
                conn.send(chunk)
                done += len(chunk)
                progress(done, size)
        resp = conn.getresponse()
        body = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, "upload_failed", body[:300].decode("utf-8", "replace"))
    finally:
        conn.close()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, size: int | None, sha256: str | None, progress: Progress) -> str:
    """Downloads a signed URL into `dest`, resuming a partial `dest.part`, and checks the
    sha256 when the API gave one. Returns "kept" (already there and verified) or "downloaded".

    Raises:
        ApiError: the download failed or its checksum does not match.
    """
    if dest.exists() and sha256 and sha256_of(dest) == sha256:
        return "kept"
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    conn, target = _connection(url, 300)
    try:
        headers = {"Range": f"bytes={have}-"} if have else {}
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        if resp.status == 416:  # the partial file is complete already
            resp.read()
        elif resp.status not in (200, 206):
            raise ApiError(
                resp.status, "download_failed", resp.read()[:300].decode("utf-8", "replace")
            )
        else:
            mode = "ab" if resp.status == 206 else "wb"  # 200: the server ignored the Range
            done = have if resp.status == 206 else 0
            total = size or done + int(resp.headers.get("Content-Length") or 0)
            with part.open(mode) as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    progress(done, total)
    finally:
        conn.close()
    if sha256 and sha256_of(part) != sha256:
        part.unlink()
        raise ApiError(0, "checksum_mismatch", f"{dest.name} does not match its sha256; retry")
    os.replace(part, dest)
    return "downloaded"
