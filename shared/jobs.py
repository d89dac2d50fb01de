"""Fine-tuning jobs: the estimate, submission, launch, state machine and cancel (typed core).

One state machine: queued -> running -> completed | failed | cancelled (and queued -> cancelled
or failed). Every transition is one atomic Firestore write conditioned on the state it read
(store.update_job: an optimistic transaction), which appends a timestamped event and, when the
job ends, queues the user's email in the same commit.

Everything here may be delivered more than once (client retries, Cloud Tasks, Pub/Sub), so each
entry point is idempotent: a replayed submission returns the first job, a redelivered launch
finds the Batch job it already made (its name is derived from the job id), a repeated state
notification finds the transition already done.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from shared import accounts, artifacts, batch, logs, modelstore, storage, store, tasks
from shared.catalog import ModelSpec, catalog
from shared.config import Settings
from shared.contract import Hyperparameters, TrainerConfig
from shared.datasets import owned as owned_dataset
from shared.errors import ApiError, Code
from shared.pricing import Quote, quote, resolve_hyperparameters
from shared.tokenization import RecordError, TokenCount, parse_jsonl

CHARGE_POLICY = (
    "Completed: the tokens trained (equal to the quote), at least the minimum charge. "
    "Cancelled while running: the tokens trained so far (free below the minimum charge). "
    "Cancelled while queued, or failed (bad data or our side): free."
)
ACTIVE = ("queued", "running")
ENDED = ("completed", "failed", "cancelled")
TRANSITIONS = {
    "queued": ("running", "cancelled", "failed"),
    "running": ("completed", "failed", "cancelled"),
}
CHECKPOINT_EVERY_STEPS = 50


class InvalidTransition(Exception):
    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"{current} -> {wanted}")
        self.current = current
        self.wanted = wanted


def can_transition(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS.get(current, ())


# --- views -----------------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def view(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "job",
        "id": job["id"],
        "status": job["status"],
        "model": job["model"],
        "dataset_id": job["dataset_id"],
        "hyperparameters": job["hyperparameters"],
        "quote": job["quote"],
        "progress": job.get("progress"),
        "failure": job.get("failure"),
        "result": _result_view(job.get("trainer_result")),
        "events": [{**e, "at": _iso(e["at"])} for e in job.get("events", [])],
        "payment": _payment_view(job.get("payment")),
        "charge_policy": CHARGE_POLICY,
        "expires_at": _iso(job.get("expires_at")),
        "created_at": _iso(job["created_at"]),
        "started_at": _iso(job.get("started_at")),
        "ended_at": _iso(job.get("ended_at")),
    }


def _payment_view(payment: dict[str, Any] | None) -> dict[str, Any] | None:
    if not payment:
        return None
    return {k: _iso(v) for k, v in payment.items() if k != "policy"}


def _result_view(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if not result:
        return None
    return {k: result.get(k) for k in ("trained_tokens", "steps", "final_loss")}


# --- estimate and submission -----------------------------------------------------------------


def _parse_request(
    uid: str, body: dict[str, Any]
) -> tuple[ModelSpec, dict[str, Any], Hyperparameters]:
    for key in body:
        if key not in ("model", "dataset_id", "hyperparameters"):
            raise ApiError(Code.UNKNOWN_FIELD, f"Unknown field '{key}'.", param=key)
    model_id = body.get("model")
    if not isinstance(model_id, str):
        raise ApiError(
            Code.MISSING_FIELD, "Send 'model', a model id from GET /v1/models.", param="model"
        )
    spec = catalog().get(model_id)
    if spec is None:
        raise ApiError(
            Code.INVALID_VALUE, f"Unknown model '{model_id}'; see GET /v1/models.", param="model"
        )
    dataset_id = body.get("dataset_id")
    if not isinstance(dataset_id, str):
        raise ApiError(
            Code.MISSING_FIELD, "Send 'dataset_id', from POST /v1/datasets.", param="dataset_id"
        )
    dataset = owned_dataset(uid, dataset_id)
    if dataset["status"] != "ready":
        raise ApiError(
            Code.DATASET_NOT_READY,
            f"Dataset '{dataset_id}' is "
            f"{dataset['status']}; only a validated (ready) dataset can be used.",
            param="dataset_id",
        )
    return spec, dataset, resolve_hyperparameters(spec, body.get("hyperparameters"))


def _count(
    spec: ModelSpec, dataset: dict[str, Any], hp: Hyperparameters, cfg: Settings
) -> TokenCount:
    tok = modelstore.tokenizer_for(cfg, spec.id)
    if tok is None:
        raise ApiError(
            Code.MODEL_UNAVAILABLE,
            f"{spec.id} is not available right now; choose an available model from GET /v1/models.",
            param="model",
        )
    data = storage.read_bytes(cfg.datasets_bucket, dataset["object_name"], cfg.dataset_max_bytes)
    if data is None or hashlib.sha256(data).hexdigest() != dataset.get("sha256"):
        raise ApiError(
            Code.DATASET_NOT_READY,
            "The dataset's file changed after validation; validate it again.",
            param="dataset_id",
        )
    try:
        return tok.count((line.record for line in parse_jsonl(data)), hp.max_seq_length)
    except RecordError as exc:  # validation passed, so only the template can refuse a record
        raise ApiError(
            Code.INVALID_VALUE, f"{spec.id} cannot train on this dataset: {exc}", param="dataset_id"
        ) from None


def _blockers(
    user: store.UserRecord, spec: ModelSpec, q: Quote, active: int, cfg: Settings
) -> list[dict[str, str]]:
    reasons = []
    if user.payment_method is None:
        reasons.append(
            {
                "code": Code.PAYMENT_METHOD_REQUIRED.value,
                "message": "Save a card first (POST /v1/jobs/setup-card).",
            }
        )
    spent = accounts.spent_this_month(user.uid)
    for code, pause in sorted(accounts.pauses(user, spent).items()):
        reasons.append({"code": Code.ACCOUNT_PAUSED.value, "message": f"{code}: {pause.reason}"})
    limit = user.monthly_spend_limit_cents
    if limit is not None and spent < limit < spent + q.price_cents:
        reasons.append(
            {
                "code": Code.SPEND_LIMIT_REACHED.value,
                "message": _over_limit(spent, limit, q.price_cents),
            }
        )
    if active >= cfg.max_active_jobs:
        reasons.append(
            {
                "code": Code.TOO_MANY_ACTIVE_JOBS.value,
                "message": f"You have {active} active jobs; the limit is "
                f"{cfg.max_active_jobs}. Wait for one to end or cancel one.",
            }
        )
    if q.tokens_per_epoch > spec.max_dataset_tokens:
        reasons.append(
            {
                "code": "dataset_too_large",
                "message": f"The dataset has {q.tokens_per_epoch} tokens; {spec.id} "
                f"takes at most {spec.max_dataset_tokens} per epoch.",
            }
        )
    return reasons


def _over_limit(spent: int, limit: int, price: int) -> str:
    return (
        f"This job ({price} cents) would take this month's spend to {spent + price} cents, "
        f"over your limit of {limit}; raise it (PATCH /v1/me) or wait for next month."
    )


def _priced_request(
    uid: str, email: str | None, body: dict[str, Any], cfg: Settings
) -> tuple[ModelSpec, dict[str, Any], Hyperparameters, Quote, store.UserRecord]:
    """The checked request, its exact quote, and the user (shared by estimate and submit)."""
    spec, dataset, hp = _parse_request(uid, body)
    q = quote(
        spec,
        _count(spec, dataset, hp, cfg),
        hp,
        catalog().currency,
        cfg.min_charge_cents,
        cfg.startup_overhead_s,
    )
    return spec, dataset, hp, q, store.get_or_create_user(uid, email)


def estimate(uid: str, email: str | None, body: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    spec, dataset, hp, q, user = _priced_request(uid, email, body, cfg)
    reasons = _blockers(user, spec, q, store.count_active_jobs(uid), cfg)
    return {
        "object": "estimate",
        "model": spec.id,
        "dataset_id": dataset["id"],
        "hyperparameters": hp.to_dict(),
        **q.as_dict(),
        "allowed_to_proceed": not reasons,
        "reasons": reasons,
        "active_job_limit": cfg.max_active_jobs,
    }


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def create(
    uid: str, email: str | None, body: dict[str, Any], idempotency_key: str | None, cfg: Settings
) -> tuple[dict[str, Any], bool]:
    """Submits a job; returns (job view, created). See the module docstring on replays."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ApiError(
            Code.INVALID_VALUE,
            "The Idempotency-Key header must be 1 to 255 characters.",
            param="Idempotency-Key",
        )
    idem_id = (
        hashlib.sha256(f"{uid}\n{idempotency_key}".encode()).hexdigest()
        if idempotency_key
        else None
    )
    if idem_id:  # a replay answers with the first job even if the account changed since
        existing = store.client().collection(store.IDEMPOTENCY).document(idem_id).get()
        if existing.exists:
            record = existing.to_dict()
            if record["request_hash"] != request_hash(body):
                raise ApiError(
                    Code.IDEMPOTENCY_CONFLICT,
                    "This Idempotency-Key was used with a different request; use a new key.",
                    param="Idempotency-Key",
                )
            job = store.get_job(record["job_id"])
            assert job is not None
            if job["status"] == "queued":
                _enqueue(job["id"], cfg)  # named task: at most one launch
            return view(job), False

    spec, dataset, hp, q, user = _priced_request(uid, email, body, cfg)
    if user.payment_method is None:
        raise ApiError(
            Code.PAYMENT_METHOD_REQUIRED,
            "Save a card before submitting a job: POST /v1/jobs/setup-card.",
        )
    spent = accounts.spent_this_month(uid)
    flags = accounts.pauses(user, spent)
    if flags:
        code, pause = sorted(flags.items())[0]
        raise ApiError(Code.ACCOUNT_PAUSED, f"Submissions are paused ({code}): {pause.reason}")
    limit = user.monthly_spend_limit_cents
    if limit is not None and spent + q.price_cents > limit:
        raise ApiError(Code.SPEND_LIMIT_REACHED, _over_limit(spent, limit, q.price_cents))
    if q.tokens_per_epoch > spec.max_dataset_tokens:
        raise ApiError(
            Code.INVALID_VALUE,
            f"The dataset has {q.tokens_per_epoch} tokens; "
            f"{spec.id} takes at most {spec.max_dataset_tokens}.",
            param="dataset_id",
        )
    t = store.now()
    job = {
        "id": store.new_id("ft-"),
        "uid": uid,
        "email": email,
        "model": spec.id,
        "dataset_id": dataset["id"],
        "dataset_object": dataset["object_name"],
        "dataset_sha256": dataset["sha256"],
        "hyperparameters": hp.to_dict(),
        "quote": q.as_dict(),
        "status": "queued",
        "created_at": t,
        "updated_at": t,
        "events": [{"at": t, "status": "queued", "message": "submitted"}],
        "batch_job": None,
    }
    try:
        job, created = store.create_job(job, idem_id, request_hash(body), cfg.max_active_jobs)
    except store.Conflict as exc:
        if exc.code == "idempotency_conflict":
            raise ApiError(
                Code.IDEMPOTENCY_CONFLICT,
                "This Idempotency-Key was used with a different request; use a new key.",
                param="Idempotency-Key",
            ) from None
        raise ApiError(
            Code.TOO_MANY_ACTIVE_JOBS,
            f"You have {exc.detail} active jobs; the limit is {cfg.max_active_jobs}.",
        ) from None
    _enqueue(job["id"], cfg)
    return view(job), created


def _enqueue(job_id: str, cfg: Settings) -> None:
    """Enqueues the launch. The job is already stored, so a failure here must not fail the
    request: relaunch_stale (Cloud Scheduler) enqueues it again within minutes."""
    try:
        tasks.enqueue_launch(job_id, cfg)
    except Exception as exc:
        logs.warning(
            "launch not enqueued; the relaunch sweep will retry", job_id=job_id, error=repr(exc)
        )


# --- transitions -----------------------------------------------------------------------------


def transition(
    job_id: str,
    wanted: str,
    message: str,
    cfg: Settings,
    fields: dict[str, Any] | None = None,
    when: Any = None,
) -> dict[str, Any]:
    """Moves a job to `wanted` in a transaction.

    Raises:
        InvalidTransition: the job's current state does not lead to `wanted` (including when
            it is already there: callers that may repeat treat that as done).
    """
    t = store.now()

    def mutate(job: dict[str, Any]) -> Any:
        if when is not None and not when(job):
            return None
        if not can_transition(job["status"], wanted):
            raise InvalidTransition(job["status"], wanted)
        update = {
            **(fields or {}),
            "status": wanted,
            "events": [*job.get("events", []), {"at": t, "status": wanted, "message": message}],
        }
        if wanted == "running":
            update["started_at"] = t
        extra = []
        if wanted in ENDED:
            update["ended_at"] = t
            mail = _mail(job, wanted, message)
            if mail is not None:
                extra.append((store.MAIL, f"{job_id}-{wanted}", mail))
        return update, extra

    try:
        return store.update_job(job_id, mutate)
    except store.Conflict as exc:
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}'.") from exc


def _mail(job: dict[str, Any], status: str, message: str) -> dict[str, Any] | None:
    """The email for an ended job, in the Firebase "Trigger Email" extension's format, when the
    user wants it."""
    user = store.get_or_create_user(job["uid"], job.get("email"))
    to = user.email or job.get("email")
    if not user.notifications.get(f"job_{status}", True) or not to:
        return None
    subject = {
        "completed": "Your fine-tune is ready",
        "failed": "Your fine-tune failed",
        "cancelled": "Your fine-tune was cancelled",
    }[status]
    text = f"Job {job['id']} on {job['model']}: {status}. {message}"
    return {
        "to": to,
        "uid": job["uid"],
        "job_id": job["id"],
        "created_at": store.now(),
        "message": {"subject": subject, "text": text, "html": f"<p>{text}</p>"},
    }


# --- launch, Batch notifications, cancel -----------------------------------------------------


def batch_job_id(job_id: str) -> str:
    return f"yachay-{job_id}"


def trainer_config(job: dict[str, Any], cfg: Settings) -> TrainerConfig:
    spec = catalog().get(job["model"])
    assert spec is not None
    return TrainerConfig(
        job_id=job["id"],
        model_id=spec.id,
        model_uri=modelstore.model_uri(cfg, spec.id),
        dataset_uri=f"gs://{cfg.datasets_bucket}/{job['dataset_object']}",
        output_uri=f"gs://{cfg.artifacts_bucket}/jobs/{job['id']}",
        checkpoint_uri=f"gs://{cfg.checkpoints_bucket}/jobs/{job['id']}",
        hyperparameters=Hyperparameters.from_dict(job["hyperparameters"]),
        base_model_name=spec.source,
        dataset_sha256=job["dataset_sha256"],
        checkpoint_every_steps=CHECKPOINT_EVERY_STEPS,
        progress_interval_s=2.0 if cfg.is_local else 10.0,
        progress_sink="firestore",
        project_id=cfg.project_id,
    )


def launch(job_id: str, cfg: Settings) -> str:
    """The Cloud Tasks handler: makes the job's Batch job once; returns what it did."""
    job = store.get_job(job_id)
    if job is None:
        return "no such job"
    if job["status"] != "queued" or job.get("batch_job"):
        return f"nothing to do ({job['status']})"
    spec = catalog().get(job["model"])
    assert spec is not None
    backend = batch.backend(cfg)
    # The Batch job's id is derived from ours: a second create is refused by Batch (or by the
    # local executor) as already existing, so a redelivered task cannot start a second job.
    name = backend.submit(batch_job_id(job_id), trainer_config(job, cfg), spec)

    def record(j: dict[str, Any]) -> Any:
        if j["status"] != "queued" or j.get("batch_job"):
            return None
        return {"batch_job": name}, []

    after = store.update_job(job_id, record)
    if after["status"] == "cancelled":  # cancelled while we were launching: undo
        backend.delete(name)
        return "cancelled meanwhile; Batch job deleted"
    return f"launched {name}"


STALE_AFTER = timedelta(minutes=10)


def relaunch_stale(cfg: Settings) -> list[str]:
    """Enqueues the launch task again for jobs queued long ago that never got a Batch job (their
    first enqueue failed after the job was stored). Launching is idempotent, so a job whose task
    is merely slow is not harmed."""
    ids = store.stale_queued_jobs(store.now() - STALE_AFTER)
    for job_id in ids:
        tasks.enqueue_launch(job_id, cfg)
    return ids


def on_batch_state(batch_name: str, state: str, cfg: Settings) -> str:
    """The Batch state-notification handler: turns Batch's view into our state machine."""
    short = batch_name.rsplit("/", 1)[-1]
    if not short.startswith("yachay-"):
        return "not ours"
    job_id = short.removeprefix("yachay-")
    job = store.get_job(job_id)
    if job is None:
        return "no such job"
    try:
        if state == "RUNNING":
            transition(job_id, "running", "the trainer started", cfg)
        elif state == "SUCCEEDED":
            if job.get("trainer_result"):
                if job["status"] == "queued":
                    transition(job_id, "running", "the trainer started", cfg)
                expires = store.now() + timedelta(days=cfg.retention_days)
                transition(
                    job_id,
                    "completed",
                    "the adapter is ready to download",
                    cfg,
                    {"expires_at": expires},
                )
                artifacts.set_retention(job_id, expires, cfg)
            else:
                transition(
                    job_id,
                    "failed",
                    "the trainer ended without a result",
                    cfg,
                    {
                        "failure": {
                            "code": "platform_error",
                            "message": "The training run ended without producing an adapter; "
                            "you are not charged. Submit again.",
                        }
                    },
                )
        elif state == "FAILED":
            failure = _failure(job)
            transition(job_id, "failed", failure["message"], cfg, {"failure": failure})
        else:
            return f"ignored {state}"
    except InvalidTransition as exc:
        return f"already {exc.current}"
    return f"{job_id}: {state}"


def _failure(job: dict[str, Any]) -> dict[str, str]:
    reported = job.get("trainer_failure") or {}
    kind = reported.get("kind")
    if kind == "user_error":
        return {
            "code": "bad_data",
            "message": f"Your data could not be trained on: "
            f"{reported.get('message')}. Fix the dataset and submit again; you are not "
            "charged.",
        }
    if kind == "out_of_memory":
        return {"code": "out_of_memory", "message": reported.get("message", "")}
    return {
        "code": "platform_error",
        "message": "The training run failed on our side "
        "(after retries); you are not charged. Submit again, or contact support with the "
        "job id.",
    }


def cancel(uid: str, job_id: str, cfg: Settings) -> dict[str, Any]:
    job = owned(uid, job_id)
    if job["status"] in ENDED:
        raise ApiError(Code.JOB_ALREADY_ENDED, f"Job {job_id} already {job['status']}.")
    if job.get("batch_job"):
        batch.backend(cfg).delete(job["batch_job"])  # stop the GPU before we record it
    try:
        after = transition(job_id, "cancelled", "cancelled by you", cfg)
    except InvalidTransition as exc:  # it ended while we were cancelling
        raise ApiError(Code.JOB_ALREADY_ENDED, f"Job {job_id} already {exc.current}.") from None
    return view(after)


def owned(uid: str, job_id: str) -> dict[str, Any]:
    job = store.get_owned(store.JOBS, job_id, uid)
    if job is None:
        raise ApiError(Code.NOT_FOUND, f"No job '{job_id}'.", param="job_id")
    return job
