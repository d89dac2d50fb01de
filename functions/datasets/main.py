"""/v1/datasets: register, upload (signed URL), validate, list, get, delete."""

from shared import datasets as ds
from shared.http import ApiRequest, Reply, list_reply, serve


def create_dataset(req: ApiRequest) -> Reply:
    return Reply(ds.create(req.uid, req.body, req.settings), status=201)


def list_datasets(req: ApiRequest) -> Reply:
    limit, cursor = req.page()
    return list_reply(*ds.list_page(req.uid, limit, cursor))


def get_dataset(req: ApiRequest) -> Reply:
    return Reply(ds.view(ds.owned(req.uid, req.params["dataset_id"])))


def delete_dataset(req: ApiRequest) -> Reply:
    ds.delete(req.uid, req.params["dataset_id"], req.settings)
    return Reply(None, status=204)


def validate_dataset(req: ApiRequest) -> Reply:
    doc = ds.owned(req.uid, req.params["dataset_id"])
    return Reply(ds.view(ds.validate_dataset(doc, req.settings)))


datasets = serve(
    "datasets",
    {
        "createDataset": create_dataset,
        "listDatasets": list_datasets,
        "getDataset": get_dataset,
        "deleteDataset": delete_dataset,
        "validateDataset": validate_dataset,
    },
)
