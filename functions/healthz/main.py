"""GET /v1/healthz: liveness (no SDK imported), and with ?ready=true a Firestore check; GET
/v1/openapi.json: this API's OpenAPI 3.1 document, made from the route table and schemas."""

from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, serve


def get_health(req: ApiRequest) -> Reply:
    body = {"status": "ok", "version": req.settings.version}
    if not req.args.get("ready"):
        return Reply(body)
    from shared import store  # imported only for readiness: keeps the liveness cold start bare

    try:
        store.ping(timeout_s=2.0)
    except Exception as exc:
        raise ApiError(
            Code.NOT_READY, f"Firestore does not answer ({type(exc).__name__}); retry shortly."
        ) from None
    return Reply({**body, "checks": {"firestore": "ok"}})


def get_openapi(req: ApiRequest) -> Reply:
    from shared.openapi import public_spec

    return Reply(public_spec())


healthz = serve("healthz", {"getHealth": get_health, "getOpenApi": get_openapi})
