"""Sends each recorded webhook event on: a CloudEvent function on webhook_events/{id} creations
(Eventarc, Firestore). It enqueues one delivery task per subscribed endpoint, named by both ids,
so a redelivered event enqueues each once; errors propagate so the trigger retries.
"""

import functions_framework
from cloudevents.http import CloudEvent
from google.events.cloud.firestore import DocumentEventData

from shared import logs, webhooks
from shared.config import settings


@functions_framework.cloud_event
def webhook_events(event: CloudEvent) -> None:
    data = DocumentEventData.deserialize(event.data)
    event_id = data.value.name.rsplit("/", 1)[-1]
    count = webhooks.fan_out(event_id, settings())
    logs.info("webhook fan-out", event_id=event_id, endpoints=count)
