"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty, seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.errors import RuntimeModelError


@dataclass
class SamplingParams:
    """temperature 0 means greedy; top_k 0 and top_p 1 disable those filters; penalty 1 disables it."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        if self.temperature < 0:
            raise RuntimeModelError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise RuntimeModelError(f"top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise RuntimeModelError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise RuntimeModelError(f"repetition penalty must be > 0, got {self.repetition_penalty}")


class Sampler:
    """Stateful sampler (owns the random generator, so a seed reproduces a whole generation)."""

    def __init__(self, params: SamplingParams) -> None:
        params.check()
        self.p = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list[int] | None = None) -> int:
        """Next token id from logits [vocab] float32; `history` feeds the repetition penalty."""
        p = self.p
        if p.repetition_penalty != 1.0 and history:
            logits = logits.copy()
            seen = np.unique(np.asarray(history, dtype=np.intp))
            vals = logits[seen]  # CTRL-style penalty, as transformers and llama.cpp apply it
            logits[seen] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if p.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / p.temperature
        if 0 < p.top_k < z.size:
            kth = np.partition(z, -p.top_k)[-p.top_k]
            z = np.where(z >= kth, z, -np.inf)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, p.top_p)) + 1]  # smallest prefix reaching top_p
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(self.rng.choice(probs.size, p=probs))
