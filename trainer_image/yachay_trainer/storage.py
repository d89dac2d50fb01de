"""Where the trainer reads and writes: gs://bucket/path through google-cloud-storage (locally the
Storage emulator via STORAGE_EMULATOR_HOST), or a plain local folder path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any


def _split(uri: str) -> tuple[str, str]:
    bucket, _, path = uri.removeprefix("gs://").partition("/")
    return bucket, path


TokenSource = Callable[[], "tuple[str, datetime] | None"]
_job_credentials: Any = None  # set by use_job_tokens; None: the default credentials
_project = ""


def use_job_tokens(source: TokenSource, project: str) -> bool:
    """Makes every later Storage call use tokens from `source` (the API's trainer-storage-token
    route: limited to this job's objects, an hour at most), refreshed through it before each
    expires. Answers False, leaving the default credentials, where the API mints none (the
    local stack, whose Storage emulator checks no credentials)."""
    global _job_credentials, _project
    first = source()
    if first is None:
        return False
    from google.auth.exceptions import RefreshError
    from google.oauth2.credentials import Credentials

    def refresh(request: Any, scopes: Any) -> tuple[str, datetime]:
        fresh = source()
        if fresh is None:
            raise RefreshError(  # type: ignore[no-untyped-call]
                "the API stopped minting storage tokens for this job"
            )
        return fresh

    _job_credentials = Credentials(  # type: ignore[no-untyped-call]
        token=first[0], expiry=first[1], refresh_handler=refresh
    )
    _project = project
    _client.cache_clear()
    return True


@lru_cache(maxsize=1)
def _client() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]  # ships no types

    if _job_credentials is not None:
        return storage.Client(project=_project, credentials=_job_credentials)
    return storage.Client()


def _join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


def download_file(uri: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith("gs://"):
        bucket, path = _split(uri)
        _client().bucket(bucket).blob(path).download_to_filename(str(dest))
    else:
        shutil.copyfile(uri, dest)
    return dest


def download_folder(uri: str, dest: Path) -> Path:
    """Copies every file directly inside the folder `uri` into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    if uri.startswith("gs://"):
        bucket, path = _split(uri)
        prefix = path.rstrip("/") + "/"
        for blob in _client().list_blobs(bucket, prefix=prefix):
            name = blob.name[len(prefix) :]
            if name and "/" not in name:
                blob.download_to_filename(str(dest / name))
    else:
        for p in Path(uri).iterdir():
            if p.is_file():
                shutil.copyfile(p, dest / p.name)
    return dest


def upload_file(src: Path, uri: str, custom_time: datetime | None = None) -> None:
    """Uploads one file; `custom_time` (Storage's customTime, our retention) goes with it."""
    if uri.startswith("gs://"):
        bucket, path = _split(uri)
        blob = _client().bucket(bucket).blob(path)
        if custom_time is not None:
            blob.custom_time = custom_time
        blob.upload_from_filename(str(src))
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, uri)


def upload_folder(
    src: Path, uri: str, last: str | None = None, custom_time: datetime | None = None
) -> None:
    """Uploads every file under `src` (subfolders too) into the folder `uri`; the file named
    `last` goes last, so its presence means the rest is complete."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(src).as_posix() == last)
    for p in files:
        upload_file(p, _join(uri, p.relative_to(src).as_posix()), custom_time)


def read_text(uri: str) -> str | None:
    """The text at `uri`, or None where there is nothing."""
    if uri.startswith("gs://"):
        from google.api_core.exceptions import NotFound

        bucket, path = _split(uri)
        try:
            return str(_client().bucket(bucket).blob(path).download_as_text())
        except NotFound:
            return None
    p = Path(uri)
    return p.read_text() if p.exists() else None


def write_text(uri: str, text: str) -> None:
    if uri.startswith("gs://"):
        bucket, path = _split(uri)
        _client().bucket(bucket).blob(path).upload_from_string(text)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_text(text)


def join(uri: str, name: str) -> str:
    return _join(uri, name)
