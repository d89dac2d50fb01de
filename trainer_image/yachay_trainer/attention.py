"""Attention over packed sequences without any attention across example boundaries.

Several examples are concatenated into one row; `cu_seq_lens` marks where each starts, and each
example attends only to itself, honouring what the model's own attention does: the scale
(Gemma 2's `query_pre_attn_scalar` arrives as `scaling`), grouped-query heads, a sliding window
(`sliding_window`: a query sees the `w` latest keys, itself included, as transformers' mask
does) and logit soft-capping (`softcap`: `tanh(s / c) * c` before the softmax, Gemma 2).

Which kernel computes it (`backend`):
- on CUDA without soft-capping: PyTorch's own variable-length flash attention
  (`torch.nn.attention.varlen.varlen_attn`), one kernel over the whole pack, window included;
- on CUDA with soft-capping (flash attention has none): FlexAttention, compiled, with a
  document + causal (+ window) block mask and the cap as its score modification;
- elsewhere (the CPU, or attention dropout, which neither fused path takes): per example, with
  PyTorch's fused scaled-dot-product attention, or with the eager formula where soft-capping
  needs it. This costs sum(L_i^2) rather than (sum L_i)^2 and materialises no mask except a
  window's band over an example longer than the window.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

NAME = "yachay_varlen"


def backend(device: torch.device, softcap: float | None, dropout: float) -> str:
    """The kernel that serves this attention: `flash_varlen`, `flex` or `per_example`."""
    if device.type != "cuda" or dropout > 0.0:
        return "per_example"
    return "flex" if softcap else "flash_varlen"


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
    cu: torch.Tensor = kwargs["cu_seq_lens_q"]
    softcap: float | None = kwargs.get("softcap")
    window: int | None = kwargs.get("sliding_window")
    p = dropout if module.training else 0.0
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    kind = backend(query.device, softcap, p)
    if kind == "flash_varlen":
        return flash_varlen(query, key, value, cu, scale, window), None
    if kind == "flex":
        return flex(query, key, value, cu, scale, window, softcap), None
    return per_example(query, key, value, cu, scale, window, softcap, p), None


def per_example(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu: torch.Tensor,
    scale: float,
    window: int | None,
    softcap: float | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """The reference path: each example on its own (any device)."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: share each key/value head across its query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    bounds: list[int] = cu.tolist()
    # torch.split, not slicing: the backward of a split is one concatenation of the pieces'
    # gradients, where each slice's backward would fill a zero tensor of the whole pack.
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = [
        _one(q, k, v, scale, window, softcap, dropout)
        for q, k, v in zip(
            torch.split(query, lengths, dim=2),
            torch.split(key, lengths, dim=2),
            torch.split(value, lengths, dim=2),
            strict=True,
        )
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous()


def _band(n: int, window: int | None, device: torch.device) -> torch.Tensor | None:
    """The causal mask of one example (True: attend), or None when plain causal serves."""
    if window is None or n <= window:
        return None
    i = torch.arange(n, device=device)
    return (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)


def _one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    window: int | None,
    softcap: float | None,
    dropout: float,
) -> torch.Tensor:
    n = q.shape[2]
    band = _band(n, window, q.device)
    if softcap is None:
        if band is None:
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, dropout_p=dropout
            )
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=band, scale=scale, dropout_p=dropout
        )
    # Soft-capping has no fused kernel on the CPU: the formula of transformers' eager attention.
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    if band is None:
        i = torch.arange(n, device=q.device)
        band = i[None, :] <= i[:, None]
    scores = scores.masked_fill(~band, float("-inf"))
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0.0)
    return torch.matmul(weights, v)


def flash_varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu: torch.Tensor,
    scale: float,
    window: int | None,
) -> torch.Tensor:
    """PyTorch's variable-length flash attention over the whole pack (CUDA)."""
    from torch.nn.attention.varlen import varlen_attn

    cu = cu.to(device=query.device, dtype=torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    # flash attention's left window counts the keys before the query: w keys in all is w - 1.
    left = -1 if window is None else window - 1
    out = varlen_attn(
        query[0].transpose(0, 1),  # [T, H, D]
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu,
        cu,
        longest,
        longest,
        scale=scale,
        window_size=(left, 0),
        enable_gqa=key.shape[1] != query.shape[1],
    )
    assert isinstance(out, torch.Tensor)
    return out.unsqueeze(0)  # [1, T, H, D]


def document_mask(cu: torch.Tensor, window: int | None) -> Any:
    """FlexAttention's mask_mod: same example, causal, and within the window if any."""
    n = int(cu[-1])
    lengths = cu[1:] - cu[:-1]
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=cu.device), lengths)
    start = torch.repeat_interleave(cu[:-1].to(torch.long), lengths)
    assert doc.numel() == n

    def mask(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        keep = (doc[q_idx] == doc[kv_idx]) & (kv_idx <= q_idx) & (kv_idx >= start[q_idx])
        if window is not None:
            keep = keep & (kv_idx > q_idx - window)
        return keep

    return mask


@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def flex(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu: torch.Tensor,
    scale: float,
    window: int | None,
    softcap: float | None,
    compiled: bool = True,
) -> torch.Tensor:
    """FlexAttention over the whole pack with a document mask and the soft-cap as its score
    modification. `compiled=False` runs FlexAttention's eager reference (tests on the CPU)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    cu = cu.to(device=query.device, dtype=torch.long)
    n = query.shape[2]
    block = create_block_mask(document_mask(cu, window), None, None, n, n, device=str(query.device))

    def cap(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return torch.tanh(score / softcap) * softcap if softcap else score

    attend = _compiled_flex() if compiled else flex_attention
    out = attend(
        query,
        key,
        value,
        score_mod=cap,
        block_mask=block,
        scale=scale,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    result: torch.Tensor = out.transpose(1, 2).contiguous()
    return result


def register() -> str:
    """Registers the attention with transformers; returns the name to pass as attn_implementation.

    A name transformers has no mask function for also tells it to build no attention mask.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)
    return NAME
