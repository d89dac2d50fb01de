"""Batch job state notifications (Pub/Sub, through an Eventarc trigger) -> our state machine.

A CloudEvent function: errors propagate, so the trigger retries; repeats are harmless.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared import lifecycle as core
from shared import logs
from shared.config import settings


@functions_framework.cloud_event
def batch_events(event: CloudEvent) -> None:
    message = (event.data or {}).get("message", {})
    attributes = message.get("attributes") or {}
    if attributes.get("Type") != "JOB_STATE_CHANGED":
        return
    outcome = core.on_batch_state(
        attributes.get("JobName", ""), attributes.get("NewJobState", ""), settings()
    )
    logs.info(
        "batch state",
        job=attributes.get("JobName"),
        state=attributes.get("NewJobState"),
        outcome=outcome,
    )
