"""Tokenization of training records: the one function the price estimate and the trainer share.

`ChatTokenizer.encode(record)` turns one dataset record into token ids plus a mask of the tokens
the model is trained to predict. The estimate bills exactly the tokens this returns, and the
trainer trains on exactly these tokens, so the price and the work cannot disagree.

- Chat records (`{"messages": [...]}`) are rendered with the model's own chat template; only the
  assistant turns are trained (each turn's text and its end-of-turn marker).
- Prompt/completion records are plain text `prompt + completion + eos`; only the completion and
  the eos token are trained.
- A record longer than `max_seq_length` tokens is truncated to its first `max_seq_length` tokens;
  a record left with nothing to train is dropped (and not billed).

Depends only on `tokenizers` and `jinja2`, never on transformers, so functions stay light.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

# The file rules (what a record must be) live in shared.jsonl_rules, which the CLI ships too.
from shared.jsonl_rules import RecordError, check_messages, record_format

# A template whose turns cannot be found in one render is rendered up to each assistant turn, so
# a record's work grows with its messages squared: these caps bound it (a file's work then grows
# linearly with its records). Well above what chat fine-tuning data holds.
COUNT_CHUNK = 256  # records encoded together when counting a file


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    # trained[i] is True when token i is a training target (predicted from the tokens before it).
    trained: list[bool]
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)


class TokenCount(NamedTuple):
    """A file's totals for one tokenizer and max_seq_length: what one epoch trains and bills."""

    examples: int  # records kept
    dropped: int  # records with nothing left to train after truncation
    tokens: int  # tokens of the kept records: what one epoch processes and bills
    trained_tokens: int  # of which training targets
    truncated: int  # records cut at max_seq_length


class ChatTokenizer:
    """A model's tokenizer and chat template, loaded from its model-store folder."""

    def __init__(
        self, tokenizer_json: str, chat_template: str, special: dict[str, str | None]
    ) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        self._template_source = chat_template
        self.bos_token = special.get("bos_token") or ""
        self.eos_token = special.get("eos_token") or ""
        # Names what counts depend on: models that share a tokenizer and template share counts.
        self.fingerprint = hashlib.sha256(
            "\0".join((tokenizer_json, chat_template, self.bos_token, self.eos_token)).encode()
        ).hexdigest()[:32]
        eos_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None
        if eos_id is None:
            raise ValueError(f"eos token {self.eos_token!r} is not in the vocabulary")
        self.eos_id: int = eos_id

    @classmethod
    def from_dir(cls, folder: str | Path) -> ChatTokenizer:
        """Reads tokenizer.json, tokenizer_config.json and the chat template of a model folder."""
        folder = Path(folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        template_file = folder / "chat_template.jinja"
        template = (
            template_file.read_text() if template_file.exists() else config.get("chat_template")
        )
        if not template:
            raise ValueError(f"{folder} has no chat template")
        special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token")}
        return cls((folder / "tokenizer.json").read_text(), template, special)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @cached_property
    def _template(self) -> Any:
        from jinja2 import ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise RecordError(f"the chat template refused this record: {message}")

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols]
        )
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self._template_source)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        text: str = self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        return text

    def encode(self, record: Any, max_seq_length: int) -> EncodedExample:
        """Token ids and training targets of one record (see the module docstring)."""
        text, spans = self._text_and_spans(record)
        return _example(self._tok.encode(text, add_special_tokens=False), spans, max_seq_length)

    @cached_property
    def _control_text(self) -> re.Pattern[str] | None:
        """Matches the text of any of the tokenizer's special tokens (turn markers, end of
        sequence, reserved tokens), or None when it has none."""
        specials = sorted(
            {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special},
            key=len,
            reverse=True,
        )
        return re.compile("|".join(map(re.escape, specials))) if specials else None

    def _refuse_control_text(self, field: str, text: str) -> None:
        """User text may not spell a special token. The tokenizer would read it as the token
        itself, not as text: a `<|im_end|>` inside an answer would end the turn there and train
        the model to stop mid-answer (or, in a prompt, to forge turns). So it is refused, with
        the field named, rather than trained on silently; this also keeps every record on the
        one-render path (`_find_spans`)."""
        found = self._control_text.search(text) if self._control_text else None
        if found:
            raise RecordError(
                f"{field} contains {found.group()!r}, a control token of this model's "
                "tokenizer; as text it would be read as that token (ending or forging a turn). "
                "Remove it: the template adds every control token itself"
            )

    def _text_and_spans(self, record: Any) -> tuple[str, list[tuple[int, int]]]:
        """The record's text as the model sees it, and the character spans it trains on."""
        if record_format(record) == "chat":
            messages = check_messages(record["messages"])
            for i, m in enumerate(messages):
                self._refuse_control_text(f"messages[{i}].content", m["content"])
            return self._chat_text(messages)
        prompt, completion = record["prompt"], record["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise RecordError("'prompt' and 'completion' must be strings")
        if not completion:
            raise RecordError("'completion' is empty: there is nothing to train on")
        self._refuse_control_text("'prompt'", prompt)
        self._refuse_control_text("'completion'", completion)
        text = self.bos_token + prompt + completion + self.eos_token
        return text, [(len(self.bos_token) + len(prompt), len(text))]

    def _chat_text(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of its assistant turns.

        A turn's span runs from the end of the conversation-so-far rendered with a generation
        prompt to the end of the conversation including that turn, which takes in the template's
        end-of-turn marker. One render marks them all when the template's turns are plain (the
        turn markers learned once per tokenizer, checked around every turn); otherwise each turn
        is rendered on its own (`_spans_by_render`, exact, work growing with turns squared).
        """
        full = self.render(messages)
        spans = self._spans_in_one_render(full, messages)
        if spans is None:
            spans = self._spans_by_render(full, messages)
        return full, spans

    def _spans_by_render(self, full: str, messages: list[dict[str, str]]) -> list[tuple[int, int]]:
        """Spans by rendering the conversation up to each assistant turn: the definition.
        Templates where a turn is not a pure extension of the text before it are refused
        rather than mis-labelled."""
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else ""
            through = self.render(messages[: i + 1])
            if not (through.startswith(before) and full.startswith(through)):
                raise RecordError("this model's chat template cannot mark assistant turns here")
            spans.append((len(before), len(through)))
        return spans

    @cached_property
    def _turn_markers(self) -> tuple[str, str] | None:
        """(what precedes an assistant turn's text, what follows it), when one render of these
        probe conversations marks exactly the spans `_spans_by_render` marks; else None."""
        probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
        try:
            [(start, end)] = self._spans_by_render(self.render(probe), probe)
            through = self.render(probe)
        except (RecordError, ValueError):
            return None
        plain = self.render(probe[:1])
        prompted = self.render(probe[:1], add_generation_prompt=True)
        if through[start : start + 1] != "A" or not prompted.startswith(plain):
            return None
        markers = (prompted[len(plain) :], through[start + 1 : end])
        if not markers[0] or not markers[1].strip():
            return None
        for conversation in _PROBES:
            full = self.render(conversation)
            try:
                exact = self._spans_by_render(full, conversation)
            except RecordError:
                return None
            if _find_spans(full, conversation, markers) != exact:
                return None
        return markers

    def _spans_in_one_render(
        self, full: str, messages: list[dict[str, str]]
    ) -> list[tuple[int, int]] | None:
        markers = self._turn_markers
        return None if markers is None else _find_spans(full, messages, markers)

    def count(self, records: Iterable[Any], max_seq_length: int) -> TokenCount:
        """Totals over records, exactly as the trainer will see them (`encode` of each)."""
        return self.count_records(enumerate(records, start=1)).total(max_seq_length)

    def count_records(self, lines: Iterable[tuple[int, Any]]) -> RecordCounts:
        """Each record's tokens and trained ranges (see RecordCounts), from (line number,
        record) pairs; a record the template or the rules refuse raises RecordError naming its
        line. The texts are encoded a chunk at a time with the library's batch encoder, which
        spreads the work over the machine's cores."""
        counts = RecordCounts()
        it = iter(lines)
        while numbered := list(islice(it, COUNT_CHUNK)):
            chunk = []
            for number, record in numbered:
                try:
                    chunk.append(self._text_and_spans(record))
                except RecordError as exc:
                    raise RecordError(f"line {number}: {exc}") from None
            encodings = self._tok.encode_batch([t for t, _ in chunk], add_special_tokens=False)
            for (_, spans), enc in zip(chunk, encodings, strict=True):
                offsets = enc.offsets
                counts.add(len(offsets), _token_spans(offsets, spans))
        return counts


class RecordCounts:
    """One file counted once for one tokenizer: each record's token count and, in token
    positions, the ranges it trains on. Every max_seq_length and every validation split
    derives from these (`total`) without encoding again, so an estimate with a new seed, split
    or length costs arithmetic, not tokenization. Stored compactly (`to_bytes`): per record,
    its length, its number of ranges, then each range's start and end."""

    def __init__(self, flat: array[int] | None = None) -> None:
        self._flat = flat if flat is not None else array("I")
        self._starts: list[int] = []  # where each record begins in _flat
        i = 0
        while i < len(self._flat):
            self._starts.append(i)
            i += 2 + 2 * self._flat[i + 1]

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, n_tokens: int, spans: list[tuple[int, int]]) -> None:
        self._starts.append(len(self._flat))
        self._flat.extend((n_tokens, len(spans)))
        for start, end in spans:
            self._flat.extend((start, end))

    def total(self, max_seq_length: int, records: Iterable[int] | None = None) -> TokenCount:
        """The totals of `records` (0-based record numbers; all by default) cut at
        max_seq_length: exactly what `ChatTokenizer.count` of those records gives."""
        flat, msl = self._flat, max_seq_length
        kept = dropped = tokens = trained = truncated = 0
        for r in range(len(self)) if records is None else records:
            at = self._starts[r]
            n, k = flat[at], flat[at + 1]
            ranges = flat[at + 2 : at + 2 + 2 * k]
            n_trained = sum(
                min(e, msl) - min(s, msl) for s, e in zip(ranges[::2], ranges[1::2], strict=True)
            )
            if n_trained == 0:
                dropped += 1
                continue
            kept += 1
            tokens += min(n, msl)
            trained += n_trained
            truncated += n > msl
        return TokenCount(kept, dropped, tokens, trained, truncated)

    def to_bytes(self) -> bytes:
        return zlib.compress(self._flat.tobytes(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> RecordCounts:
        """The counts `to_bytes` stored; ValueError when the bytes are not such counts."""
        try:
            flat = array("I", zlib.decompress(data))
            counts = cls(flat)
        except (zlib.error, ValueError, IndexError) as exc:
            raise ValueError(f"not stored record counts: {exc}") from None
        if counts._starts and counts._starts[-1] + 2 + 2 * flat[counts._starts[-1] + 1] != len(
            flat
        ):
            raise ValueError("not stored record counts: truncated")
        return counts


def _token_spans(
    offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The token positions [start, end) of each character span: a token is trained when its
    start lies in a span; token starts never decrease, so each span is found by bisection.
    Cutting at any length L then trains min(end, L) - min(start, L) of a range's tokens."""
    out = []
    for start, end in spans:
        first, last = bisect_left(offsets, (start,)), bisect_left(offsets, (end,))
        if last > first:
            out.append((first, last))
    return out


def _example(enc: Any, spans: list[tuple[int, int]], max_seq_length: int) -> EncodedExample:
    ids = enc.ids[:max_seq_length]
    trained = _in_spans([start for start, _ in enc.offsets[: len(ids)]], spans)
    return EncodedExample(ids, trained, truncated=len(enc.ids) > max_seq_length)


_PROBES = (
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Hi\nagain"},
        {"role": "assistant", "content": " spaced  "},
    ],
    [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y"},
        {"role": "assistant", "content": "z"},
    ],
)


def _find_spans(
    full: str, messages: list[dict[str, str]], markers: tuple[str, str]
) -> list[tuple[int, int]] | None:
    """The assistant spans of one rendered conversation found in a single left-to-right pass:
    each message's text must appear in order, each assistant text right after the generation
    prompt's tail and right before the end-of-turn marker. None when the rendered text does not
    look like that (the caller then renders turn by turn)."""
    lead, tail = markers
    spans = []
    cursor = 0
    for m in messages:
        content = m["content"]
        if lead.strip() in content or tail.strip() in content:  # text that looks like markers
            return None
        if m["role"] == "assistant":  # found with its lead, so never inside the template's text
            at = full.find(lead + content, cursor) + len(lead)
            if at < len(lead) or not content:
                return None
        else:
            at = full.find(content, cursor)
            if at < 0:
                return None
        end = at + len(content)
        if m["role"] == "assistant":
            if not full.startswith(tail, end):
                return None
            end += len(tail)
            spans.append((at, end))
        cursor = end
    return spans


def _in_spans(starts: list[int], spans: list[tuple[int, int]]) -> list[bool]:
    """For each token start (ascending), whether it lies in one of `spans` (ascending, disjoint):
    one pass over both, not tokens times spans."""
    out = []
    j = 0
    for start in starts:
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        out.append(j < len(spans) and spans[j][0] <= start)
    return out


def _token_text(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


# --- validation split --------------------------------------------------------------------------

MAX_VALIDATION_SPLIT = 0.2
DEFAULT_VALIDATION_SPLIT = 0.05
DEFAULT_SPLIT_MIN_RECORDS = 200  # below this the default holds nothing out: too little to train


def default_split(n_records: int) -> float:
    """The validation split a job gets when it asks for none: a few percent, only when the file
    has enough records that losing them does not hurt the training."""
    return DEFAULT_VALIDATION_SPLIT if n_records >= DEFAULT_SPLIT_MIN_RECORDS else 0.0


def held_out(n_records: int, fraction: float, seed: int) -> frozenset[int]:
    """The record numbers (0-based, file order, every record) a split of `fraction` holds out for
    validation: the first round(fraction * n) records in an order fixed by `seed`, at least one and
    never all. The estimate counts the other records, and the trainer trains exactly those, so
    the held-out records are never billed. sha256 rather than `random`: the order must be the
    same in every Python the API and the trainer run."""
    if fraction <= 0 or n_records < 2:
        return frozenset()
    k = min(n_records - 1, max(1, round(fraction * n_records)))

    def rank(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:{i}".encode()).digest()

    return frozenset(sorted(range(n_records), key=rank)[:k])
