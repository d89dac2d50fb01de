"""Hyperparameters are declared once (shared.contract.Hyperparameters): everything else derives."""

from __future__ import annotations

import importlib
import json

import pytest

from shared import catalog
from shared.contract import declared
from shared.openapi import CLI_HYPERPARAMETERS, render_cli_hyperparameters, render_public_spec
from shared.pricing import resolve_hyperparameters

NAMES = [d.name for d in declared()]


def test_the_request_and_response_schemas_are_the_declarations() -> None:
    components = json.loads(render_public_spec())["components"]["schemas"]
    request = components["HyperparametersRequest"]["properties"]
    response = components["Hyperparameters"]["properties"]
    assert list(request) == list(response) == NAMES
    for d in declared():
        assert request[d.name]["description"] == d.knob.help
        if d.kind != "modules":
            assert request[d.name]["type"] == d.kind


def test_every_model_bounds_every_declared_number_and_the_defaults_resolve() -> None:
    for spec in catalog.catalog().models:
        hp = resolve_hyperparameters(spec, {})
        for d in declared():
            if d.kind == "modules":
                continue
            b = spec.bound(d.knob.catalog)
            assert getattr(hp, d.name) == b.default
            assert b.min <= b.default <= b.max


def test_a_catalog_key_no_hyperparameter_declares_is_refused() -> None:
    raw = json.loads(catalog.CATALOG_PATH.read_text())
    raw["models"][0]["lora"]["rnak"] = {"default": 1, "min": 1, "max": 2}
    with pytest.raises(catalog.CatalogError, match="rnak"):
        catalog.parse(raw)


def test_a_model_entry_overrides_the_declared_bounds_and_the_rest_stay_declared() -> None:
    raw = json.loads(catalog.CATALOG_PATH.read_text())
    entry = raw["models"][0]["hyperparameters"]
    entry.clear()
    entry["epochs"] = {"default": 2, "min": 1, "max": 4}
    spec = catalog.parse(raw).models[0]
    assert spec.bound("hyperparameters.epochs") == catalog.Bound(2, 1, 4)
    seed = next(d for d in declared() if d.name == "seed")
    low, high = seed.knob.minimum, seed.knob.maximum
    assert low is not None and high is not None
    assert spec.bound("hyperparameters.seed") == catalog.Bound(seed.default, low, high)
    entry["epochs"] = {"default": 9, "min": 1, "max": 4}
    with pytest.raises(catalog.CatalogError, match="not in bounds"):
        catalog.parse(raw)


def test_where_the_trainer_reads_each_one_exists() -> None:
    for d in declared():
        for place in d.knob.trainer.split(", "):
            module, _, name = place.partition(".")
            target: object = importlib.import_module(f"yachay_trainer.{module}")
            for part in name.split("."):
                target = getattr(target, part)


def test_the_cli_s_copy_of_the_declarations_is_fresh() -> None:
    assert CLI_HYPERPARAMETERS.read_text() == render_cli_hyperparameters(), (
        "the CLI's hyperparameters.json is stale: run `make openapi`"
    )
