"""POST /v1/jobs/setup-card (a Stripe Checkout session in setup mode) and POST
/v1/billing/portal-session (a billing-portal session, made only when asked for)."""

from shared import billing
from shared.http import ApiRequest, Reply, serve


def setup_card(req: ApiRequest) -> Reply:
    return Reply(billing.setup_card(req.uid, req.email, req.settings), status=201)


def create_portal_session(req: ApiRequest) -> Reply:
    return Reply(billing.portal_session(req.uid, req.email, req.settings), status=201)


cards = serve("cards", {"setupCard": setup_card, "createPortalSession": create_portal_session})
