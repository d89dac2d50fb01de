"""Internal: the Cloud Tasks target that counts a large dataset's tokens for one model, once
(shared.token_counts). Answers 200 when the work is done or there is none to do; 5xx, so Cloud
Tasks retries, only for our own failures."""

from shared import token_counts
from shared.errors import ApiError, Code
from shared.http import ApiRequest, Reply, serve


def count(req: ApiRequest) -> Reply:
    body = req.json_object()
    uid, dataset_id, model = body.get("uid"), body.get("dataset_id"), body.get("model")
    if not (isinstance(uid, str) and isinstance(dataset_id, str) and isinstance(model, str)):
        raise ApiError(Code.INVALID_BODY, 'Send {"uid", "dataset_id", "model"}.')
    outcome = token_counts.count_in_background(uid, dataset_id, model, req.settings)
    return Reply({"dataset_id": dataset_id, "model": model, "outcome": outcome})


count_tokens = serve("count_tokens", {"countTokens": count})
