"""GET /v1/billing/summary: what the caller has spent, by kind and by month."""

from shared import spending
from shared.http import ApiRequest, Reply, serve


def billing_summary(req: ApiRequest) -> Reply:
    return Reply(spending.summary(req.uid, req.settings))


billing = serve("billing", {"billingSummary": billing_summary})
