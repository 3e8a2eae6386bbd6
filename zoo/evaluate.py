"""Perplexity with a written protocol: non-overlapping windows of the tokenized text, every position scored.

Protocol (returned with every result, and what cards record): tokenize the whole text once with the
model's own tokenizer (no BOS added), cut it into consecutive windows of `ctx` tokens (the tail that
does not fill a window is dropped; `max_windows` keeps only the first windows), run each window from
an empty context, and average the cross-entropy of predicting tokens 1..ctx-1 of every window from
the ones before it; perplexity = exp(mean). This is the papers' WikiText-2 protocol (no stride).

Engines: a zoo artifact runs on the numba runtime (zoo.runtime.model, weights kept encoded); any other
source (GGUF, Hugging Face dir) runs the team's dense reference forward (zoo.runtime.reference), streamed
one decoder layer at a time over all windows. The engine is recorded in the protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import EvaluationError

DATA_DIR = Path(__file__).parent / "data"
CALIBRATION_TEXT = DATA_DIR / "calibration.txt"
EVALUATION_TEXT = DATA_DIR / "evaluation.txt"
TECHNICAL_TEXT = DATA_DIR / "technical.txt"  # the second evaluation text, of another kind (zoo/data/README.md)
SHIPPED_TEXTS = {"prose": EVALUATION_TEXT, "technical": TECHNICAL_TEXT}
# Calibration texts by the name a recipe or --calib gives them: Austen, and text SmolLM2 wrote itself
# (zoo/data/README.md): a seeded file, so a card calibrated on it rebuilds byte for byte on any CPU.
CALIBRATION_TEXTS = {"builtin": CALIBRATION_TEXT, "smollm2-written": DATA_DIR / "smollm2-written.txt"}


def text_path(text: str | Path | None) -> Path:
    """The file to read: a path that exists, else a shipped text by name (prose, technical); default prose."""
    if text is None:
        return EVALUATION_TEXT
    p = Path(text)
    return SHIPPED_TEXTS[str(text)] if not p.exists() and str(text) in SHIPPED_TEXTS else p

Progress = Callable[[str], None]


def fixed_blas_threads():
    """Context fixing the BLAS thread count (ZOO_BLAS_THREADS, default 1) for compression and evaluation.

    Why: results must be bit-reproducible, and a BLAS reduction's order may depend on its thread
    count; and on a shared 2-core machine a 2-thread OpenBLAS spins so badly that one thread is
    10-40x faster on these mid-sized matrices (measured, docs/compress.md).
    """
    from threadpoolctl import threadpool_limits

    try:
        n = int(os.environ.get("ZOO_BLAS_THREADS", "1"))
    except ValueError:
        raise EvaluationError(f"ZOO_BLAS_THREADS must be an integer, got {os.environ['ZOO_BLAS_THREADS']!r}") from None
    return threadpool_limits(limits=max(1, n), user_api="blas")


_TOKEN_CACHE: dict[tuple[str, str], np.ndarray] = {}


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
    """Token ids int64 [n] of the whole text, without special tokens (cached per tokenizer and text)."""
    key = (hashlib.sha256(tokenizer.to_str().encode()).hexdigest(), hashlib.sha256(text.encode()).hexdigest())
    if key not in _TOKEN_CACHE:
        if len(_TOKEN_CACHE) > 8:
            _TOKEN_CACHE.clear()
        _TOKEN_CACHE[key] = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    return _TOKEN_CACHE[key].copy()


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


def _nll_of_logits(logits: np.ndarray, window: np.ndarray) -> float:
    """Summed cross-entropy of logits [ctx-1, vocab] (f32) predicting window[1:]; log-sum-exp in float64."""
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0].astype(np.float64) + np.log(np.exp(logits - m).sum(axis=1, dtype=np.float64))
    target = logits[np.arange(len(window) - 1), window[1:]].astype(np.float64)
    return float(np.sum(lse - target))


def runtime_nll(path: str | Path, windows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Summed NLL float64 [windows] on the numba runtime (the artifact stays encoded)."""
    from zoo.runtime.model import Model

    n_win, ctx = windows.shape
    model = Model.load(path, ctx=ctx)
    nll = np.zeros(n_win)
    start = time.monotonic()
    for k in range(n_win):
        logits = model.forward([int(t) for t in windows[k]], 0, all_logits=True)  # [ctx, vocab] f32
        nll[k] = _nll_of_logits(logits[:-1], windows[k])
        if progress and (k + 1) % max(1, n_win // 8) == 0:
            eta = (time.monotonic() - start) * (n_win - k - 1) / (k + 1)
            progress(f"eval window {k + 1}/{n_win} (eta {eta:.0f}s)")
    return nll


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
        nll[k] = _nll_of_logits(final_logits(config, x[k, :-1], norm, head), windows[k])
    return nll


ENGINES = ("auto", "runtime", "reference")


def perplexity(model, text: str | Path | None = None, ctx: int = 512, max_windows: int | None = None,
               progress: Progress | None = None, engine: str = "auto") -> dict:
    """Perplexity of `model` (a path or a zoo.convert Source) on `text` (default: the shipped evaluation text).

    engine "auto" runs zoo artifacts on the numba runtime and other sources on the reference forward.
    Returns {perplexity, ctx, windows, tokens_scored, text, text_sha256, engine, protocol}.
    """
    if engine not in ENGINES:
        raise EvaluationError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    from zoo.convert.source import Source, open_source

    source = model if isinstance(model, Source) else open_source(model)
    path = text_path(text)
    body, sha = read_text(path)
    tok = load_tokenizer(source.tokenizer_json, source.description)
    if max_windows is not None and max_windows < 1:
        raise EvaluationError(f"max_windows must be at least 1, got {max_windows}")
    windows = windows_of(tokenize(tok, body), ctx, max_windows)
    if int(windows.max()) >= source.config["vocab_size"]:
        raise EvaluationError(f"tokenizer produces ids beyond the model's vocab_size {source.config['vocab_size']}")
    is_artifact = not isinstance(model, Source) and (Path(model) / "zoo.yaml").is_file()
    if engine == "runtime" and not is_artifact:
        raise EvaluationError(f"{model}: the runtime engine needs a zoo artifact (convert it first)")
    use_runtime = is_artifact and engine != "reference"
    if ctx > source.config["max_seq_len"]:
        raise EvaluationError(f"ctx {ctx} exceeds the model's max_seq_len {source.config['max_seq_len']}")
    with fixed_blas_threads():
        nll = runtime_nll(model, windows, progress) if use_runtime else window_nll(source, windows, progress)
    used = "zoo.runtime (numba, encoded weights)" if use_runtime else "zoo.runtime.reference (numpy float32, dense)"
    scored = windows.shape[0] * (ctx - 1)
    mean = float(nll.sum() / scored)
    return {
        "perplexity": math.exp(mean),
        "ctx": ctx,
        "windows": int(windows.shape[0]),
        "tokens_scored": scored,
        "text": path.name,
        "text_sha256": sha,
        "engine": used,
        "protocol": protocol(ctx, windows.shape[0], scored, path.name, sha, used),
    }


def protocol(ctx: int, windows: int, scored: int, text_name: str, sha: str, engine: str) -> dict:
    """The protocol as recorded in cards: enough to reproduce the number."""
    return {"text": text_name, "text_sha256": sha, "ctx": ctx, "windows": windows, "tokens_scored": scored,
            "stride": ctx, "bos": False, "engine": engine}
