"""A job's life after submission: launch, Batch notifications, trainer reports, cancel (typed
core). The state machine it drives is shared.transitions.

Everything here may be delivered more than once (Cloud Tasks, Pub/Sub), so each entry point is
idempotent: a redelivered launch finds the Batch job it already made (its name is derived from
the job id), a repeated state notification finds the transition already done.
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from typing import Any

from shared import artifacts, batch, continuation, logs, modelstore, store, tasks
from shared.catalog import catalog
from shared.config import Settings
from shared.contract import (
    FAILURE_FIELD,
    PROGRESS_FIELD,
    RESULT_FIELD,
    FailureKind,
    Progress,
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
)
from shared.errors import ApiError, Code
from shared.jobs import owned, view
from shared.records import (
    FailureCode,
    Job,
    JobChange,
    JobFailure,
    JobStatus,
)
from shared.transitions import InvalidTransition, transition

CHECKPOINT_EVERY_STEPS = 50
STALE_AFTER = timedelta(minutes=10)


# --- launch ----------------------------------------------------------------------------------


TRAINER_REPORT = "trainer-report"  # the purpose a job's trainer token is signed for
# A trainer's token outlives any run (preemptions and resumes included), never the job's outputs.
TRAINER_TOKEN_LIFETIME = timedelta(days=7)


def trainer_report(token: str | None, body: dict[str, Any], cfg: Settings) -> str:
    """POST /internal/trainer/report: writes a trainer's progress, result or failure into its
    own job's document. The trainer has no database access; its token (signed at launch for
    its job id, shared.links) is the only thing that lets it write, and only there.

    Raises:
        ApiError: invalid_link / link_expired for a token we did not sign or that expired;
            not_found when the token is another job's or the job is gone; invalid_body for
            fields other than the three the trainer owns or that do not parse.
    """
    from shared import links

    job_id, fields = body.get("job_id"), body.get("fields")
    if not isinstance(job_id, str) or not isinstance(fields, dict) or not fields:
        raise ApiError(Code.INVALID_BODY, 'Send {"job_id": ..., "fields": {...}}.')
    if links.verify(TRAINER_REPORT, token or "", cfg) != job_id:
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}' for this token.", param="job_id")
    parsers: dict[str, Any] = {
        PROGRESS_FIELD: _progress,
        RESULT_FIELD: TrainerResult.from_doc,
        FAILURE_FIELD: TrainerFailure.from_doc,
    }
    checked: dict[str, Any] = {}
    for name, doc in fields.items():
        if name not in parsers or not isinstance(doc, dict):
            raise ApiError(Code.INVALID_BODY, f"A trainer reports only {sorted(parsers)}.")
        try:
            checked[name] = parsers[name](doc).to_doc()
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ApiError(Code.INVALID_BODY, f"{name} does not parse: {exc}") from None
    if not store.record_trainer_report(job_id, checked):
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}'.", param="job_id")
    return ", ".join(sorted(checked))


def trainer_storage_token(token: str | None, body: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    """POST /internal/trainer/storage-token: a short-lived Cloud Storage token limited to what
    this job's trainer reads and writes (shared.storage_grants); the trainer account itself
    holds no bucket role. An ended job gets none, so a cancelled run loses storage within the
    hour even if its VM were still up.

    Raises:
        ApiError: not_found for another job's token or a job that is gone; job_already_ended
            once the job has ended; invalid_link / link_expired as for trainer_report.
    """
    from shared import links, storage_grants

    job_id = body.get("job_id")
    if not isinstance(job_id, str):
        raise ApiError(Code.INVALID_BODY, 'Send {"job_id": ...}.', param="job_id")
    if links.verify(TRAINER_REPORT, token or "", cfg) != job_id:
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}' for this token.", param="job_id")
    job = store.get_job(job_id)
    if job is None:
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}'.", param="job_id")
    if job.status.ended:
        raise ApiError(Code.JOB_ALREADY_ENDED, f"Job {job_id} is {job.status.value}.")
    granted = storage_grants.grants(trainer_config(job, cfg))
    return storage_grants.expiry_doc(storage_grants.tokens_for(cfg.is_local).mint(granted))


def _progress(doc: dict[str, Any]) -> Progress:
    """A progress report with each field of its type (a report is not trusted to be typed)."""
    eval_loss = doc.get("eval_loss")
    return Progress(
        step=int(doc["step"]),
        total_steps=int(doc["total_steps"]),
        epoch=int(doc["epoch"]),
        trained_tokens=int(doc["trained_tokens"]),
        total_tokens=int(doc["total_tokens"]),
        loss=float(doc["loss"]),
        learning_rate=float(doc["learning_rate"]),
        eta_s=float(doc["eta_s"]),
        eval_loss=None if eval_loss is None else float(eval_loss),
    )


def trainer_config(job: Job, cfg: Settings) -> TrainerConfig:
    spec = catalog().get(job.model)
    if spec is None:
        raise LookupError(f"model {job.model} left the catalog")
    opts = job.options
    return TrainerConfig(
        job_id=job.id,
        model_id=spec.id,
        model_uri=modelstore.model_uri(cfg, spec.id),
        dataset_uri=f"gs://{cfg.datasets_bucket}/{job.dataset_object}",
        output_uri=f"gs://{cfg.artifacts_bucket}/{artifacts.prefix(job.id).rstrip('/')}",
        checkpoint_uri=f"gs://{cfg.checkpoints_bucket}/jobs/{job.id}",
        hyperparameters=job.hyperparameters,
        base_model_name=spec.source,
        dataset_sha256=job.dataset_sha256,
        checkpoint_every_steps=CHECKPOINT_EVERY_STEPS,
        progress_interval_s=2.0 if cfg.is_local else 10.0,
        progress_sink="api",
        report_url=cfg.trainer_report_url,
        report_token=_trainer_token(job.id, cfg),
        report_audience=cfg.trainer_report_audience,
        storage_token_url=cfg.trainer_storage_token_url,
        outputs_kept_until=(store.now() + timedelta(days=cfg.retention_days)).isoformat(),
        project_id=cfg.project_id,
        validation_uri=(
            f"gs://{cfg.datasets_bucket}/{opts.validation_object}" if opts.validation_object else ""
        ),
        validation_sha256=opts.validation_sha256 or "",
        validation_split=opts.validation_split,
        eval_every_steps=opts.eval_every_steps,
        init_adapter_uri=(
            continuation.adapter_uri(opts.from_job, opts.from_step, cfg) if opts.from_job else ""
        ),
        outputs=opts.outputs,
    )


def _trainer_token(job_id: str, cfg: Settings) -> str:
    from shared import links

    return links.sign(TRAINER_REPORT, job_id, cfg, lifetime=TRAINER_TOKEN_LIFETIME)


def launch(job_id: str, cfg: Settings) -> str:
    """The Cloud Tasks handler: makes the job's Batch job once; returns what it did."""
    try:
        job = store.get_job(job_id)
    except store.MalformedDocument as exc:  # answered 200: a redelivery would fail the same
        logs.warning("launch skipped: the job document does not parse", error=str(exc))
        return "skipped: the job's document is malformed"
    if job is None:
        return "no such job"
    if job.status != JobStatus.QUEUED or job.batch_job:
        return f"nothing to do ({job.status.value})"
    spec = catalog().get(job.model)
    if spec is None:
        return f"model {job.model} left the catalog"
    if job.authorization is None:  # its submit could not place the hold: no GPU without one
        from shared import holds, payments

        try:
            job = holds.hold(job, cfg)
        except payments.Declined as exc:
            return f"hold declined ({exc.code}); job failed"
    held = job.authorization
    if job.status != JobStatus.QUEUED or held is None or not held.holding:
        return f"not launched: no hold on the card ({job.status.value})"
    backend = batch.backend(cfg)
    # The Batch job's id is derived from ours: a second create is refused by Batch (or by the
    # local executor) as already existing, so a redelivered task cannot start a second job.
    name = backend.submit(batch.job_id_for(job_id), trainer_config(job, cfg), spec)

    def record(j: Job) -> JobChange | None:
        if j.status != JobStatus.QUEUED or j.batch_job:
            return None
        return JobChange.between(j, j._replace(batch_job=name))

    after = store.update_job(job_id, record)
    if after.status == JobStatus.CANCELLED:  # cancelled while we were launching: undo
        backend.delete(name)
        return "cancelled meanwhile; Batch job deleted"
    return f"launched {name}"


def enqueue_launch(job_id: str, cfg: Settings) -> None:
    """Enqueues the launch. The job is already stored, so a failure here must not fail the
    request: relaunch_stale (Cloud Scheduler) enqueues it again within minutes."""
    try:
        tasks.enqueue_launch(job_id, cfg)
    except Exception as exc:
        logs.warning(
            "launch not enqueued; the relaunch sweep will retry", job_id=job_id, error=repr(exc)
        )


def relaunch_stale(cfg: Settings, now: datetime | None = None) -> store.Found[str]:
    """Enqueues the launch task again for jobs queued long ago that never got a Batch job (their
    first enqueue failed after the job was stored). Launching is idempotent, so a job whose task
    is merely slow is not harmed. A document that does not parse is skipped, never enqueued."""
    found = store.stale_queued_jobs((now or store.now()) - STALE_AFTER)

    def enqueue(job: Job) -> str:
        tasks.enqueue_launch(job.id, cfg)
        return "launch enqueued again"

    return store.Found(logs.each(found.items, _id, enqueue, "relaunch"), found.skipped)


def _id(job: Job) -> str:
    return job.id


# --- the reconciler --------------------------------------------------------------------------

STUCK_AFTER = timedelta(minutes=30)  # an active job unchanged this long: ask Batch itself
SETTLE_AFTER = timedelta(minutes=10)  # an ended job its charge trigger should have settled


def reconcile(cfg: Settings, now: datetime | None = None) -> store.Found[str]:
    """The scheduled repair of what at-least-once delivery can still lose: asks Batch for the
    real state of every active job unchanged for STUCK_AFTER and applies it through the same
    state machine (a notification Eventarc finally dropped), launches again a job whose Batch
    job never came to be, and settles ended jobs whose charge trigger never ran (or whose hold
    is still held). Each job is handled on its own; returns what was done, and the documents
    skipped because they do not parse."""
    t = now or store.now()
    active = store.active_jobs_unchanged_since(t - STUCK_AFTER)
    ended = store.ended_jobs_unsettled_since(t - SETTLE_AFTER)
    done = logs.each(active.items, _id, lambda j: _ask_batch(j, cfg), "reconcile")
    done += logs.each(ended.items, _id, lambda j: _settle(j, cfg), "reconcile")
    return store.Found(done, sorted(set(active.skipped) | set(ended.skipped)))


def _ask_batch(job: Job, cfg: Settings) -> str | None:
    name = job.batch_job
    if name is None:
        return None  # never launched: relaunch_stale's
    state = batch.backend(cfg).state(name)
    if state in ("SUCCEEDED", "FAILED") or (state == "RUNNING" and job.status == JobStatus.QUEUED):
        return f"Batch says {state}: {on_batch_state(name, state, cfg)}"
    if state is not None:
        return None  # Batch agrees it is still going
    if job.status == JobStatus.RUNNING:  # Batch lost a running job
        return f"Batch knows no such job: {on_batch_state(name, 'FAILED', cfg)}"

    def forget(j: Job) -> JobChange | None:
        if j.status != JobStatus.QUEUED or j.batch_job != name:
            return None
        return JobChange.between(j, j._replace(batch_job=None))

    store.update_job(job.id, forget)
    tasks.enqueue_launch(job.id, cfg)
    return "its Batch job never came to be: launched again"


def _settle(job: Job, cfg: Settings) -> str | None:
    from shared import billing

    return f"settled: {billing.charge_job(job.id, cfg)}"


# --- Batch notifications ---------------------------------------------------------------------

NO_RESULT = JobFailure(
    FailureCode.PLATFORM_ERROR,
    "The training run ended without producing an adapter; you are not charged. Submit again.",
)


def completed_message(result: TrainerResult) -> str:
    """The completed event's message: where the losses ended and what can be downloaded."""
    parts = ["the adapter is ready to download"]
    if result.final_loss is not None:
        parts.append(f"final training loss {result.final_loss:.4f}")
    if result.eval_loss is not None:
        parts.append(f"validation loss {result.eval_loss:.4f}")
    if result.checkpoints:
        parts.append(f"{len(result.checkpoints)} checkpoints")
    return "; ".join(parts)


def on_batch_state(batch_name: str, state: str, cfg: Settings) -> str:
    """The Batch state-notification handler: turns Batch's view into our state machine."""
    job_id = batch.our_job_id(batch_name)
    if job_id is None:
        return "not ours"
    job = store.get_job(job_id)
    if job is None:
        return "no such job"
    try:
        if state == "RUNNING":
            transition(job_id, JobStatus.RUNNING, "the trainer started")
        elif state == "SUCCEEDED" and job.trainer_result is not None:
            if job.status == JobStatus.QUEUED:
                transition(job_id, JobStatus.RUNNING, "the trainer started")
            expires = store.now() + timedelta(days=cfg.retention_days)
            transition(
                job_id,
                JobStatus.COMPLETED,
                completed_message(job.trainer_result),
                lambda j: j._replace(expires_at=expires),
            )
            artifacts.set_retention(job_id, expires, cfg)
        elif state in ("SUCCEEDED", "FAILED"):
            failure = (
                NO_RESULT if state == "SUCCEEDED" else failure_of(job, _run_end(batch_name, cfg))
            )
            transition(
                job_id, JobStatus.FAILED, failure.message, lambda j: j._replace(failure=failure)
            )
        else:
            return f"ignored {state}"
    except InvalidTransition as exc:
        if state == "SUCCEEDED" and exc.current == JobStatus.COMPLETED:
            done = store.get_job(job_id)  # a redelivery: the retention write may have failed
            if done is not None and done.expires_at is not None:
                artifacts.set_retention(job_id, done.expires_at, cfg)
        return f"already {exc.current.value}"
    return f"{job_id}: {state}"


def _run_end(name: str, cfg: Settings) -> batch.RunEnd | None:
    try:
        return batch.backend(cfg).run_end(name)
    except Exception as exc:  # the reason is a courtesy: never fail the transition for it
        logs.warning("Batch did not say how the job ended", name=name, error=repr(exc))
        return None


def _how_it_ended(end: batch.RunEnd | None) -> str:
    """What happened to the last attempt, in words, and whether there were retries."""
    if end is None:
        return "The training run failed on our side"
    code = end.exit_code
    if code is not None and (code < 0 or code > 128 and code - 128 < 65):
        number = -code if code < 0 else code - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        how = f"The trainer was killed by {name}"
    elif code is not None:
        how = f"The trainer stopped with exit code {code}"
    else:
        how = "The training run failed on our side"
    return how + (f" (after {end.attempts} attempts)" if end.attempts > 1 else "")


def failure_of(job: Job, end: batch.RunEnd | None = None) -> JobFailure:
    """The user's reason for a failed run, from what the trainer reported (if anything) and
    how Batch says its attempts ended."""
    reported = job.trainer_failure
    if reported is not None and reported.kind == FailureKind.USER_ERROR:
        return JobFailure(
            FailureCode.BAD_DATA,
            f"Your data could not be trained on: {reported.message}. Fix the dataset and "
            "submit again; you are not charged.",
        )
    if reported is not None and reported.kind == FailureKind.OUT_OF_MEMORY:
        return JobFailure(FailureCode.OUT_OF_MEMORY, reported.message)
    return JobFailure(
        FailureCode.PLATFORM_ERROR,
        f"{_how_it_ended(end)}; you are not charged. Submit again, or contact support with "
        "the job id.",
    )


# --- cancel ----------------------------------------------------------------------------------


def cancel(uid: str, job_id: str, cfg: Settings) -> dict[str, Any]:
    """POST /v1/jobs/{id}/cancel: stops the compute first, then records the cancel."""
    job = owned(uid, job_id)
    if job.status.ended:
        raise ApiError(Code.JOB_ALREADY_ENDED, f"Job {job_id} already {job.status.value}.")
    # Stop the GPU before we record the cancel. The Batch job's name is derived from ours, so it
    # is deleted whether or not its launch was recorded yet (and a launch that records it after
    # this sees the cancel and deletes it again).
    batch.backend(cfg).delete(batch.job_name(cfg, batch.job_id_for(job_id)))
    try:
        after = transition(job_id, JobStatus.CANCELLED, "cancelled by you")
    except InvalidTransition as exc:  # it ended while we were cancelling
        raise ApiError(
            Code.JOB_ALREADY_ENDED, f"Job {job_id} already {exc.current.value}."
        ) from None
    return view(after)
