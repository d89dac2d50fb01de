"""Dataset reading, tokenization (the shared function) and packing into micro-batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.jsonl_rules import RecordError, parse_jsonl
from shared.tokenization import ChatTokenizer, EncodedExample, held_out

IGNORE = -100


class DataError(Exception):
    """The dataset cannot be trained on; the message names the line and is meant for the user."""


def read_examples(
    path: Path,
    tok: ChatTokenizer,
    max_seq_length: int,
    split: float = 0.0,
    seed: int = 0,
    what: str = "the dataset",
) -> tuple[list[EncodedExample], list[EncodedExample]]:
    """The trainable examples of a JSONL file, in file order, read by the same parser the dataset
    validation uses (records with nothing left to train after truncation are dropped, exactly as
    the price estimate counts them): (training examples, the held-out ones of a `split`)."""
    encoded: list[EncodedExample] = []  # one per record, in order: the first bad line is named
    try:
        for line in parse_jsonl(path.read_bytes()):
            try:
                encoded.append(tok.encode(line.record, max_seq_length))
            except RecordError as exc:
                raise DataError(f"{what}, line {line.number}: {exc}") from None
    except RecordError as exc:
        raise DataError(f"{what}: {exc}") from None
    hold = held_out(len(encoded), split, seed)
    train = [ex for i, ex in enumerate(encoded) if ex.n_trained and i not in hold]
    held = [ex for i, ex in enumerate(encoded) if ex.n_trained and i in hold]
    if not train:
        raise DataError(f"{what} has no example with anything to train on")
    return train, held


@dataclass
class Pack:
    """Examples concatenated into one row, with the boundaries varlen attention needs."""

    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T], restarting at 0 for each example
    targets: torch.Tensor  # [T]; targets[t] = token t+1 if that token is trained, else IGNORE
    cu_seq_lens: torch.Tensor  # [n + 1] example start offsets, int32
    n_tokens: int
    n_trained: int


def make_pack(examples: list[EncodedExample]) -> Pack:
    ids: list[int] = []
    pos: list[int] = []
    targets: list[int] = []
    cu = [0]
    for ex in examples:
        ids.extend(ex.input_ids)
        pos.extend(range(ex.n_tokens))
        # Position t predicts token t+1 of the same example; the last position predicts nothing,
        # so no example ever learns from (or predicts) its neighbour in the pack.
        targets.extend(
            ex.input_ids[t + 1] if ex.trained[t + 1] else IGNORE for t in range(ex.n_tokens - 1)
        )
        targets.append(IGNORE)
        cu.append(len(ids))
    t = torch.tensor(targets)
    return Pack(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([pos]),
        targets=t,
        cu_seq_lens=torch.tensor(cu, dtype=torch.int32),
        n_tokens=len(ids),
        n_trained=int((t != IGNORE).sum()),
    )


def pack_step(examples: list[EncodedExample], max_tokens: int) -> list[Pack]:
    """Packs one optimizer step's examples into as few rows of <= max_tokens as first-fit
    decreasing finds (an example longer than max_tokens gets a row of its own)."""
    rows: list[list[EncodedExample]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -e.n_tokens):
        for i, free in enumerate(room):
            if ex.n_tokens <= free:
                rows[i].append(ex)
                room[i] -= ex.n_tokens
                break
        else:
            rows.append([ex])
            room.append(max_tokens - ex.n_tokens)
    return [make_pack(r) for r in rows]


@dataclass(frozen=True)
class StepPlan:
    """Which examples each optimizer step trains on: a seeded shuffle per epoch, then consecutive
    slices of `batch_size`. Deterministic, so a resumed run continues at exactly its step."""

    n_examples: int
    batch_size: int
    epochs: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_examples / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n_examples, generator=g).tolist()
        return order[k * self.batch_size : (k + 1) * self.batch_size]
