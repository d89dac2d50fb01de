"""GET /v1/billing/summary: what the caller has spent, by kind and by month."""

from shared import billing as core
from shared.http import ApiRequest, Reply, serve


def billing_summary(req: ApiRequest) -> Reply:
    return Reply(core.summary(req.uid, req.settings))


billing = serve("billing", {"billingSummary": billing_summary})
