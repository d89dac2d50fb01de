"""On the tiny model: validation on exactly the held-out records, epoch-end checkpoints, starting
from an earlier adapter, merged weights and the GGUF adapter's layout. (That llama.cpp itself
loads our GGUF is proven on SmolLM2 in test_llama_cpp.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from shared.contract import (
    ADAPTER_FILES,
    EXIT_OK,
    EXIT_USER_ERROR,
    GGUF_ADAPTER,
    MANIFEST,
    MERGED_DIR,
    OUTPUT_MERGED,
    checkpoint_folder,
    sha256_file,
)
from shared.tokenization import ChatTokenizer, held_out
from tests.support.tiny import chat_records, write_jsonl
from tests.support.trainer import events, make_config, trainer_process
from yachay_trainer.export import permute_rows
from yachay_trainer.train import Run


def memorisable(tmp_path: Path, copies: int = 6) -> Path:
    """4 short records, each `copies` times: held-out records are copies of trained ones, so a
    run that learns lowers the validation loss too."""
    base = chat_records(4, seed=11, mean_words=10)
    return write_jsonl([r for r in base for _ in range(copies)], tmp_path / "mem.jsonl")


def mem_config(model: Path, data: Path, out: Path, **hp: object):
    return make_config(
        model,
        data,
        out,
        **{"epochs": 4, "batch_size": 4, "learning_rate": 3e-3, "lora_dropout": 0.0, **hp},
    )


def test_validation_uses_exactly_the_held_out_records_and_falls(tiny_model, tmp_path) -> None:
    data = memorisable(tmp_path)
    cfg = replace(mem_config(tiny_model, data, tmp_path), validation_split=0.2, eval_every_steps=2)
    run = Run(cfg, tmp_path).setup()
    result = run.train()

    records = [json.loads(x) for x in data.read_text().splitlines()]
    hold = held_out(len(records), 0.2, cfg.hyperparameters.seed)
    assert len(hold) == round(0.2 * len(records))
    tok = ChatTokenizer.from_dir(tiny_model)
    held = tok.count([r for i, r in enumerate(records) if i not in hold], 512)
    valid = tok.count([r for i, r in enumerate(records) if i in hold], 512)
    assert result.eval_tokens == valid.tokens
    # Held-out tokens are never trained (nor billed): the run trained the rest, once per epoch.
    assert result.trained_tokens == held.tokens * 4

    evals = [m["eval_loss"] for m in run.metrics if "eval_loss" in m]
    # every 2 steps and at each epoch end (5 steps per epoch): steps 2,4,5,6,8,10,...
    evaluated = [m["step"] for m in run.metrics if "eval_loss" in m]
    assert evaluated == sorted({*range(2, 21, 2), *range(5, 21, 5)})
    assert evals[-1] < evals[0] - 1.0, evals
    assert result.eval_loss == evals[-1]


def test_no_split_means_no_validation(tiny_model, tiny_data, tmp_path) -> None:
    run = Run(make_config(tiny_model, tiny_data, tmp_path, epochs=1), tmp_path).setup()
    result = run.train()
    assert result.eval_loss is None and result.eval_tokens == 0
    assert all("eval_loss" not in m for m in run.metrics)


def test_a_validation_file_is_evaluated_whole(tiny_model, tiny_data, tmp_path) -> None:
    valid = write_jsonl(chat_records(5, seed=99), tmp_path / "valid.jsonl")
    cfg = replace(
        make_config(tiny_model, tiny_data, tmp_path, epochs=1),
        validation_uri=str(valid),
        validation_sha256=sha256_file(valid),
    )
    result = Run(cfg, tmp_path).setup().train()
    records = [json.loads(x) for x in valid.read_text().splitlines()]
    assert result.eval_tokens == ChatTokenizer.from_dir(tiny_model).count(records, 512).tokens
    assert result.eval_loss is not None

    changed = replace(cfg, validation_sha256="0" * 64)
    with pytest.raises(Exception, match="validation dataset changed"):
        Run(changed, tmp_path / "again").setup()


def test_a_full_run_keeps_epoch_checkpoints_a_gguf_and_merged_weights(tiny_model, tmp_path) -> None:
    data = memorisable(tmp_path)
    cfg = replace(
        mem_config(tiny_model, data, tmp_path, epochs=3),
        validation_split=0.2,
        outputs=(OUTPUT_MERGED,),
    )
    proc = trainer_process(cfg)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_OK, err[-3000:]
    result = next(e for e in events(out) if e["event"] == "result")
    folder = Path(cfg.output_uri)

    # Checkpoints: one per epoch end, the PEFT pair each, true sizes and hashes.
    steps = [c["step"] for c in result["checkpoints"]]
    assert steps == [5, 10, 15]
    assert [c["epoch"] for c in result["checkpoints"]] == [1, 2, 3]
    for c in result["checkpoints"]:
        kept = folder / checkpoint_folder(c["step"])
        assert {f["name"] for f in c["files"]} == set(ADAPTER_FILES)
        for f in c["files"]:
            assert f["sha256"] == sha256_file(kept / f["name"])
        assert c["eval_loss"] is not None and c["train_loss"] > 0
    last = folder / checkpoint_folder(15) / "adapter_model.safetensors"
    assert sha256_file(last) == sha256_file(folder / "adapter_model.safetensors")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == steps
    assert not any(f["name"].startswith("checkpoints/") for f in manifest["files"])
    names = {f["name"] for f in manifest["files"]}
    assert {GGUF_ADAPTER, f"{MERGED_DIR}/model.safetensors", f"{MERGED_DIR}/config.json"} <= names
    card = (folder / "README.md").read_text()
    assert f"--lora {GGUF_ADAPTER}" in card and f"ADAPTER ./{GGUF_ADAPTER}" in card

    check_merged(tiny_model, folder)

    check_gguf_layout(folder)


def check_merged(base_dir: Path, adapter_dir: Path) -> None:
    """merged/ loads in transformers alone, in bf16 (what it is priced at), and its weights are
    exactly base + adapter (merged at full precision) rounded to bf16, where the adapter
    changed them."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(adapter_dir / MERGED_DIR)
    assert not hasattr(merged, "peft_config")
    assert merged.dtype == torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    plain = {k: v.to(torch.bfloat16) for k, v in base.state_dict().items()}
    expected = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().state_dict()
    got = load_file(adapter_dir / MERGED_DIR / "model.safetensors")
    name = "model.layers.1.self_attn.q_proj.weight"
    assert got[name].dtype == torch.bfloat16
    assert not torch.equal(got[name], plain[name])  # the adapter changed it...
    for key, value in got.items():  # ...and merging kept exactly base + adapter, rounded once
        torch.testing.assert_close(value, expected[key].to(torch.bfloat16), atol=0, rtol=0)


def check_gguf_layout(folder: Path) -> None:
    """The GGUF holds every LoRA tensor under llama.cpp's names, A as is, B of q/k permuted."""
    import gguf
    from safetensors.torch import load_file

    reader = gguf.GGUFReader(folder / GGUF_ADAPTER)

    def field(key: str):
        f = reader.fields[key]
        return f.contents()

    assert field("general.architecture") == "llama"
    assert field("general.type") == "adapter"
    assert field("adapter.type") == "lora"
    alpha = json.loads((folder / "adapter_config.json").read_text())["lora_alpha"]
    assert field("adapter.lora.alpha") == pytest.approx(alpha)
    tensors = {t.name: t for t in reader.tensors}
    peft = load_file(folder / "adapter_model.safetensors")
    assert len(tensors) == len(peft) == 4 * 7 * 2  # 4 layers, 7 projections, A and B

    def gguf_tensor(name: str) -> torch.Tensor:
        t = tensors[name]
        return torch.from_numpy(t.data.copy()).reshape([int(x) for x in reversed(t.shape)])

    prefix = "base_model.model.model.layers.1."
    a = peft[prefix + "self_attn.q_proj.lora_A.weight"]
    torch.testing.assert_close(gguf_tensor("blk.1.attn_q.weight.lora_a"), a)
    b = peft[prefix + "self_attn.q_proj.lora_B.weight"]
    torch.testing.assert_close(gguf_tensor("blk.1.attn_q.weight.lora_b"), permute_rows(b, 4))
    v = peft[prefix + "self_attn.v_proj.lora_B.weight"]
    torch.testing.assert_close(gguf_tensor("blk.1.attn_v.weight.lora_b"), v)
    down = peft[prefix + "mlp.down_proj.lora_A.weight"]
    torch.testing.assert_close(gguf_tensor("blk.1.ffn_down.weight.lora_a"), down)


def test_permute_rows_interleaves_the_rotary_halves_of_each_head() -> None:
    # 2 heads of 4 rows: [h0: 0 1 | 2 3, h1: 4 5 | 6 7] -> [0 2 1 3, 4 6 5 7]
    w = torch.arange(8.0).reshape(8, 1)
    assert permute_rows(w, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_continuing_from_an_adapter_starts_lower_than_a_fresh_run(tiny_model, tmp_path) -> None:
    data = memorisable(tmp_path)
    first = Run(mem_config(tiny_model, data, tmp_path / "first"), tmp_path / "first").setup()
    first.train()
    first.model.save_pretrained(str(tmp_path / "first-adapter"))

    fresh = Run(mem_config(tiny_model, data, tmp_path / "fresh", epochs=1), tmp_path / "fresh")
    fresh.setup().train()
    cont_cfg = replace(
        mem_config(tiny_model, data, tmp_path / "cont", epochs=1),
        init_adapter_uri=str(tmp_path / "first-adapter"),
    )
    cont = Run(cont_cfg, tmp_path / "cont").setup()
    cont.train()
    assert cont.metrics[0]["loss"] < fresh.metrics[0]["loss"] - 1.0, (
        cont.metrics[0],
        fresh.metrics[0],
    )


def test_continuing_with_another_rank_is_a_user_error(tiny_model, tiny_data, tmp_path) -> None:
    first = Run(make_config(tiny_model, tiny_data, tmp_path / "a", epochs=1), tmp_path / "a")
    first.setup().model.save_pretrained(str(tmp_path / "adapter"))
    cfg = replace(
        make_config(tiny_model, tiny_data, tmp_path / "b", epochs=1, lora_rank=8),
        init_adapter_uri=str(tmp_path / "adapter"),
    )
    proc = trainer_process(cfg)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_USER_ERROR, err[-2000:]
    failure = next(e for e in events(out) if e["event"] == "failure")
    assert "rank 16" in failure["message"] and "rank 8" in failure["message"]
