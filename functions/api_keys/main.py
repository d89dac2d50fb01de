"""/v1/api-keys: mint, list and revoke API keys (signed-in sessions only, never a key)."""

from shared import apikeys
from shared.http import ApiRequest, Reply, list_reply, serve


def create_api_key(req: ApiRequest) -> Reply:
    key = apikeys.mint(req.uid, req.body["name"], req.body["scopes"], req.settings)
    return Reply(key, status=201)


def list_api_keys(req: ApiRequest) -> Reply:
    return list_reply(apikeys.listed(req.uid), None)


def delete_api_key(req: ApiRequest) -> Reply:
    apikeys.revoke(req.uid, req.params["key_id"])
    return Reply(None, status=204)


api_keys = serve(
    "api_keys",
    {"createApiKey": create_api_key, "listApiKeys": list_api_keys, "deleteApiKey": delete_api_key},
)
