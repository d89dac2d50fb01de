"""POST /v1/stripe/webhook: Stripe's events, verified by their signature, handled once."""

from shared import billing, payments
from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, serve
from shared.routes import valid_id


def receive(req: ApiRequest) -> Reply:
    try:
        event = payments.verify_webhook(
            req.settings, req.raw_body(), req.header("Stripe-Signature")
        )
    except ValueError as exc:
        raise ApiError(Code.INVALID_SIGNATURE, f"Webhook refused: {exc}.") from None
    data = event.get("data")
    well_formed = (
        isinstance(data, dict)
        and isinstance(data.get("object"), dict)
        and valid_id(event.get("id"))
        and isinstance(event.get("type"), str)
    )
    if not well_formed:
        raise ApiError(Code.INVALID_BODY, "The event needs an id, a type and a data.object.")
    # Other errors (Stripe or Firestore unreachable) answer 5xx, so Stripe delivers it again.
    return Reply({"received": True, "outcome": billing.handle_event(event, req.settings)})


stripe_webhook = serve("stripe_webhook", {"stripeWebhook": receive})
