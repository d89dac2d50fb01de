"""The adapter in other formats: GGUF for llama.cpp and Ollama, and merged weights.

GGUF (the LoRA adapter format llama.cpp loads with `--lora` and Ollama with `ADAPTER`), written
with the `gguf` package after the layout llama.cpp's own convert_lora_to_gguf.py produces:
- metadata `general.architecture` (the base's GGUF architecture), `general.type = adapter`,
  `adapter.type = lora`, `adapter.lora.alpha`;
- for each adapted weight, two tensors named after the base's GGUF tensor: `<name>.lora_a` is
  PEFT's lora_A [r, in] and `<name>.lora_b` is lora_B [out, r];
- the base architecture's own rewrites of a weight apply to the adapter's output side: llama's
  converter permutes the rows of q_proj and k_proj (rotary halves interleaved), so lora_B of those
  two is permuted the same way (lora_A, on the input side, is not).
A test loads the result in llama.cpp itself (through llama-cpp-python) against the real GGUF
base, which is the only proof that the names and the permutation are right.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from shared.contract import MERGED_DTYPE

# Hugging Face model_type -> (GGUF architecture, whether q/k rows are permuted as for llama)
GGUF_ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "gemma2": ("gemma2", False),
}
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")


class ExportError(Exception):
    """The adapter cannot be written in this format (an architecture we do not map)."""


def permute_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """The row order llama.cpp's converter gives q_proj / k_proj of llama models: within each
    head, the two rotary halves interleaved."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_gguf_adapter(
    state: dict[str, torch.Tensor], model_config: dict[str, Any], alpha: float, path: Path
) -> Path:
    """Writes the PEFT state dict `state` (get_peft_model_state_dict) as a GGUF LoRA adapter."""
    import gguf

    model_type = model_config.get("model_type", "")
    if model_type not in GGUF_ARCHITECTURES:
        raise ExportError(f"no GGUF mapping for model type {model_type!r}")
    arch_name, permuted = GGUF_ARCHITECTURES[model_type]
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch_name)
    n_layers = int(model_config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(arch, n_layers)
    n_head = int(model_config["num_attention_heads"])
    n_kv = int(model_config.get("num_key_value_heads") or n_head)

    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for key in sorted(state):
        m = _LORA_KEY.match(key)
        if m is None:
            raise ExportError(f"unexpected adapter tensor {key}")
        module = m["module"]
        base = names.get_name(module)
        if base is None:
            raise ExportError(f"no GGUF tensor for {module}")
        tensor = state[key].detach().to(torch.float32).cpu()
        if m["side"] == "B" and permuted:
            if module.endswith("self_attn.q_proj"):
                tensor = permute_rows(tensor, n_head)
            elif module.endswith("self_attn.k_proj"):
                tensor = permute_rows(tensor, n_kv)
        suffix = "lora_a" if m["side"] == "A" else "lora_b"
        writer.add_tensor(f"{base}.weight.{suffix}", tensor.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_merged(peft_model: Any, model_dir: Path, out: Path) -> Path:
    """The base with the adapter merged in, written in MERGED_DTYPE (bf16, what it is priced
    at), with its config and tokenizer: a folder `transformers` loads with no peft. Merging
    changes the model in place, so this runs after everything else is written. When the run
    computed in another dtype than the base is stored in (a bf16 run over an fp32 base), the
    adapter is merged into the base as stored, not into the rounded copy the run computed with,
    and only the sum is rounded."""
    import shutil

    config = json.loads((model_dir / "config.json").read_text())
    dtype_name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(dtype_name))
    if peft_model.get_base_model().dtype != dtype:
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
        from transformers import AutoModelForCausalLM

        state = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(peft_model).items()}
        lora = peft_model.peft_config["default"]
        peft_model.to("cpu")  # the training copy leaves the GPU before the base is loaded again
        peft_model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), lora
        )
        set_peft_model_state_dict(peft_model, state)
    merged = peft_model.merge_and_unload()
    merged.to(getattr(torch, MERGED_DTYPE))
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    for p in model_dir.iterdir():  # the tokenizer and chat template, as the base ships them
        if (
            p.is_file()
            and (p.name.startswith("tokenizer") or p.name.endswith(".jinja"))
            or p.name in ("special_tokens_map.json", "generation_config.json")
        ):
            shutil.copyfile(p, out / p.name)
    return out
