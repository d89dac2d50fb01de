from shared.catalog import catalog, model_view


def test_catalog_has_the_real_open_models_and_smollm2() -> None:
    ids = {m.id for m in catalog().models}
    assert {
        "llama-3.1-8b-instruct",
        "qwen2.5-7b-instruct",
        "mistral-7b-instruct-v0.3",
        "gemma-2-9b-it",
        "smollm2-135m-instruct",
    } <= ids
    assert len(ids) == len(catalog().models)


def test_every_default_lies_within_its_bounds() -> None:
    for m in catalog().models:
        for name, b in {**m.hyperparameters, **m.lora}.items():
            assert b.min <= b.default <= b.max, (m.id, name)
        assert m.hyperparameters["max_seq_length"].max <= m.context_length
        assert m.lora_target_modules_default in ("all-linear", *m.lora_target_modules_allowed)


def test_prices_are_positive_integer_cents() -> None:
    for m in catalog().models:
        assert isinstance(m.price_per_million_tokens_cents, int)
        assert m.price_per_million_tokens_cents > 0


def test_model_view_shape() -> None:
    m = catalog().get("smollm2-135m-instruct")
    assert m is not None
    view = model_view(m, True, "usd")
    assert view["available"] is True
    assert view["pricing"] == {"unit": "1M_training_tokens", "price_cents": 10, "currency": "usd"}
    assert view["lora"]["rank"]["default"] == 16
    assert "q_proj" in view["lora"]["target_modules"]["allowed"]
    assert catalog().get("no-such-model") is None


def test_every_catalog_gpu_is_one_batch_can_attach() -> None:
    from shared.batch import GPU_TYPES

    for m in catalog().models:
        assert m.gpu_type in GPU_TYPES, (m.id, m.gpu_type)


def test_a_model_of_an_architecture_we_cannot_train_is_refused_when_the_catalog_loads() -> None:
    import json

    import pytest

    from shared.catalog import CATALOG_PATH, CatalogError, parse

    raw = json.loads(CATALOG_PATH.read_text())
    assert parse(raw).models  # the real catalog loads
    raw["models"][0]["family"] = "phi3"
    with pytest.raises(CatalogError, match="'phi3'.*only llama, mistral, qwen2, gemma2"):
        parse(raw)
