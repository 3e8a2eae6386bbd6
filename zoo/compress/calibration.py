"""Calibration windows: random spans of the tokenized calibration text, chosen by a seeded generator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import CompressError
from zoo.evaluate import CALIBRATION_TEXT, CALIBRATION_TEXTS, load_tokenizer, read_text, tokenize

# the windows' texts when none is named: Austen's prose and text SmolLM2 wrote itself (code, lists, instructions),
# half each; Austen alone fits one author and costs every other kind of text (docs/compress.md, "Shipped texts")
DEFAULT_TEXTS = ("builtin", "smollm2-written")


@dataclass(frozen=True)
class Calibration:
    """Token windows int64 [samples, seq_len] and where they came from (for the card)."""

    tokens: np.ndarray
    file: str | None  # None: token ids given directly (no text); several texts: their names joined by " + "
    sha256: str | None
    seed: int
    generated: int = 0  # the last `generated` windows were written by the model itself (zoo.compress.selfgen)
    texts: tuple[dict, ...] = ()  # several texts: {file, sha256, samples} each, in window order

    def card(self) -> dict:
        samples, seq_len = self.tokens.shape
        out = {"file": self.file, "sha256": self.sha256, "samples": int(samples), "seq_len": int(seq_len),
               "sampling": "uniform random start offsets (numpy default_rng(seed))"}
        if self.texts:
            out["texts"] = [dict(t) for t in self.texts]
            out["sampling"] += "; the windows split evenly between the texts, in order, from one generator"
        if self.generated:
            from .selfgen import TEMPERATURE, TOP_P

            out["generated"] = self.generated
            out["generation"] = (f"{self.generated} of the windows sampled from the base model itself (f16, temperature "
                                 f"{TEMPERATURE:g}, top-p {TOP_P:g}, each document from a uniformly drawn ordinary token, seeded)")
        return out

    def with_generated(self, windows: np.ndarray) -> "Calibration":
        """This calibration with `windows` (int64 [n, seq_len], model-written) appended."""
        return Calibration(np.concatenate([self.tokens, windows]), self.file, self.sha256, self.seed,
                           self.generated + int(windows.shape[0]), self.texts)


def calibration_path(text: str | Path | None) -> Path:
    """The file for a calibration text: a path that exists, else a shipped text by name; default Austen."""
    if text is None:
        return CALIBRATION_TEXT
    p = Path(text).expanduser()
    if not p.exists() and str(text) in CALIBRATION_TEXTS:
        return CALIBRATION_TEXTS[str(text)]
    return p


def calibration_windows(tokenizer_json: bytes | None, samples: int, seq_len: int, seed: int,
                        text: str | Path | Sequence[str | Path] | None = None,
                        vocab_size: int | None = None) -> Calibration:
    """`samples` windows of `seq_len` tokens at random offsets of the text (default: DEFAULT_TEXTS).

    Several texts share the windows evenly (the first ones take the remainder), drawn in order from
    one seeded generator, so one text gives exactly the windows it always gave.
    """
    if samples < 0 or seq_len < 2:
        raise CompressError(f"need samples >= 0 and seq_len >= 2, got {samples} and {seq_len}")
    if text is None or (isinstance(text, (list, tuple)) and not text):
        text = DEFAULT_TEXTS
    paths = [calibration_path(t) for t in text] if isinstance(text, (list, tuple)) else [calibration_path(text)]
    tokenizer = load_tokenizer(tokenizer_json, "source model")
    rng = np.random.default_rng(seed)
    shares = [samples // len(paths) + (i < samples % len(paths)) for i in range(len(paths))]
    parts, described = [], []
    for path, share in zip(paths, shares):
        body, sha = read_text(path)
        ids = tokenize(tokenizer, body)
        if len(ids) < seq_len + 1:
            raise CompressError(f"{path.name}: {len(ids)} tokens, too few for windows of {seq_len}")
        if vocab_size is not None and ids.size and int(ids.max()) >= vocab_size:
            raise CompressError(f"tokenizer produces ids beyond the model's vocab_size {vocab_size}")
        starts = rng.integers(0, len(ids) - seq_len + 1, size=share)
        parts.append(np.stack([ids[s:s + seq_len] for s in starts]) if share else np.zeros((0, seq_len), np.int64))
        described.append({"file": path.name, "sha256": sha, "samples": share})
    tokens = np.concatenate(parts)
    if len(paths) == 1:
        return Calibration(tokens, described[0]["file"], described[0]["sha256"], seed)
    return Calibration(tokens, " + ".join(d["file"] for d in described), None, seed, texts=tuple(described))
