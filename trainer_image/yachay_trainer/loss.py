"""Cross-entropy over the vocabulary projection, in chunks of targets, never the whole logits.

A step of 4,096 targets over Llama 3.1's 128,256-token vocabulary has 525M logits: 2.1 GB in
fp32, and the plain `F.cross_entropy(lm_head(h).float(), t)` keeps them, their softmax and their
gradient alive at once (5.8 GB measured on the CPU). Here the targets are projected a chunk at a
time (`CHUNK_LOGITS` logits, 128 MB in fp32), and since the loss is the last thing computed,
each chunk's gradient with respect to the hidden states is computed right away in the forward
(as Liger's fused linear cross-entropy does) and only that, [targets x hidden], is kept for the
backward. Nothing is computed twice, so it costs no more time than the plain form.

`softcap` applies a model's final-logit soft-capping (Gemma 2: `tanh(z / c) * c`) exactly as its
`ForCausalLM` does before the loss; its derivative is `1 - (capped / c)^2`.
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_LOGITS = 1 << 25  # logits per chunk: 128 MB in fp32 whatever the vocabulary


def chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_LOGITS // vocab)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        softcap: float | None,
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = chunk_rows(weight.shape[0])
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start : start + rows]
            t = targets[start : start + rows]
            z = (h @ weight.t()).float()  # [rows, vocab]
            if softcap:
                z.div_(softcap).tanh_().mul_(softcap)
            # One fused pass for the log-probabilities (logsumexp, then a subtraction, then an
            # exponential were three passes over the chunk, the costliest part of the loss).
            logp = torch.log_softmax(z, dim=-1)
            total -= logp.gather(1, t[:, None]).sum()
            if grad_h is None and grad_w is None:
                continue
            g = logp.exp_()  # the softmax (of the capped logits, with a softcap)
            g[torch.arange(len(t), device=t.device), t] -= 1.0
            if softcap:
                g.mul_(z.div_(softcap).square_().neg_().add_(1.0))  # through the tanh
            del z
            g16 = g.to(hidden.dtype)
            if grad_h is not None:
                torch.matmul(g16, weight, out=grad_h[start : start + rows])
            if grad_w is not None:
                grad_w.addmm_(g16.t().float(), h.float())
        ctx.save_for_backward(
            grad_h if grad_h is not None else torch.empty(0),
            grad_w if grad_w is not None else torch.empty(0),
        )
        ctx.has = (grad_h is not None, grad_w is not None, weight.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        has_h, has_w, w_dtype = ctx.has
        return (
            grad_h * grad_out.to(grad_h.dtype) if has_h else None,
            (grad_w * grad_out).to(w_dtype) if has_w else None,
            None,
            None,
        )


def cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float | None = None,
) -> torch.Tensor:
    """sum_i CE(softcap(hidden[i] @ weight^T), targets[i]) in fp32, with its gradients, never
    holding more than one chunk of logits. hidden: [N, H]; weight: [V, H]; targets: [N]."""
    out: torch.Tensor = _ChunkedCrossEntropy.apply(  # type: ignore[no-untyped-call]
        hidden, weight, targets, softcap
    )
    return out
