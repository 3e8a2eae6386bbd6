"""Prefill/decode throughput of a loaded model (what `zoo bench` and bench/runtime.py report)."""

from __future__ import annotations

import os
import time
from pathlib import Path

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


def busy_cpus(before: str, after: str) -> float:
    """CPUs busy between two readings of /proc/stat's first line ("cpu user nice system idle iowait ...")."""
    b, a = ([int(v) for v in line.split()[1:]] for line in (before, after))
    total = sum(a) - sum(b)
    idle = sum(a[3:5]) - sum(b[3:5])  # idle + iowait
    cpus = os.cpu_count() or 1
    return 0.0 if total <= 0 else max(0.0, (total - idle) / total * cpus)


def other_load(interval: float = 0.3) -> float | None:
    """CPUs kept busy by other processes now (this one sleeps while it samples); None without /proc/stat."""
    stat = Path("/proc/stat")
    try:
        before = stat.read_text().splitlines()[0]
        time.sleep(interval)
        after = stat.read_text().splitlines()[0]
        return busy_cpus(before, after)
    except (OSError, IndexError, ValueError):
        return None


def busy_warning(busy: float | None, cpus: int, threads: int) -> str | None:
    """A one-line warning when other work occupies CPUs the benchmark's threads need, else None.

    Why: a numba prange decode waits at every kernel for its slowest thread, so one busy core can
    divide a 2-thread decode's speed several times (measured: 20.5 vs 77.9 tok/s quiet)."""
    if busy is None or busy + threads <= cpus + 0.3:
        return None
    return (f"other processes keep {busy:.1f} of {cpus} CPUs busy: with {threads} threads these speeds are "
            f"below this machine's (re-run on a quiet machine, or with --threads {max(1, cpus - round(busy))})")
