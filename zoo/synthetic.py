"""Random-weight models of a known architecture, written as artifacts (tests and benchmarks).

Weights are N(0, 0.02); a `sparsity` fraction of each linear weight is zeroed at random positions
(random weights have no structure for a pruning criterion to find). Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.format import (ArtifactWriter, EncodedTensor, encode, expected_tensors, pack_q4, pack_q8, pack_sparse,
                        pack_tile4_q4)

LLAMA_7B = dict(arch="llama", dim=4096, hidden_dim=11008, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128,
                vocab_size=32000, max_seq_len=4096, norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                rope_layout="half", tied_embeddings=False)
TINY_LLAMA = dict(arch="llama", dim=40, hidden_dim=136, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=20,
                  vocab_size=24, max_seq_len=64, norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                  rope_layout="half", tied_embeddings=True)
TINY_MPT = dict(arch="mpt", dim=48, hidden_dim=192, n_layers=2, n_heads=4, vocab_size=32, max_seq_len=64,
                norm_eps=1e-5, alibi_bias_max=8.0, clip_qkv=None, tied_embeddings=True)


def random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...], sparsity: float) -> np.ndarray:
    """float32 weights for `name`: norms near 1, matrices N(0, 0.02) with `sparsity` zeroed at random."""
    if len(shape) == 1:
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    w = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    if sparsity > 0 and name != "token_embd.weight":
        w[rng.random(shape, dtype=np.float32) < sparsity] = 0.0
    return w


def random_codes(rng: np.random.Generator, shape: tuple[int, int], encoding: str, sparsity: float,
                 group_size: int) -> EncodedTensor:
    """An encoded matrix drawn directly as random codes, masks and scales (no float weights).

    Ten times faster than encoding float weights; meant for size and speed benchmarks of 7B shapes.
    """
    rows, cols = shape
    scales = rng.uniform(0.001, 0.004, (rows, -(-cols // group_size))).astype(np.float16)
    if encoding == "q8":
        return pack_q8(rng.integers(-127, 128, shape, dtype=np.int8), scales, group_size)
    if encoding == "q4":
        return pack_q4(rng.integers(0, 16, shape, dtype=np.uint8), scales, group_size)
    if encoding == "tile4-q4":
        return _random_tile4(rng, shape, sparsity, scales)
    mask = rng.random(shape, dtype=np.float32) >= sparsity
    if encoding == "sparse-q4":
        stored = rng.integers(0, 16, shape, dtype=np.uint8)
    elif encoding == "sparse-q8":
        stored = rng.integers(-127, 128, shape, dtype=np.int8)
    else:
        stored, scales = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16), None
    return pack_sparse(encoding, mask, stored, scales, group_size if scales is not None else None)


def tile_weight(rng: np.random.Generator, rows: int, cols: int, keep: int) -> np.ndarray:
    """float32 [rows, cols] N(0, 1) in tile4-q4's pattern: each tile of 4 rows keeps min(K, width) random
    columns of every 128-column group (the rest zero), so `encode(w, "tile4-q4", keep=K)` takes it as is."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    for t in range(rows // 4):
        for c0 in range(0, cols, 128):
            width = min(128, cols - c0)
            drop = np.ones(width, bool)
            drop[rng.choice(width, min(keep, width), replace=False)] = False
            w[4 * t:4 * t + 4, c0:c0 + width][:, drop] = 0.0
    return w


def _random_tile4(rng: np.random.Generator, shape: tuple[int, int], sparsity: float, scales: np.ndarray) -> EncodedTensor:
    """tile4-q4 codes: each 4-row tile keeps K = 128 (1 - sparsity) random columns of every 128 (group size 128)."""
    rows, cols = shape
    keep, groups = round(128 * (1 - sparsity)), -(-cols // 128)
    scores = rng.random((rows // 4, groups, 128), dtype=np.float32)
    scores[:, -1, cols - 128 * (groups - 1):] = 2.0  # a narrow last group keeps its real columns first
    kept = np.zeros(scores.shape, bool)
    np.put_along_axis(kept, np.argpartition(scores, keep - 1, axis=2)[:, :, :keep], True, axis=2)
    kept = kept.reshape(rows // 4, groups * 128)[:, :cols]
    codes = rng.integers(-8, 8, shape, dtype=np.int8) * np.repeat(kept, 4, axis=0)
    return pack_tile4_q4(codes, kept, scales, keep)


def write_random_model(out_dir: str | Path, config: dict, encoding: str = "q4", sparsity: float = 0.0,
                       group_size: int = 128, seed: int = 0, dense_dtype: str = "F16",
                       overwrite: bool = False, card: dict | None = None, direct: bool = False) -> Path:
    """Write a random model: linear weights in `encoding`, embeddings and norms dense.

    `direct` draws quantized linear weights as random codes (see random_codes) instead of encoding
    float weights: same sizes and layout, much faster for 7B-shaped benchmarks.
    """
    rng = np.random.default_rng(seed)
    with ArtifactWriter(out_dir, config, overwrite=overwrite) as writer:
        for name, shape in expected_tensors(config).items():
            linear = len(shape) == 2 and name != "token_embd.weight"
            if linear and encoding != "dense" and direct:
                writer.add(name, random_codes(rng, shape, encoding, sparsity, group_size))
                continue
            w = random_tensor(rng, name, shape, sparsity)
            if linear and encoding != "dense":
                writer.add(name, encode(w, encoding, group_size=group_size))
            else:
                writer.add(name, encode(w, "dense", dtype=dense_dtype))
        base = {"card_version": 1, "name": Path(out_dir).name, "architecture": config["arch"],
                "description": f"random weights, {encoding}, sparsity {sparsity}, seed {seed}"}
        return writer.finish({**base, **(card or {})})
