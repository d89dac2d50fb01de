"""Storage "object finalized" on the datasets bucket -> validate the dataset it belongs to.

A CloudEvent function (Eventarc). Locally the Storage emulator publishes the same finalize
notifications to Pub/Sub and the local gateway delivers them here as the same CloudEvent.
POST /v1/datasets/{id}/validate runs the same validation on request.

Only a transient failure (a service briefly unavailable) is raised, so Eventarc retries it; any
other error is permanent for this event and is logged, never redelivered for ever: the dataset is
back in `pending_upload`, and the user's validate call or the sweep of abandoned uploads
validates it again.
"""

import functions_framework
from cloudevents.http import CloudEvent
from google.api_core import exceptions as gax

from shared import datasets, logs
from shared.config import settings
from shared.errors import ApiError

TRANSIENT = (
    ConnectionError,
    TimeoutError,
    gax.ServiceUnavailable,
    gax.DeadlineExceeded,
    gax.Aborted,
)


@functions_framework.cloud_event
def dataset_events(event: CloudEvent) -> None:
    data = event.data or {}
    try:
        result = datasets.validate_uploaded_object(
            data.get("bucket", ""), data.get("name", ""), settings()
        )
    except ApiError as exc:  # e.g. the object was deleted again: nothing to retry for
        if exc.status == 503:
            raise
        logs.warning("dataset upload not validated", object=data.get("name"), code=exc.code)
        return
    except TRANSIENT:
        raise
    except Exception as exc:
        logs.error("dataset upload not validated", object=data.get("name"), error=repr(exc))
        return
    logs.info(
        "dataset upload",
        object=data.get("name"),
        status=None if result is None else result.status.value,
    )
