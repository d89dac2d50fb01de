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


def test_each_architecture_config_has_the_catalogs_parameter_count() -> None:
    """The architecture block is the real model's config: built with no weights (meta device),
    it has exactly the parameters the catalog states (and prices merged weights by)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    for m in catalog().models:
        config = AutoConfig.for_model(**m.architecture)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert sum(p.numel() for p in model.parameters()) == m.parameters, m.id


def test_every_throughput_says_where_it_comes_from() -> None:
    """An estimated figure is the FLOPs estimate at its stated MFU (rounded to 100 tokens/s);
    a measured one names its GPU, date and MFU."""
    from shared import sizing

    for m in catalog().models:
        t = m.throughput
        assert t.gpu_type == m.gpu_type, m.id
        assert t.date and 0 < t.mfu <= 1
        if t.basis == "estimated":
            shape = sizing.Shape.of(m.architecture)
            est = sizing.estimated_tokens_per_s(m.parameters, shape, m.gpu_type, t.mfu, t.context)
            assert t.tokens_per_s == round(est, -2), m.id
        else:
            assert t.basis == "measured", m.id


def test_the_quote_says_how_its_eta_was_made() -> None:
    from shared.contract import Hyperparameters
    from shared.pricing import quote
    from shared.tokenization import TokenCount

    m = catalog().get("llama-3.1-8b-instruct")
    assert m is not None
    count = TokenCount(examples=10, dropped=0, truncated=0, tokens=1_000_000, trained_tokens=500)
    q = quote(m, count, Hyperparameters(epochs=2), "usd", 60)
    assert q.estimated_seconds_basis == m.throughput.basis == "estimated"
    assert q.estimated_seconds == 60 + -(-2_000_000 // m.throughput.tokens_per_s)
