"""Attention over packed sequences without any attention across example boundaries.

Several examples are concatenated into one row; `cu_seq_lens` marks where each starts. Each
example then attends only to itself, computed segment by segment with PyTorch's fused
scaled-dot-product attention (causal). Unlike a block-diagonal mask over the whole pack, this
costs sum(L_i^2) rather than (sum L_i)^2 and materialises no mask. On CUDA with flash-attn
installed, `flash_attention_2` does the same with `cu_seq_lens` natively.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "yachay_varlen"


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query/key/value: [1, heads, tokens, head_dim]; returns [1, tokens, heads, head_dim]."""
    bounds: list[int] = kwargs["cu_seq_lens_q"].tolist()
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention: share each key/value head across its query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    # torch.split, not slicing: the backward of a split is one concatenation of the pieces'
    # gradients, where each slice's backward would fill a zero tensor of the whole pack.
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = [
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, dropout_p=p)
        for q, k, v in zip(
            torch.split(query, lengths, dim=2),
            torch.split(key, lengths, dim=2),
            torch.split(value, lengths, dim=2),
            strict=True,
        )
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Registers the attention with transformers; returns the name to pass as attn_implementation.

    A name transformers has no mask function for also tells it to build no attention mask.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)
    return NAME
