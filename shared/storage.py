"""Cloud Storage adapter: the only module that imports google.cloud.storage.

Locally STORAGE_EMULATOR_HOST points the same client at the Storage emulator (anonymous
credentials); in production it uses the function's service account.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from shared.config import settings

if TYPE_CHECKING:
    from google.cloud import storage

_lock = threading.Lock()
_client: storage.Client | None = None


def client() -> storage.Client:
    global _client
    with _lock:
        if _client is None:
            from google.cloud import storage

            _client = storage.Client(project=settings().project_id)
        return _client


def list_names(bucket: str, prefix: str) -> list[str]:
    """Names of the objects under `prefix`; an absent bucket counts as empty."""
    from google.api_core.exceptions import NotFound

    try:
        return [blob.name for blob in client().list_blobs(bucket, prefix=prefix)]
    except NotFound:
        return []
