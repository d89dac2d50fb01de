"""Tiny random-weight models (Llama, or any catalog family) and synthetic chat data, built
offline in seconds.

For fast tests and the throughput benchmark: no model hub is reachable, and the trainer must be
exercised on something small. The folder it writes has the same layout as a model-store folder
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json, chat_template.jinja,
manifest.json), so everything downstream loads it exactly like a real model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from shared.contract import write_manifest

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "pe",
    "da",
    "qu",
    "zi",
    "fa",
    "ho",
    "ja",
    "wu",
    "ye",
    "xo",
    "bi",
    "gu",
]


def words(n: int, seed: int = 0, max_syllables: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, max_syllables)))
        for _ in range(n)
    ]


VOCAB_WORDS = words(600)


def sentence(rng: random.Random, n_words: int) -> str:
    text = " ".join(rng.choice(VOCAB_WORDS) for _ in range(n_words))
    return text[:1].upper() + text[1:] + "."


def chat_records(
    n: int, seed: int, mean_words: float = 60.0, sigma: float = 0.8
) -> list[dict[str, Any]]:
    """Chat records whose lengths follow a log-normal law (like real instruction data: many
    short, a long tail). The assistant echoes a deterministic transform of the user's words, so
    there is something learnable."""
    import math

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        n_user = max(3, int(rng.lognormvariate(math.log(mean_words * 0.5), sigma)))
        n_asst = max(3, int(rng.lognormvariate(math.log(mean_words * 0.5), sigma)))
        user = sentence(rng, n_user)
        first = user.split()[0].lower()
        asst = f"About {first}: " + sentence(rng, n_asst)
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": asst}]
        if rng.random() < 0.3:
            msgs.insert(0, {"role": "system", "content": sentence(rng, rng.randint(4, 12))})
        out.append({"messages": msgs})
    return out


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def build_tokenizer(folder: Path, vocab_size: int = 8192) -> None:
    """A byte-level BPE tokenizer with ChatML specials. Its corpus has many more words than the
    synthetic datasets use, so the vocabulary is of a realistic size for the model's width (8192
    for hidden 256: 32x, about Llama 3 8B's 128k for 4096), like a real tokenizer that a dataset
    uses only part of."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(1)
    extra = words(20000, seed=5, max_syllables=4)
    corpus = [sentence(rng, rng.randint(5, 40)) for _ in range(3000)]
    corpus += [" ".join(rng.choice(extra) for _ in range(30)) for _ in range(6000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": 4096,
                "tokenizer_class": "PreTrainedTokenizerFast",
            },
            indent=2,
        )
    )
    (folder / "chat_template.jinja").write_text(CHATML)


# A tiny config of each catalog architecture with the family's own features switched on, sized
# so that each feature changes the loss: Gemma 2's caps are far below the real 50 / 30 (tiny
# random weights give small logits), its window is shorter than the test examples, and its
# query_pre_attn_scalar is not head_dim; Mistral v0.3 has no window; Qwen2 has q/k/v biases.
FAMILIES = ("llama", "mistral", "qwen2", "gemma2")


def family_config(family: str, hidden: int, layers: int, heads: int, **common: Any) -> Any:
    from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

    shape: dict[str, Any] = dict(
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=4096,
    )
    if family == "llama":
        return LlamaConfig(**{**shape, "num_key_value_heads": heads, **common})
    if family == "mistral":
        return MistralConfig(
            **{**shape, "num_key_value_heads": heads // 2, "sliding_window": None, **common}
        )
    if family == "qwen2":
        return Qwen2Config(**{**shape, "num_key_value_heads": heads // 2, **common})
    if family == "gemma2":
        gemma = {
            "num_key_value_heads": heads // 2,
            "head_dim": hidden // heads,
            "query_pre_attn_scalar": (hidden // heads) // 4,
            "attn_logit_softcapping": 1.0,
            "final_logit_softcapping": 2.0,
            "sliding_window": 16,
            "initializer_range": 0.1,  # logits and scores large enough for the caps to bite
        }
        return Gemma2Config(**{**shape, **gemma, **common})
    raise ValueError(f"no tiny config for family {family!r}")


def build_tiny_model(
    folder: Path,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    vocab_size: int = 8192,
    seed: int = 0,
    family: str = "llama",
    **config: Any,
) -> Path:
    """Writes a tiny random-weight model of `family` and its tokenizer to `folder`; returns the
    folder."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    build_tokenizer(folder, vocab_size)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    torch.manual_seed(seed)
    common = {
        "vocab_size": tok.get_vocab_size(),
        "bos_token_id": None,
        "eos_token_id": tok.token_to_id("<|im_end|>"),
        "pad_token_id": tok.token_to_id("<|endoftext|>"),
        "tie_word_embeddings": family == "gemma2",  # as the real ones
    }
    cfg = family_config(family, hidden, layers, heads, **{**common, **config})
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(str(folder), safe_serialization=True)
    write_manifest(folder, model_id=f"tiny-{family}", source="random init from a config")
    return folder


if __name__ == "__main__":
    import sys

    print(build_tiny_model(Path(sys.argv[1])))
