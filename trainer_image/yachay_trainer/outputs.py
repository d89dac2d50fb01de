"""What a finished run leaves for the user: the PEFT adapter and its companions.

adapter_config.json + adapter_model.safetensors (what PeftModel.from_pretrained and vLLM's LoRA
loader read), adapter-lora.gguf (the same adapter for llama.cpp and Ollama), metrics.jsonl (step,
loss, eval_loss where evaluated, lr, tokens), loss.png (both curves), README.md (a short model
card), merged/ when asked for, and manifest.json with the size and sha256 of every other file,
written last. The epoch-end adapters (checkpoints/) were uploaded while training and are listed
in the manifest's "checkpoints", not in its "files".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.contract import (
    GGUF_ADAPTER,
    MERGED_DIR,
    OUTPUT_MERGED,
    TrainerConfig,
    TrainerResult,
    write_manifest,
)
from yachay_trainer.export import write_gguf_adapter, write_merged


def write_outputs(
    out: Path,
    model: Any,
    model_dir: Path,
    cfg: TrainerConfig,
    metrics: list[dict[str, Any]],
    result: TrainerResult,
) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    base_config = json.loads((model_dir / "config.json").read_text())
    write_gguf_adapter(
        get_peft_model_state_dict(model),
        base_config,
        cfg.hyperparameters.lora_alpha,
        out / GGUF_ADAPTER,
    )
    with open(out / "metrics.jsonl", "w") as f:
        for m in metrics:
            f.write(json.dumps(m) + "\n")
    plot_loss(metrics, out / "loss.png")
    (out / "README.md").write_text(model_card(cfg, result))
    if OUTPUT_MERGED in cfg.outputs:
        write_merged(model, model_dir, out / MERGED_DIR)  # last: merging changes the model
    return write_manifest(
        out,
        job_id=cfg.job_id,
        model_id=cfg.model_id,
        checkpoints=[c.to_doc() for c in result.checkpoints],
    )


def plot_loss(metrics: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(
        [m["step"] for m in metrics], [m["loss"] for m in metrics], linewidth=1.2, label="train"
    )
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    if evals:
        ax.plot(
            [m["step"] for m in evals],
            [m["eval_loss"] for m in evals],
            marker="o",
            linewidth=1.2,
            label="validation",
        )
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def model_card(cfg: TrainerConfig, result: TrainerResult) -> str:
    hp = cfg.hyperparameters.to_dict()
    loss = float("nan") if result.final_loss is None else result.final_loss
    eval_loss = "none" if result.eval_loss is None else f"{result.eval_loss:.4f}"
    rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    return f"""# LoRA adapter for {cfg.base_model_name or cfg.model_id}

Trained by Yachay (job `{cfg.job_id}`).

- Base model: `{cfg.base_model_name or cfg.model_id}` (catalog id `{cfg.model_id}`)
- Training examples: {result.examples}
- Optimizer steps: {result.steps}
- Trained tokens: {result.trained_tokens}
- Final training loss: {loss:.4f}
- Final validation loss: {eval_loss} ({result.eval_tokens} validation tokens, not billed)

| hyperparameter | value |
|---|---|
{rows}

Load it with:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("{cfg.base_model_name or cfg.model_id}")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
```

With llama.cpp, on a GGUF of the same base model:

```
llama-cli -m base-model.gguf --lora {GGUF_ADAPTER}
```

With Ollama, in a Modelfile:

```
FROM base-model.gguf
ADAPTER ./{GGUF_ADAPTER}
```
"""
