"""Puts locally converted models into the model store (the Storage emulator). Local-only.

Uploads every file of a model folder under models/<id>/, the manifest last, so the model becomes
available only once complete. Skips a model whose manifest in the store is already identical.

    python -m devstack.seed_models .local/model-cache/smollm2-135m-instruct [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared import storage
from shared.config import settings
from shared.contract import MANIFEST
from shared.modelstore import model_folder


def seed(folder: Path) -> bool:
    """Uploads one model folder; returns False when the store already had it."""
    cfg = settings()
    client = storage.client()
    bucket = client.bucket(cfg.models_bucket)
    if not bucket.exists():
        bucket = client.create_bucket(cfg.models_bucket)
    prefix = model_folder(cfg, folder.name)
    manifest = (folder / MANIFEST).read_bytes()
    existing = bucket.blob(prefix + MANIFEST)
    if existing.exists() and existing.download_as_bytes() == manifest:
        return False
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST:
            bucket.blob(prefix + path.name).upload_from_filename(str(path))
    existing.upload_from_string(manifest, content_type="application/json")
    return True


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        done = seed(Path(arg))
        print(f"{Path(arg).name}: {'uploaded to' if done else 'already in'} the model store")
