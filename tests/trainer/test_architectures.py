"""Each catalog architecture trains as itself, in both precisions.

The trainer's packed loss (examples concatenated, varlen attention, only target positions
projected, the chunked loss) must equal the model's own loss computed example by example by
transformers with its eager attention and its own ForCausalLM head, on a tiny config of each
family with the family's features switched on (tests/support/tiny.py): Gemma 2's attention and
final-logit soft-capping, its sliding window over examples longer than the window and its
query_pre_attn_scalar; Qwen2's q/k/v biases; Mistral v0.3 without a window; grouped-query heads.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from shared.contract import (
    ARCHITECTURES,
    EXIT_OK,
    EXIT_RETRYABLE,
    GGUF_ADAPTER,
    OUTPUT_MERGED,
)
from tests.support.tiny import FAMILIES, build_tiny_model, chat_records, write_jsonl
from tests.support.trainer import events, make_config, stop_at_step, trainer_process
from tests.trainer.test_validation_and_exports import check_merged
from yachay_trainer import attention
from yachay_trainer.data import make_pack
from yachay_trainer.export import GGUF_ARCHITECTURES
from yachay_trainer.train import Run, compute_dtype, pack_loss

# Relative tolerance on a mean loss: bf16 rounds each activation to 8 bits of mantissa, in a
# different order in the packed and the per-example forward.
TOLERANCE = {"fp32": 1e-5, "bf16": 1e-3}  # measured: at most 1e-7 and 7e-5
# The worst relative error of a LoRA gradient; measured at most 2e-6 in fp32, and in bf16 0.02
# (0.044 for Gemma 2, whose tanh caps amplify rounding); a wrong function is off by O(1).
GRAD_TOLERANCE = {"fp32": 1e-4, "bf16": 0.1}


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    family = request.param
    folder = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{family}"), family=family, layers=2)
    data = write_jsonl(chat_records(10, seed=11), folder.parent / "data.jsonl")
    return family, folder, data


def test_every_catalog_architecture_has_a_tiny_config_and_a_gguf_mapping() -> None:
    assert set(FAMILIES) == set(ARCHITECTURES) == set(GGUF_ARCHITECTURES)


def _run(folder: Path, data: Path, tmp: Path, precision: str) -> Run:
    cfg = make_config(folder, data, tmp, lora_dropout=0.0, batch_size=4)
    run = Run(cfg, tmp / "work", precision=precision).setup()
    torch.manual_seed(7)
    with torch.no_grad():  # lora_B starts at zero: make the adapter change the function
        for name, p in run.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return run


def _labels(ex: Any) -> torch.Tensor:
    """transformers' labels for an example: its tokens where trained (it shifts them itself)."""
    trained = zip(ex.input_ids, ex.trained, strict=True)
    return torch.tensor([[t if k else -100 for t, k in trained]])


def _reference_loss(run: Run, folder: Path, examples: list[Any], **config: Any) -> float:
    """The mean loss of transformers' own model with eager attention, example by example, with
    this run's adapter."""
    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        folder, dtype=run.dtype, attn_implementation="eager", **config
    )
    ours: Any = run.model.peft_config["default"]
    lora = LoraConfig(
        r=ours.r, lora_alpha=ours.lora_alpha, target_modules=list(ours.target_modules)
    )
    ref = get_peft_model(base, lora).eval()
    set_peft_model_state_dict(ref, get_peft_model_state_dict(run.model))
    total, n = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            labels = torch.tensor(
                [[t if k else -100 for t, k in zip(ex.input_ids, ex.trained, strict=True)]]
            )
            out = ref(input_ids=ids, labels=labels)
            count = int((labels[0, 1:] != -100).sum())
            total += float(out.loss) * count
            n += count
    return total / n


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_packed_loss_is_the_models_own_loss(family_model, tmp_path, precision) -> None:
    family, folder, data = family_model
    run = _run(folder, data, tmp_path, precision)
    batch = run.examples[:6]
    if family == "gemma2":  # the window must bite: examples longer than it
        assert max(e.n_tokens for e in batch) > 2 * run.model.config.sliding_window
    pack = make_pack(batch)
    expected = _reference_loss(run, folder, batch)
    tol = TOLERANCE[precision]

    run.model.train()  # the training loss, through the fused LoRA path
    causal_lm = run.model.get_base_model()
    train_loss = float(pack_loss(causal_lm, pack, run.device).detach()) / pack.n_trained
    assert train_loss == pytest.approx(expected, rel=tol)

    run.validation = batch  # the validation loss, as the trainer evaluates it
    assert run.evaluate() == pytest.approx(expected, rel=tol)

    if family == "gemma2":  # the features matter: without them the loss is another one
        plain = _reference_loss(
            run,
            folder,
            batch,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            sliding_window=4096,
        )
        assert abs(plain - expected) > 100 * tol * expected


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradients_of_the_packed_loss_equal_the_models_own(family_model, tmp_path, precision):
    family, folder, data = family_model
    run = _run(folder, data, tmp_path, precision)
    batch = run.examples[:3]
    run.model.train()
    causal_lm = run.model.get_base_model()
    pack = make_pack(batch)
    (pack_loss(causal_lm, pack, run.device) / pack.n_trained).backward()
    ours = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    run.model.zero_grad(set_to_none=True)

    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        folder, dtype=run.dtype, attn_implementation="eager"
    )
    cfg: Any = run.model.peft_config["default"]
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules))
    ref = get_peft_model(base, lora)
    set_peft_model_state_dict(ref, get_peft_model_state_dict(run.model))
    total = 0
    losses = []
    for ex in batch:
        labels = torch.tensor(
            [[t if k else -100 for t, k in zip(ex.input_ids, ex.trained, strict=True)]]
        )
        count = int((labels[0, 1:] != -100).sum())
        out = ref(input_ids=torch.tensor([ex.input_ids]), labels=labels)
        losses.append(out.loss * count)
        total += count
    (sum(losses) / total).backward()
    theirs = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    assert ours.keys() == theirs.keys() and ours
    worst = 0.0
    for name, g in ours.items():
        ref_g = theirs[name].float()
        worst = max(worst, float((g.float() - ref_g).norm() / ref_g.norm().clamp_min(1e-12)))
    assert worst < GRAD_TOLERANCE[precision]


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("softcap", [None, 1.5])
def test_flex_attention_masks_equal_the_per_example_path(window, softcap) -> None:
    """The CUDA path for soft-capped attention (FlexAttention) builds the same document, causal
    and window mask as the reference path; here run by FlexAttention's eager reference."""
    torch.manual_seed(0)
    lengths = [7, 3, 12, 1, 9]
    n = sum(lengths)
    q = torch.randn(1, 4, n, 16)
    k = torch.randn(1, 2, n, 16)
    v = torch.randn(1, 2, n, 16)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    ref = attention.per_example(q, k, v, cu, 0.3, window, softcap)
    with warnings.catch_warnings():  # flex's eager mode warns that it is for debugging
        warnings.simplefilter("ignore")
        got = attention.flex(q, k, v, cu, 0.3, window, softcap, compiled=False)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_the_cpu_never_takes_a_cuda_kernel() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert attention.backend(cpu, None, 0.0) == "per_example"
    assert attention.backend(gpu, None, 0.0) == "flash_varlen"
    assert attention.backend(gpu, 50.0, 0.0) == "flex"
    assert attention.backend(gpu, None, 0.1) == "per_example"


def _trainer_run(cfg: Any, precision: str) -> dict[str, Any]:
    proc = trainer_process(cfg, {"YACHAY_TRAINER_PRECISION": precision})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_OK, err[-3000:]
    return next(e for e in events(out) if e["event"] == "result")


def test_a_bf16_run_of_every_family_exports_what_peft_transformers_and_gguf_load(
    family_model, tmp_path
) -> None:
    """The whole trainer as a GPU job runs it (bf16), with validation, epoch adapters and merged
    weights: the adapter is fp32 (the master weights) and peft loads it; the merged folder loads
    in transformers alone and gives base + adapter; the GGUF names every LoRA tensor under the
    family's GGUF architecture."""
    import gguf
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    family, folder, data = family_model
    cfg = replace(
        make_config(folder, data, tmp_path, epochs=2, batch_size=4, learning_rate=3e-3),
        validation_split=0.2,
        outputs=(OUTPUT_MERGED,),
    )
    result = _trainer_run(cfg, "bf16")
    assert result["eval_loss"] is not None and len(result["checkpoints"]) == 2
    out = Path(cfg.output_uri)
    adapter = load_file(out / "adapter_model.safetensors")
    assert {t.dtype for t in adapter.values()} == {torch.float32}
    n_tensors = len(adapter)

    ids = torch.tensor([[5, 60, 700, 31, 9, 1200]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(folder)
        want = PeftModel.from_pretrained(base, out).eval()(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits
    assert (want - plain).abs().max() > 1e-3  # peft loads the bf16 run's adapter, and it acts
    check_merged(folder, out)

    reader = gguf.GGUFReader(out / GGUF_ADAPTER)
    assert reader.fields["general.architecture"].contents() == GGUF_ARCHITECTURES[family][0]
    assert len(reader.tensors) == n_tensors == 2 * 7 * 2  # 2 layers, 7 projections, A and B


def test_bf16_trains_like_fp32_and_resumes_exactly(tmp_path) -> None:
    """On the tiny Llama: a bf16 run's losses stay within a few percent of fp32's, and a bf16 run
    stopped by SIGTERM and retried ends where an uninterrupted bf16 run does."""
    folder = build_tiny_model(tmp_path / "model", layers=2)
    data = write_jsonl(chat_records(24, seed=3), tmp_path / "data.jsonl")

    def cfg(name: str) -> Any:
        return make_config(folder, data, tmp_path / name, epochs=2, batch_size=4)

    fp32 = _trainer_run(cfg("fp32"), "fp32")
    bf16 = _trainer_run(cfg("bf16"), "bf16")
    assert bf16["trained_tokens"] == fp32["trained_tokens"]
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=0.03)
    assert bf16["last_epoch_mean_loss"] == pytest.approx(fp32["last_epoch_mean_loss"], rel=0.03)

    resumed = cfg("resumed")
    env = {"YACHAY_TRAINER_PRECISION": "bf16"}
    proc = trainer_process(resumed, env)
    stop_at_step(proc, 5)  # SIGTERM mid-run, as Batch does on Spot preemption
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_RETRYABLE, err[-3000:]
    again = _trainer_run(resumed, "bf16")
    assert again["trained_tokens"] == bf16["trained_tokens"]
    assert again["final_loss"] == pytest.approx(bf16["final_loss"], rel=1e-3)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="YACHAY_TRAINER_PRECISION"):
        compute_dtype("fp16", torch.device("cpu"))
    assert compute_dtype("auto", torch.device("cpu")) == torch.float32
    assert compute_dtype("auto", torch.device("cuda")) == torch.bfloat16
