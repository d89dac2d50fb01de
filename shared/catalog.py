"""The model catalog: versioned data in `shared/data/models.json`, read into typed records.

Prices are integer US cents per 1M billable training tokens. A model is offered only while its
weights are in our model store (`shared.modelstore`); the catalog itself never changes at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).parent / "data" / "models.json"


@dataclass(frozen=True)
class Bound:
    default: float | int
    min: float | int
    max: float | int


THROUGHPUT_BASES = ("measured", "estimated")


@dataclass(frozen=True)
class Throughput:
    """Trained tokens a second on the model's catalog GPU, and where the figure comes from:
    `measured` (make bench-gpu on `gpu_type`, on `date`, at that `mfu`) or `estimated` (model
    FLOPs per token at `context`, shared.sizing, at an assumed `mfu` of the GPU's peak). It sets
    every ETA."""

    tokens_per_s: int
    basis: str
    gpu_type: str
    mfu: float
    context: int
    date: str


@dataclass(frozen=True)
class ModelSpec:
    id: str
    display_name: str
    family: str
    parameters: int
    context_length: int
    price_per_million_tokens_cents: int
    gpu_type: str
    machine_type: str
    max_dataset_tokens: int
    throughput: Throughput
    hyperparameters: dict[str, Bound]
    lora: dict[str, Bound]
    lora_target_modules_default: str
    lora_target_modules_allowed: tuple[str, ...]
    source: str
    license: str
    # The Hugging Face config of the architecture (sizing, the GPU benchmark's models).
    architecture: dict[str, Any]

    @property
    def throughput_tokens_per_s(self) -> int:
        return self.throughput.tokens_per_s

    def bound(self, catalog_key: str) -> Bound:
        """The bounds of a hyperparameter by its Knob.catalog key ("lora.rank")."""
        group, _, key = catalog_key.partition(".")
        return (self.lora if group == "lora" else self.hyperparameters)[key]


@dataclass(frozen=True)
class Catalog:
    version: str
    currency: str
    models: tuple[ModelSpec, ...]

    def get(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)


def _bounds(model_id: str, group: str, raw: dict[str, Any]) -> dict[str, Bound]:
    """The bounds of the declared hyperparameters shown under `group` ("hyperparameters" or
    "lora"): the declaration's (shared.contract.Hyperparameters), each overridden where the
    model's entry sets its own. A key the declarations do not know is refused."""
    from shared.contract import declared

    numeric = {
        d.knob.catalog.partition(".")[2]: d
        for d in declared()
        if d.knob.catalog.startswith(group + ".") and d.kind != "modules"
    }
    unknown = set(raw) - set(numeric) - {"target_modules"}
    if unknown:
        raise CatalogError(
            f"catalog model {model_id!r} sets {group} {sorted(unknown)} that no hyperparameter "
            "declares (shared.contract.Hyperparameters)"
        )
    out = {}
    for key, d in numeric.items():
        given = raw.get(key, {})
        b = Bound(
            given.get("default", d.default),
            given.get("min", d.knob.minimum),
            given.get("max", d.knob.maximum),
        )
        if not b.min <= b.default <= b.max:
            raise CatalogError(f"catalog model {model_id!r}: {group}.{key} {b} is not in bounds")
        out[key] = b
    return out


class CatalogError(ValueError):
    """The catalog data offers something we cannot train or export."""


def _throughput(model_id: str, raw: dict[str, Any]) -> Throughput:
    t = Throughput(
        tokens_per_s=int(raw["tokens_per_s"]),
        basis=raw["basis"],
        gpu_type=raw["gpu_type"],
        mfu=float(raw["mfu"]),
        context=int(raw["context"]),
        date=raw["date"],
    )
    if t.basis not in THROUGHPUT_BASES or t.tokens_per_s <= 0 or not 0 < t.mfu <= 1:
        raise CatalogError(f"catalog model {model_id!r} has no valid throughput: {raw}")
    return t


def parse(raw: dict[str, Any]) -> Catalog:
    from shared.contract import ARCHITECTURES

    models = []
    for m in raw["models"]:
        if m["family"] not in ARCHITECTURES or m["architecture"]["model_type"] != m["family"]:
            raise CatalogError(
                f"catalog model {m['id']!r} is of architecture {m['family']!r} (config "
                f"{m['architecture']['model_type']!r}), which the trainer "
                f"and the GGUF exporter do not support (only {', '.join(ARCHITECTURES)})"
            )
        targets = m["lora"]["target_modules"]
        models.append(
            ModelSpec(
                id=m["id"],
                display_name=m["display_name"],
                family=m["family"],
                parameters=int(m["parameters"]),
                context_length=int(m["context_length"]),
                price_per_million_tokens_cents=int(m["price_per_million_tokens_cents"]),
                gpu_type=m["gpu_type"],
                machine_type=m["machine_type"],
                max_dataset_tokens=int(m["max_dataset_tokens"]),
                throughput=_throughput(m["id"], m["throughput"]),
                hyperparameters=_bounds(m["id"], "hyperparameters", m["hyperparameters"]),
                lora=_bounds(m["id"], "lora", m["lora"]),
                lora_target_modules_default=targets["default"],
                lora_target_modules_allowed=tuple(targets["allowed"]),
                source=m["source"],
                license=m["license"],
                architecture=dict(m["architecture"]),
            )
        )
    return Catalog(version=raw["catalog_version"], currency=raw["currency"], models=tuple(models))


@lru_cache(maxsize=4)
def _load(path: str) -> Catalog:
    return parse(json.loads(Path(path).read_text()))


def catalog() -> Catalog:
    """The catalog in use: shared/data/models.json, or YACHAY_CATALOG_PATH where set (tests add a
    tiny model that way)."""
    from shared.config import settings

    return _load(settings().catalog_path or str(CATALOG_PATH))


def model_view(spec: ModelSpec, available: bool, currency: str) -> dict[str, Any]:
    """The public JSON shape of one catalog model."""

    def bounds(b: dict[str, Bound]) -> dict[str, dict[str, Any]]:
        return {k: {"default": v.default, "min": v.min, "max": v.max} for k, v in b.items()}

    lora = bounds(spec.lora)
    lora["target_modules"] = {
        "default": spec.lora_target_modules_default,
        "allowed": list(spec.lora_target_modules_allowed),
    }
    return {
        "object": "model",
        "id": spec.id,
        "display_name": spec.display_name,
        "family": spec.family,
        "parameters": spec.parameters,
        "context_length": spec.context_length,
        "pricing": {
            "unit": "1M_training_tokens",
            "price_cents": spec.price_per_million_tokens_cents,
            "currency": currency,
        },
        "gpu_type": spec.gpu_type,
        "max_dataset_tokens": spec.max_dataset_tokens,
        "hyperparameters": bounds(spec.hyperparameters),
        "lora": lora,
        "license": spec.license,
        "available": available,
    }
