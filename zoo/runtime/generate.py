"""The generation loop: prefill the prompt, then decode token by token with a sampler, streaming text.

Stops at an EOS token, a stop string or max_tokens; refuses up front when prompt + max_tokens would
not fit in the context. max_tokens=None runs until EOS or the context is full (finish_reason
"context"). Ctrl-C (KeyboardInterrupt) between tokens ends generation cleanly with finish_reason
"interrupted".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from zoo.errors import RuntimeModelError

from .model import Model
from .sampling import Sampler, SamplingParams
from .tokenizer import StreamDecoder, Tokenizer


@dataclass
class Result:
    """What a generation produced and how fast."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str = "length"  # length | context (max_tokens=None filled the context) | eos | stop | interrupted
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        """Tokens/s over the decode steps (the first generated token comes from the prefill)."""
        steps = max(0, self.generated_tokens - 1)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


class Session:
    """A model + tokenizer with a KV cache holding `history` token ids (positions 0..len-1)."""

    def __init__(self, model: Model, tokenizer: Tokenizer) -> None:
        self.model, self.tok = model, tokenizer
        self.history: list[int] = []  # tokens whose K/V are in the cache, positions 0..len-1
        self.pending: list[int] = []  # the last sampled token, not yet run (it opens the next turn)

    def reset(self) -> None:
        self.history, self.pending = [], []

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Prompt ids for a chat turn: the template renders the whole history, and the cache is rewound
        to the longest prefix it shares with what it already holds, so only new tokens are computed."""
        full = self.tok.encode(self.tok.render_chat(messages, add_generation_prompt=True))
        cached = self.history + self.pending
        same = 0
        for a, b in zip(cached, full):
            if a != b:
                break
            same += 1
        same = min(same, len(full) - 1)  # always run at least one token to get logits
        kept = min(same, len(self.history))  # tokens whose K/V really are in the cache
        self.history, self.pending = cached[:kept], cached[kept:same]
        return full[same:]

    def generate(self, prompt_ids: list[int], max_tokens: int | None = 256, params: SamplingParams | None = None,
                 stop: list[str] | None = None, on_text: Callable[[str], None] | None = None) -> Result:
        """Append prompt_ids to the history, generate (max_tokens=None: until EOS or the context is full);
        `on_text` receives text as it is decoded."""
        result = Result(prompt_tokens=len(prompt_ids))
        for piece in self.stream(prompt_ids, max_tokens, params, stop, result):
            if on_text:
                on_text(piece)
        return result

    def stream(self, prompt_ids: list[int], max_tokens: int | None, params: SamplingParams | None,
               stop: list[str] | None, result: Result) -> Iterator[str]:
        """Yield text pieces; fills `result` as it goes (also when interrupted). max_tokens=None: the rest
        of the context, ending with finish_reason "context"."""
        if not prompt_ids:
            raise RuntimeModelError("empty prompt: nothing to generate from")
        if max_tokens is not None and max_tokens < 1:
            raise RuntimeModelError(f"max tokens must be >= 1, got {max_tokens}")
        prompt_ids = self.pending + list(prompt_ids)
        fill = max_tokens is None  # until EOS or the context is full
        if fill:
            max_tokens = self.model.ctx - len(self.history) - len(prompt_ids)
            if max_tokens < 1:
                raise RuntimeModelError(
                    f"context full: {len(self.history)} history + {len(prompt_ids)} prompt tokens leave no room "
                    f"for an answer in the context of {self.model.ctx} tokens")
        need = len(self.history) + len(prompt_ids) + max_tokens
        if need > self.model.ctx:
            raise RuntimeModelError(
                f"context length exceeded: {len(self.history)} history + {len(prompt_ids)} prompt + "
                f"{max_tokens} new tokens = {need} > {self.model.ctx}; shorten the prompt or lower --max-tokens")
        sampler = Sampler(params or SamplingParams())
        answer = Answer(self.tok, max_tokens, stop, result, fill)
        t1 = None
        try:
            t0 = time.perf_counter()
            self.pending = []
            logits = self.model.forward(prompt_ids, len(self.history))
            self.history.extend(prompt_ids)
            result.prefill_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            while True:
                token = sampler(logits, self.history)
                piece = answer.push(token)
                if answer.done:
                    self.pending = [token]  # the turn's end (EOS, or the last token) opens the next turn
                if piece:
                    yield piece
                if answer.done:
                    break
                logits = self.model.forward([token], len(self.history))
                self.history.append(token)
        except KeyboardInterrupt:  # history holds exactly the tokens whose K/V are complete
            result.finish_reason = "interrupted"
        finally:  # also when the consumer closes the stream early: the time spent decoding is reported
            if t1 is not None:
                result.decode_s = time.perf_counter() - t1
        piece = answer.flush()  # what was held back for stop strings
        if piece:
            yield piece


class Answer:
    """One sequence's answer as its tokens arrive: ends it at EOS, a stop string or max_tokens, and hands
    out the text that cannot be the start of a stop string (the rest is held back until it is decided).

    Shared by Session.stream and zoo.serve's batch scheduler, so a batched answer ends exactly as `zoo run`'s.
    """

    def __init__(self, tok: Tokenizer, max_tokens: int, stop: list[str] | None, result: Result,
                 fill: bool = False) -> None:
        self.tok, self.max_tokens, self.result, self.fill = tok, max_tokens, result, fill
        self.stops = [s for s in (stop or []) if s]
        self.decoder = StreamDecoder(tok)
        self.text = ""  # everything decoded so far; result.text is the part already handed out
        self.done = False

    def push(self, token: int) -> str:
        """Take the next sampled token; return the text now safe to hand out ('' if none). Sets `done` and
        result.finish_reason when the answer ends (eos | stop | length | context)."""
        r = self.result
        if token in self.tok.eos_ids:
            r.finish_reason, self.done = "eos", True
            return self.flush()
        r.tokens.append(token)
        self.text += self.decoder.push(token)
        cut = _first_stop(self.text, self.stops)
        if cut is not None:
            self.text, r.finish_reason, self.done = self.text[:cut], "stop", True
            return self.flush()
        if len(r.tokens) >= self.max_tokens:
            r.finish_reason, self.done = ("context" if self.fill else "length"), True
            return self.flush()
        return self._hand_out(len(self.text) - _held_back(self.text, self.stops))

    def flush(self) -> str:
        """All text not yet handed out (at the end: nothing is held back any more)."""
        return self._hand_out(len(self.text))

    def _hand_out(self, end: int) -> str:
        start = len(self.result.text)
        if end <= start:
            return ""
        self.result.text = self.text[:end]
        return self.text[start:end]


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop string in text, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
