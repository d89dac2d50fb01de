"""Internal: the worker, the one function our own infrastructure calls (never API Gateway):
- Cloud Tasks: launching a queued job's Batch job, one attempt of a webhook delivery;
- Cloud Scheduler: the sweep (shared.sweep);
- the trainers: progress reports and their downscoped storage tokens (with their job's token).
Each runs as the launcher service account, the only one that creates Batch jobs.

Any error answers 5xx so Cloud Tasks retries; a task that needs nothing answers 200.
"""

from shared import lifecycle as core
from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, serve


def launch(req: ApiRequest) -> Reply:
    job_id = req.json_object().get("job_id")
    if not isinstance(job_id, str):
        raise ApiError(Code.MISSING_FIELD, 'Send {"job_id": ...}.', param="job_id")
    return Reply({"job_id": job_id, "outcome": core.launch(job_id, req.settings)})


def relaunch_stale(req: ApiRequest) -> Reply:
    """The scheduled sweep (shared.sweep): launches that never happened, the reconciler
    (Batch's own state of stale jobs, ended jobs never settled), card holds near expiry,
    dataset uploads that never came; always 200, with what it did and what it skipped."""
    from shared import sweep

    return Reply(sweep.run(req.settings))


def deliver_webhook(req: ApiRequest) -> Reply:
    """One attempt of one webhook event to one endpoint (retries are enqueued by the attempt
    itself, on the Standard Webhooks schedule); a 5xx here only for our own failures."""
    from shared import webhooks

    body = req.json_object()
    event_id, endpoint_id, attempt = (
        body.get("event_id"),
        body.get("endpoint_id"),
        body.get("attempt"),
    )
    if not (isinstance(event_id, str) and isinstance(endpoint_id, str)) or not isinstance(
        attempt, int
    ):
        raise ApiError(Code.INVALID_BODY, "Send {event_id, endpoint_id, attempt}.")
    outcome = webhooks.deliver(event_id, endpoint_id, attempt, req.settings)
    return Reply({"event_id": event_id, "endpoint_id": endpoint_id, "outcome": outcome})


def trainer_report(req: ApiRequest) -> Reply:
    """A trainer's progress, result or failure for its own job (its job token, not OIDC)."""
    token = req.header("X-Yachay-Job-Token")
    return Reply({"recorded": core.trainer_report(token, req.json_object(), req.settings)})


def trainer_storage_token(req: ApiRequest) -> Reply:
    """A storage token limited to the trainer's own job (its job token, not OIDC)."""
    token = req.header("X-Yachay-Job-Token")
    return Reply(core.trainer_storage_token(token, req.json_object(), req.settings))


worker = serve(
    "worker",
    {
        "launchJob": launch,
        "relaunchStale": relaunch_stale,
        "deliverWebhook": deliver_webhook,
        "trainerReport": trainer_report,
        "trainerStorageToken": trainer_storage_token,
    },
)
