"""Continuing from an earlier result (`from_job` at submit): which adapter a job may start from.

`from_job` is `<job_id>` (its final adapter) or `<job_id>:<step>` (one of its epoch-end
checkpoints). The source must be the caller's own completed job on the same base model, paid and
with its files still kept: nobody starts from an adapter they could not download. The new job
must train an adapter of the same shape (rank and target modules), since it loads the old one
as its starting point; the new run is priced like any other.
"""

from __future__ import annotations

from shared import artifacts
from shared.config import Settings
from shared.contract import Hyperparameters, checkpoint_folder
from shared.errors import ApiError, Code
from shared.jobs import owned
from shared.records import Job

PARAM = "from_job"


def parse(value: str) -> tuple[str, int | None]:
    """("ft-…", step or None) from "<job_id>" or "<job_id>:<step>"."""
    job_id, sep, step = value.partition(":")
    if not sep:
        return job_id, None
    if not (step.isascii() and step.isdigit() and len(step) <= 9) or not job_id:
        raise ApiError(
            Code.INVALID_VALUE,
            f"'from_job' must be '<job_id>' or '<job_id>:<step>'; got {value!r}.",
            param=PARAM,
        )
    return job_id, int(step)


def source(uid: str, value: str, model_id: str, cfg: Settings) -> tuple[Job, int | None]:
    """The job (and checkpoint step) `value` names, if a new job of `model_id` may start from it.

    Raises:
        ApiError: not_found (not the caller's), job_not_completed, payment_required,
            artifacts_expired (the download gates), or invalid_value for another base model or
            a step that is not one of its checkpoints.
    """
    job_id, step = parse(value)
    try:
        job = owned(uid, job_id)
    except ApiError as exc:
        raise ApiError(exc.code, exc.message, param=PARAM) from None
    try:
        artifacts.check_downloadable(job)
    except ApiError as exc:
        raise ApiError(
            exc.code, f"Cannot continue from {job_id}: {exc.message}", param=PARAM
        ) from None
    if job.model != model_id:
        raise ApiError(
            Code.INVALID_VALUE,
            f"Job {job_id} trained {job.model}; an adapter continues only on its own base "
            f"model, not {model_id}.",
            param=PARAM,
        )
    if step is not None:
        kept = job.trainer_result.checkpoints if job.trainer_result else ()
        if not any(c.step == step for c in kept):
            steps = ", ".join(str(c.step) for c in kept) or "none"
            raise ApiError(
                Code.INVALID_VALUE,
                f"Job {job_id} has no checkpoint at step {step}; its checkpoints are at steps: "
                f"{steps} (GET /v1/jobs/{job_id}/checkpoints).",
                param=PARAM,
            )
    return job, step


def check_shape(src: Job, hp: Hyperparameters) -> None:
    """The new adapter must have the shape of the one it starts from."""
    old = src.hyperparameters
    if old.lora_rank != hp.lora_rank:
        raise ApiError(
            Code.INVALID_VALUE,
            f"Job {src.id} trained a rank-{old.lora_rank} adapter; continuing from it needs "
            f"lora_rank {old.lora_rank}, not {hp.lora_rank}.",
            param="hyperparameters.lora_rank",
        )
    if _targets(old) != _targets(hp):
        raise ApiError(
            Code.INVALID_VALUE,
            f"Job {src.id} adapted {_describe(old)}; continuing from it needs the same "
            f"lora_target_modules, not {_describe(hp)}.",
            param="hyperparameters.lora_target_modules",
        )


def _targets(hp: Hyperparameters) -> str | frozenset[str]:
    t = hp.lora_target_modules
    return t if isinstance(t, str) else frozenset(t)


def _describe(hp: Hyperparameters) -> str:
    t = hp.lora_target_modules
    return t if isinstance(t, str) else ", ".join(sorted(t))


def adapter_uri(src_job_id: str, step: int | None, cfg: Settings) -> str:
    """The folder holding the adapter a job starts from (final, or a checkpoint's)."""
    base = f"gs://{cfg.artifacts_bucket}/{artifacts.prefix(src_job_id).rstrip('/')}"
    return base if step is None else f"{base}/{checkpoint_folder(step)}"
