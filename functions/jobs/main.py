"""/v1/jobs: estimate, submit, list, get, cancel."""

from shared import artifacts, billing, store
from shared import jobs as core
from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, list_reply, serve


def _email(req: ApiRequest) -> str | None:
    return req.principal.email if req.principal else None


def estimate_job(req: ApiRequest) -> Reply:
    return Reply(core.estimate(req.uid, _email(req), req.json_object(), req.settings))


def create_job(req: ApiRequest) -> Reply:
    job, created = core.create(
        req.uid, _email(req), req.json_object(), req.header("Idempotency-Key"), req.settings
    )
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return Reply(job, status=201, headers=headers)


def list_jobs(req: ApiRequest) -> Reply:
    limit, cursor = req.page()
    status = req.query.get("status") or None
    if status is not None and status not in (*core.ACTIVE, *core.ENDED):
        raise ApiError(
            Code.INVALID_QUERY,
            f"'status' must be one of: {', '.join((*core.ACTIVE, *core.ENDED))}.",
            param="status",
        )
    docs, next_cursor = store.list_owned(store.JOBS, req.uid, limit, cursor, status)
    return list_reply([core.view(d) for d in docs], next_cursor)


def get_job(req: ApiRequest) -> Reply:
    return Reply(core.view(core.owned(req.uid, req.params["job_id"])))


def cancel_job(req: ApiRequest) -> Reply:
    return Reply(core.cancel(req.uid, req.params["job_id"], req.settings))


def download_job(req: ApiRequest) -> Reply:
    job = core.owned(req.uid, req.params["job_id"])
    return Reply(artifacts.download_links(job, req.settings))


def extend_storage(req: ApiRequest) -> Reply:
    return Reply(
        billing.extend_storage(
            req.uid,
            req.params["job_id"],
            req.json_object(),
            req.header("Idempotency-Key"),
            req.settings,
        )
    )


def retry_payment(req: ApiRequest) -> Reply:
    return Reply(billing.retry_payment(req.uid, req.params["job_id"], req.settings))


jobs = serve(
    "jobs",
    {
        "estimateJob": estimate_job,
        "createJob": create_job,
        "listJobs": list_jobs,
        "getJob": get_job,
        "cancelJob": cancel_job,
        "downloadJob": download_job,
        "retryPayment": retry_payment,
        "extendStorage": extend_storage,
    },
)
