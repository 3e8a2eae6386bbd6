"""Prefill/decode throughput of a loaded model (what `zoo bench` and bench/runtime.py report)."""

from __future__ import annotations

import time

import numpy as np

from zoo.rss import peak_rss_mb

from .model import Model

_TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
         "combined movable metal type, oil-based inks and a wooden press adapted from wine making. ")


def prompt_ids(tokenizer, n: int, vocab_size: int = 1000) -> list[int]:
    """n token ids of English text (repeated as needed); random ids below vocab_size if there is no tokenizer."""
    if tokenizer is None:
        return [int(i) for i in np.random.default_rng(0).integers(0, min(1000, vocab_size), n)]
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(_TEXT, add_bos=False)
    return ids[:n]


def measure(model: Model, tokenizer=None, prompt_tokens: int = 128, gen_tokens: int = 128,
            repeats: int = 1) -> dict:
    """Best-of-`repeats` prefill of `prompt_tokens` and greedy decode of `gen_tokens` (EOS ignored)."""
    ids = prompt_ids(tokenizer, prompt_tokens, model.config["vocab_size"])
    if prompt_tokens + gen_tokens > model.ctx:
        from zoo.errors import RuntimeModelError

        raise RuntimeModelError(f"bench needs {prompt_tokens + gen_tokens} positions, context is {model.ctx}")
    model.forward(ids[:2], 0)  # compile / warm the kernels outside the timings
    model.forward(ids[:1], 0)
    prefill, decode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        logits = model.forward(ids, 0)
        prefill.append(time.perf_counter() - t0)
        token = int(np.argmax(logits))
        t0 = time.perf_counter()
        for i in range(gen_tokens):
            token = int(np.argmax(model.forward([token], prompt_tokens + i)))
        decode.append(time.perf_counter() - t0)
    return {"prefill_tps": prompt_tokens / min(prefill), "decode_tps": gen_tokens / min(decode),
            "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
            "load_s": getattr(model, "load_s", None), "peak_rss_mb": peak_rss_mb()}
