from shared import storage
from shared.catalog import catalog

BUCKET = "demo-yachay-models"


def put(name: str, data: str = "{}") -> None:
    client = storage.client()
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    bucket.blob(name).upload_from_string(data)


def test_catalog_needs_auth(api) -> None:
    assert api.request("GET", "/v1/models").json()["error"]["code"] == "auth_missing"


def test_models_are_unavailable_until_their_manifest_is_in_the_store(api) -> None:
    user = api.new_user()
    body = api.request("GET", "/v1/models", user).json()
    assert body["catalog_version"] == catalog().version
    assert [m["id"] for m in body["data"]] == [m.id for m in catalog().models]
    assert not any(m["available"] for m in body["data"])

    put("models/smollm2-135m-instruct/config.json")  # weights half-uploaded: still unavailable
    put("models/not-in-catalog/manifest.json")
    body = api.request("GET", "/v1/models", user).json()
    assert not any(m["available"] for m in body["data"])

    put("models/smollm2-135m-instruct/manifest.json")
    body = api.request("GET", "/v1/models", user).json()
    available = {m["id"] for m in body["data"] if m["available"]}
    assert available == {"smollm2-135m-instruct"}


def test_model_fields(api) -> None:
    body = api.request("GET", "/v1/models", api.new_user()).json()
    llama = next(m for m in body["data"] if m["id"] == "llama-3.1-8b-instruct")
    assert llama["context_length"] == 131072
    assert isinstance(llama["pricing"]["price_cents"], int)
    assert llama["pricing"]["currency"] == "usd"
    for key in (
        "display_name",
        "family",
        "parameters",
        "gpu_type",
        "max_dataset_tokens",
        "hyperparameters",
        "lora",
    ):
        assert key in llama
