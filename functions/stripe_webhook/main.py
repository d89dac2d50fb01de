"""POST /v1/stripe/webhook: Stripe's events, verified by their signature, handled once."""

from shared import billing, payments
from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, serve


def receive(req: ApiRequest) -> Reply:
    try:
        event = payments.verify_webhook(
            req.settings, req.raw_body(), req.header("Stripe-Signature")
        )
    except ValueError as exc:
        raise ApiError(Code.INVALID_SIGNATURE, f"Webhook refused: {exc}.") from None
    if not isinstance((event.get("data") or {}).get("object"), dict) or "id" not in event:
        raise ApiError(Code.INVALID_BODY, "The event has no id or no data.object.")
    # Other errors (Stripe or Firestore unreachable) answer 5xx, so Stripe delivers it again.
    return Reply({"received": True, "outcome": billing.handle_event(event, req.settings)})


stripe_webhook = serve("stripe_webhook", {"stripeWebhook": receive})
