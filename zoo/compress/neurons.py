"""Structured pruning of MLP channels (neurons): drop whole hidden channels, giving a smaller dense MLP.

Channel j of a block is row j of ffn_gate/ffn_up and column j of ffn_down. Its score is
‖W_down[:, j]‖ · ‖x_j‖ (Wanda's rule applied to the down projection's input channel) when
activation norms are known, and ‖W_down[:, j]‖ · ‖W_up[j, :]‖ (magnitude) otherwise.
"""

from __future__ import annotations

import numpy as np

from .masks import n_pruned


def channel_scores(down: np.ndarray, up: np.ndarray, down_input_norms: np.ndarray | None) -> np.ndarray:
    """Importance float64 [hidden] of each MLP channel; down [dim, hidden], up [hidden, dim]."""
    col = np.linalg.norm(down.astype(np.float64), axis=0)
    if down_input_norms is not None:
        return col * down_input_norms
    return col * np.linalg.norm(up.astype(np.float64), axis=1)


def keep_channels(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Sorted indices intp [kept] of the channels that survive: drop the round(sparsity·hidden) lowest."""
    k = n_pruned(scores.size, sparsity)
    k = min(k, scores.size - 1)  # keep at least one channel
    drop = np.argsort(scores, kind="stable")[:k]
    keep = np.ones(scores.size, bool)
    keep[drop] = False
    return np.flatnonzero(keep)


def kept_hidden(hidden: int, sparsity: float) -> int:
    """How many channels a layer of width `hidden` keeps at this sparsity."""
    return hidden - min(n_pruned(hidden, sparsity), hidden - 1)
