"""Cloud Tasks adapter: the only module that imports google.cloud.tasks_v2.

Locally YACHAY_TASKS_EMULATOR_HOST points the same client at the Cloud Tasks emulator over an
insecure gRPC channel. Tasks are named after the job, so enqueueing twice makes one task
(production refuses the duplicate name for about an hour; the emulator accepts it, which is why
the launcher itself is idempotent too).
"""

from __future__ import annotations

import contextlib
import json
import threading
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


def launch_task(job_id: str, cfg: Settings) -> dict[str, Any]:
    """The task request for launching one job (kept separate so tests can inspect it)."""
    request: dict[str, Any] = {
        "http_method": "POST",
        "url": cfg.task_target_url,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"job_id": job_id}).encode(),
    }
    if cfg.tasks_service_account:
        request["oidc_token"] = {
            "service_account_email": cfg.tasks_service_account,
            "audience": cfg.task_target_url,
        }
    return {"name": f"{cfg.tasks_queue}/tasks/launch-{job_id}", "http_request": request}


def enqueue_launch(job_id: str, cfg: Settings) -> None:
    from google.api_core.exceptions import AlreadyExists

    with contextlib.suppress(AlreadyExists):
        client(cfg).create_task(parent=cfg.tasks_queue, task=launch_task(job_id, cfg))
