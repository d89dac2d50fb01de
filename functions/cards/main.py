"""POST /v1/jobs/setup-card (a Stripe Checkout session in setup mode) and POST
/v1/billing/portal-session (a billing-portal session, made only when asked for), and the
signed link GET /v1/me hands out (GET /v1/billing/portal: makes the session when followed)."""

from shared import card_saving
from shared.http import ApiRequest, Reply, serve


def setup_card(req: ApiRequest) -> Reply:
    return Reply(card_saving.setup_card(req.uid, req.email, req.settings), status=201)


def create_portal_session(req: ApiRequest) -> Reply:
    return Reply(card_saving.portal_session(req.uid, req.email, req.settings), status=201)


def open_billing_portal(req: ApiRequest) -> Reply:
    url = card_saving.open_portal(req.args.get("token"), req.settings)
    return Reply(None, status=303, headers={"Location": url, "Cache-Control": "no-store"})


cards = serve(
    "cards",
    {
        "setupCard": setup_card,
        "createPortalSession": create_portal_session,
        "openBillingPortal": open_billing_portal,
    },
)
