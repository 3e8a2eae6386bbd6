"""Build the committed format test vectors: one tiny Llama artifact per encoding.

Weights come from an integer hash (not a numpy RNG), so the bytes depend on nothing but this file
and the format. Run `python tests/data/format/make_vectors.py` to rebuild them in place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from zoo.format import ArtifactWriter, encode, expected_tensors

CONFIG = dict(arch="llama", dim=40, hidden_dim=136, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=20,
              vocab_size=24, max_seq_len=64, norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
              rope_layout="half", tied_embeddings=True)
# vector name -> (encoding of linear weights, dense dtype, extra encode options); a tuple of keeps is
# cycled over the linear weights (tile4-q4: every K, with and without padding in the last group)
VECTORS = {
    "dense-f32": ("dense", "F32", {}),
    "dense-f16": ("dense", "F16", {}),
    "dense-bf16": ("dense", "BF16", {}),
    "q8": ("q8", "F16", {}),
    "q4": ("q4", "F16", {}),
    "q4-zeros": ("q4", "F16", {"zeros": True}),
    "sparse-q4": ("sparse-q4", "F16", {}),
    "sparse-q8": ("sparse-q8", "F16", {}),
    "sparse-f16": ("sparse-f16", "F16", {}),
    "tile4-q4": ("tile4-q4", "F16", {"keep": (16, 32, 48, 64)}),
}
_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash(n: int, salt: int) -> np.ndarray:
    """splitmix64 of 0..n-1 with a salt: uint64 [n]."""
    with np.errstate(over="ignore"):
        h = (np.arange(n, dtype=np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)) & _M
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def weights(name: str, shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Deterministic float32 weights; linear weights are ~50% zero with an all-zero and a dense row."""
    n = int(np.prod(shape))
    h = _hash(n, salt)
    u = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    if len(shape) == 1:
        return (1.0 + 0.2 * (u - 0.5)).astype(np.float32).reshape(shape)
    w = ((u - 0.5) * 0.1).astype(np.float32).reshape(shape)
    if name != "token_embd.weight":
        w[((h >> np.uint64(7)) & np.uint64(1)).astype(bool).reshape(shape)] = 0.0
        w[0] = 0.0
        w[1] = ((u.reshape(shape)[1] - 0.5) * 0.1 + 0.06).astype(np.float32)  # fully dense row
    return w


def tile_prune(w: np.ndarray, keep: int) -> np.ndarray:
    """Zero all but the `keep` columns of largest |w| sum in each tile of 4 rows and group of 128 columns
    (ties: the lower column), so the weights fit tile4-q4 with that keep."""
    rows, cols = w.shape
    out = w.copy()
    for t in range(0, rows, 4):
        for start in range(0, cols, 128):
            score = np.abs(w[t:t + 4, start:start + 128]).sum(axis=0)
            drop = np.argsort(-score, kind="stable")[keep:]
            out[t:t + 4, start + drop] = 0.0
    return out


def linear_options(vec: str, index: int) -> dict:
    """encode() options of the index-th linear weight of a vector."""
    options = dict(VECTORS[vec][2])
    if isinstance(options.get("keep"), tuple):
        options["keep"] = options["keep"][index % len(options["keep"])]
    return options


def source_weights(vec: str, name: str, shape: tuple[int, ...], salt: int, index: int) -> np.ndarray:
    """The weights a vector encodes: weights(), pruned to the tile pattern for tile4-q4."""
    w = weights(name, shape, salt)
    if VECTORS[vec][0] == "tile4-q4" and len(shape) == 2 and name != "token_embd.weight":
        w = tile_prune(w, linear_options(vec, index)["keep"])
    return w


def build(root: Path, names=tuple(VECTORS)) -> list[Path]:
    """Write the vectors named `names` under `root`, replacing any existing ones."""
    out = []
    for vec in names:
        encoding, dtype, _ = VECTORS[vec]
        with ArtifactWriter(root / vec, CONFIG, overwrite=True) as writer:
            linear = 0
            for salt, (name, shape) in enumerate(expected_tensors(CONFIG).items()):
                w = source_weights(vec, name, shape, salt, linear)
                if len(shape) == 2 and name != "token_embd.weight":
                    writer.add(name, encode(w, encoding, dtype=dtype, **linear_options(vec, linear)))
                    linear += 1
                else:
                    writer.add(name, encode(w, "dense", dtype=dtype if encoding == "dense" else "F16"))
            out.append(writer.finish({"card_version": 1, "name": f"vector-{vec}", "architecture": "llama",
                                      "description": f"zoo format test vector: linear weights {vec}"}))
    return out


if __name__ == "__main__":
    for path in build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent):
        print(path)
