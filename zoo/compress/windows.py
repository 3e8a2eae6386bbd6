"""Run the calibration windows through one decoder layer, on a few threads, with results in window order.

Windows are independent, and the reference forward is numpy/BLAS that releases the GIL, so a pool of
threads (one per core: `ZOO_COMPRESS_THREADS`, default the CPUs this process may use) runs them side
by side while BLAS stays pinned to one thread per call (zoo.evaluate.fixed_blas_threads). Each window's
statistics (Σx² per column, float32 XᵀX) are computed in its worker, then added into the running sums
in window order by the calling thread — the same operations in the same order as a serial loop, so the
artifact is byte-identical for any thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from zoo.errors import CompressError

from .linear import InputStats
from .obs import hessian

FOLLOWERS = {"attn_k": "attn_q", "attn_v": "attn_q", "ffn_up": "ffn_gate"}  # llama: linears sharing an input


def short_name(name: str) -> str:
    return name.split(".")[2]  # "blk.3.attn_q.weight" -> "attn_q"


def compress_threads() -> int:
    """Worker threads for the calibration passes: ZOO_COMPRESS_THREADS, default the usable CPUs."""
    raw = os.environ.get("ZOO_COMPRESS_THREADS")
    if raw is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        n = int(raw)
    except ValueError:
        raise CompressError(f"ZOO_COMPRESS_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise CompressError(f"ZOO_COMPRESS_THREADS must be a positive integer, got {raw!r}")
    return n


def _ordered(fn: Callable[[int], object], count: int) -> Iterator[object]:
    """fn(0), fn(1), ... fn(count-1) computed on the pool, yielded in index order (at most 2 per thread ahead)."""
    threads = min(compress_threads(), count)
    if threads <= 1:
        yield from (fn(s) for s in range(count))
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="zoo-calib")
    try:
        pending = [pool.submit(fn, s) for s in range(min(count, 2 * threads))]
        for s in range(count):
            result = pending[s].result()
            pending[s] = None  # type: ignore[call-overload]  # let the window's result go
            if s + 2 * threads < count:
                pending.append(pool.submit(fn, s + 2 * threads))
            yield result
    finally:  # on an error or Ctrl-C: drop the windows not started, wait for the running ones
        pool.shutdown(wait=True, cancel_futures=True)


class _LastInputSeen(Exception):
    """Raised by the statistics hook at the block's last linear (ffn_down): the rest of a dense pass is unused."""


def collect(config: dict, weights: dict[str, np.ndarray], x: np.ndarray, layer: int,
            need_hessian: Callable[[str], bool], advance: bool = False) -> dict[str, InputStats]:
    """Run every calibration window x [samples, seq_len, dim] through the dense layer; each linear's input statistics.

    The dense layer's outputs are not needed when the compressed layer recomputes them, so each
    window stops at ffn_down's input (a quarter of the layer's matmul work saved). With `advance`
    the windows run to the end and x is replaced in place by the dense layer's outputs (OWL's pass).
    Linears sharing an input (q/k/v, gate/up) share one InputStats.
    """
    from zoo.runtime.reference import block_forward

    shares = config["arch"] == "llama"

    def window(s: int) -> dict[str, tuple[int, np.ndarray, np.ndarray | None]]:
        parts: dict[str, tuple[int, np.ndarray, np.ndarray | None]] = {}  # short -> (tokens, Σx² f64 [cols], XᵀX f32 or None)

        def hook(name: str, inp: np.ndarray) -> None:
            short = short_name(name)
            if shares and short in FOLLOWERS:
                return
            flat = inp.reshape(-1, inp.shape[-1])
            parts[short] = (flat.shape[0], np.einsum("tc,tc->c", flat, flat, dtype=np.float64),
                            hessian(flat) if need_hessian(short) else None)
            if short == "ffn_down" and not advance:
                raise _LastInputSeen

        try:
            out = block_forward(config, weights, x[s], layer, hook)
        except _LastInputSeen:
            return parts
        if advance:
            x[s] = out  # each window writes only its own slice
        return parts

    stats: dict[str, InputStats] = {}
    for parts in _ordered(window, x.shape[0]):
        for short, (tokens, sq, xtx) in parts.items():
            if short not in stats:
                stats[short] = InputStats(sq.shape[0], xtx is not None)
            stats[short].add_parts(tokens, sq, xtx)
    if shares:
        for follower, leader in FOLLOWERS.items():
            if leader in stats:
                stats[follower] = stats[leader]
    return stats


def forward(config: dict, weights: dict[str, np.ndarray], x: np.ndarray, layer: int) -> None:
    """x [samples, seq_len, dim] <- the layer's outputs, window by window (in place)."""
    from zoo.runtime.reference import block_forward

    def window(s: int) -> None:
        x[s] = block_forward(config, weights, x[s], layer)

    for _ in _ordered(window, x.shape[0]):
        pass
