"""POST /v1/jobs/setup-card: a Stripe Checkout session in setup mode."""

from shared import billing
from shared.http import ApiRequest, Reply, serve


def setup_card(req: ApiRequest) -> Reply:
    return Reply(billing.setup_card(req.uid, req.email, req.settings), status=201)


cards = serve("cards", {"setupCard": setup_card})
