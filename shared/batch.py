"""Cloud Batch adapter: one interface, two implementations, chosen by YACHAY_BATCH_BACKEND.

- CloudBatch builds the real google-cloud-batch JobRequest: the trainer container on a Spot GPU
  VM of the model's machine type, GPU drivers installed, the contract's environment, retries
  for Spot preemption and our retryable exit code only, Cloud Logging, labels, and job state
  notifications to Pub/Sub.
- LocalBatch exists because no Batch emulator does: it runs the trainer as a subprocess with the
  same environment (plus the emulators' addresses, where the cloud has its metadata server),
  applies the same retry policy, and publishes the same state notifications to the Pub/Sub
  emulator. Local-only; refused in production by shared.config.

Both refuse a second job with the same id, which is what makes launching idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from shared import logs
from shared.catalog import ModelSpec
from shared.config import Settings
from shared.contract import EXIT_OK, FAIL_EXIT_CODES, RETRYABLE_EXIT_CODES, TrainerConfig

MAX_RETRIES = 3
# Catalog gpu_type -> Batch accelerator type (a test checks every catalog model's is here).
GPU_TYPES = {"nvidia-a100-80gb": "nvidia-a100-80gb", "nvidia-l4": "nvidia-l4"}
JOB_PREFIX = "yachay-"  # our Batch jobs' ids: the prefix and our job id


def job_id_for(job_id: str) -> str:
    """The Batch job id of our job: derived, so a second launch finds the first."""
    return JOB_PREFIX + job_id


def our_job_id(batch_name: str) -> str | None:
    """Our job id from a Batch job name (or None for a Batch job that is not ours)."""
    short = batch_name.rsplit("/", 1)[-1]
    return short.removeprefix(JOB_PREFIX) if short.startswith(JOB_PREFIX) else None


class RunEnd(NamedTuple):
    """How a Batch job's runs ended: how many attempts, and the last one's exit code (negative:
    killed by that signal, as Popen reports; None when Batch did not say)."""

    attempts: int
    exit_code: int | None


class BatchBackend(Protocol):
    def submit(self, job_id: str, trainer: TrainerConfig, spec: ModelSpec) -> str:
        """Creates the Batch job `job_id` (or finds it made already); returns its name."""

    def delete(self, name: str) -> None:
        """Stops and deletes the Batch job; deleting one that is gone is not an error."""

    def state(self, name: str) -> str | None:
        """Batch's own state of the job (QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, ...),
        or None when Batch knows no such job."""

    def run_end(self, name: str) -> RunEnd | None:
        """How the job's attempts ended, or None when Batch cannot say."""


def job_name(cfg: Settings, job_id: str) -> str:
    return f"projects/{cfg.project_id}/locations/{cfg.region}/jobs/{job_id}"


# --- cloud -----------------------------------------------------------------------------------


def build_job(cfg: Settings, trainer: TrainerConfig, spec: ModelSpec) -> Any:
    """The batch_v1.Job for one training run (pure: tests inspect it)."""
    from google.cloud import batch_v1 as b

    policies = [
        b.LifecyclePolicy(
            action=b.LifecyclePolicy.Action.RETRY_TASK,
            action_condition=b.LifecyclePolicy.ActionCondition(
                exit_codes=list(RETRYABLE_EXIT_CODES)
            ),
        ),
        b.LifecyclePolicy(
            action=b.LifecyclePolicy.Action.FAIL_TASK,
            action_condition=b.LifecyclePolicy.ActionCondition(exit_codes=list(FAIL_EXIT_CODES)),
        ),
    ]
    task = b.TaskSpec(
        runnables=[b.Runnable(container=b.Runnable.Container(image_uri=cfg.trainer_image))],
        environment=b.Environment(variables=trainer.to_env()),
        compute_resource=b.ComputeResource(cpu_milli=8000, memory_mib=30000),
        max_retry_count=MAX_RETRIES,
        max_run_duration="86400s",
        lifecycle_policies=policies,
    )
    instance = b.AllocationPolicy.InstancePolicyOrTemplate(
        policy=b.AllocationPolicy.InstancePolicy(
            machine_type=spec.machine_type,
            provisioning_model=b.AllocationPolicy.ProvisioningModel.SPOT,
            accelerators=[b.AllocationPolicy.Accelerator(type_=GPU_TYPES[spec.gpu_type], count=1)],
        ),
        install_gpu_drivers=True,
    )
    allocation = b.AllocationPolicy(instances=[instance])
    if cfg.batch_service_account:
        allocation.service_account = b.ServiceAccount(email=cfg.batch_service_account)
    return b.Job(
        task_groups=[b.TaskGroup(task_spec=task, task_count=1)],
        allocation_policy=allocation,
        labels={"app": "yachay", "yachay-job": trainer.job_id, "model": spec.id[:63]},
        logs_policy=b.LogsPolicy(destination=b.LogsPolicy.Destination.CLOUD_LOGGING),
        notifications=[
            b.JobNotification(
                pubsub_topic=f"projects/{cfg.project_id}/topics/{cfg.batch_topic}",
                message=b.JobNotification.Message(type_=b.JobNotification.Type.JOB_STATE_CHANGED),
            )
        ],
    )


class CloudBatch:
    def __init__(self, cfg: Settings) -> None:
        from google.cloud import batch_v1

        self.cfg = cfg
        self.client = batch_v1.BatchServiceClient()

    def submit(self, job_id: str, trainer: TrainerConfig, spec: ModelSpec) -> str:
        from google.api_core.exceptions import AlreadyExists

        parent = f"projects/{self.cfg.project_id}/locations/{self.cfg.region}"
        try:
            return self.client.create_job(
                parent=parent, job_id=job_id, job=build_job(self.cfg, trainer, spec)
            ).name
        except AlreadyExists:
            return job_name(self.cfg, job_id)

    def delete(self, name: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.client.delete_job(name=name)

    def state(self, name: str) -> str | None:
        from google.api_core.exceptions import NotFound

        try:
            return str(self.client.get_job(name=name).status.state.name)
        except NotFound:
            return None

    def run_end(self, name: str) -> RunEnd | None:
        """From the job's status events: Batch writes one per failed attempt, naming its exit
        code ("... failed ... with exit code 137")."""
        from google.api_core.exceptions import NotFound

        try:
            events = self.client.get_job(name=name).status.status_events
        except NotFound:
            return None
        codes = [int(m) for e in events for m in _EXIT_CODE.findall(e.description or "")]
        return RunEnd(len(codes), codes[-1]) if codes else None


# --- local -----------------------------------------------------------------------------------


class _LocalJob:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.deleted = False
        self.exit_codes: list[int] = []
        self.state = "QUEUED"


# Starts the trainer so that it dies with the process that started it (Linux: the parent-death
# signal survives exec): stopping the local stack, however it stops, leaves no trainer running.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != parent:  # the parent died before the signal was armed\n"
    "    sys.exit(75)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'yachay_trainer'])\n"
)


_EXIT_CODE = re.compile(r"exit code (-?\d+)")
TRAINER_MARK = "YACHAY_LOCAL_TRAINER_OF"  # the checkout a local trainer belongs to


def local_trainers(root: Path) -> list[int]:
    """Pids of local trainers started from the checkout at `root` that are still running (read
    from /proc: each carries TRAINER_MARK in its environment)."""
    mark = f"{TRAINER_MARK}={root}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if mark in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
    return sorted(pids)


class LocalBatch:
    """Runs each job's trainer as a subprocess of this process (the local gateway).

    Like Batch on a machine with room for `slots` tasks: jobs wait in submission order (QUEUED)
    until a slot frees, then run (SCHEDULED, RUNNING). One slot by default, so local runs never
    thrash a small machine (YACHAY_LOCAL_BATCH_SLOTS); each trainer gets an equal share of the
    cores for torch's threads."""

    _jobs: dict[str, _LocalJob] = {}
    _lock = threading.Lock()
    _queue: queue.SimpleQueue[tuple[str, TrainerConfig]] = queue.SimpleQueue()
    _workers = 0

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self.logs = Path(os.environ.get("YACHAY_LOCAL_BATCH_LOGS", "/tmp/yachay-local-batch"))
        self.slots = max(1, int(os.environ.get("YACHAY_LOCAL_BATCH_SLOTS", "1")))

    def submit(self, job_id: str, trainer: TrainerConfig, spec: ModelSpec) -> str:
        name = job_name(self.cfg, job_id)
        with self._lock:
            if name in self._jobs:
                return name  # Batch would answer ALREADY_EXISTS
            self._jobs[name] = _LocalJob()
            start_worker = LocalBatch._workers < self.slots
            LocalBatch._workers += start_worker
        self._queue.put((name, trainer))
        if start_worker:
            threading.Thread(target=self._work, daemon=True).start()
        return name

    def _work(self) -> None:
        """One slot: runs queued jobs one after another, in the order they came."""
        while True:
            name, trainer = self._queue.get()
            job = self._jobs.get(name)
            if job is not None and not job.deleted:
                self._run(name, trainer)

    def delete(self, name: str) -> None:
        with self._lock:
            job = self._jobs.get(name)
        if job is None:
            return
        job.deleted = True
        if job.process is not None and job.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)

    def state(self, name: str) -> str | None:
        with self._lock:
            job = self._jobs.get(name)
        return None if job is None else job.state

    def run_end(self, name: str) -> RunEnd | None:
        with self._lock:
            job = self._jobs.get(name)
        if job is None or not job.exit_codes:
            return None
        return RunEnd(len(job.exit_codes), job.exit_codes[-1])

    def environment(self, trainer: TrainerConfig) -> dict[str, str]:
        """Exactly the container's environment, plus where the emulators are."""
        root = Path(__file__).resolve().parent.parent
        passthrough = (
            "FIRESTORE_EMULATOR_HOST",
            "STORAGE_EMULATOR_HOST",
            "NO_GCE_CHECK",
            "GCE_METADATA_HOST",
            "GCE_METADATA_IP",
            "PATH",
            "HOME",
            "LANG",
            "YACHAY_TRAINER_PRECISION",  # the image's default (auto: bf16 on a GPU) unless set
        )
        env = {k: os.environ[k] for k in passthrough if k in os.environ}
        env.update(trainer.to_env())
        env["GOOGLE_CLOUD_PROJECT"] = self.cfg.project_id
        env["HF_HUB_OFFLINE"] = "1"  # as in the image: the trainer never calls a model hub
        env["PYTHONPATH"] = f"{root}{os.pathsep}{root / 'trainer_image'}"
        env[TRAINER_MARK] = str(root)  # local_trainers() finds it by this
        threads = str(max(1, (os.cpu_count() or 1) // self.slots))
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads  # a fair share of the cores
        return env

    def _run(self, name: str, trainer: TrainerConfig) -> None:
        """Runs the job; if the executor itself fails before the trainer starts (a Pub/Sub
        publish that times out, say), the job is forgotten, as Batch would fail to create it:
        its state reads None and the reconciler launches it again."""
        try:
            self._attempts(name, trainer)
        except Exception as exc:
            job = self._jobs.get(name)
            if job is not None and job.process is None:
                with self._lock:
                    self._jobs.pop(name, None)
            logs.warning("local Batch job failed to run", name=name, error=repr(exc))

    def _attempts(self, name: str, trainer: TrainerConfig) -> None:
        job = self._jobs[name]
        self._publish(name, "SCHEDULED")
        self.logs.mkdir(parents=True, exist_ok=True)
        state = "FAILED"
        for attempt in range(MAX_RETRIES + 1):
            if job.deleted:
                return
            if attempt == 0:
                self._publish(name, "RUNNING")
            with open(self.logs / f"{trainer.job_id}.log", "ab") as log:
                job.process = subprocess.Popen(
                    [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())],
                    env=self.environment(trainer),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                code = job.process.wait()
            job.exit_codes.append(code)
            if job.deleted:
                return
            if code == EXIT_OK:
                state = "SUCCEEDED"
                break
            if code not in RETRYABLE_EXIT_CODES:
                break
        self._publish(name, state)

    def _publish(self, name: str, state: str) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # ships no types

        job = self._jobs.get(name)
        if job is not None:
            job.state = state
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(self.cfg.project_id, self.cfg.batch_topic)
        data = json.dumps({"name": name, "status": {"state": state}}).encode()
        publisher.publish(
            topic, data, Type="JOB_STATE_CHANGED", JobName=name, NewJobState=state
        ).result(timeout=30)


_backend: BatchBackend | None = None
_backend_lock = threading.Lock()


def backend(cfg: Settings) -> BatchBackend:
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = LocalBatch(cfg) if cfg.batch_backend == "local" else CloudBatch(cfg)
        return _backend
