"""/v1/webhook-endpoints: add, list, remove, rotate the secret, test, and the delivery log."""

from shared import webhooks as core
from shared.http import ApiRequest, Reply, list_reply, serve


def create_endpoint(req: ApiRequest) -> Reply:
    key = req.principal.key if req.principal else None
    scopes = tuple(key.scopes) if key is not None else None
    return Reply(core.create(req.uid, req.email, req.body, req.settings, scopes), status=201)


def list_endpoints(req: ApiRequest) -> Reply:
    return list_reply(core.listed(req.uid), None)


def delete_endpoint(req: ApiRequest) -> Reply:
    core.delete(req.uid, req.params["endpoint_id"])
    return Reply(None, status=204)


def rotate_secret(req: ApiRequest) -> Reply:
    return Reply(core.rotate(req.uid, req.params["endpoint_id"], req.settings))


def test_endpoint(req: ApiRequest) -> Reply:
    return Reply(core.send_test(req.uid, req.params["endpoint_id"], req.settings), status=202)


def list_deliveries(req: ApiRequest) -> Reply:
    limit = int(req.args.get("limit", 20))
    return list_reply(core.deliveries(req.uid, req.params["endpoint_id"], limit), None)


webhooks = serve(
    "webhooks",
    {
        "createWebhookEndpoint": create_endpoint,
        "listWebhookEndpoints": list_endpoints,
        "deleteWebhookEndpoint": delete_endpoint,
        "rotateWebhookSecret": rotate_secret,
        "testWebhookEndpoint": test_endpoint,
        "listWebhookDeliveries": list_deliveries,
    },
)
