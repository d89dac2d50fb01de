"""The requests our cloud adapters send, inspected without a cloud (Cloud Batch has no emulator;
the Cloud Tasks emulator ignores OIDC)."""

import json
import re

from shared import batch, tasks
from shared.catalog import catalog
from shared.config import load
from shared.contract import EXIT_RETRYABLE, EXIT_SPOT_PREEMPTED, Hyperparameters, TrainerConfig

PROD = load(
    {
        "YACHAY_ENV": "production",
        "GOOGLE_CLOUD_PROJECT": "yachay-prod",
        "YACHAY_TRAINER_IMAGE": "us-docker.pkg.dev/yachay-prod/trainer/trainer:abc123",
        "YACHAY_BATCH_SERVICE_ACCOUNT": "trainer@yachay-prod.iam.gserviceaccount.com",
        "YACHAY_TASKS_SERVICE_ACCOUNT": "tasks@yachay-prod.iam.gserviceaccount.com",
        "YACHAY_SECRETS_KEY": "kms:projects/p/locations/l/keyRings/r/cryptoKeys/k",
        "YACHAY_TASK_TARGET_URL": "https://launch-job-xyz.run.app/internal/tasks/launch-job",
    }
)


def trainer() -> TrainerConfig:
    return TrainerConfig(
        job_id="ft-abc",
        model_id="llama-3.1-8b-instruct",
        model_uri="gs://m/models/llama-3.1-8b-instruct",
        dataset_uri="gs://d/x.jsonl",
        output_uri="gs://a/jobs/ft-abc",
        checkpoint_uri="gs://c/jobs/ft-abc",
        hyperparameters=Hyperparameters(epochs=2),
    )


def test_batch_job_request() -> None:
    spec = catalog().get("llama-3.1-8b-instruct")
    assert spec is not None
    job = batch.build_job(PROD, trainer(), spec)
    task = job.task_groups[0].task_spec
    assert task.runnables[0].container.image_uri == PROD.trainer_image
    assert dict(task.environment.variables) == trainer().to_env()
    assert task.max_retry_count == batch.MAX_RETRIES
    retry, fail = task.lifecycle_policies
    assert retry.action.name == "RETRY_TASK"
    assert set(retry.action_condition.exit_codes) == {EXIT_SPOT_PREEMPTED, EXIT_RETRYABLE}
    assert fail.action.name == "FAIL_TASK" and 65 in fail.action_condition.exit_codes
    instance = job.allocation_policy.instances[0]
    assert instance.install_gpu_drivers is True
    assert instance.policy.machine_type == spec.machine_type
    assert instance.policy.provisioning_model.name == "SPOT"
    assert instance.policy.accelerators[0].type_ == "nvidia-a100-80gb"
    assert job.allocation_policy.service_account.email == PROD.batch_service_account
    assert job.logs_policy.destination.name == "CLOUD_LOGGING"
    note = job.notifications[0]
    assert note.pubsub_topic == "projects/yachay-prod/topics/batch-job-states"
    assert note.message.type_.name == "JOB_STATE_CHANGED"
    assert job.labels["yachay-job"] == "ft-abc"


def test_launch_task_is_named_after_the_job_and_carries_oidc() -> None:
    task = tasks.launch_task("ft-abc", PROD)
    assert task["name"].endswith("/queues/launch-jobs/tasks/launch-ft-abc")
    request = task["http_request"]
    assert request["url"] == PROD.task_target_url
    assert request["oidc_token"] == {
        "service_account_email": PROD.tasks_service_account,
        "audience": PROD.task_target_url,
    }
    assert b'"job_id": "ft-abc"' in request["body"]


def test_trainer_environment_round_trips() -> None:
    cfg = trainer()
    assert TrainerConfig.from_env(cfg.to_env()) == cfg


def test_the_local_batch_passes_the_trainer_precision_through(monkeypatch) -> None:
    """The local stand-in for Batch gives the trainer the container's environment; the
    precision setting (auto in the image: bf16 on a GPU) travels with it when set."""
    local = batch.LocalBatch(load({"YACHAY_ENV": "local", "GOOGLE_CLOUD_PROJECT": "demo-x"}))
    monkeypatch.delenv("YACHAY_TRAINER_PRECISION", raising=False)
    assert "YACHAY_TRAINER_PRECISION" not in local.environment(trainer())
    monkeypatch.setenv("YACHAY_TRAINER_PRECISION", "bf16")
    env = local.environment(trainer())
    assert env["YACHAY_TRAINER_PRECISION"] == "bf16"
    assert TrainerConfig.from_env(env) == trainer()


def test_webhook_deliveries_and_launches_have_a_queue_each() -> None:
    delivery = tasks.delivery_task("we-1", "ep-1", 2, None, PROD)
    assert delivery["name"] == f"{PROD.webhooks_queue}/tasks/wh-we-1-ep-1-2"
    assert PROD.webhooks_queue.endswith("/queues/webhook-deliveries")
    assert PROD.webhooks_queue != PROD.tasks_queue
    assert tasks.launch_task("ft-abc", PROD)["name"].startswith(PROD.tasks_queue + "/")


def test_a_token_count_is_one_named_task_on_its_own_queue_with_the_longest_deadline() -> None:
    """Named by dataset, file and model (a task name takes no dots), so the estimates that
    wait on one count enqueue it once, and a re-validated file gets its own; 30 minutes to
    run, the most Cloud Tasks gives, on a queue launches never wait behind."""
    task = tasks.count_task("u-1", "ds-1", "ab" * 32, "qwen2.5-7b-instruct", PROD)
    assert task["name"] == f"{PROD.counts_queue}/tasks/count-ds-1-abababababab-qwen2_5-7b-instruct"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,500}", task["name"].rsplit("/", 1)[-1])
    assert PROD.counts_queue.endswith("/queues/token-counts")
    assert PROD.counts_queue not in (PROD.tasks_queue, PROD.webhooks_queue)
    assert task["dispatch_deadline"].total_seconds() == 1800
    assert task["http_request"]["url"] == PROD.count_target_url
    assert json.loads(task["http_request"]["body"]) == {
        "uid": "u-1",
        "dataset_id": "ds-1",
        "model": "qwen2.5-7b-instruct",
    }


def test_the_tasks_emulators_log_is_bounded(tmp_path) -> None:
    import logging

    from devstack.run_tasks_emulator import setup_logging

    path = tmp_path / "tasks.log"
    handler = setup_logging(str(path), max_bytes=20_000)
    try:
        for i in range(5_000):  # about 400 kB of dispatch lines
            logging.getLogger("gcloud-tasks-emulator").info("[TASKS] Processing task %d", i)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = list(tmp_path.iterdir())
    assert sum(f.stat().st_size for f in files) <= 2 * 20_000 + 200
    assert len(files) == 2  # the file and one rotated copy
