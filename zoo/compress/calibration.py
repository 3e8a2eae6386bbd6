"""Calibration windows: random spans of the tokenized calibration text, chosen by a seeded generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import CompressError
from zoo.evaluate import CALIBRATION_TEXT, load_tokenizer, read_text, tokenize


@dataclass(frozen=True)
class Calibration:
    """Token windows int64 [samples, seq_len] and where they came from (for the card)."""

    tokens: np.ndarray
    file: str | None  # None: token ids given directly (no text)
    sha256: str | None
    seed: int
    generated: int = 0  # the last `generated` windows were written by the model itself (zoo.compress.selfgen)

    def card(self) -> dict:
        samples, seq_len = self.tokens.shape
        out = {"file": self.file, "sha256": self.sha256, "samples": int(samples), "seq_len": int(seq_len),
               "sampling": "uniform random start offsets (numpy default_rng(seed))"}
        if self.generated:
            from .selfgen import TEMPERATURE, TOP_P

            out["generated"] = self.generated
            out["generation"] = (f"{self.generated} of the windows sampled from the base model itself (f16, temperature "
                                 f"{TEMPERATURE:g}, top-p {TOP_P:g}, each document from a uniformly drawn ordinary token, seeded)")
        return out

    def with_generated(self, windows: np.ndarray) -> "Calibration":
        """This calibration with `windows` (int64 [n, seq_len], model-written) appended."""
        return Calibration(np.concatenate([self.tokens, windows]), self.file, self.sha256, self.seed,
                           self.generated + int(windows.shape[0]))


def calibration_windows(tokenizer_json: bytes | None, samples: int, seq_len: int, seed: int,
                        text: str | Path | None = None, vocab_size: int | None = None) -> Calibration:
    """`samples` windows of `seq_len` tokens at random offsets of the text (default: the shipped one)."""
    if samples < 0 or seq_len < 2:
        raise CompressError(f"need samples >= 0 and seq_len >= 2, got {samples} and {seq_len}")
    path = Path(text) if text is not None else CALIBRATION_TEXT
    body, sha = read_text(path)
    ids = tokenize(load_tokenizer(tokenizer_json, "source model"), body)
    if len(ids) < seq_len + 1:
        raise CompressError(f"{path.name}: {len(ids)} tokens, too few for windows of {seq_len}")
    if vocab_size is not None and ids.size and int(ids.max()) >= vocab_size:
        raise CompressError(f"tokenizer produces ids beyond the model's vocab_size {vocab_size}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seq_len + 1, size=samples)
    tokens = np.stack([ids[s:s + seq_len] for s in starts]) if samples else np.zeros((0, seq_len), np.int64)
    return Calibration(tokens, path.name, sha, seed)
