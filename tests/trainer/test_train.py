"""Training on the tiny model: it learns, touches only LoRA weights, resumes faithfully, and
exits with the contract's codes."""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from shared.contract import (
    ADAPTER_FILES,
    EXIT_OK,
    EXIT_RETRYABLE,
    EXIT_USER_ERROR,
    MANIFEST,
    sha256_file,
)
from shared.tokenization import ChatTokenizer
from tests.support.tiny import chat_records, write_jsonl
from tests.support.trainer import events, make_config, stop_at_step, trainer_process
from yachay_trainer.train import Run


def test_lora_weights_change_and_base_weights_do_not(tiny_model, tiny_data, tmp_path) -> None:
    run = Run(make_config(tiny_model, tiny_data, tmp_path, epochs=1), tmp_path).setup()
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    run.train()
    after = dict(run.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    # lora_B starts at zero and must have moved; every base weight must be bit-identical.
    assert all(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    assert all(torch.equal(before[n], after[n]) for n in base)


def test_memorisation_loss_falls_below_threshold(tiny_model, tmp_path) -> None:
    # 4 short examples, 50 epochs, one example per step. A random-weight base learns slowly
    # through LoRA alone: measured here, the loss goes from 9.06 (about ln 8192, the vocabulary)
    # to a last-epoch mean of 3.96; the threshold leaves room for noise, not for a loop that
    # does not learn (one that stalls stays near 9).
    data = write_jsonl(chat_records(4, seed=11, mean_words=10), tmp_path / "mem.jsonl")
    run = Run(
        make_config(
            tiny_model,
            data,
            tmp_path,
            epochs=50,
            batch_size=1,
            learning_rate=3e-3,
            lora_dropout=0.0,
        ),
        tmp_path,
    ).setup()
    result = run.train()
    assert run.metrics[0]["loss"] > 8.5
    assert result.last_epoch_mean_loss is not None and result.last_epoch_mean_loss < 5.0


def test_trained_tokens_equal_the_estimate_count(tiny_model, tiny_data, tmp_path) -> None:
    run = Run(make_config(tiny_model, tiny_data, tmp_path, epochs=3), tmp_path).setup()
    result = run.train()
    records = [json.loads(line) for line in tiny_data.read_text().splitlines()]
    counted = ChatTokenizer.from_dir(tiny_model).count(records, max_seq_length=512)
    assert result.trained_tokens == counted.tokens * 3
    assert result.examples == counted.examples


def test_resumed_run_ends_like_an_uninterrupted_one(tiny_model, tiny_data, tmp_path) -> None:
    straight = make_config(tiny_model, tiny_data, tmp_path / "a", epochs=2, batch_size=4)
    proc = trainer_process(straight)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, err
    expected = next(e for e in events(out) if e["event"] == "result")

    resumed = make_config(tiny_model, tiny_data, tmp_path / "b", epochs=2, batch_size=4)
    proc = trainer_process(resumed)
    stop_at_step(proc, 5)  # SIGTERM mid-run, as Batch does on Spot preemption
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_RETRYABLE, err
    assert any(e["event"] == "checkpoint" for e in events(out))

    proc = trainer_process(resumed)  # Batch's retry of the task
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, err
    evs = events(out)
    first_step = next(e for e in evs if e["event"] == "progress")["step"]
    resumed_at = next(e for e in evs if e["event"] == "resumed")["step"]
    assert first_step == resumed_at + 1  # no finished step trained again
    result = next(e for e in evs if e["event"] == "result")
    assert result["trained_tokens"] == expected["trained_tokens"]
    assert result["steps"] == expected["steps"]
    assert result["final_loss"] == pytest.approx(expected["final_loss"], rel=1e-4)


def test_outputs_are_a_loadable_peft_adapter_with_a_true_manifest(
    tiny_model, tiny_data, tmp_path
) -> None:
    cfg = make_config(tiny_model, tiny_data, tmp_path, epochs=1)
    proc = trainer_process(cfg)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, err
    folder = Path(cfg.output_uri)
    names = {p.name for p in folder.iterdir() if p.is_file()}
    assert set(ADAPTER_FILES) | {"metrics.jsonl", "loss.png", "README.md", MANIFEST} <= names
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {f["name"] for f in manifest["files"]} == names - {MANIFEST}
    for f in manifest["files"]:
        assert f["sha256"] == sha256_file(folder / f["name"])
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 16
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(base, folder)
    generated = model.generate(
        input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=5, do_sample=False
    )
    assert generated.shape[1] == 8


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "line 1: a chat record needs"),
        ('{"messages": []}\nnot json\n', "line 1: 'messages' must be"),
        ('{"prompt": "a", "completion": "b"}\n{"oops": 1}\n', "line 2: expected 'messages'"),
        ("\n\n", "no example"),
    ],
)
def test_bad_data_exits_with_the_user_error_code(tiny_model, tmp_path, content, reason) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    proc = trainer_process(make_config(tiny_model, data, tmp_path))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_USER_ERROR
    failure = next(e for e in events(out) if e["event"] == "failure")
    assert failure["kind"] == "user_error"
    assert reason in failure["message"]


def test_a_stop_that_cannot_finish_gives_up_within_the_grace(
    tiny_model, tiny_data, tmp_path
) -> None:
    """SIGTERM while Storage is gone (here: a server that accepts and never answers): the
    trainer exits retryable after its grace instead of retrying for minutes."""
    import socket
    import time

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen()
    cfg = make_config(tiny_model, tiny_data, tmp_path, epochs=1, batch_size=4)
    cfg = replace(cfg, checkpoint_uri="gs://checkpoints/jobs/stuck")
    host = f"http://127.0.0.1:{hole.getsockname()[1]}"
    proc = trainer_process(cfg, {"STORAGE_EMULATOR_HOST": host, "YACHAY_TRAINER_STOP_GRACE_S": "2"})
    try:
        hole.settimeout(120)
        conn, _ = hole.accept()  # the trainer is up and waiting on Storage
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == EXIT_RETRYABLE, err[-2000:]
        assert any(e["event"] == "stop_grace_exceeded" for e in events(out))
        assert time.monotonic() - started < 30  # 2 s of grace, then out (not minutes)
        conn.close()
    finally:
        proc.kill()
        proc.wait()
        hole.close()
