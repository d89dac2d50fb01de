"""Fewer, larger GEMMs for the LoRA branches.

peft computes a LoRA layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`, one branch per
layer. On a CPU the rank-r products are small, badly shaped GEMMs, and the profile this came
from (SmolLM2-135M on two cores, `bench/trainer_throughput.py`) had them at about a third of all
matmul time. Two rewrites, each exactly the same sum:

- the update is added into the base output by the GEMM itself: `base.addmm_(h, B^T, alpha=s)`
  accumulates s * h @ B^T into it in one pass, where peft writes h @ B^T, then a scaled copy,
  then the sum; the layer is one autograd function (`_LoraLinear`) whose backward is just the
  products the sum needs, so the in-place add costs no copy of the gradient either;
- siblings that read the very same input (q/k/v of an attention, gate/up of an MLP) compute
  their lora_A products as one GEMM against their stacked A matrices, each taking its slice
  (their dropout mask is already shared, dropout.py, so their dropped inputs are the same
  tensor).

Only plain LoRA with one adapter over a plain `nn.Linear` is rewritten (no DoRA or other variant,
not merged, adapters enabled); any other layer keeps peft's own forward. Over a bf16 base, peft
keeps the LoRA weights in fp32 (the optimizer's master copy); the products here run in the
base's dtype, the weights cast to it as autocast would, so every GEMM is a bf16 GEMM on the GPU.
`clear(groups)` after each backward drops the cached products.
"""

from __future__ import annotations

import types
from typing import Any

import torch

SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class Group:
    """LoRA layers that read the same input: their lora_A products, computed once per input."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members
        self.slices: dict[int, slice] = {}  # id(member) -> its columns of the stacked product
        start = 0
        for m in members:
            r = m.lora_A["default"].weight.shape[0]
            self.slices[id(m)] = slice(start, start + r)
            start += r
        self.x: torch.Tensor | None = None
        self.h: torch.Tensor | None = None

    def product(self, x: torch.Tensor, member: Any) -> torch.Tensor:
        """`member`'s lora_A(dropout(x)), cut from the whole group's one GEMM."""
        if self.x is not x:
            # In the base's compute dtype: the fp32 adapter weights are cast, as autocast would.
            stacked = torch.cat([m.lora_A["default"].weight for m in self.members]).to(x.dtype)
            dropped = self.members[0].lora_dropout["default"](x)
            self.h = dropped @ stacked.t()
            self.x = x
        assert self.h is not None
        return self.h[..., self.slices[id(member)]]


class _LoraLinear(torch.autograd.Function):
    """`linear(x, W, bias) + s * h @ B^T` for a frozen base, with a backward of its own.

    Adding the update in place into the base output under autograd (`out.addmm_`) would make
    autograd record the in-place change of a view, and its backward (CopySlices) copies the whole
    output gradient twice per layer: on SmolLM2 those copies were about a tenth of the step. Here
    the backward is the three products the sum needs, and nothing is copied. It keeps only what
    they read: W (a parameter), B and h (rank-wide); x only if W itself is trained.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        out = torch.nn.functional.linear(x, weight, bias)
        out.view(-1, out.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), b.t(), alpha=scaling)
        ctx.scaling = scaling
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x if ctx.needs_input_grad[2] else None, h, weight, b)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, h, weight, b = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])
        h2 = h.reshape(-1, h.shape[-1])
        gx = gh = gw = gbias = gb = None
        if ctx.needs_input_grad[0]:
            gx = (g @ weight).view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            gh = (g @ b).mul_(s).view(h.shape)
        if ctx.needs_input_grad[2]:
            gw = g.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[3]:
            gbias = g.sum(0)
        if ctx.needs_input_grad[4]:
            gb = (g.t() @ h2).mul_(s)
        return gx, gh, gw, gbias, gb, None


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return self._peft_forward(x, *args, **kwargs)  # type: ignore[no-any-return]
    group = self._lora_group
    if group is not None:
        h = group.product(x, self)
    else:
        a = self.lora_A["default"].weight.to(x.dtype)
        h = torch.nn.functional.linear(self.lora_dropout["default"](x), a)  # [..., r]
    base = self.base_layer
    b = self.lora_B["default"].weight
    if args or kwargs or type(base) is not torch.nn.Linear:
        result: torch.Tensor = base(x, *args, **kwargs)
        update: torch.Tensor = (h.to(result.dtype) @ b.to(result.dtype).t()) * self.scaling[
            "default"
        ]
        return result + update
    out: torch.Tensor = _LoraLinear.apply(  # type: ignore[no-untyped-call]
        x, h, base.weight, base.bias, b.to(x.dtype), self.scaling["default"]
    )
    return out


def _plain(module: Any) -> bool:
    from peft.tuners.lora import layer

    return (
        type(module) is layer.Linear
        and list(module.lora_A) == ["default"]
        and not module.lora_variant
    )


def fuse_lora(peft_model: Any) -> list[Group]:
    """Gives each plain LoRA Linear of `peft_model` the rewritten forward, grouping siblings;
    returns the groups (pass them to `clear` after each backward)."""
    groups = []
    for parent in peft_model.modules():
        for names in SIBLINGS:
            members: list[Any] = [getattr(parent, n, None) for n in names]
            if all(m is not None and _plain(m) for m in members):
                p = {float(getattr(m.lora_dropout["default"], "p", 0.0)) for m in members}
                if len(p) == 1:  # one dropout rate: one shared mask (dropout.py)
                    group = Group(members)
                    groups.append(group)
                    for m in members:
                        m._lora_group = group
    for module in peft_model.modules():
        if not _plain(module):
            continue
        if not hasattr(module, "_lora_group"):
            module._lora_group = None
        module._peft_forward = module.forward
        module.forward = types.MethodType(_forward, module)
    return groups


def clear(groups: list[Group]) -> None:
    """Drops the cached inputs and products so they do not outlive the step."""
    for g in groups:
        g.x = None
        g.h = None
