"""One LoRA fine-tuning run: `Run(cfg, workdir).setup()`, then `.train()`.

What makes it fast, against the standard Trainer with padding (see bench/trainer_throughput.py):
- each optimizer step's examples are packed into rows with no padding at all, and attention runs
  per example (attention.py), so no token attends across an example boundary;
- the vocabulary projection and the loss are computed only at positions that have a target
  (assistant tokens), not over every position of every sequence;
- LoRA branches that read the same tensor (q/k/v, gate/up) share one dropout mask (dropout.py),
  drawn 16 bits an element;
- each LoRA update is added into its base output by the GEMM itself, and sibling branches (q/k/v,
  gate/up) compute their lora_A products as one GEMM (lora_add.py).

Faithfulness: the loss of a step is the mean over all its target tokens (summed across packs, so
gradient accumulation is exact); AdamW with linear warmup then cosine decay; gradient clipping at
1.0; fp32 on CPU, bf16 on CUDA; a seed that makes CPU runs reproducible.

Checkpoints (adapter, optimizer, scheduler, RNG, step, token count, metrics) go to
`checkpoint_uri` every `checkpoint_every_steps` steps and on SIGTERM; `setup()` resumes from the
latest one, so a restarted run neither retrains finished steps nor counts their tokens twice.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import torch

from shared.contract import (
    MAX_KEPT_CHECKPOINTS,
    ArtifactFile,
    Checkpoint,
    Progress,
    TrainerConfig,
    TrainerResult,
    checkpoint_folder,
    sha256_file,
)
from shared.sizing import Shape, needs_checkpointing, peak_bytes
from shared.tokenization import ChatTokenizer, EncodedExample
from yachay_trainer import attention, dropout, lora_add, loss, storage
from yachay_trainer.data import IGNORE, DataError, Pack, StepPlan, pack_step, read_examples
from yachay_trainer.progress import Reporter

MAX_GRAD_NORM = 1.0
PRECISIONS = ("auto", "bf16", "fp32")


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the base model runs in: `auto` is bf16 on CUDA (every GPU job) and fp32 on the
    CPU; `bf16` and `fp32` force one. The LoRA weights and the optimizer state stay fp32 either
    way (peft keeps adapters in fp32 over a bf16 base), so the saved adapter is fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"YACHAY_TRAINER_PRECISION must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved and the run should exit as retryable."""


def cosine_with_warmup(warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def pack_loss(causal_lm: Any, pack: Pack, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the pack's target tokens, projecting only those positions, in
    chunks (loss.py), with the model's own final-logit soft-capping where it has one."""
    cu = pack.cu_seq_lens.to(device)
    hidden = causal_lm.model(
        input_ids=pack.input_ids.to(device),
        position_ids=pack.position_ids.to(device),
        cu_seq_lens_q=cu,
        cu_seq_lens_k=cu,
        use_cache=False,
    ).last_hidden_state[0]
    targets = pack.targets.to(device)
    where = targets != IGNORE
    head = causal_lm.lm_head
    if head.bias is not None:  # no catalog family has one; never train something else silently
        raise ValueError("an output projection with a bias is not supported")
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return loss.cross_entropy_sum(hidden[where], head.weight, targets[where], softcap)


def lora_model(base: Any, hp: Any) -> Any:
    """`base` wrapped by peft with this job's LoRA settings (the adapters in fp32)."""
    from peft import LoraConfig, get_peft_model

    targets = hp.lora_target_modules
    lora = LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def needs_checkpointing_on(device: torch.device, base: Any, hp: Any) -> bool:
    """On a GPU, whether a pack of max_seq_length tokens would not fit without activation
    checkpointing, by the estimate of shared.sizing; never on the CPU."""
    if device.type != "cuda":
        return False
    shape = Shape.of(base.config.to_dict())
    gpu = torch.cuda.get_device_properties(device).total_memory
    parameters = sum(p.numel() for p in base.parameters())
    tokens, rank, drop = hp.max_seq_length, hp.lora_rank, hp.lora_dropout > 0
    needed = needs_checkpointing(parameters, shape, tokens, rank, gpu, dropout=drop)
    estimate = peak_bytes(parameters, shape, tokens, rank, 2, drop)
    Reporter.log("memory_estimate", peak_bytes=estimate, gpu_bytes=gpu, checkpointing=needed)
    return needed


def enable_checkpointing(base: Any) -> None:
    """Non-reentrant activation checkpointing of every decoder layer: the recompute restores the
    RNG state, so the shared dropout draws the very masks of the first forward (tested against
    a plain step's gradients)."""
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def backward_step(run: Any, packs: list[Pack], n_trained: int) -> float:
    """Forward and backward of one optimizer step's packs, one pack at a time (the gradients
    accumulate: the loss is the mean over all the step's targets); returns the step's loss.
    `run` has `model`, `device`, `dropout_cache` and `lora_groups` (a Run, or the GPU bench)."""
    causal_lm = run.model.get_base_model()
    total = 0.0
    for pack in packs:
        loss = pack_loss(causal_lm, pack, run.device) / n_trained
        loss.backward()  # type: ignore[no-untyped-call]
        total += float(loss.item())
        dropout.clear(run.dropout_cache)
        lora_add.clear(run.lora_groups)
    return total


class Run:
    def __init__(
        self,
        cfg: TrainerConfig,
        workdir: Path,
        reporter: Reporter | None = None,
        stop: threading.Event | None = None,
        precision: str = "auto",
        activation_checkpointing: bool | None = None,
    ):
        self.cfg = cfg
        self.hp = cfg.hyperparameters
        self.workdir = workdir
        self.reporter = reporter or Reporter(cfg)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = compute_dtype(precision, self.device)
        # None: decided in setup() by the memory estimate (shared.sizing) against the GPU's size
        self.checkpointing = activation_checkpointing
        self.step = 0
        self.trained_tokens = 0
        self.metrics: list[dict[str, Any]] = []
        self.kept: list[Checkpoint] = []  # epoch-end adapters uploaded with the outputs
        self.eval_loss: float | None = None
        self.stop = stop or threading.Event()
        self._train_seconds = 0.0

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> Run:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.hp.seed)
        model_dir = self._local_model()
        self.tokenizer = ChatTokenizer.from_dir(model_dir)
        data = storage.download_file(self.cfg.dataset_uri, self.workdir / "dataset.jsonl")
        if self.cfg.dataset_sha256 and sha256_file(data) != self.cfg.dataset_sha256:
            raise DataError(
                "the dataset file changed after it was validated; validate it "
                "again and submit a new job"
            )
        self.examples: list[EncodedExample]
        self.examples, self.validation = read_examples(
            data,
            self.tokenizer,
            self.hp.max_seq_length,
            split=self.cfg.validation_split,
            seed=self.hp.seed,
        )
        if self.cfg.validation_uri:
            self.validation = self._validation_file()
        self.eval_tokens = sum(e.n_tokens for e in self.validation)
        self.plan = StepPlan(len(self.examples), self.hp.batch_size, self.hp.epochs, self.hp.seed)
        self.tokens_per_epoch = sum(e.n_tokens for e in self.examples)

        base = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=self.dtype, attn_implementation=attention.register()
        )
        base.config.use_cache = False
        self.model = lora_model(base, self.hp).to(self.device)
        self.model.peft_config["default"].base_model_name_or_path = self.cfg.base_model_name
        self.model_dir = model_dir
        if self.cfg.init_adapter_uri:
            self._start_from(self.cfg.init_adapter_uri)
        self.dropout_cache = dropout.share_lora_dropout(self.model)
        self.lora_groups = lora_add.fuse_lora(self.model)
        if self.checkpointing is None:
            self.checkpointing = needs_checkpointing_on(self.device, base, self.hp)
        if self.checkpointing:
            enable_checkpointing(base)
        Reporter.log(
            "set_up",
            device=self.device.type,
            dtype=str(self.dtype).removeprefix("torch."),
            activation_checkpointing=self.checkpointing,
        )
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=self.hp.learning_rate, weight_decay=0.0
        )
        warmup = math.ceil(self.hp.warmup_ratio * self.plan.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(warmup, self.plan.total_steps)
        )
        self._resume()
        return self

    def _validation_file(self) -> list[EncodedExample]:
        path = storage.download_file(self.cfg.validation_uri, self.workdir / "validation.jsonl")
        if self.cfg.validation_sha256 and sha256_file(path) != self.cfg.validation_sha256:
            raise DataError(
                "the validation dataset changed after it was validated; validate it again and "
                "submit a new job"
            )
        examples, _ = read_examples(
            path, self.tokenizer, self.hp.max_seq_length, what="the validation dataset"
        )
        return examples

    def _start_from(self, uri: str) -> None:
        """Loads an earlier job's adapter (same rank and target modules: the API checked, and
        a mismatch would fail to load here) as this run's starting point."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = storage.download_folder(uri, self.workdir / "init-adapter")
        config = json.loads((folder / "adapter_config.json").read_text())
        ours: Any = self.model.peft_config["default"]
        if config.get("r") != ours.r or set(config.get("target_modules") or ()) != set(
            ours.target_modules
        ):
            raise DataError(
                "the adapter to continue from has rank "
                f"{config.get('r')} on {sorted(config.get('target_modules') or ())}; this job "
                f"trains rank {ours.r} on {sorted(ours.target_modules)}"
            )
        state = load_file(str(folder / "adapter_model.safetensors"), device=str(self.device))
        result: Any = set_peft_model_state_dict(self.model, state)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise DataError(f"the adapter to continue from lacks {len(missing)} LoRA tensors")
        Reporter.log("started_from", uri=uri, tensors=len(state))

    def _local_model(self) -> Path:
        uri = self.cfg.model_uri
        if not uri.startswith("gs://"):
            return Path(uri)
        return storage.download_folder(uri, self.workdir / "model")

    # -- training ------------------------------------------------------------------------------

    def train(self) -> TrainerResult:
        """Trains to the end; returns the run's result. When `stop` is set (SIGTERM, see
        __main__) it checkpoints before the next step and raises Preempted; a stop during the
        last step lets the run finish, since only the outputs remain."""
        self.model.train()
        while self.step < self.plan.total_steps:
            if self.stop.is_set():
                if self.step > 0:
                    self.save_checkpoint()
                raise Preempted(f"stopped before step {self.step + 1} by SIGTERM")
            started = time.perf_counter()
            loss, tokens = self._one_step()
            self._train_seconds += time.perf_counter() - started
            self.step += 1
            self.trained_tokens += tokens
            lr = float(self.scheduler.get_last_lr()[0])
            self.metrics.append(
                {"step": self.step, "loss": loss, "lr": lr, "tokens": self.trained_tokens}
            )
            epoch_end = self.step % self.plan.steps_per_epoch == 0
            every = self.cfg.eval_every_steps
            if self.validation and (epoch_end or (every and self.step % every == 0)):
                self.eval_loss = self.evaluate()
                self.metrics[-1]["eval_loss"] = self.eval_loss
            self._report(loss, lr, force=self.step == self.plan.total_steps or epoch_end)
            if epoch_end:
                self.keep_epoch_adapter()
            if epoch_end or self.step % self.cfg.checkpoint_every_steps == 0:
                self.save_checkpoint()
        return self.result()

    @torch.no_grad()
    def evaluate(self) -> float:
        """The mean loss over every validation target token: the training loss's packing and
        labelled-only projection, with dropout off. Not counted as trained tokens."""
        self.model.eval()
        causal_lm = self.model.get_base_model()
        total, targets = 0.0, 0
        try:
            for start in range(0, len(self.validation), self.hp.batch_size):
                batch = self.validation[start : start + self.hp.batch_size]
                for pack in pack_step(batch, self.hp.max_seq_length):
                    total += float(pack_loss(causal_lm, pack, self.device))
                    targets += pack.n_trained
                    lora_add.clear(self.lora_groups)
        finally:
            self.model.train()
        loss = total / max(1, targets)
        Reporter.log("evaluated", step=self.step, eval_loss=loss, eval_tokens=self.eval_tokens)
        return loss

    def keep_epoch_adapter(self) -> None:
        """Uploads the adapter as it is at this epoch end beside the outputs (the same retention:
        outputs_kept_until); at most MAX_KEPT_CHECKPOINTS, the oldest dropped from the list."""
        epoch = self.step // self.plan.steps_per_epoch
        name = checkpoint_folder(self.step)
        folder = self.workdir / "kept" / name
        self.model.save_pretrained(str(folder), safe_serialization=True)
        (folder / "README.md").unlink(missing_ok=True)  # peft's placeholder card: the pair only
        files = tuple(
            ArtifactFile(p.name, p.stat().st_size, sha256_file(p))
            for p in sorted(folder.iterdir())
            if p.is_file()
        )
        storage.upload_folder(
            folder, storage.join(self.cfg.output_uri, name), custom_time=self.cfg.kept_until
        )
        epoch_losses = self.metrics[-self.plan.steps_per_epoch :]
        self.kept.append(
            Checkpoint(
                step=self.step,
                epoch=epoch,
                train_loss=sum(m["loss"] for m in epoch_losses) / len(epoch_losses),
                eval_loss=self.eval_loss if self.validation else None,
                files=files,
            )
        )
        self.kept = self.kept[-MAX_KEPT_CHECKPOINTS:]
        Reporter.log("epoch_adapter_kept", step=self.step, epoch=epoch)

    def _one_step(self) -> tuple[float, int]:
        batch = [self.examples[i] for i in self.plan.indices(self.step)]
        packs = pack_step(batch, self.hp.max_seq_length)
        n_trained = sum(p.n_trained for p in packs)
        total = backward_step(self, packs, n_trained)
        torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, sum(p.n_tokens for p in packs)

    def _report(self, loss: float, lr: float, force: bool) -> None:
        done, total = self.step, self.plan.total_steps
        rate = self._train_seconds / max(1, len(self.metrics))
        self.reporter.progress(
            Progress(
                step=done,
                total_steps=total,
                epoch=min(self.hp.epochs, done // self.plan.steps_per_epoch + 1),
                trained_tokens=self.trained_tokens,
                total_tokens=self.tokens_per_epoch * self.hp.epochs,
                loss=round(loss, 5),
                learning_rate=lr,
                eta_s=round(rate * (total - done), 1),
                eval_loss=None if self.eval_loss is None else round(self.eval_loss, 5),
            ),
            force=force,
        )

    def result(self) -> TrainerResult:
        """The run's result; the artifacts are added once the outputs are uploaded."""
        tail = self.metrics[-max(1, self.plan.steps_per_epoch) :]
        return TrainerResult(
            steps=self.step,
            trained_tokens=self.trained_tokens,
            examples=len(self.examples),
            final_loss=self.metrics[-1]["loss"] if self.metrics else None,
            last_epoch_mean_loss=sum(m["loss"] for m in tail) / len(tail) if tail else None,
            train_seconds=round(self._train_seconds, 3),
            eval_loss=self.eval_loss,
            eval_tokens=self.eval_tokens,
            checkpoints=tuple(self.kept),
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder = self.workdir / "checkpoint" / f"step-{self.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        save_file(get_peft_model_state_dict(self.model), str(folder / "adapter.safetensors"))
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            folder / "state.pt",
        )
        (folder / "progress.json").write_text(
            json.dumps(
                {
                    "step": self.step,
                    "trained_tokens": self.trained_tokens,
                    "metrics": self.metrics,
                    "train_seconds": self._train_seconds,
                    "eval_loss": self.eval_loss,
                    "kept": [c.to_doc() for c in self.kept],
                }
            )
        )
        remote = storage.join(self.cfg.checkpoint_uri, folder.name)
        storage.upload_folder(folder, remote, last="progress.json")
        # The pointer is written only once the checkpoint it names is complete.
        storage.write_text(
            storage.join(self.cfg.checkpoint_uri, "latest.json"),
            json.dumps({"step": self.step, "folder": folder.name}),
        )
        Reporter.log("checkpoint", step=self.step, uri=remote)

    def _resume(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        latest = storage.read_text(storage.join(self.cfg.checkpoint_uri, "latest.json"))
        if latest is None:
            return
        name = json.loads(latest)["folder"]
        folder = storage.download_folder(
            storage.join(self.cfg.checkpoint_uri, name), self.workdir / "resume" / name
        )
        set_peft_model_state_dict(
            self.model, load_file(str(folder / "adapter.safetensors"), device=str(self.device))
        )
        # Tensors, numbers and dicts only: a checkpoint can never run code when loaded.
        state = torch.load(folder / "state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        progress = json.loads((folder / "progress.json").read_text())
        self.step = progress["step"]
        self.trained_tokens = progress["trained_tokens"]
        self.metrics = progress["metrics"]
        self._train_seconds = progress["train_seconds"]
        self.eval_loss = progress.get("eval_loss")
        self.kept = [Checkpoint.from_doc(c) for c in progress.get("kept", [])]
        Reporter.log("resumed", step=self.step, trained_tokens=self.trained_tokens)
