"""Tokenizer wrapper: `tokenizers` for text <-> ids, streaming detokenization, the chat template."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from zoo.errors import ChatTemplateLimitError, RuntimeModelError

# Limits on a chat template (it comes from the model's publisher): wall time of one render, the size of
# the output and of any string or list it builds, and the length of a range() it may loop over.
TEMPLATE_SECONDS = 2.0
TEMPLATE_MAX_CHARS = 16 << 20
TEMPLATE_MAX_RANGE = 100_000  # jinja2.sandbox.MAX_RANGE
_TEMPLATE_FILE = "<template>"  # the code filename jinja2 gives a template compiled from a string
# a width or precision of 10**7 or more, or one taken from an argument: in a %-format, and in a str.format spec
_BIG_PERCENT = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{8,}|\d*\.(?:\*|\d{8,}))")
_BIG_BRACES = re.compile(r"\{[^{}]*:[^{}]*(?:\d{8,}|\{)")


class Tokenizer:
    """A `tokenizers` tokenizer plus the model's BOS/EOS policy and chat template (config["tokenizer"])."""

    def __init__(self, tokenizer_json: bytes | str, info: dict | None = None) -> None:
        try:
            self._tok = HFTokenizer.from_str(tokenizer_json.decode() if isinstance(tokenizer_json, bytes) else tokenizer_json)
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise RuntimeModelError(f"tokenizer.json cannot be loaded ({err})") from None
        info = info or {}
        self.bos_id: int | None = info.get("bos_token_id")
        self.add_bos: bool = bool(info.get("add_bos")) and self.bos_id is not None
        self.eos_ids: set[int] = set(info.get("eos_token_ids") or [])
        self.chat_template: str | None = info.get("chat_template")
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_artifact(cls, path: Path, config: dict) -> "Tokenizer":
        tj = Path(path) / "tokenizer.json"
        if not tj.is_file():
            raise RuntimeModelError(f"{path}: no tokenizer.json in the artifact")
        return cls(tj.read_bytes(), config.get("tokenizer"))

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text` (special tokens written in the text, e.g. <|im_start|>, are parsed)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for a chat history, with the model's template (plain concatenation without one)."""
        if not self.chat_template:
            return "".join(m["content"] + "\n" for m in messages)
        from jinja2.exceptions import TemplateError

        env = _bounded_sandbox()
        try:
            template = env.from_string(self.chat_template)
            bos = self._tok.id_to_token(self.bos_id) if self.bos_id is not None else ""
            eos = self._tok.id_to_token(min(self.eos_ids)) if self.eos_ids else ""
            return _render_bounded(template, dict(messages=messages, add_generation_prompt=add_generation_prompt,
                                                  bos_token=bos or "", eos_token=eos or ""))
        except ChatTemplateLimitError:
            raise
        except (TemplateError, ArithmeticError, MemoryError, RecursionError) as err:
            raise RuntimeModelError(f"the model's chat template failed: {err.__class__.__name__}: {err}"[:300]) from None


def _too_big(length: int) -> None:
    if length > TEMPLATE_MAX_CHARS:
        raise ChatTemplateLimitError(f"the model's chat template builds {length} items, more than the limit "
                                     f"of {TEMPLATE_MAX_CHARS}")


def _bounded_sandbox():
    """jinja2's immutable sandbox with sizes checked before `*`, `**`, `%`, format widths and a few filters
    allocate, and range() limited to TEMPLATE_MAX_RANGE items."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%"})

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                        _too_big(len(seq) * n)
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                _too_big(right * max(abs(left).bit_length(), 1) // 8)  # bytes of the result
            elif operator == "%" and isinstance(left, str) and _BIG_PERCENT.search(left):
                raise ChatTemplateLimitError("the model's chat template formats with a width beyond the limit")
            return super().call_binop(context, operator, left, right)

        def wrap_str_format(self, value):
            wrapped = super().wrap_str_format(value)
            if wrapped is not None and _BIG_BRACES.search(value.__self__):
                raise ChatTemplateLimitError("the model's chat template formats with a width beyond the limit")
            return wrapped

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def bounded_range(*args: int) -> range:
        numbers = range(*args)
        if len(numbers) > TEMPLATE_MAX_RANGE:
            raise ChatTemplateLimitError(f"the model's chat template asks for range() of {len(numbers)} items, "
                                         f"more than the limit of {TEMPLATE_MAX_RANGE}")
        return numbers

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["range"] = bounded_range
    for name, width_at in (("center", 1), ("indent", 1)):
        env.filters[name] = _width_checked(env.filters[name], width_at)
    do_replace, do_format = env.filters["replace"], env.filters["format"]

    def bounded_replace(eval_ctx, s, old, new, count=None):
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
            _too_big(len(s) + (s.count(old) if old else len(s) + 1) * max(len(new) - len(old), 0))
        return do_replace(eval_ctx, s, old, new, count)

    def bounded_format(value, *args, **kwargs):
        if isinstance(value, str) and _BIG_PERCENT.search(value):
            raise ChatTemplateLimitError("the model's chat template formats with a width beyond the limit")
        return do_format(value, *args, **kwargs)

    bounded_replace.jinja_pass_arg = do_replace.jinja_pass_arg  # type: ignore[attr-defined]
    env.filters["replace"], env.filters["format"] = bounded_replace, bounded_format
    return env


def _width_checked(filter_func, width_at: int):
    """A filter whose argument at `width_at` is a width: refused beyond TEMPLATE_MAX_CHARS before it allocates."""
    def checked(*args, **kwargs):
        width = args[width_at] if len(args) > width_at else kwargs.get("width", 0)
        if isinstance(width, int):
            _too_big(width)
        return filter_func(*args, **kwargs)
    return checked


def _render_bounded(template, context: dict) -> str:
    """Render within TEMPLATE_SECONDS and TEMPLATE_MAX_CHARS: the output is taken chunk by chunk, and a trace
    function on the template's own frames checks the clock at every line (loops included)."""
    deadline = time.monotonic() + TEMPLATE_SECONDS

    def check_clock(frame, event, arg):
        if time.monotonic() > deadline:
            raise ChatTemplateLimitError(f"the model's chat template ran longer than {TEMPLATE_SECONDS:g} s")
        return check_clock

    def trace_templates(frame, event, arg):
        return check_clock if frame.f_code.co_filename == _TEMPLATE_FILE else None

    previous = sys.gettrace()
    sys.settrace(trace_templates)
    try:
        out, size = [], 0
        for chunk in template.generate(**context):
            size += len(chunk)
            _too_big(size)
            out.append(chunk)
        return "".join(out)
    finally:
        sys.settrace(previous)


class StreamDecoder:
    """Turns a growing id sequence into text increments without splitting UTF-8 characters.

    Decodes only a short window (the last printed tokens plus the new ones), so streaming stays
    O(1) a token while merges across token boundaries (byte-level BPE) come out right.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # tokens already turned into text

    def push(self, token: int) -> str:
        """Add one token; return the new printable text (empty while a character is incomplete)."""
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]
