"""Admission: the exact estimate of a job and its submission (typed core).

Estimate and submit read the same request, count the same tokens and check the same rules, from
one list (shared.rules.RULES), each with one error code: the estimate lists every rule that
would refuse the job (`allowed_to_proceed`, `reasons`); a submission is refused by the first.
The active-job limit is checked again inside the transaction that creates the job, so
concurrent submissions cannot pass it together.

A submission honours Idempotency-Key (shared.idempotency): a replay of the same request returns
the first job, even if the account changed since.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared import continuation, idempotency, store, token_counts
from shared.catalog import ModelSpec, catalog
from shared.config import Settings
from shared.contract import OUTPUT_MERGED, Hyperparameters
from shared.datasets import owned as owned_dataset
from shared.errors import ApiError, Code
from shared.jobs import options_view, view
from shared.lifecycle import enqueue_launch
from shared.pricing import (
    EVAL_BUDGET_FLOOR,
    evaluation_budget,
    merged_storage_cents,
    quote,
    resolve_hyperparameters,
)
from shared.records import (
    Dataset,
    DatasetStatus,
    FailureCode,
    Job,
    JobEvent,
    JobStatus,
    Quote,
    TrainingOptions,
    UserRecord,
)
from shared.rules import JOB, Applicant, Spend, over_limit, refusals, too_many_active
from shared.tokenization import TokenCount, default_split, held_out

SUBMIT_TARGET = "POST /v1/jobs"


# --- the request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PricedRequest:
    spec: ModelSpec
    dataset: Dataset
    hyperparameters: Hyperparameters
    quote: Quote
    user: UserRecord
    options: TrainingOptions

    def applicant(self, active_jobs: int | None, cfg: Settings) -> Applicant:
        return Applicant(
            spend=Spend.of(self.user, self.quote.price_cents, JOB),
            quote=self.quote,
            spec=self.spec,
            active_jobs=active_jobs,
            max_active_jobs=cfg.max_active_jobs,
        )


MAX_EVALUATIONS = 50  # mid-run evaluations a job may ask for (eval_every_steps), epoch ends apart
MIN_VALIDATION_TOKENS_CAP = 50_000  # a validation file may always have this many tokens...
VALIDATION_SHARE_CAP = 4  # ...or up to a quarter of the training tokens (one epoch), if more


def _ready_dataset(uid: str, dataset_id: str, param: str) -> Dataset:
    try:
        dataset = owned_dataset(uid, dataset_id)
    except ApiError as exc:
        raise ApiError(exc.code, exc.message, param=param) from None
    if dataset.status != DatasetStatus.READY:
        raise ApiError(
            Code.DATASET_NOT_READY,
            f"Dataset '{dataset_id}' is {dataset.status.value}; only a validated (ready) "
            "dataset can be used.",
            param=param,
        )
    return dataset


def _parse(
    uid: str, body: dict[str, Any], cfg: Settings
) -> tuple[ModelSpec, Dataset, Hyperparameters, TrainingOptions, Dataset | None]:
    """The model, the caller's ready dataset, the resolved hyperparameters and the training
    options of a request body already checked against schemas.JobRequest (so its fields have
    their types), and the validation dataset where one is named."""
    model_id = body["model"]
    spec = catalog().get(model_id)
    if spec is None:
        raise ApiError(
            Code.INVALID_VALUE, f"Unknown model '{model_id}'; see GET /v1/models.", param="model"
        )
    dataset = _ready_dataset(uid, body["dataset_id"], "dataset_id")
    raw_hp = dict(body.get("hyperparameters") or {})
    source, step = (None, None)
    if "from_job" in body:
        source, step = continuation.source(uid, body["from_job"], spec.id, cfg)
        # Unless the request says otherwise, the adapter keeps the shape it is continued from.
        raw_hp.setdefault(
            "lora_target_modules", source.hyperparameters.to_dict()["lora_target_modules"]
        )
    hp = resolve_hyperparameters(spec, raw_hp)
    if source is not None:
        continuation.check_shape(source, hp)

    validation = None
    if "validation_dataset_id" in body:
        if "validation_split" in body:
            raise ApiError(
                Code.INVALID_VALUE,
                "Give either validation_dataset_id or validation_split, not both.",
                param="validation_split",
            )
        validation = _ready_dataset(uid, body["validation_dataset_id"], "validation_dataset_id")
        if validation.id == dataset.id:
            raise ApiError(
                Code.INVALID_VALUE,
                "The validation dataset must not be the training dataset; use "
                "validation_split to hold out part of it instead.",
                param="validation_dataset_id",
            )
        split = 0.0
    elif "validation_split" in body:
        split = float(body["validation_split"])
    else:
        split = default_split(dataset.report.rows if dataset.report else 0)
    options = TrainingOptions(
        validation_split=split,
        validation_dataset_id=None if validation is None else validation.id,
        validation_object=None if validation is None else validation.object_name,
        validation_sha256=None if validation is None else validation.sha256,
        eval_every_steps=int(body.get("eval_every_steps", 0)),
        from_job=None if source is None else source.id,
        from_step=step,
        outputs=tuple(dict.fromkeys(body.get("outputs") or ())),
    )
    return spec, dataset, hp, options, validation


def _count(
    spec: ModelSpec, dataset: Dataset, hp: Hyperparameters, cfg: Settings, split: float = 0.0
) -> tuple[TokenCount, TokenCount | None]:
    """The dataset's exact token counts for this model and max_seq_length: (the records trained,
    those a `split` holds out for validation, None without one), derived from its per-record
    counts (shared.token_counts: the file is encoded once per tokenizer)."""
    counts = token_counts.record_counts(spec.id, dataset, cfg)
    if split <= 0:
        return counts.total(hp.max_seq_length), None
    hold = held_out(len(counts), split, hp.seed)
    train = counts.total(hp.max_seq_length, (i for i in range(len(counts)) if i not in hold))
    return train, counts.total(hp.max_seq_length, sorted(hold))


def evaluations(hp: Hyperparameters, options: TrainingOptions, train: TokenCount) -> int:
    """How often a run evaluates, exactly as the trainer does: at each step that ends an epoch
    or is a multiple of eval_every_steps (a step that is both, once)."""
    if not options.has_validation:
        return 0
    per_epoch = math.ceil(train.examples / hp.batch_size)
    total_steps = per_epoch * hp.epochs
    every = options.eval_every_steps
    if not every:
        return hp.epochs
    return hp.epochs + total_steps // every - total_steps // math.lcm(per_epoch, every)


def _check_validation(
    hp: Hyperparameters, options: TrainingOptions, train: TokenCount, valid: TokenCount | None
) -> None:
    """Validation is never billed, so what it costs us is bounded: its size, how often it runs,
    and what the two make together (pricing.evaluation_budget of the billed tokens)."""
    if valid is not None and options.validation_dataset_id is not None:
        cap = max(MIN_VALIDATION_TOKENS_CAP, train.tokens // VALIDATION_SHARE_CAP)
        if valid.tokens > cap:
            raise ApiError(
                Code.INVALID_VALUE,
                f"The validation dataset has {valid.tokens} tokens; at most {cap} are allowed "
                f"with this training set (the larger of {MIN_VALIDATION_TOKENS_CAP} and a "
                "quarter of its tokens). Use a smaller sample.",
                param="validation_dataset_id",
            )
    _check_evaluation_budget(hp, options, train, valid)
    every = options.eval_every_steps
    if not every:
        return
    if not options.has_validation:
        raise ApiError(
            Code.INVALID_VALUE,
            "eval_every_steps needs validation data: give validation_split or "
            "validation_dataset_id (this dataset is too small for the default split).",
            param="eval_every_steps",
        )
    total_steps = math.ceil(train.examples / hp.batch_size) * hp.epochs
    if total_steps // every > MAX_EVALUATIONS:
        least = math.ceil(total_steps / MAX_EVALUATIONS)
        raise ApiError(
            Code.INVALID_VALUE,
            f"This job has {total_steps} steps; evaluating every {every} would run more than "
            f"{MAX_EVALUATIONS} evaluations. Use eval_every_steps of at least {least}.",
            param="eval_every_steps",
        )


def _check_evaluation_budget(
    hp: Hyperparameters, options: TrainingOptions, train: TokenCount, valid: TokenCount | None
) -> None:
    if valid is None or not valid.tokens:
        return
    n = evaluations(hp, options, train)
    budget = evaluation_budget(train.tokens * hp.epochs)
    if valid.tokens * n <= budget:
        return
    fits = budget // valid.tokens  # evaluations this validation set can afford
    if options.eval_every_steps and fits > hp.epochs:
        total_steps = math.ceil(train.examples / hp.batch_size) * hp.epochs
        least = math.ceil(total_steps / (fits - hp.epochs))  # fits; steps that end an epoch
        while (
            least > 1
            and valid.tokens
            * evaluations(  # too are counted once: maybe less
                hp, options._replace(eval_every_steps=least - 1), train
            )
            <= budget
        ):
            least -= 1
        fix, param = (
            f"evaluate less often (eval_every_steps of at least {least})",
            ("eval_every_steps"),
        )
    else:
        fix = "use a smaller validation set" + (
            " or no eval_every_steps" if options.eval_every_steps else ""
        )
        param = "validation_dataset_id" if options.validation_dataset_id else "validation_split"
    raise ApiError(
        Code.INVALID_VALUE,
        f"Validation would evaluate {valid.tokens} tokens {n} times ({valid.tokens * n} in all); "
        f"evaluation is not billed, so it may evaluate at most {budget} tokens for this job "
        f"(a quarter of its {train.tokens * hp.epochs} billed tokens, or {EVAL_BUDGET_FLOOR} if "
        f"more): {fix}.",
        param=param,
    )


def _priced(uid: str, email: str | None, body: dict[str, Any], cfg: Settings) -> PricedRequest:
    """The checked request, its exact quote, and the user (shared by estimate and submit)."""
    spec, dataset, hp, options, validation = _parse(uid, body, cfg)
    train, valid = _count(spec, dataset, hp, cfg, options.validation_split)
    if validation is not None:
        valid, _ = _count(spec, validation, hp, cfg)
    _check_validation(hp, options, train, valid)
    storage_cents = (
        merged_storage_cents(spec.parameters, cfg.retention_days)
        if OUTPUT_MERGED in options.outputs
        else 0
    )
    q = quote(
        spec,
        train,
        hp,
        catalog().currency,
        cfg.startup_overhead_s,
        validation=valid,
        validation_split=options.validation_split,
        storage_cents=storage_cents,
        evaluations=evaluations(hp, options, train),
    )
    return PricedRequest(spec, dataset, hp, q, store.get_or_create_user(uid, email), options)


# --- estimate and submit ---------------------------------------------------------------------


def estimate(uid: str, email: str | None, body: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    """POST /v1/jobs/estimate: the exact price, and whether a submission would be admitted.

    Returns:
        The estimate: the quote's fields, the resolved hyperparameters, `allowed_to_proceed`
        and every reason (code, message) a submission would be refused.

    Raises:
        ApiError: the request names no model or dataset of the caller's, a dataset not ready,
            a bad hyperparameter, or a model that is unavailable.
    """
    req = _priced(uid, email, body, cfg)
    reasons = refusals(req.applicant(len(req.user.active_jobs), cfg))
    return {
        "object": "estimate",
        "model": req.spec.id,
        "dataset_id": req.dataset.id,
        "hyperparameters": req.hyperparameters.to_dict(),
        **options_view(req.options),
        **req.quote.to_doc(),
        "allowed_to_proceed": not reasons,
        "reasons": [{"code": code.value, "message": message} for code, message in reasons],
        "active_job_limit": cfg.max_active_jobs,
    }


def submit(
    uid: str, email: str | None, body: dict[str, Any], idempotency_key: str | None, cfg: Settings
) -> tuple[dict[str, Any], bool]:
    """POST /v1/jobs: stores the job and enqueues its launch.

    Returns:
        (the job's view, whether this call created it: False for an Idempotency-Key replay).

    Raises:
        ApiError: what estimate raises; the first rule of RULES that refuses (402, 403, 400 or
            429, each with its code); idempotency_conflict for a key reused with another body;
            payment_declined (402) when the card refuses to hold the quoted price (the job is
            then stored as failed, and a replay of the same key answers the same 402).
        Contended: the creating transaction lost every attempt (503; safe to retry).
    """
    idem_id = idempotency.key_id(uid, idempotency_key, required=False)
    request_hash = idempotency.request_hash(SUBMIT_TARGET, body)
    if idem_id:  # a replay answers with the first job even if the account changed since
        found = store.find_idempotent_job(idem_id)
        if found is not None:
            record, job = found
            idempotency.check_same_request(record.request_hash, request_hash)
            return _replayed(job, cfg), False

    req = _priced(uid, email, body, cfg)
    refused = refusals(req.applicant(None, cfg))
    if refused:
        code, message = refused[0]
        raise ApiError(code, message)
    t = store.now()
    job = Job(
        id=store.new_id("ft-"),
        uid=uid,
        email=email,
        model=req.spec.id,
        dataset_id=req.dataset.id,
        dataset_object=req.dataset.object_name,
        dataset_sha256=req.dataset.sha256 or "",
        hyperparameters=req.hyperparameters,
        quote=req.quote,
        status=JobStatus.QUEUED,
        created_at=t,
        updated_at=t,
        events=(JobEvent(t, JobStatus.QUEUED, "submitted"),),
        options=req.options,
    )
    limit = req.user.monthly_spend_limit_cents
    try:
        job, created = store.new_job(job, idem_id, request_hash, cfg.max_active_jobs, limit)
    except store.Conflict as exc:
        if exc.code == "idempotency_conflict":
            idempotency.check_same_request(None, request_hash)
        if exc.code == "spend_limit_reached" and limit is not None:
            message = over_limit(JOB, job.quote.price_cents, exc.detail, limit)
            raise ApiError(Code.SPEND_LIMIT_REACHED, message) from None
        raise ApiError(
            Code.TOO_MANY_ACTIVE_JOBS, too_many_active(exc.detail, cfg.max_active_jobs)
        ) from None
    if not created:  # a concurrent request with the same key made it
        return _replayed(job, cfg), False
    from shared import holds

    job = holds.hold_at_submit(job, cfg)  # before any GPU work (402 when refused)
    enqueue_launch(job.id, cfg)
    return view(job), created


# How long a replay waits for the first request's hold: that request gives Stripe one try of
# payments.REQUEST_PATH_TIMEOUT_S, then records what it got.
HOLD_WAIT_S = 10.0


def _replayed(job: Job, cfg: Settings) -> dict[str, Any]:
    """A replay's answer: the job as it is, once the first request has placed its hold (a
    replay racing it would otherwise show no hold where the first answer showed one), and the
    same 402 when the card refused it."""
    import time

    deadline = time.monotonic() + HOLD_WAIT_S
    while (
        job.status == JobStatus.QUEUED
        and job.authorization is None
        and (store.now() - job.created_at).total_seconds() < HOLD_WAIT_S
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
        job = store.get_job(job.id) or job
    if job.failure is not None and job.failure.code == FailureCode.PAYMENT_DECLINED:
        raise ApiError(Code.PAYMENT_DECLINED, job.failure.message)  # as first answered
    if job.status == JobStatus.QUEUED:
        enqueue_launch(job.id, cfg)  # named task: at most one launch
    return view(job)
