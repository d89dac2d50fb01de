"""The memory estimate (shared.sizing) against what autograd really keeps, on small configs of
every family, with and without dropout and activation checkpointing; and checkpointing changes
nothing but memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from shared import sizing
from tests.support.tiny import FAMILIES, build_tiny_model, chat_records, write_jsonl
from tests.support.trainer import make_config
from yachay_trainer.data import IGNORE, Pack
from yachay_trainer.train import Run, pack_loss


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    family = request.param
    # Gemma 2 without attention soft-capping here: on the CPU a capped attention is the eager
    # formula, which keeps each example's scores (no GPU kernel does); the rest is its own.
    extra: dict[str, Any] = {"attn_logit_softcapping": None} if family == "gemma2" else {}
    return build_tiny_model(
        tmp_path_factory.mktemp(f"size-{family}"), family=family, layers=3, **extra
    )


def _pack(tokens: int, examples: int = 4) -> Pack:
    torch.manual_seed(0)
    length = tokens // examples
    targets = torch.randint(10, 8000, (tokens,))
    targets[torch.arange(tokens) % 16 != 0] = IGNORE
    return Pack(
        input_ids=torch.randint(10, 8000, (1, tokens)),
        position_ids=torch.arange(length).repeat(examples)[None],
        targets=targets,
        cu_seq_lens=torch.arange(0, tokens + 1, length, dtype=torch.int32),
        n_tokens=tokens,
        n_trained=int((targets != IGNORE).sum()),
    )


def _run(folder: Path, tmp: Path, dropout: float, checkpointing: bool) -> Run:
    data = write_jsonl(chat_records(8, seed=3), tmp / "d.jsonl")
    cfg = make_config(folder, data, tmp, lora_dropout=dropout)
    return Run(cfg, tmp / "work", activation_checkpointing=checkpointing).setup()


def saved_bytes(run: Run, pack: Pack) -> int:
    """The bytes autograd keeps for the backward of one pack (parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in run.model.parameters()}
    seen: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    run.model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        pack_loss(run.model.get_base_model(), pack, run.device)
    return sum(seen.values())


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_the_activation_estimate_matches_what_autograd_keeps(
    family_model, tmp_path, dropout, checkpointing
) -> None:
    run = _run(family_model, tmp_path, dropout, checkpointing)
    tokens = 2048
    measured = saved_bytes(run, _pack(tokens)) / tokens
    shape = sizing.Shape.of(json.loads((family_model / "config.json").read_text()))
    kept, _ = sizing.activation_bytes_per_token(shape, 4, dropout > 0, checkpointing)
    # Grouped-query families read a little high here: the CPU path repeats k/v per query head
    # (the GPU kernels take them grouped), so measured exceeds the estimate by those copies.
    assert 0.85 < measured / kept < 1.3, (measured, kept)


def test_checkpointing_keeps_the_gradients_exactly(tmp_path) -> None:
    """With dropout on: the recompute must draw the very masks of the first forward."""
    folder = build_tiny_model(tmp_path / "m", layers=2)
    pack = _pack(256)
    grads = []
    for checkpointing in (False, True):
        run = _run(folder, tmp_path / str(checkpointing), 0.1, checkpointing)
        run.model.train()
        torch.manual_seed(5)
        pack_loss(run.model.get_base_model(), pack, run.device).backward()
        grads.append({n: p.grad for n, p in run.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_the_estimate_asks_for_checkpointing_where_a_catalog_model_would_not_fit() -> None:
    llama8b = sizing.Shape(
        layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128, vocab=128256
    )
    gemma9b = sizing.Shape(
        layers=42,
        hidden=3584,
        intermediate=14336,
        heads=16,
        kv_heads=8,
        head_dim=256,
        vocab=256000,
        norms=4,
    )
    a100 = sizing.GPU_MEMORY_BYTES["nvidia-a100-80gb"]
    l4 = sizing.GPU_MEMORY_BYTES["nvidia-l4"]
    assert not sizing.needs_checkpointing(8_030_261_248, llama8b, 2048, 16, a100)
    assert sizing.needs_checkpointing(8_030_261_248, llama8b, 2048, 16, l4)
    assert sizing.needs_checkpointing(9_241_705_984, gemma9b, 8192, 16, a100)
    ckpt = sizing.peak_bytes(9_241_705_984, gemma9b, 8192, 16, checkpointing=True)
    assert ckpt < sizing.USABLE_FRACTION * a100  # ...and with it, it fits
