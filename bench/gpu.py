"""make bench-gpu: each catalog model trained by our trainer on the GPU found, in bf16.

Each catalog model is built from its real architecture config (the catalog's `architecture`)
with random weights, on the GPU, in bf16 (no download: throughput and memory do not depend on
the weights' values), and LoRA'd with its catalog defaults (rank, alpha, dropout, all-linear)
through the trainer's own code (`lora_model`, the shared dropout, the fused LoRA GEMMs, the
varlen attention, the chunked loss, `backward_step`, activation checkpointing where the memory
estimate asks for it). Steps are the catalog's default batch of synthetic chat examples whose
lengths follow a log-normal law (median about 400 tokens, a long tail, capped at the default
max_seq_length), 60% of each example trained (the assistant turns).

Printed per model: trained tokens/s (all tokens of the examples, what a job is billed for),
MFU, peak GPU memory measured and estimated (shared.sizing), whether the model fits its
catalog GPU, and the same at one pack of the catalog's largest max_seq_length.

MFU = tokens/s x FLOPs per token / peak. FLOPs per trained token of LoRA over a frozen base:
4N + 12·L·H·Q·T (shared.sizing.flops_per_token: PaLM's 6N + 12·L·H·Q·T, Chowdhery et al. 2022,
appendix B, less the 2N of weight gradients a frozen base never computes), with T the
token-weighted mean example length (sum L_i^2 / sum L_i), the attention context in PaLM's
convention. Peak dense bf16: H100/H200 989, A100 312, L4 121 TFLOPS.

    make bench-gpu          # or: python -m bench.gpu [--models ID ...] [--steps N]
    python -m bench.gpu --cpu-smoke   # the same code on tiny configs on the CPU (the suite)

Without CUDA it refuses (exit 2) unless --cpu-smoke. Budget: under 8 minutes on one H100.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from typing import Any

GPU_NAMES = (  # torch's device name -> the catalog's GPU type
    ("H200", "nvidia-h200-141gb"),
    ("H100", "nvidia-h100-80gb"),
    ("A100", "nvidia-a100-80gb"),
    ("L4", "nvidia-l4"),
)


def gpu_type(device_name: str) -> str | None:
    return next((t for key, t in GPU_NAMES if key in device_name), None)


def synthetic_examples(n: int, max_len: int, vocab: int, seed: int) -> list[Any]:
    """Chat-like examples: log-normal lengths (median ~400 tokens), the last 60% trained."""
    from shared.tokenization import EncodedExample

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = max(16, min(max_len, int(rng.lognormvariate(math.log(400), 0.9))))
        ids = [rng.randrange(10, vocab) for _ in range(length)]
        start = int(length * 0.4)
        out.append(EncodedExample(ids, [i >= start for i in range(length)]))
    return out


class Bench:
    """What backward_step needs: the model, its device and its caches."""

    def __init__(self, model: Any, device: Any) -> None:
        from yachay_trainer import dropout, lora_add

        self.model = model
        self.device = device
        self.dropout_cache = dropout.share_lora_dropout(model)
        self.lora_groups = lora_add.fuse_lora(model)


def run_model(
    model_id: str,
    architecture: dict[str, Any],
    defaults: dict[str, Any],
    device: Any,
    steps: int,
    warmup: int,
    max_seq_lengths: tuple[int, int],
) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from shared import sizing
    from shared.contract import Hyperparameters
    from yachay_trainer import attention
    from yachay_trainer.data import pack_step
    from yachay_trainer.train import (
        backward_step,
        enable_checkpointing,
        lora_model,
        needs_checkpointing_on,
    )

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = AutoConfig.for_model(**architecture)
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=dtype, attn_implementation=attention.register()
        )
    base.config.use_cache = False
    parameters = sum(p.numel() for p in base.parameters())
    shape = sizing.Shape.of(config.to_dict())
    results: dict[str, Any] = {"model": model_id, "parameters": parameters}
    default_len, largest_len = max_seq_lengths
    for label, seq_len, batch, n_steps in (
        ("default", default_len, defaults["batch_size"], steps),
        ("largest", largest_len, 1, 2),
    ):
        hp = Hyperparameters(
            batch_size=batch,
            max_seq_length=seq_len,
            lora_rank=defaults["rank"],
            lora_alpha=defaults["alpha"],
            lora_dropout=defaults["dropout"],
        )
        model = lora_model(base, hp).to(device)
        bench = Bench(model, device)
        checkpointing = needs_checkpointing_on(device, base, hp)
        if checkpointing:
            enable_checkpointing(base)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        if label == "largest":  # one example filling the length: the worst a job can ask
            from shared.tokenization import EncodedExample

            rng = random.Random(1)
            ids = [rng.randrange(10, shape.vocab) for _ in range(seq_len)]
            examples = [EncodedExample(ids, [i >= seq_len * 0.4 for i in range(seq_len)])]
        else:
            examples = synthetic_examples(batch * (steps + warmup), seq_len, shape.vocab, 2)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tokens, weighted, seconds = 0, 0, 0.0
        step_times = []
        for i in range(n_steps + (warmup if label == "default" else 0)):
            chunk = examples[(i * batch) % len(examples) :][:batch] or examples[:batch]
            packs = pack_step(chunk, seq_len)
            n_trained = sum(p.n_trained for p in packs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            backward_step(bench, packs, n_trained)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - started
            if label == "default" and i < warmup:
                continue  # compile, autotune and allocator warm-up
            seconds += elapsed
            step_times.append(elapsed)
            tokens += sum(p.n_tokens for p in packs)
            weighted += sum(e.n_tokens**2 for e in chunk)
        context = weighted / max(1, tokens)
        tps = tokens / seconds if seconds else 0.0
        flops = sizing.flops_per_token(parameters, shape, context)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        longest = max(seq_len, 1)
        estimate = sizing.peak_bytes(
            parameters, shape, longest, hp.lora_rank, 2, hp.lora_dropout > 0, checkpointing
        )
        results[label] = {
            "max_seq_length": seq_len,
            "batch_size": batch,
            "tokens_per_s": round(tps, 1),
            "median_step_s": round(statistics.median(step_times), 4) if step_times else None,
            "mean_context": round(context, 1),
            "flops_per_token": flops,
            "activation_checkpointing": checkpointing,
            "peak_bytes": peak,
            "estimated_peak_bytes": estimate,
        }
        if checkpointing:
            base.gradient_checkpointing_disable()
        model.unload()  # the base without the adapters, for the next configuration
        del model, bench, optimizer, trainable
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def tiny_catalog() -> list[dict[str, Any]]:
    """A tiny config of each family (tests/support/tiny.py), for the CPU smoke run."""
    from tests.support.tiny import FAMILIES, family_config

    out = []
    for family in FAMILIES:
        cfg = family_config(family, 64, 2, 4, vocab_size=512).to_dict()
        cfg["model_type"] = family
        defaults = {"batch_size": 2, "rank": 4, "alpha": 8, "dropout": 0.05}
        out.append(
            {
                "id": f"tiny-{family}",
                "architecture": cfg,
                "defaults": defaults,
                "lengths": (128, 256),
            }
        )
    return out


def catalog_models(ids: list[str] | None) -> list[dict[str, Any]]:
    from shared.catalog import catalog

    out = []
    for m in catalog().models:
        if ids and m.id not in ids:
            continue
        defaults = {
            "batch_size": int(m.hyperparameters["batch_size"].default),
            "rank": int(m.lora["rank"].default),
            "alpha": int(m.lora["alpha"].default),
            "dropout": float(m.lora["dropout"].default),
        }
        lengths = (
            int(m.hyperparameters["max_seq_length"].default),
            int(m.hyperparameters["max_seq_length"].max),
        )
        out.append(
            {
                "id": m.id,
                "architecture": m.architecture,
                "defaults": defaults,
                "lengths": lengths,
                "gpu_type": m.gpu_type,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="catalog ids (default: all)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny configs on the CPU")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    import torch

    from shared import sizing

    if args.cpu_smoke:
        device, found = torch.device("cpu"), None
        models = tiny_catalog()
        args.steps, args.warmup = 1, 0
    elif not torch.cuda.is_available():
        print(
            "bench-gpu needs a CUDA GPU and none is visible here (torch.cuda.is_available() is "
            "False). Run it on a GPU machine, or `python -m bench.gpu --cpu-smoke` to run the "
            "same code on tiny configs on this CPU.",
            file=sys.stderr,
        )
        return 2
    else:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        found = gpu_type(name)
        print(f"GPU: {name} ({found or 'unknown peak'}), torch {torch.__version__}")
        models = catalog_models(args.models)

    peak_flops = sizing.PEAK_BF16_TFLOPS.get(found or "", 0.0) * 1e12
    rows = []
    started = time.perf_counter()
    for m in models:
        r = run_model(
            m["id"],
            m["architecture"],
            m["defaults"],
            device,
            args.steps,
            args.warmup,
            m["lengths"],
        )
        catalog_gpu = m.get("gpu_type")
        budget = sizing.USABLE_FRACTION * sizing.GPU_MEMORY_BYTES.get(catalog_gpu or "", 0)
        for label in ("default", "largest"):
            x = r[label]
            x["mfu"] = x["tokens_per_s"] * x["flops_per_token"] / peak_flops if peak_flops else None
            x["fits_catalog_gpu"] = (
                None if x["peak_bytes"] is None or not budget else x["peak_bytes"] <= budget
            )
        r["catalog_gpu"] = catalog_gpu
        rows.append(r)
        d, big = r["default"], r["largest"]

        def gb(v: int | None) -> str:
            return "-" if v is None else f"{v / 2**30:.1f}"

        mfu = "-" if d["mfu"] is None else f"{d['mfu']:.1%}"
        print(
            f"{r['model']:28s} {d['tokens_per_s']:9.0f} tok/s  MFU {mfu:>6s}  "
            f"peak {gb(d['peak_bytes'])} GB (est. {gb(d['estimated_peak_bytes'])})  "
            f"at {big['max_seq_length']}: {big['tokens_per_s']:.0f} tok/s, peak "
            f"{gb(big['peak_bytes'])} GB (est. {gb(big['estimated_peak_bytes'])}, "
            f"checkpointing {big['activation_checkpointing']})  "
            f"fits {catalog_gpu}: {d['fits_catalog_gpu']}/{big['fits_catalog_gpu']}",
            flush=True,
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": found, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
