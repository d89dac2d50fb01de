"""Firebase Auth `user.delete` -> erase the account (shared.erasure).

A CloudEvent function on the Firebase Auth trigger (deployed as a 1st-gen function: Firebase
Auth events have no 2nd-gen trigger; functions-framework hands the legacy event over as a
CloudEvent whose data is the deleted user). Errors propagate so the trigger retries; erasing is
idempotent. The local stack has no Auth-event delivery (the Auth emulator emits none): tests
call this function with the same event.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared import erasure, logs
from shared.config import settings


@functions_framework.cloud_event
def auth_events(event: CloudEvent) -> None:
    data = event.data if isinstance(event.data, dict) else {}
    uid = data.get("uid")
    if not isinstance(uid, str) or not uid or "/" in uid or len(uid) > 128:
        logs.warning("auth event without a usable uid", type=event["type"])
        return
    erasure.erase_account(uid, settings())
