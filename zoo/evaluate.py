"""Perplexity with a written protocol: non-overlapping windows of the tokenized text, every position scored.

Protocol (returned with every result, and what cards record): tokenize the whole text once with the
model's own tokenizer (no BOS added), cut it into consecutive windows of `ctx` tokens (the tail that
does not fill a window is dropped; `max_windows` keeps only the first windows), run each window from
an empty context, and average the cross-entropy of predicting tokens 1..ctx-1 of every window from
the ones before it; perplexity = exp(mean). This is the papers' WikiText-2 protocol (no stride).

The forward pass is the team's dense reference (zoo.runtime.reference), streamed one decoder layer at
a time over all windows, so memory is one layer plus the windows' activations.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import EvaluationError

DATA_DIR = Path(__file__).parent / "data"
CALIBRATION_TEXT = DATA_DIR / "calibration.txt"
EVALUATION_TEXT = DATA_DIR / "evaluation.txt"

Progress = Callable[[str], None]


def read_text(path: str | Path) -> tuple[str, str]:
    """(text, sha256 of the file's bytes); a clear error for a missing or non-UTF-8 file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise EvaluationError(f"{p}: cannot read text ({err.strerror or err})") from None
    try:
        return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    except UnicodeDecodeError:
        raise EvaluationError(f"{p}: not UTF-8 text") from None


def load_tokenizer(tokenizer_json: bytes | str | None, where: str = "model"):
    """A `tokenizers.Tokenizer` from tokenizer.json bytes; EvaluationError if missing or broken."""
    from tokenizers import Tokenizer

    if not tokenizer_json:
        raise EvaluationError(f"{where}: has no tokenizer (tokenizer.json), cannot tokenize text")
    try:
        text = tokenizer_json.decode("utf-8") if isinstance(tokenizer_json, bytes) else tokenizer_json
        return Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises plain Exceptions on malformed JSON
        raise EvaluationError(f"{where}: tokenizer.json cannot be loaded: {err}") from None


def tokenize(tokenizer, text: str) -> np.ndarray:
    """Token ids int64 [n] of the whole text, without special tokens."""
    return np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)


def windows_of(ids: np.ndarray, ctx: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping windows int64 [windows, ctx] from the start of the token stream."""
    if ctx < 2:
        raise EvaluationError(f"ctx must be at least 2, got {ctx}")
    n = len(ids) // ctx
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise EvaluationError(f"text has {len(ids)} tokens, fewer than one window of {ctx}")
    return ids[: n * ctx].reshape(n, ctx)


def window_nll(source, windows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Summed negative log-likelihood float64 [windows] of tokens 1..ctx-1 of each window.

    Streams the model one decoder layer at a time over all windows with the reference forward.
    """
    from zoo.runtime.reference import block_forward, embed, final_logits, layer_names

    config = source.config
    n_win, ctx = windows.shape
    token_embd = source.tensor("token_embd.weight")  # [vocab, dim]
    x = np.stack([embed(token_embd, w) for w in windows])  # [windows, ctx, dim] f32
    del token_embd
    start = time.monotonic()
    for i in range(config["n_layers"]):
        weights = {n: source.tensor(n) for n in layer_names(config, i)}
        for k in range(n_win):
            x[k] = block_forward(config, weights, x[k], i)
        del weights
        if progress:
            done = (i + 1) / config["n_layers"]
            eta = (time.monotonic() - start) * (1 - done) / done
            progress(f"eval layer {i + 1}/{config['n_layers']} (eta {eta:.0f}s)")
    head = source.tensor("token_embd.weight" if config["tied_embeddings"] else "output.weight")
    norm = source.tensor("output_norm.weight")
    nll = np.zeros(n_win)
    for k in range(n_win):
        logits = final_logits(config, x[k, :-1], norm, head)  # [ctx-1, vocab] f32
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0].astype(np.float64) + np.log(np.exp(logits - m).sum(axis=1, dtype=np.float64))
        target = logits[np.arange(ctx - 1), windows[k, 1:]].astype(np.float64)
        nll[k] = float(np.sum(lse - target))
    return nll


def perplexity(model, text: str | Path | None = None, ctx: int = 512, max_windows: int | None = None,
               progress: Progress | None = None) -> dict:
    """Perplexity of `model` (a path or a zoo.convert Source) on `text` (default: the shipped evaluation text).

    Returns {perplexity, ctx, windows, tokens_scored, text, text_sha256, protocol}.
    """
    from zoo.convert.source import Source, open_source

    source = model if isinstance(model, Source) else open_source(model)
    text_path = Path(text) if text is not None else EVALUATION_TEXT
    body, sha = read_text(text_path)
    tok = load_tokenizer(source.tokenizer_json, source.description)
    if max_windows is not None and max_windows < 1:
        raise EvaluationError(f"max_windows must be at least 1, got {max_windows}")
    windows = windows_of(tokenize(tok, body), ctx, max_windows)
    if int(windows.max()) >= source.config["vocab_size"]:
        raise EvaluationError(f"tokenizer produces ids beyond the model's vocab_size {source.config['vocab_size']}")
    nll = window_nll(source, windows, progress)
    scored = windows.shape[0] * (ctx - 1)
    mean = float(nll.sum() / scored)
    return {
        "perplexity": math.exp(mean),
        "ctx": ctx,
        "windows": int(windows.shape[0]),
        "tokens_scored": scored,
        "text": text_path.name,
        "text_sha256": sha,
        "protocol": protocol(ctx, windows.shape[0], scored, text_path.name, sha),
    }


def protocol(ctx: int, windows: int, scored: int, text_name: str, sha: str) -> dict:
    """The protocol as recorded in cards: enough to reproduce the number."""
    return {"text": text_name, "text_sha256": sha, "ctx": ctx, "windows": windows, "tokens_scored": scored,
            "stride": ctx, "bos": False, "forward": "zoo.runtime.reference (float32)"}
