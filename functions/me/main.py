"""GET /v1/me and PATCH /v1/me: the caller's account, created on first call."""

from shared import accounts
from shared.http import ApiRequest, Reply, serve


def get_me(req: ApiRequest) -> Reply:
    session = req.principal is not None and req.principal.key is None
    return Reply(accounts.get_account(req.uid, req.email, req.settings, with_portal=session))


def update_me(req: ApiRequest) -> Reply:
    return Reply(accounts.update_account(req.uid, req.email, req.body, req.settings))


me = serve("me", {"getMe": get_me, "updateMe": update_me})
