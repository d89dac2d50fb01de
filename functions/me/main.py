"""GET /v1/me and PATCH /v1/me: the caller's account, created on first call."""

from shared import accounts
from shared.http import ApiRequest, Reply, serve


def _email(req: ApiRequest) -> str | None:
    return req.principal.email if req.principal else None


def get_me(req: ApiRequest) -> Reply:
    return Reply(accounts.get_account(req.uid, _email(req), req.settings))


def update_me(req: ApiRequest) -> Reply:
    return Reply(accounts.update_account(req.uid, _email(req), req.json_object(), req.settings))


me = serve("me", {"getMe": get_me, "updateMe": update_me})
