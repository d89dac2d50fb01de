"""Settles a job when it ends: a CloudEvent function on jobs/{id} updates (Eventarc, Firestore).

Eventarc delivers the change as a protobuf DocumentEventData. We act only on the change into an
ended state (completed and cancelled jobs are charged from their card hold, failed ones have
their hold released); settling is exactly-once (shared.billing), and errors propagate so the
trigger retries.
"""

import functions_framework
from cloudevents.http import CloudEvent
from google.events.cloud.firestore import Document, DocumentEventData

from shared import billing, logs
from shared.config import settings
from shared.records import JobStatus

ENDED = {s.value for s in JobStatus if s.ended}


def _status(document: Document | None) -> str | None:
    if document is None or "status" not in document.fields:
        return None
    return str(document.fields["status"].string_value)


@functions_framework.cloud_event
def charge_job(event: CloudEvent) -> None:
    data = DocumentEventData.deserialize(event.data)
    new, old = _status(data.value), _status(data.old_value)
    if new not in ENDED or new == old:
        return
    job_id = data.value.name.rsplit("/", 1)[-1]
    outcome = billing.charge_job(job_id, settings())
    logs.info("charge", job_id=job_id, status=new, outcome=outcome)
