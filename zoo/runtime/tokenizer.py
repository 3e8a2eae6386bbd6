"""Tokenizer wrapper: `tokenizers` for text <-> ids, streaming detokenization, the chat template."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from zoo.errors import RuntimeModelError


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
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            template = env.from_string(self.chat_template)
            bos = self._tok.id_to_token(self.bos_id) if self.bos_id is not None else ""
            eos = self._tok.id_to_token(min(self.eos_ids)) if self.eos_ids else ""
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=bos or "", eos_token=eos or "")
        except TemplateError as err:
            raise RuntimeModelError(f"the model's chat template failed: {err}") from None


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
