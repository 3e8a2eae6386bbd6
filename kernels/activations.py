"""Activations shared by several linears: the float32 rows and each int8 form a matmul kernel needs, made once.

In a prefill, several weights multiply the same input (a Llama block's q, k and v share the attention
norm's output; gate and up the MLP norm's). The int8 kernels (VNNI tiles, VNNI CSR, tile4, the AVX2 q4
tiles) quantize their input per (token, group); `quantize_input(x)` wraps x so that each form is built on
its first use and reused by every later `linear(acts, w)`: the same function on the same input, so the
results are bit-identical to quantizing per call. Which forms exist is the kernels' business: the caller
only says that these linears share an input.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import KernelError

from .matmul.vnni import quantize_tokens
from .matmul.vnni_csr import transpose_tiles


class Activations:
    """float32 x [tokens, cols] and its int8 forms, keyed by (group size, q4 permutation).

    x must not change while the object is used: the forms are computed from it once.
    """

    __slots__ = ("x", "_int8", "_tiles")

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._int8: dict[tuple[int, bool], tuple] = {}
        self._tiles: dict[int, tuple] = {}

    @property
    def tokens(self) -> int:
        return self.x.shape[0] if self.x.ndim == 2 else 1

    def int8(self, group_size: int, permute: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(xq int8 [tokens * stride], xd, xs float32 [tokens * n_groups], stride): vnni.quantize_tokens."""
        key = (group_size, permute)
        if key not in self._int8:
            cols = self.x.shape[-1]
            self._int8[key] = quantize_tokens(self.x.reshape(-1), self.tokens, cols, group_size, permute)
        return self._int8[key]

    def tiles(self, group_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(xt uint8 [n_tiles, cols, 32], xdt float32 [n_tiles, n_groups, 32]): the VNNI CSR kernel's input."""
        if group_size not in self._tiles:
            xq, xd, _, stride = self.int8(group_size, False)
            cols = self.x.shape[-1]
            self._tiles[group_size] = transpose_tiles(xq, xd, stride, self.tokens, cols,
                                                      (cols + group_size - 1) // group_size)
        return self._tiles[group_size]


def quantize_input(x: np.ndarray) -> Activations:
    """Wrap float32 x [tokens, cols] (C-contiguous) for several `linear` calls; forms are made on first use."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim not in (1, 2) or not x.flags.c_contiguous:
        raise KernelError(f"quantize_input: x must be a C-contiguous float32 [tokens, cols] array, got "
                          f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    return Activations(x)
