"""Calibration windows the model writes itself (data-free calibration, as LLM-QAT): text of the model's own kinds.

Why: calibrating on one shipped novel fits that author's style, and what compression keeps then fails on
other text (measured: docs/compress.md, "calibration"). Text the dense model samples covers what it
learned — prose, code, instructions, lists — with no data set to download. Each window starts from a
token drawn uniformly from the vocabulary (ordinary tokens only) and is sampled at temperature 1, top-p 0.95, on the
numba runtime (the source converted to f16 in a temporary directory); a document that ends (EOS) is
followed by a new one until the window is full. Seeded: the same model and seed give the same windows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import CompressError

TEMPERATURE = 1.0
TOP_P = 0.95  # the least likely 5% of the mass cut: a 135M model's tail is mostly noise


def generated_windows(source, count: int, seq_len: int, seed: int, work_dir: Path,
                      progress: Callable[[str], None] | None = None) -> np.ndarray:
    """int64 [count, seq_len] token ids sampled from `source` (a zoo.convert Source with a tokenizer)."""
    from zoo.convert.convert import convert
    from zoo.runtime import Session, SamplingParams, load

    if not source.tokenizer_json:
        raise CompressError("generated calibration needs the model's tokenizer (tokenizer.json)")
    rng = np.random.default_rng([seed, 7])
    with tempfile.TemporaryDirectory(prefix=".zoo-selfgen-", dir=work_dir) as tmp:
        model_dir = Path(tmp) / "f16"
        convert(source, model_dir, encoding="f16")
        model, tok = load(model_dir, ctx=seq_len + 1)
        special = set(tok.eos_ids) | {i for i in range(tok.vocab_size) if tok.decode([i], skip_special=False)
                                      and not tok.decode([i])}  # special tokens decode to nothing when skipped
        ordinary = np.array([i for i in range(min(tok.vocab_size, source.config["vocab_size"])) if i not in special])
        windows = np.zeros((count, seq_len), np.int64)
        start = time.monotonic()
        session = Session(model, tok)
        for w in range(count):
            ids: list[int] = []
            while len(ids) < seq_len:
                first = int(rng.choice(ordinary))
                session.reset()
                want = seq_len - len(ids) - 1
                out = session.generate([first], max_tokens=want, params=SamplingParams(
                    temperature=TEMPERATURE, top_p=TOP_P, seed=int(rng.integers(2**31)))) if want > 0 else None
                ids += [first] + (out.tokens if out is not None else [])
            windows[w] = ids[:seq_len]
            if progress:
                left = (time.monotonic() - start) / (w + 1) * (count - w - 1)
                progress(f"generated calibration window {w + 1}/{count} (eta {int(left // 60)}m{int(left % 60):02d}s)")
        del model
    return windows
