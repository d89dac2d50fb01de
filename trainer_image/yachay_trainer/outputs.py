"""What a finished run leaves for the user: the PEFT adapter and its companions.

adapter_config.json + adapter_model.safetensors (what PeftModel.from_pretrained and vLLM's LoRA
loader read), metrics.jsonl (step, loss, lr, tokens), loss.png, README.md (a short model card),
and manifest.json with the size and sha256 of every other file, written last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.contract import TrainerConfig, TrainerResult, write_manifest


def write_outputs(
    out: Path, model: Any, cfg: TrainerConfig, metrics: list[dict[str, Any]], result: TrainerResult
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    with open(out / "metrics.jsonl", "w") as f:
        for m in metrics:
            f.write(json.dumps(m) + "\n")
    plot_loss(metrics, out / "loss.png")
    (out / "README.md").write_text(model_card(cfg, result))
    return write_manifest(out, job_id=cfg.job_id, model_id=cfg.model_id)


def plot_loss(metrics: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def model_card(cfg: TrainerConfig, result: TrainerResult) -> str:
    hp = cfg.hyperparameters.to_dict()
    loss = float("nan") if result.final_loss is None else result.final_loss
    rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    return f"""# LoRA adapter for {cfg.base_model_name or cfg.model_id}

Trained by Yachay (job `{cfg.job_id}`).

- Base model: `{cfg.base_model_name or cfg.model_id}` (catalog id `{cfg.model_id}`)
- Training examples: {result.examples}
- Optimizer steps: {result.steps}
- Trained tokens: {result.trained_tokens}
- Final training loss: {loss:.4f}

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
"""
