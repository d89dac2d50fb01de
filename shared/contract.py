"""The job contract between the API (which launches Batch jobs) and the trainer container.

One definition of: the environment the trainer is given (`TrainerConfig.to_env` / `from_env`),
how it reports progress (fields of the job document), its exit codes (which the Batch lifecycle
policy maps to retry or fail), and the artifact manifest it writes. Nothing else is shared
between the trainer and the API, apart from `shared.tokenization`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Exit codes. Batch retries EXIT_RETRYABLE and Spot preemption; anything else fails the task.
EXIT_OK = 0
EXIT_USER_ERROR = 65  # the data cannot be trained on (EX_DATAERR): not retried, reason recorded
EXIT_RETRYABLE = 75  # a transient failure (EX_TEMPFAIL): Batch retries the task
EXIT_SPOT_PREEMPTED = 50001  # what Batch reports for a Spot VM taken back
RETRYABLE_EXIT_CODES = (EXIT_RETRYABLE, EXIT_SPOT_PREEMPTED)

# Files the trainer leaves in the output folder.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST = "manifest.json"

# Job document fields the trainer writes (the API owns every other field).
PROGRESS_FIELD = "progress"  # step, total_steps, trained_tokens, loss, learning_rate, eta_s
RESULT_FIELD = "trainer_result"  # trained_tokens, final_loss, artifacts (the manifest)
FAILURE_FIELD = "trainer_failure"  # kind (user_error, out_of_memory, ...) and message

ENV_PREFIX = "YACHAY_TRAINER_"


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8  # examples per optimizer step
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | str = "all-linear"
    max_seq_length: int = 2048
    warmup_ratio: float = 0.03
    seed: int = 42

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> Hyperparameters:
        known = {f.name for f in fields(Hyperparameters)}
        values = {k: v for k, v in raw.items() if k in known}
        if isinstance(values.get("lora_target_modules"), list):
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        return Hyperparameters(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["lora_target_modules"], tuple):
            d["lora_target_modules"] = list(d["lora_target_modules"])
        return d


@dataclass(frozen=True)
class TrainerConfig:
    """Everything one training run needs. URIs are gs://bucket/path or local folder paths."""

    job_id: str
    model_id: str
    model_uri: str  # folder with config.json, tokenizer files, *.safetensors
    dataset_uri: str  # the JSONL file
    output_uri: str  # folder for the adapter and its companions
    checkpoint_uri: str  # folder for resumable checkpoints
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    base_model_name: str = ""  # what adapter_config.json names as its base (the catalog source)
    dataset_sha256: str = ""  # the validated file's hash; the trainer refuses another file
    checkpoint_every_steps: int = 50
    progress_interval_s: float = 10.0  # at most one progress write per interval
    progress_sink: str = "log"  # "log" (stdout only) or "firestore" (the job document too)
    project_id: str = "demo-yachay"

    def to_env(self) -> dict[str, str]:
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Hyperparameters):
                value = json.dumps(value.to_dict(), sort_keys=True)
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    @staticmethod
    def from_env(env: Mapping[str, str]) -> TrainerConfig:
        """Reads the config back; raises ValueError naming a missing or bad variable."""
        values: dict[str, Any] = {}
        for f in fields(TrainerConfig):
            name = ENV_PREFIX + f.name.upper()
            if name not in env:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue
                raise ValueError(f"{name} is not set")
            raw = env[name]
            if f.name == "hyperparameters":
                values[f.name] = Hyperparameters.from_dict(json.loads(raw))
            elif f.name == "checkpoint_every_steps":
                values[f.name] = int(raw)
            elif f.name == "progress_interval_s":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return TrainerConfig(**values)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, **extra: Any) -> dict[str, Any]:
    """Lists every file of `folder` with its size and sha256 in manifest.json (written last)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {
        **extra,
        "files": [
            {"name": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)} for p in files
        ],
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
