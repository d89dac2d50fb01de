"""Test-only set-up: a catalog with a tiny model in it, and that model in the model store."""

from __future__ import annotations

import json
from pathlib import Path

from shared.catalog import CATALOG_PATH

TINY_ID = "tiny-llama"


def tiny_catalog(path: Path) -> Path:
    """The real catalog plus `tiny-llama`, a random-weight model that trains in seconds."""
    raw = json.loads(CATALOG_PATH.read_text())
    smol = next(m for m in raw["models"] if m["id"] == "smollm2-135m-instruct")
    tiny = json.loads(json.dumps(smol))
    tiny.update(
        {
            "id": TINY_ID,
            "display_name": "Tiny Llama (tests)",
            "parameters": 6_000_000,
            "price_per_million_tokens_cents": 100,
            "max_dataset_tokens": 200_000,
            "source": "yachay/tiny-llama",
        }
    )
    tiny["hyperparameters"]["max_seq_length"] = {"default": 512, "min": 64, "max": 1024}
    tiny["hyperparameters"]["epochs"]["default"] = 1
    raw["models"].append(tiny)
    path.write_text(json.dumps(raw))
    return path


def seed_model(folder: Path, model_id: str) -> None:
    """Uploads a model folder into the store (the manifest last)."""
    from shared import storage
    from shared.config import settings

    bucket = storage.client().bucket(settings().models_bucket)
    for p in sorted(folder.iterdir(), key=lambda p: p.name == "manifest.json"):
        bucket.blob(f"models/{model_id}/{p.name}").upload_from_filename(str(p))
