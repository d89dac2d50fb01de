"""What trainer tests share: a config for a tiny run, the trainer as Batch runs it, and its
JSON event lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from shared.contract import Hyperparameters, TrainerConfig

ROOT = Path(__file__).resolve().parents[2]


def make_config(model: Path, data: Path, out: Path, **hp: Any) -> TrainerConfig:
    defaults = {
        "epochs": 2,
        "batch_size": 8,
        "max_seq_length": 512,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.1,
    }
    return TrainerConfig(
        job_id="job-test",
        model_id="tiny-llama",
        model_uri=str(model),
        dataset_uri=str(data),
        output_uri=str(out / "output"),
        checkpoint_uri=str(out / "checkpoints"),
        hyperparameters=Hyperparameters(**{**defaults, **hp}),
        base_model_name="tiny-llama",
        checkpoint_every_steps=1000,
        progress_interval_s=0.0,
    )


def trainer_process(
    cfg: TrainerConfig, extra_env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """The trainer as Batch runs it: its own process, configured only by the contract env
    (plus `extra_env`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YACHAY_")}
    env.update(cfg.to_env())
    env.update(extra_env or {})
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'trainer_image'}"
    return subprocess.Popen(
        [sys.executable, "-m", "yachay_trainer"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def stop_at_step(proc: subprocess.Popen[str], step: int) -> None:
    """SIGTERM once the trainer reports `step`, as Batch does on Spot preemption."""
    import signal

    assert proc.stdout is not None
    for line in proc.stdout:
        if '"event": "progress"' in line and json.loads(line)["step"] == step:
            proc.send_signal(signal.SIGTERM)
            return
