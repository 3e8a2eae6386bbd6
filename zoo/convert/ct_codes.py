"""compressed-tensors' number formats in numpy: float8 e4m3 bytes, int32 words of packed codes, and the codes its
forward computes from float weights (torch's F16 / BF16 rounding of each step). ct_source reads checkpoints with
these."""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def fp8_e4m3_values() -> np.ndarray:
    """float32 value of each float8_e4m3fn byte (sign, 4 exponent bits with bias 7, 3 mantissa bits; 0x7f/0xff NaN)."""
    b = np.arange(256)
    e, m = (b >> 3) & 15, (b & 7).astype(np.float64)
    mag = np.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * 2.0 ** (e - 7))
    mag[(e == 15) & (m == 7)] = np.nan
    return np.where(b >> 7, -mag, mag).astype(np.float32)


def unpack_codes(words: np.ndarray, bits: int, n: int, axis: int = 1) -> np.ndarray:
    """int32 words holding 32/bits unsigned codes each (first code in the low bits), offset 2^(bits-1) -> signed
    int16 codes, `n` of them along `axis` (1: along each row, as weight_packed; 0: down each column, as zero
    points)."""
    w = words.view(np.uint32) if axis == 1 else words.view(np.uint32).T
    pf = 32 // bits
    out = np.empty((w.shape[0], w.shape[1] * pf), np.int16)
    for i in range(pf):
        out[:, i::pf] = (w >> (bits * i)) & ((1 << bits) - 1)
    out = out[:, :n] - (1 << (bits - 1))
    return out if axis == 1 else out.T


def round_as(dtype: str, a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest F16 / BF16 (half to even) and back, as torch stores an op's result;
    unchanged for F32."""
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return a


def quantize_as_torch(w: np.ndarray, scales: np.ndarray, zeros: np.ndarray, dtype: str,
                      bounds: tuple[int, int]) -> np.ndarray:
    """int16 codes [rows, cols] of float weights as compressed-tensors' `_quantize` computes them in torch: w / s, plus
    the zero point, each step rounded to `dtype` (the promoted dtype of weight and scale), then clamped to `bounds` and
    rounded half to even. `scales` and `zeros` are per column [rows, cols] (broadcast views are fine)."""
    scaled = round_as(dtype, w.astype(np.float32) / scales.astype(np.float32))
    scaled = round_as(dtype, scaled + zeros.astype(np.float32))
    return np.round(np.clip(scaled, *bounds)).astype(np.int16)
