"""LoRA dropout with one mask per input tensor, shared by the LoRA branches that read it.

peft gives every LoRA branch its own dropout module, so q, k and v (which read the same hidden
states) each draw a fresh random mask, as do gate and up. On a CPU, drawing those masks costs
more than the LoRA matmuls themselves. Here the branches reading the very same tensor share one
mask: each branch still sees its input dropped at rate p (the same marginal as before); only the
masks of sibling branches are now equal, which is exactly what peft does for models whose q, k, v
projection is one fused layer (one LoRA branch, one dropout). The rate and scaling are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch


class _Cache:
    """The last input seen and its dropped-out copy. Holding the input itself (not its id) means
    a freed tensor's recycled address can never be mistaken for it."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.dropped: torch.Tensor | None = None


LEVELS = 1 << 16  # the mask's resolution: each element draws 16 random bits


def keep_mask(like: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A keep-mask shaped like `like`, each element dropped with probability round(p * 2^16) /
    2^16 (within 1/131072 of p), and the scale 1 / (1 - that rate) that keeps the expectation
    exact. Drawn as 16-bit integers cut from 64-bit draws: a quarter of the generator calls of
    one float per element, which on a CPU made the masks cost about half as much."""
    cut = round(p * LEVELS)
    n = like.numel()
    bits = torch.randint(
        -(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=like.device
    )
    draws = bits.view(torch.int16)[:n].view(like.shape)
    return draws >= cut - LEVELS // 2, LEVELS / (LEVELS - cut)


class _Drop(torch.autograd.Function):
    """x where kept, else 0, times the scale; the backward is the same of the gradient.

    Written out because `x * keep` with a boolean mask converts the mask to x's dtype, once in
    the forward and again in the backward (MLP-wide tensors on a CPU: a pass over memory each
    time), and keeps that converted copy; here the one-byte mask is all that is kept.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        # The scale multiplies the kept values, never a mask of x's dtype: in bf16 the scale
        # itself would round (1/0.95 to 1.0547) and bias every update.
        return torch.where(keep, x, 0).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None, None


def drop(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """`x * keep * scale`, differentiable in x."""
    out: torch.Tensor = _Drop.apply(x, keep, scale)  # type: ignore[no-untyped-call]
    return out


class SharedMaskDropout(torch.nn.Module):
    def __init__(self, p: float, cache: _Cache) -> None:
        super().__init__()
        self.p = p
        self.cache = cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.cache.x is not x:
            keep, scale = keep_mask(x, self.p)
            self.cache.x = x
            self.cache.dropped = drop(x, keep, scale)
        assert self.cache.dropped is not None
        return self.cache.dropped


def share_lora_dropout(peft_model: Any, adapter: str = "default") -> _Cache | None:
    """Replaces each LoRA branch's dropout with a SharedMaskDropout of the same rate, all backed
    by one cache; returns the cache (call `clear(cache)` after each step), or None when the
    adapter has no dropout."""
    cache = _Cache()
    replaced = 0
    for module in peft_model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if dropouts is None or adapter not in dropouts:
            continue
        old = dropouts[adapter]
        if isinstance(old, torch.nn.Dropout) and old.p > 0:
            dropouts[adapter] = SharedMaskDropout(old.p, cache)
            replaced += 1
    return cache if replaced else None


def clear(cache: _Cache | None) -> None:
    """Drops the cached input and mask so they do not outlive the step."""
    if cache is not None:
        cache.x = None
        cache.dropped = None
