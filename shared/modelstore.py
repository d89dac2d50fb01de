"""Our model store: base-model weights in Storage, one folder per catalog model.

Layout: gs://{models_bucket}/{models_prefix}/{model_id}/ holding the Hugging Face files
(config.json, tokenizer files, *.safetensors) and a `manifest.json` written last, listing every
file with its size and sha256. A model counts as available only once its manifest is there, so a
half-finished upload never offers a model.
"""

from __future__ import annotations

from shared import storage
from shared.config import Settings

MANIFEST = "manifest.json"


def model_folder(cfg: Settings, model_id: str) -> str:
    return f"{cfg.models_prefix}/{model_id}/"


def available_model_ids(cfg: Settings) -> set[str]:
    """Ids of the models whose manifest is in the store (one list call)."""
    prefix = f"{cfg.models_prefix}/"
    found = set()
    for name in storage.list_names(cfg.models_bucket, prefix):
        rest = name[len(prefix) :]
        model_id, _, leaf = rest.partition("/")
        if leaf == MANIFEST and model_id:
            found.add(model_id)
    return found
