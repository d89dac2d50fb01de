"""Our model store: base-model weights in Storage, one folder per catalog model.

Layout: gs://{models_bucket}/{models_prefix}/{model_id}/ holding the Hugging Face files
(config.json, tokenizer files, *.safetensors) and a `manifest.json` written last, listing every
file with its size and sha256. A model counts as available only once its manifest is there, so a
half-finished upload never offers a model.
"""

from __future__ import annotations

from shared import storage
from shared.config import Settings
from shared.contract import MANIFEST
from shared.tokenization import ChatTokenizer


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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
_tokenizers: dict[str, object] = {}


def model_uri(cfg: Settings, model_id: str) -> str:
    return f"gs://{cfg.models_bucket}/{model_folder(cfg, model_id)}"


def tokenizer_for(cfg: Settings, model_id: str) -> ChatTokenizer | None:
    """The model's tokenizer and chat template from the store (cached per process), or None
    when the model is not in the store."""
    cached = _tokenizers.get(model_id)
    if cached is not None:
        return cached  # type: ignore[return-value]
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix=f"yachay-tok-{model_id}-"))
    prefix = model_folder(cfg, model_id)
    if storage.read_bytes(cfg.models_bucket, prefix + MANIFEST, 1 << 20) is None:
        return None
    for name in TOKENIZER_FILES:
        data = storage.read_bytes(cfg.models_bucket, prefix + name, 64 << 20)
        if data is not None:
            (folder / name).write_bytes(data)
    tok = ChatTokenizer.from_dir(folder)
    _tokenizers[model_id] = tok
    return tok
