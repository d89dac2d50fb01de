"""LOCAL-ONLY stand-in for the Eventarc Firestore trigger: watches a collection on the Firestore
emulator and delivers each change to a CloudEvent function as Eventarc does, a protobuf
DocumentEventData (old and new document), retrying with backoff when the function raises.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cloudevents.http import CloudEvent
from google.events.cloud.firestore import (
    ArrayValue,
    Document,
    DocumentEventData,
    MapValue,
    Value,
)

from shared import logs, store
from shared.config import settings

RETRIES = 6


def to_value(v: Any) -> Value:
    if v is None:
        return Value(null_value=0)
    if isinstance(v, bool):
        return Value(boolean_value=v)
    if isinstance(v, int):
        return Value(integer_value=v)
    if isinstance(v, float):
        return Value(double_value=v)
    if isinstance(v, str):
        return Value(string_value=v)
    if isinstance(v, datetime):
        return Value(timestamp_value=v)
    if isinstance(v, dict):
        return Value(map_value=MapValue(fields={k: to_value(x) for k, x in v.items()}))
    if isinstance(v, list | tuple):
        return Value(array_value=ArrayValue(values=[to_value(x) for x in v]))
    return Value(string_value=str(v))


def to_document(path: str, doc: dict[str, Any] | None) -> Document | None:
    if doc is None:
        return None
    return Document(name=path, fields={k: to_value(v) for k, v in doc.items()})


class FirestoreRelay:
    def __init__(
        self, collection: str, function: Callable[[CloudEvent], None], event_type: str
    ) -> None:
        self.collection = collection
        self.function = function
        self.event_type = event_type  # the one change kind the trigger subscribes to, as Eventarc
        self.previous: dict[str, dict[str, Any]] = {}
        self.queue: queue.Queue[CloudEvent] = queue.Queue()
        self.watch: Any = None
        self.primed = False

    def start(self) -> FirestoreRelay:
        threading.Thread(target=self._deliver_forever, daemon=True).start()
        self.watch = store.client().collection(self.collection).on_snapshot(self._on_snapshot)
        return self

    def _on_snapshot(self, snapshots: list[Any], changes: list[Any], read_time: Any) -> None:
        for change in changes:
            doc = change.document
            new = doc.to_dict() if change.type.name != "REMOVED" else None
            old = self.previous.get(doc.id)
            if new is None:
                self.previous.pop(doc.id, None)
            else:
                self.previous[doc.id] = new
            if not self.primed:  # the first snapshot is the state at start, not changes
                continue
            kind = {"ADDED": "created", "MODIFIED": "updated", "REMOVED": "deleted"}[
                change.type.name
            ]
            if f"google.cloud.firestore.document.v1.{kind}" != self.event_type:
                continue  # Eventarc delivers only the trigger's own event type
            path = doc.reference.path
            name = f"projects/{settings().project_id}/databases/(default)/documents/{path}"
            data = DocumentEventData(value=to_document(name, new), old_value=to_document(name, old))
            self.queue.put(
                CloudEvent(
                    {
                        "type": f"google.cloud.firestore.document.v1.{kind}",
                        "id": uuid.uuid4().hex,
                        "source": f"//firestore.googleapis.com/projects/{settings().project_id}",
                        "subject": f"documents/{path}",
                        "datacontenttype": "application/protobuf",
                    },
                    DocumentEventData.serialize(data),
                )
            )
        self.primed = True

    def _deliver_forever(self) -> None:
        while True:
            event = self.queue.get()
            for attempt in range(RETRIES):
                try:
                    self.function(event)
                    break
                except Exception as exc:
                    logs.warning(
                        "relay delivery failed; retrying", error=repr(exc), attempt=attempt + 1
                    )
                    time.sleep(min(10.0, 0.5 * 2**attempt))
