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

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 4 << 20  # one record; a longer line is refused rather than read
# Marking assistant turns renders the conversation up to each of them, so a record's work grows
# with its messages squared: these caps bound it (a file's work then grows linearly with its
# records). Well above what chat fine-tuning data holds.
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 200_000


class RecordError(ValueError):
    """A record the trainer cannot train on; the message is meant for the dataset's owner."""


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


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the file
    record: Any


def split_lines(data: bytes) -> list[bytes]:
    """The raw lines of a JSONL file: a UTF-8 byte-order mark dropped, split on newlines (CRLF's
    carriage return is JSON whitespace, so it needs no special case)."""
    if b"\x00" in data[:8192]:
        raise RecordError("line 1: this looks like a binary file, not JSONL text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.split(b"\n")


def parse_line(number: int, raw: bytes) -> Line | None:
    """One raw line parsed; None for a blank line; RecordError naming the line otherwise."""
    if len(raw) > MAX_LINE_BYTES:
        raise RecordError(
            f"line {number}: {len(raw)} bytes; a record may be at most {MAX_LINE_BYTES} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"line {number}: not UTF-8 text (byte {exc.start + 1} of the line); "
            "save the file as UTF-8"
        ) from None
    if not text.strip():
        return None
    try:
        return Line(number, json.loads(text))
    except ValueError as exc:
        raise RecordError(f"line {number}: not valid JSON ({exc})") from None


def parse_jsonl(data: bytes) -> Iterator[Line]:
    """Yields each non-blank line of a JSONL file; the one reader that validation, the estimate
    and the trainer share. Raises RecordError naming the first line it cannot read."""
    for number, raw in enumerate(split_lines(data), start=1):
        line = parse_line(number, raw)
        if line is not None:
            yield line


def record_format(record: Any) -> str:
    """'chat' or 'prompt_completion'; raises RecordError for anything else."""
    if not isinstance(record, dict):
        raise RecordError("each line must be a JSON object")
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    raise RecordError("expected 'messages' (chat) or 'prompt' and 'completion'")


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validates a chat record's messages; returns them as plain role/content dicts."""
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise RecordError(
            f"{len(messages)} messages; a record may hold at most {MAX_MESSAGES}: split the "
            "conversation into several records"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RecordError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, not {_excerpt(role)}"
            )
        if not isinstance(content, str):
            raise RecordError(f"messages[{i}].content must be a string")
        if len(content) > MAX_MESSAGE_CHARS:
            raise RecordError(
                f"messages[{i}].content has {len(content)} characters; at most "
                f"{MAX_MESSAGE_CHARS} per message"
            )
        if role == "system" and i != 0:
            raise RecordError(f"messages[{i}]: a system message may only come first")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise RecordError("a chat record needs at least one assistant message to train on")
    return out


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
        fmt = record_format(record)
        if fmt == "chat":
            text, spans = self._chat_text(check_messages(record["messages"]))
        else:
            prompt, completion = record["prompt"], record["completion"]
            if not isinstance(prompt, str) or not isinstance(completion, str):
                raise RecordError("'prompt' and 'completion' must be strings")
            if not completion:
                raise RecordError("'completion' is empty: there is nothing to train on")
            text = self.bos_token + prompt + completion + self.eos_token
            spans = [(len(self.bos_token) + len(prompt), len(text))]
        enc = self._tok.encode(text, add_special_tokens=False)
        ids = enc.ids[:max_seq_length]
        trained = _in_spans([start for start, _ in enc.offsets[: len(ids)]], spans)
        return EncodedExample(ids, trained, truncated=len(enc.ids) > max_seq_length)

    def _chat_text(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of its assistant turns.

        A turn's span runs from the end of the conversation-so-far rendered with a generation
        prompt to the end of the conversation including that turn, which takes in the template's
        end-of-turn marker. Templates where a turn is not a pure extension of the text before it
        are refused rather than mis-labelled.
        """
        full = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else ""
            through = self.render(messages[: i + 1])
            if not (through.startswith(before) and full.startswith(through)):
                raise RecordError("this model's chat template cannot mark assistant turns here")
            spans.append((len(before), len(through)))
        return full, spans

    def count(self, records: Iterable[Any], max_seq_length: int) -> TokenCount:
        """Totals over records, exactly as the trainer will see them."""
        kept = dropped = tokens = trained = truncated = 0
        for record in records:
            ex = self.encode(record, max_seq_length)
            if ex.n_trained == 0:
                dropped += 1
                continue
            kept += 1
            tokens += ex.n_tokens
            trained += ex.n_trained
            truncated += ex.truncated
        return TokenCount(kept, dropped, tokens, trained, truncated)


def _excerpt(value: Any, limit: int = 40) -> str:
    """A short quote of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
