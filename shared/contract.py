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
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

# Exit codes. Batch retries RETRYABLE_EXIT_CODES; FAIL_EXIT_CODES fail the task at once.
EXIT_OK = 0
EXIT_PLATFORM_FAILURE = 1  # an unexpected error of ours (Python's own exit code for a crash)
EXIT_USAGE = 2  # the interpreter refused to start the module
EXIT_USER_ERROR = 65  # the data cannot be trained on (EX_DATAERR): not retried, reason recorded
EXIT_RETRYABLE = 75  # a transient failure (EX_TEMPFAIL): Batch retries the task
EXIT_KILLED = 137  # SIGKILL, e.g. the kernel's OOM killer
EXIT_SEGFAULT = 139  # SIGSEGV in a native library
EXIT_SPOT_PREEMPTED = 50001  # what Batch reports for a Spot VM taken back
RETRYABLE_EXIT_CODES = (EXIT_RETRYABLE, EXIT_SPOT_PREEMPTED)
FAIL_EXIT_CODES = (EXIT_PLATFORM_FAILURE, EXIT_USAGE, EXIT_USER_ERROR, EXIT_KILLED, EXIT_SEGFAULT)

# Files the trainer leaves in the output folder (MANIFEST also names a base model's manifest in
# the model store: the same format, written last, so its presence means "complete").
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
GGUF_ADAPTER = "adapter-lora.gguf"  # the same adapter for llama.cpp (`--lora`) and Ollama
MERGED_DIR = "merged"  # OUTPUT_MERGED: the base with the adapter merged in, loadable without peft
# The merged weights are always written in bf16 (the catalog bases' dtype), the dtype they are
# priced at (shared.pricing: 2 bytes a parameter), whatever dtype a local base is stored in.
MERGED_DTYPE = "bfloat16"
MERGED_BYTES_PER_PARAMETER = 2
CHECKPOINTS_DIR = "checkpoints"  # epoch-end adapters, one folder each (checkpoint_folder)
MANIFEST = "manifest.json"
# The Hugging Face model types the trainer trains as themselves (each family's soft-capping,
# window, biases: tests/trainer/test_architectures.py) and the GGUF exporter maps; the catalog
# refuses a model of any other.
ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma2")
MAX_KEPT_CHECKPOINTS = 10  # epoch ends kept per job (the catalog allows at most 10 epochs)

# Extra outputs a job can ask for (TrainerConfig.outputs); the adapter and its GGUF always come.
OUTPUT_MERGED = "merged"
EXTRA_OUTPUTS = (OUTPUT_MERGED,)

# Job document fields the trainer reports (the API owns every other field). The trainer has no
# database access: it POSTs them to TrainerConfig.report_url with its job's token, and the API
# writes them into that job's document only (shared.lifecycle.trainer_report).
PROGRESS_FIELD = "progress"  # Progress
RESULT_FIELD = "trainer_result"  # TrainerResult
FAILURE_FIELD = "trainer_failure"  # TrainerFailure

ENV_PREFIX = "YACHAY_TRAINER_"


class FailureKind(StrEnum):
    """Why a run failed, as the trainer reports it (the API turns it into the user's reason)."""

    USER_ERROR = "user_error"  # the data cannot be trained on
    OUT_OF_MEMORY = "out_of_memory"
    PLATFORM = "platform"  # anything else: ours to fix


class Progress(NamedTuple):
    """One progress report (PROGRESS_FIELD), written at a bounded rate while training."""

    step: int
    total_steps: int
    epoch: int
    trained_tokens: int
    total_tokens: int
    loss: float
    learning_rate: float
    eta_s: float
    eval_loss: float | None = None  # the latest validation loss, once there is one

    def to_doc(self) -> dict[str, Any]:
        return self._asdict()

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Progress:
        return Progress(**{name: doc[name] for name in Progress._fields if name in doc})


class ArtifactFile(NamedTuple):
    """One file of a finished run's output folder, as the manifest lists it."""

    name: str
    size: int
    sha256: str

    def to_doc(self) -> dict[str, Any]:
        return self._asdict()

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> ArtifactFile:
        return ArtifactFile(name=doc["name"], size=int(doc["size"]), sha256=doc["sha256"])


class Checkpoint(NamedTuple):
    """The adapter as it was at the end of one epoch, kept with the outputs under
    CHECKPOINTS_DIR/<folder>/ (the PEFT pair), listed and downloadable like the final one."""

    step: int
    epoch: int
    train_loss: float  # the mean training loss of the epoch it ends
    eval_loss: float | None
    files: tuple[ArtifactFile, ...]

    @property
    def folder(self) -> str:
        return checkpoint_folder(self.step)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_doc(self) -> dict[str, Any]:
        return {**self._asdict(), "files": [f.to_doc() for f in self.files]}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Checkpoint:
        return Checkpoint(
            step=int(doc["step"]),
            epoch=int(doc["epoch"]),
            train_loss=float(doc["train_loss"]),
            eval_loss=doc.get("eval_loss"),
            files=tuple(ArtifactFile.from_doc(f) for f in doc.get("files") or ()),
        )


def checkpoint_folder(step: int) -> str:
    return f"{CHECKPOINTS_DIR}/step-{step:06d}"


class TrainerResult(NamedTuple):
    """What a finished run reports (RESULT_FIELD); its presence means the outputs are uploaded."""

    steps: int
    trained_tokens: int
    examples: int
    final_loss: float | None
    last_epoch_mean_loss: float | None
    train_seconds: float
    artifacts: tuple[ArtifactFile, ...] = ()
    eval_loss: float | None = None  # the last validation loss (None: no validation)
    eval_tokens: int = 0  # tokens of the validation examples, one pass (never billed)
    checkpoints: tuple[Checkpoint, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {
            **self._asdict(),
            "artifacts": [a.to_doc() for a in self.artifacts],
            "checkpoints": [c.to_doc() for c in self.checkpoints],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> TrainerResult:
        return TrainerResult(
            steps=int(doc.get("steps", 0)),
            trained_tokens=int(doc.get("trained_tokens", 0)),
            examples=int(doc.get("examples", 0)),
            final_loss=doc.get("final_loss"),
            last_epoch_mean_loss=doc.get("last_epoch_mean_loss"),
            train_seconds=float(doc.get("train_seconds", 0.0)),
            artifacts=tuple(ArtifactFile.from_doc(a) for a in doc.get("artifacts") or ()),
            eval_loss=doc.get("eval_loss"),
            eval_tokens=int(doc.get("eval_tokens", 0)),
            checkpoints=tuple(Checkpoint.from_doc(c) for c in doc.get("checkpoints") or ()),
        )

    @property
    def total_bytes(self) -> int:
        """Every kept byte: the outputs and the epoch checkpoints (what storage is priced on)."""
        return sum(a.size for a in self.artifacts) + sum(c.size for c in self.checkpoints)

    def checkpoint(self, step: int) -> Checkpoint | None:
        return next((c for c in self.checkpoints if c.step == step), None)


class TrainerFailure(NamedTuple):
    """Why a run failed (FAILURE_FIELD), written before the trainer exits non-zero."""

    kind: FailureKind
    message: str

    def to_doc(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "message": self.message}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> TrainerFailure:
        try:
            kind = FailureKind(str(doc.get("kind")))
        except ValueError:
            kind = FailureKind.PLATFORM
        return TrainerFailure(kind=kind, message=str(doc.get("message", "")))


@dataclass(frozen=True)
class Knob:
    """What the rest of the project needs to know of one hyperparameter, beside its name, type
    and default (the `Hyperparameters` field it is attached to).

    `catalog` is where a model's entry in shared/data/models.json may set other bounds or another
    default ("hyperparameters.epochs", "lora.rank"): the group it is shown under in
    `GET /v1/models`. `minimum`/`maximum` are the bounds where the model sets none. `trainer`
    names where the trainer reads it (`module.name` in yachay_trainer, comma-separated; a test
    checks that each exists). The request and response schemas, the bounds check, the
    catalog's check, the spec and the CLI's options all derive from these declarations
    (`declared()`), so adding a hyperparameter is adding one field below.
    """

    help: str
    catalog: str
    trainer: str
    minimum: float | None = None  # None: not a number (lora_target_modules)
    maximum: float | None = None


def _knob(default: Any, help: str, catalog: str, trainer: str, *bounds: float) -> Any:
    return field(
        default=default,
        metadata={"knob": Knob(help, catalog, trainer, *bounds)},
    )


@dataclass(frozen=True)
class Hyperparameters:
    """A job's hyperparameters, declared once (see `Knob`)."""

    epochs: int = _knob(
        3, "Passes over the training set.", "hyperparameters.epochs", "data.StepPlan", 1, 10
    )
    learning_rate: float = _knob(
        2e-4,
        "The AdamW learning rate at the end of warm-up (cosine decay after).",
        "hyperparameters.learning_rate",
        "train.Run.setup",
        1e-6,
        1e-2,
    )
    batch_size: int = _knob(
        8,
        "Examples per optimizer step (packed, so no padding is trained or billed).",
        "hyperparameters.batch_size",
        "data.StepPlan",
        1,
        64,
    )
    lora_rank: int = _knob(
        16, "The rank r of each LoRA update.", "lora.rank", "train.lora_model", 1, 128
    )
    lora_alpha: int = _knob(
        32,
        "LoRA's alpha: each update is scaled by alpha / rank.",
        "lora.alpha",
        "train.lora_model",
        1,
        512,
    )
    lora_dropout: float = _knob(
        0.05,
        "Dropout on the LoRA branches' inputs.",
        "lora.dropout",
        "train.lora_model",
        0.0,
        0.5,
    )
    lora_target_modules: tuple[str, ...] | str = _knob(
        "all-linear",
        '"all-linear", or the projections to adapt (the model lists those allowed).',
        "lora.target_modules",
        "train.lora_model",
    )
    max_seq_length: int = _knob(
        2048,
        "Tokens per example; longer ones are truncated (and counted as such in the quote).",
        "hyperparameters.max_seq_length",
        "data.read_examples, data.pack_step",
        128,
        8192,
    )
    warmup_ratio: float = _knob(
        0.03,
        "The share of steps over which the learning rate warms up from 0.",
        "hyperparameters.warmup_ratio",
        "train.Run.setup, train.cosine_with_warmup",
        0.0,
        0.5,
    )
    seed: int = _knob(
        42,
        "Seeds the LoRA initialisation, the order of examples, dropout and the validation split.",
        "hyperparameters.seed",
        "train.Run.setup, data.StepPlan",
        0,
        2**31 - 1,
    )

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


class Declared(NamedTuple):
    """One hyperparameter: its field's name, type ("integer", "number" or "modules") and
    default, and its Knob."""

    name: str
    kind: str
    default: Any
    knob: Knob


@cache
def declared() -> tuple[Declared, ...]:
    """Every hyperparameter, in declaration order (read once: the class never changes)."""
    out = []
    for f in fields(Hyperparameters):
        kind = {int: "integer", float: "number"}.get(type(f.default), "modules")
        out.append(Declared(f.name, kind, f.default, f.metadata["knob"]))
    return tuple(out)


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
    progress_sink: str = "log"  # "log" (stdout only) or "api" (also POSTed to report_url)
    report_url: str = ""  # the API's internal trainer-report route
    # Signed for this job only (shared.links), so a trainer can report for no other job.
    report_token: str = ""
    # Production: the audience of the Google ID token the request also carries (Cloud Run
    # IAM lets the trainer's account invoke the route); empty locally, where no IAM applies.
    report_audience: str = ""
    # The launcher's trainer-storage-token route: short-lived storage credentials for this job's
    # objects only (shared.storage_grants). Empty: the default credentials (tests, benches).
    storage_token_url: str = ""
    # ISO time: the customTime (retention) the outputs are written with, so that no output is
    # ever without one (a run that ends after a cancel leaves nothing kept for ever); the API
    # moves it later when the job completes.
    outputs_kept_until: str = ""
    project_id: str = "demo-yachay"
    # Validation: a second JSONL file, or a seeded split of the training file's records
    # (shared.tokenization.held_out); evaluated at each epoch end and every eval_every_steps.
    validation_uri: str = ""
    validation_sha256: str = ""
    validation_split: float = 0.0
    eval_every_steps: int = 0  # 0: at epoch ends only
    # Start from an earlier result: a folder holding adapter_config.json + adapter_model.safetensors
    init_adapter_uri: str = ""
    outputs: tuple[str, ...] = ()  # of EXTRA_OUTPUTS

    @property
    def kept_until(self) -> datetime | None:
        """outputs_kept_until as a time (None when not set)."""
        return datetime.fromisoformat(self.outputs_kept_until) if self.outputs_kept_until else None

    def to_env(self) -> dict[str, str]:
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Hyperparameters):
                value = json.dumps(value.to_dict(), sort_keys=True)
            elif isinstance(value, tuple):
                value = ",".join(value)
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
            elif f.name in ("checkpoint_every_steps", "eval_every_steps"):
                values[f.name] = int(raw)
            elif f.name in ("progress_interval_s", "validation_split"):
                values[f.name] = float(raw)
            elif f.name == "outputs":
                values[f.name] = tuple(x for x in raw.split(",") if x)
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
    """Lists every file under `folder` with its size and sha256 in manifest.json (written last);
    a file in a subfolder is named by its relative path ("merged/model.safetensors")."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    )
    manifest = {
        **extra,
        "files": [
            {
                "name": p.relative_to(folder).as_posix(),
                "size": p.stat().st_size,
                "sha256": sha256_file(p),
            }
            for p in files
        ],
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
