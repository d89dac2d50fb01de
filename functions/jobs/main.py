"""/v1/jobs: estimate, submit, list, get, cancel, download, checkpoints, retry a payment, extend
storage.

Reads (list, get) need only the job views; each other operation imports its core module when
it first runs, so a cold start serving a read does not load admission, the Batch and Tasks
adapters or billing.
"""

from typing import TYPE_CHECKING

from shared.http import ApiRequest, Reply, list_reply, serve
from shared.idempotency import HEADER as IDEMPOTENCY_KEY
from shared.jobs import list_page, owned, view
from shared.records import JobStatus

if TYPE_CHECKING:
    from shared.token_counts import Counting


def _counting(pending: "Counting") -> Reply:
    """202: a large file's tokens are being counted; the same request again later answers."""
    return Reply(pending.view(), status=202, headers={"Retry-After": str(pending.retry_after_s)})


def estimate_job(req: ApiRequest) -> Reply:
    from shared import admission
    from shared.token_counts import Counting

    try:
        return Reply(admission.estimate(req.uid, req.email, req.body, req.settings))
    except Counting as pending:
        return _counting(pending)


def create_job(req: ApiRequest) -> Reply:
    from shared import admission
    from shared.token_counts import Counting

    try:
        job, created = admission.submit(
            req.uid, req.email, req.body, req.header(IDEMPOTENCY_KEY), req.settings
        )
    except Counting as pending:  # nothing stored, held or keyed yet
        return _counting(pending)
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return Reply(job, status=201, headers=headers)


def list_jobs(req: ApiRequest) -> Reply:
    limit, cursor = req.page()
    status = JobStatus(req.args["status"]) if "status" in req.args else None
    return list_reply(*list_page(req.uid, limit, cursor, status))


def get_job(req: ApiRequest) -> Reply:
    return Reply(view(owned(req.uid, req.params["job_id"])))


def cancel_job(req: ApiRequest) -> Reply:
    from shared import lifecycle

    return Reply(lifecycle.cancel(req.uid, req.params["job_id"], req.settings))


def download_job(req: ApiRequest) -> Reply:
    from shared import artifacts

    job = owned(req.uid, req.params["job_id"])
    return Reply(artifacts.download_links(job, req.settings, checkpoint=req.args.get("checkpoint")))


def list_checkpoints(req: ApiRequest) -> Reply:
    from shared import artifacts

    return list_reply(artifacts.checkpoints(owned(req.uid, req.params["job_id"])), None)


def extend_storage(req: ApiRequest) -> Reply:
    from shared import billing

    return Reply(
        billing.extend_storage(
            req.uid,
            req.params["job_id"],
            req.body,
            req.header(IDEMPOTENCY_KEY),
            req.settings,
        )
    )


def retry_payment(req: ApiRequest) -> Reply:
    from shared import billing

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
        "listCheckpoints": list_checkpoints,
        "retryPayment": retry_payment,
        "extendStorage": extend_storage,
    },
)
