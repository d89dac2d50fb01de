"""What a LoRA fine-tune asks of a GPU: FLOPs per trained token and memory at a sequence length.

Shared by the catalog (each model's estimated throughput, and so every ETA), the trainer (it
turns activation checkpointing on when a job would not fit its GPU without it) and the GPU
benchmark (MFU, and whether each model fits its catalog GPU). Imports nothing of ours.

FLOPs. Training a dense decoder costs about 6N + 12·L·H·Q·T FLOPs per token (N parameters, L
layers, H query heads of size Q, T the attention context; PaLM, Chowdhery et al. 2022,
appendix B, after Kaplan et al. 2020): 2N forward, 4N backward, half of which is the weights'
gradients. Over a frozen base (LoRA) those weight gradients are not computed, which leaves
4N + 12·L·H·Q·T (the rank-r adapters add a fraction of a percent). MFU is model FLOPs per
second over the GPU's peak dense bf16 FLOPs.

Memory. The weights in the compute dtype; the adapters in fp32 with their gradient and AdamW's
two moments (16 bytes a parameter); what autograd keeps for the backward of each layer for each
token of the pack being trained (one pack at a time: a step's packs accumulate gradients);
and the loss's buffers (the chunked loss keeps no whole logits). What one decoder layer keeps
per token, counted for a Llama-shaped layer with LoRA on all seven projections, in units of the
compute dtype's size: each norm's input (2H; Gemma 2 has four norms, 4H), the four inputs the
LoRA A products keep (q/k/v's and gate/up's normed inputs, o_proj's and down_proj's: 2H + Q +
I; a frozen base layer keeps no input of its own, since it computes no weight gradient), q/k/v
after RoPE (Q + 2·KV), the attention kernel's output (Q), and gate, up and the activation (3I).
LoRA dropout replaces those four inputs with their dropped copies and adds a one-byte mask each.
With activation checkpointing a layer keeps only its input (H), and one layer's full set is
alive while it is recomputed.
`tests/trainer/test_sizing.py` checks the activation figure against peaks measured on small
configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PEAK_BF16_TFLOPS = {  # dense, no sparsity; the vendors' data sheets (SXM parts)
    "nvidia-h100-80gb": 989.0,
    "nvidia-h200-141gb": 989.0,
    "nvidia-a100-80gb": 312.0,
    "nvidia-l4": 121.0,
}
GPU_MEMORY_BYTES = {
    "nvidia-h100-80gb": 80 * 2**30,
    "nvidia-h200-141gb": 141 * 2**30,
    "nvidia-a100-80gb": 80 * 2**30,
    "nvidia-l4": 24 * 2**30,
}
USABLE_FRACTION = 0.9  # what the CUDA context, the allocator's fragmentation and kernels leave
LOSS_CHUNK_BYTES = 3 * 2**27  # the chunked loss: three 128 MB fp32 buffers (loss.py)
SIBLING_INPUTS = 3  # LoRA inputs of a layer: q/k/v share one, o_proj, gate/up share one; down_proj


@dataclass(frozen=True)
class Shape:
    """The numbers of a decoder that sizing needs (from a Hugging Face config)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    norms: int = 2  # RMSNorms per layer whose input the backward keeps

    @staticmethod
    def of(config: dict[str, Any]) -> Shape:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return Shape(
            layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
            norms=4 if config.get("model_type") == "gemma2" else 2,
        )

    def lora_parameters(self, rank: int) -> int:
        """Adapter parameters for LoRA of `rank` on all seven projections of every layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        pairs = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
        return self.layers * rank * sum(a + b for a, b in pairs)


def flops_per_token(parameters: int, shape: Shape, context: float) -> float:
    """Model FLOPs of one trained token of LoRA over a frozen base: 4N + 12·L·H·Q·T."""
    return 4.0 * parameters + 12.0 * shape.layers * shape.heads * shape.head_dim * context


def estimated_tokens_per_s(
    parameters: int, shape: Shape, gpu: str, mfu: float, context: float
) -> float:
    """Trained tokens a second on `gpu` at `mfu` of its peak bf16 FLOPs."""
    return mfu * PEAK_BF16_TFLOPS[gpu] * 1e12 / flops_per_token(parameters, shape, context)


def activation_bytes_per_token(
    shape: Shape, dtype_bytes: int, dropout: bool, checkpointing: bool = False
) -> tuple[float, float]:
    """What the backward keeps per token of a pack: (kept over all layers, alive only while one
    layer is recomputed under checkpointing); see the module text."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    q = shape.heads * shape.head_dim
    lora_inputs = 2 * h + q + i
    per_layer = (shape.norms * h + lora_inputs + (q + 2 * kv) + q + 3 * i) * dtype_bytes
    if dropout:
        per_layer += lora_inputs  # the masks, one byte an element
    once = (h + 2 * shape.head_dim) * dtype_bytes  # the final norm's input, RoPE's cos and sin
    if checkpointing:  # the layer inputs, plus one layer's whole set during its recompute
        return float(shape.layers * h * dtype_bytes + once), float(per_layer)
    return float(shape.layers * per_layer + once), 0.0


def peak_bytes(
    parameters: int,
    shape: Shape,
    tokens: int,
    rank: int,
    dtype_bytes: int = 2,
    dropout: bool = True,
    checkpointing: bool = False,
) -> int:
    """The estimated peak memory of a training step whose largest pack holds `tokens`."""
    kept, recompute = activation_bytes_per_token(shape, dtype_bytes, dropout, checkpointing)
    weights = parameters * dtype_bytes
    adapters = shape.lora_parameters(rank) * 16
    activations = tokens * (kept + recompute)
    # Around the layers: the embeddings' output, the targets' hidden states and their gradient,
    # and a layer's worth of gradient buffers in flight during the backward.
    edges = tokens * (3 * shape.hidden + 2 * max(shape.hidden, shape.intermediate)) * dtype_bytes
    return int(weights + adapters + activations + edges + LOSS_CHUNK_BYTES)


def needs_checkpointing(
    parameters: int, shape: Shape, tokens: int, rank: int, gpu_bytes: int, dropout: bool = True
) -> bool:
    """Whether a bf16 step of `tokens` would not fit `gpu_bytes` without activation
    checkpointing."""
    plain = peak_bytes(parameters, shape, tokens, rank, 2, dropout, checkpointing=False)
    return plain > USABLE_FRACTION * gpu_bytes
