"""GET /v1/models: the catalog, each model marked available when its weights are in our store."""

from shared.catalog import catalog, model_view
from shared.http import ApiRequest, Reply, serve
from shared.modelstore import available_model_ids


def list_models(req: ApiRequest) -> Reply:
    cat = catalog()
    available = available_model_ids(req.settings)
    return Reply(
        {
            "object": "list",
            "catalog_version": cat.version,
            "data": [model_view(m, m.id in available, cat.currency) for m in cat.models],
        }
    )


models = serve("models", {"listModels": list_models})
