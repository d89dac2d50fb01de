"""Token counting speed: what an estimate spends on a dataset, against a bare encode.

The estimate counts a dataset once per (file, model, max_seq_length) with shared.tokenization
(parse each JSONL line, render the chat template, encode, mark the trained tokens). The baseline
is the floor of any exact count: the `tokenizers` library encoding every line of the same file
(in batches of 256, as ours does, so both use every core), with nothing else. Both run on the
same file in the same process, alternating; medians of the rounds are compared. Goal: ours
within 1.5x of the baseline's time.

    make bench-count        # or: python -m bench.token_count [--mb 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = ROOT / ".local" / "model-cache" / "smollm2-135m-instruct"


def dataset(megabytes: float, seed: int = 3) -> bytes:
    """A chat JSONL file of about `megabytes` MB: 1 to 6 turns, sentences of common words."""
    rng = random.Random(seed)
    words = [
        "the",
        "model",
        "learns",
        "a",
        "short",
        "answer",
        "from",
        "each",
        "example",
        "and",
        "we",
        "count",
        "every",
        "token",
        "of",
        "it",
        "before",
        "anything",
        "runs",
        "so",
        "the",
        "price",
        "is",
        "exact",
        "for",
        "what",
        "is",
        "trained",
        "on",
        "the",
        "card",
    ]
    lines, size = [], 0
    while size < megabytes * 1e6:
        messages = []
        for _ in range(rng.randint(1, 6)):
            for role in ("user", "assistant"):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
                messages.append({"role": role, "content": text})
        line = json.dumps({"messages": messages}) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from tokenizers import Tokenizer

    from shared.jsonl_rules import parse_jsonl
    from shared.tokenization import ChatTokenizer

    if not (SMOLLM2 / "tokenizer.json").exists():
        raise SystemExit(f"no tokenizer at {SMOLLM2}: run `make demo` once (it converts SmolLM2)")
    ours = ChatTokenizer.from_dir(SMOLLM2)
    bare = Tokenizer.from_file(str(SMOLLM2 / "tokenizer.json"))
    data = dataset(args.mb)
    mb = len(data) / 1e6
    assert ours._turn_markers is not None, "the one-render path should apply to SmolLM2"

    lines = [line.decode() for line in data.splitlines()]

    def baseline() -> float:
        t = time.perf_counter()
        for start in range(0, len(lines), 256):
            bare.encode_batch(lines[start : start + 256], add_special_tokens=False)
        return time.perf_counter() - t

    def count() -> float:
        t = time.perf_counter()
        ours.count((line.record for line in parse_jsonl(data)), max_seq_length=2048)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for _ in range(args.rounds):
        times["baseline"].append(baseline())
        times["ours"].append(count())
    base, mine = statistics.median(times["baseline"]), statistics.median(times["ours"])
    print(f"file: {mb:.1f} MB of chat JSONL, SmolLM2 tokenizer, {args.rounds} rounds (medians)")
    print(f"  bare tokenizers encode_batch of the lines: {mb / base:6.2f} MB/s")
    print(f"  our count (parse, template, encode, targets): {mb / mine:6.2f} MB/s")
    print(f"  ours / baseline time: {mine / base:.2f}x (goal <= 1.5x)")
    print(
        f"  at this speed the largest dataset allowed (100 MB) counts in {100 / (mb / mine):.0f} s"
    )


if __name__ == "__main__":
    main()
