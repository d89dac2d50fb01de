"""The LoRA update added into the base output in one GEMM.

peft computes a LoRA layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`: the rank-r
product is written out as a full [tokens, out] tensor, then scaled (a second one), then added (a
third). Here the same sum is one `addmm`: the base output plus scaling * (h @ B^T) in a single
pass of the GEMM, whose backward gives the same gradients. The profile this came from
(SmolLM2-135M on two CPU cores, `bench/trainer_throughput.py`): the rank-16 products and their
passes took about a third of all matmul time.

Only plain LoRA with one adapter is rewritten (no DoRA or other variant, not merged, adapters
enabled); any other layer keeps peft's own forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return self._peft_forward(x, *args, **kwargs)  # type: ignore[no-any-return]
    result = self.base_layer(x, *args, **kwargs)
    lora_b = self.lora_B["default"].weight  # [out, r]
    h = self.lora_A["default"](self.lora_dropout["default"](x))  # [..., r]
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        h.reshape(-1, h.shape[-1]),
        lora_b.t(),
        alpha=self.scaling["default"],
    )
    return out.view(result.shape)


def fuse_lora_add(peft_model: Any) -> int:
    """Gives each plain LoRA Linear of `peft_model` the one-GEMM forward; returns how many."""
    from peft.tuners.lora import layer

    n = 0
    for module in peft_model.modules():
        if type(module) is not layer.Linear:
            continue
        if list(module.lora_A) != ["default"] or module.lora_variant:
            continue
        module._peft_forward = module.forward  # type: ignore[assignment]
        module.forward = types.MethodType(_forward, module)  # type: ignore[method-assign]
        n += 1
    return n
