"""Cloud Tasks adapter: the only module that imports google.cloud.tasks_v2.

Locally YACHAY_TASKS_EMULATOR_HOST points the same client at the Cloud Tasks emulator over an
insecure gRPC channel. Tasks are named after the job, so enqueueing twice makes one task
(production refuses the duplicate name for about an hour; the emulator accepts it, which is why
the launcher itself is idempotent too). Launches, webhook deliveries and token counts have a
queue each, so a receiver that hangs for its whole timeout, or a large file being counted,
never holds up a launch.
"""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import datetime, timedelta
from typing import Any

from shared.config import Settings

_lock = threading.Lock()
_client: Any = None


def client(cfg: Settings) -> Any:
    global _client
    with _lock:
        if _client is None:
            from google.cloud import tasks_v2

            if cfg.tasks_emulator_host:
                import grpc
                from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                    CloudTasksGrpcTransport,
                )

                channel = grpc.insecure_channel(cfg.tasks_emulator_host)
                _client = tasks_v2.CloudTasksClient(
                    transport=CloudTasksGrpcTransport(channel=channel)
                )
            else:
                _client = tasks_v2.CloudTasksClient()
        return _client


def _request(url: str, body: dict[str, Any], cfg: Settings) -> dict[str, Any]:
    request: dict[str, Any] = {
        "http_method": "POST",
        "url": url,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body).encode(),
    }
    if cfg.tasks_service_account:  # one audience for every internal route (shared.auth)
        request["oidc_token"] = {
            "service_account_email": cfg.tasks_service_account,
            "audience": cfg.task_target_url,
        }
    return request


def launch_task(job_id: str, cfg: Settings) -> dict[str, Any]:
    """The task request for launching one job (kept separate so tests can inspect it)."""
    request = _request(cfg.task_target_url, {"job_id": job_id}, cfg)
    return {"name": f"{cfg.tasks_queue}/tasks/launch-{job_id}", "http_request": request}


def delivery_task(
    event_id: str, endpoint_id: str, attempt: int, at: datetime | None, cfg: Settings
) -> dict[str, Any]:
    """The task for attempt `attempt` of one webhook event to one endpoint, named by all three
    (so a redelivered trigger or a retried attempt enqueues it once), due at `at`."""
    body = {"event_id": event_id, "endpoint_id": endpoint_id, "attempt": attempt}
    task: dict[str, Any] = {
        "name": f"{cfg.webhooks_queue}/tasks/wh-{event_id}-{endpoint_id}-{attempt}",
        "http_request": _request(cfg.webhook_target_url, body, cfg),
    }
    if at is not None:
        task["schedule_time"] = at
    return task


def enqueue_delivery(
    event_id: str, endpoint_id: str, attempt: int, at: datetime | None, cfg: Settings
) -> None:
    from google.api_core.exceptions import AlreadyExists

    with contextlib.suppress(AlreadyExists):
        client(cfg).create_task(
            parent=cfg.webhooks_queue,
            task=delivery_task(event_id, endpoint_id, attempt, at, cfg),
        )


def count_task(uid: str, dataset_id: str, sha256: str, model: str, cfg: Settings) -> dict[str, Any]:
    """The task that counts one validated file's tokens for one model, named by all three
    (model ids are [a-z0-9.-]), so the many estimates that wait on one count enqueue it once."""
    body = {"uid": uid, "dataset_id": dataset_id, "model": model}
    name = f"count-{dataset_id}-{sha256[:12]}-{model.replace('.', '_')}"
    return {
        "name": f"{cfg.counts_queue}/tasks/{name}",
        "http_request": _request(cfg.count_target_url, body, cfg),
        "dispatch_deadline": timedelta(minutes=30),  # the most Cloud Tasks allows
    }


def enqueue_count(uid: str, dataset_id: str, sha256: str, model: str, cfg: Settings) -> None:
    from google.api_core.exceptions import AlreadyExists

    with contextlib.suppress(AlreadyExists):
        client(cfg).create_task(
            parent=cfg.counts_queue, task=count_task(uid, dataset_id, sha256, model, cfg)
        )


def enqueue_launch(job_id: str, cfg: Settings) -> None:
    from google.api_core.exceptions import AlreadyExists

    with contextlib.suppress(AlreadyExists):
        client(cfg).create_task(parent=cfg.tasks_queue, task=launch_task(job_id, cfg))
