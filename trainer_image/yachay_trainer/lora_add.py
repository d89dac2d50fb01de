"""Fewer, larger GEMMs for the LoRA branches.

peft computes a LoRA layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`, one branch per
layer. On a CPU the rank-r products are small, badly shaped GEMMs, and the profile this came
from (SmolLM2-135M on two cores, `bench/trainer_throughput.py`) had them at about a third of all
matmul time. Two rewrites, each exactly the same sum:

- the update is added into the base output by the GEMM itself: `base.addmm_(h, B^T, alpha=s)`
  accumulates s * h @ B^T into it in one pass, where peft writes h @ B^T, then a scaled copy,
  then the sum;
- siblings that read the very same input (q/k/v of an attention, gate/up of an MLP) compute
  their lora_A products as one GEMM against their stacked A matrices, each taking its slice
  (their dropout mask is already shared, dropout.py, so their dropped inputs are the same
  tensor).

Only plain LoRA with one adapter is rewritten (no DoRA or other variant, not merged, adapters
enabled); any other layer keeps peft's own forward. Over a bf16 base, peft keeps the LoRA weights
in fp32 (the optimizer's master copy); the products here run in the base's dtype, the weights
cast to it as autocast would, so every GEMM is a bf16 GEMM on the GPU. `clear(groups)` after each
backward drops the cached products.
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


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return self._peft_forward(x, *args, **kwargs)  # type: ignore[no-any-return]
    result: torch.Tensor = self.base_layer(x, *args, **kwargs)
    group = self._lora_group
    if group is not None:
        h = group.product(x, self)
    else:
        a = self.lora_A["default"].weight.to(x.dtype)
        h = torch.nn.functional.linear(self.lora_dropout["default"](x), a)  # [..., r]
    # In place: the base output is needed by nothing else (a linear layer's backward keeps its
    # input, not its output), and an out-of-place addmm would first copy it whole.
    b = self.lora_B["default"].weight.to(result.dtype)
    result.view(-1, result.shape[-1]).addmm_(
        h.reshape(-1, h.shape[-1]).to(result.dtype), b.t(), alpha=self.scaling["default"]
    )
    return result


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
