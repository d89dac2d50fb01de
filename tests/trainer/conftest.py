"""Trainer tests run on a tiny random-weight Llama built from a config in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.contract import Hyperparameters, TrainerConfig
from tests.support.tiny import build_tiny_model, chat_records, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(chat_records(48, seed=3), tmp_path_factory.mktemp("data") / "train.jsonl")


def make_config(model: Path, data: Path, out: Path, **hp: object) -> TrainerConfig:
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


def trainer_process(cfg: TrainerConfig, **popen: object) -> subprocess.Popen[str]:
    """The trainer as Batch runs it: its own process, configured only by the contract env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YACHAY_")}
    env.update(cfg.to_env())
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'trainer_image'}"
    return subprocess.Popen(
        [sys.executable, "-m", "yachay_trainer"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def events(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
