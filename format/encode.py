"""Reference encode/decode in numpy: dense array -> parts (SPEC.md section 3) -> dense array.

These are the definition the kernels and the compressor are tested against. Compressors that pick
their own codes and scales (GPTQ) build parts with `pack_q4`, `pack_q8` and `pack_sparse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.errors import FormatError

from .constants import (DEFAULT_GROUP_SIZE, ENCODINGS, MASK_WORD_BITS, bf16_to_f32, f32_to_bf16,
                        n_groups, n_words)


@dataclass
class EncodedTensor:
    """A logical tensor in one encoding: its parts keyed by suffix ('' for the dense part)."""

    encoding: str
    shape: tuple[int, ...]
    parts: dict[str, np.ndarray]
    group_size: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts.values()))

    def metadata(self) -> dict:
        """The tensor's entry in __metadata__["zoo"]["tensors"]."""
        entry = {"encoding": self.encoding, "shape": [int(s) for s in self.shape]}
        if self.group_size is not None:
            entry["group_size"] = int(self.group_size)
        return entry


def _check_group(encoding: str, group_size: int | None) -> int | None:
    spec = ENCODINGS[encoding]
    if not spec.grouped:
        return None
    if group_size is None or group_size <= 0 or group_size % spec.group_multiple:
        raise FormatError(f"{encoding}: group_size must be a positive multiple of {spec.group_multiple}")
    return int(group_size)


def group_scales(w: np.ndarray, group_size: int, qmax: int) -> np.ndarray:
    """Symmetric per-group scales f16(absmax / qmax), shape [rows, n_groups] float16."""
    rows, cols = w.shape
    g = n_groups(cols, group_size)
    padded = np.zeros((rows, g * group_size), dtype=np.float32)
    padded[:, :cols] = np.abs(w)
    absmax = padded.reshape(rows, g, group_size).max(axis=2)
    scales = (absmax / np.float32(qmax)).astype(np.float16)
    if not np.all(np.isfinite(scales)):
        raise FormatError("weights too large or not finite for f16 scales")
    return scales


def _per_column(scales: np.ndarray, group_size: int, cols: int) -> np.ndarray:
    return np.repeat(scales.astype(np.float32), group_size, axis=1)[:, :cols]


def _codes(w: np.ndarray, scales: np.ndarray, group_size: int, qmax: int) -> np.ndarray:
    """clip(rint(w / s), -qmax, qmax) with s = 0 giving 0; int8 [rows, cols]."""
    s = _per_column(scales, group_size, w.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(w / np.where(s > 0, s, 1)), 0)
    return np.clip(q, -qmax, qmax).astype(np.int8)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes in [0, 15] of shape [..., n] -> bytes [..., ceil(n/2)], low nibble first, pad 0."""
    n = codes.shape[-1]
    if n % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], axis=-1)
    codes = codes.astype(np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of pack_nibbles: bytes [..., m] -> codes [..., n] uint8."""
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out[..., :n]


def pack_q8(codes: np.ndarray, scales: np.ndarray, group_size: int) -> EncodedTensor:
    """q8 from int8 codes [rows, cols] and f16 scales [rows, groups]."""
    return EncodedTensor("q8", codes.shape, {"qweight": np.ascontiguousarray(codes, np.int8),
                                             "scales": np.ascontiguousarray(scales, np.float16)}, group_size)


def pack_q4(codes: np.ndarray, scales: np.ndarray, group_size: int, zeros: np.ndarray | None = None) -> EncodedTensor:
    """q4 from unsigned codes u in [0, 15] [rows, cols], f16 scales and optional zero points."""
    parts = {"qweight": pack_nibbles(codes), "scales": np.ascontiguousarray(scales, np.float16)}
    if zeros is not None:
        parts["zeros"] = np.ascontiguousarray(zeros, np.uint8)
    return EncodedTensor("q4", codes.shape, parts, group_size)


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """bool [rows, cols] -> uint64 words [rows, ceil(cols/64)], column c = bit c%64 of word c//64."""
    rows, cols = mask.shape
    padded = np.zeros((rows, n_words(cols) * MASK_WORD_BITS), dtype=bool)
    padded[:, :cols] = mask
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(rows, -1)


def unpack_mask(words: np.ndarray, cols: int) -> np.ndarray:
    """uint64 words [rows, n_words] -> bool [rows, cols]."""
    rows = words.shape[0]
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    return bits[:, :cols].astype(bool)


def pack_sparse(encoding: str, mask: np.ndarray, stored: np.ndarray, scales: np.ndarray | None,
                group_size: int | None) -> EncodedTensor:
    """A sparse-* tensor from its mask [rows, cols] and the stored values at the set bits.

    `stored` is [rows, cols] holding, at set positions, the u codes (sparse-q4, uint8 in [0, 15]),
    the q codes (sparse-q8, int8) or the f16 values (sparse-f16); other positions are ignored.
    """
    rows, cols = mask.shape
    counts = mask.sum(axis=1).astype(np.int64)  # [rows]
    flat = stored[mask]  # row-major: rows in order, columns increasing
    if encoding == "sparse-q4":
        units = (counts + 1) // 2
        offsets = np.concatenate([[0], np.cumsum(units)]).astype(np.int64)
        nz_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        row_of = np.repeat(np.arange(rows), counts)
        slot = 2 * offsets[row_of] + (np.arange(flat.size) - nz_start[row_of])
        nibbles = np.zeros(int(offsets[-1]) * 2, np.uint8)
        nibbles[slot] = flat.astype(np.uint8)
        values = pack_nibbles(nibbles)
    else:
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        values = flat.astype(np.int8 if encoding == "sparse-q8" else np.float16)
    parts = {"bitmask": pack_mask(mask), "row_offsets": offsets, "values": np.ascontiguousarray(values)}
    if scales is not None:
        parts["scales"] = np.ascontiguousarray(scales, np.float16)
    return EncodedTensor(encoding, (rows, cols), parts, group_size)


def encode(w: np.ndarray, encoding: str, group_size: int = DEFAULT_GROUP_SIZE, zeros: bool = False,
           dtype: str = "F16") -> EncodedTensor:
    """Encode a dense array with the reference rounding of SPEC.md 3.5.

    `dtype` applies to `dense` (F32, F16 or BF16); `zeros` asks q4 for asymmetric zero points;
    sparse encodings store exactly the nonzero entries of `w`.
    """
    if encoding not in ENCODINGS:
        raise FormatError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    w = np.asarray(w)
    if not np.all(np.isfinite(w)):
        raise FormatError("cannot encode a tensor with NaN or infinite values")
    w = w.astype(np.float32)
    if encoding == "dense":
        data = {"F32": lambda a: a.astype("<f4"), "F16": lambda a: a.astype("<f2"), "BF16": f32_to_bf16}[dtype](w)
        return EncodedTensor("dense", w.shape, {"": np.ascontiguousarray(data)}, meta={"dtype": dtype})
    if w.ndim != 2:
        raise FormatError(f"{encoding} needs a 2-D tensor, got shape {w.shape}")
    g = _check_group(encoding, group_size)
    if encoding == "q8":
        scales = group_scales(w, g, 127)
        return pack_q8(_codes(w, scales, g, 127), scales, g)
    if encoding == "q4" and not zeros:
        scales = group_scales(w, g, 7)
        return pack_q4((_codes(w, scales, g, 7) + 8).astype(np.uint8), scales, g)
    if encoding == "q4":
        return _encode_q4_asymmetric(w, g)
    mask = w != 0
    if encoding == "sparse-f16":
        return pack_sparse(encoding, mask, w.astype(np.float16), None, None)
    qmax = 7 if encoding == "sparse-q4" else 127
    scales = group_scales(w, g, qmax)
    codes = _codes(w, scales, g, qmax)
    stored = (codes + 8).astype(np.uint8) if encoding == "sparse-q4" else codes
    return pack_sparse(encoding, mask, stored, scales, g)


def _encode_q4_asymmetric(w: np.ndarray, g: int) -> EncodedTensor:
    rows, cols = w.shape
    ng = n_groups(cols, g)
    padded = np.zeros((rows, ng * g), np.float32)
    padded[:, :cols] = w
    grouped = padded.reshape(rows, ng, g)
    lo, hi = np.minimum(grouped.min(axis=2), 0), np.maximum(grouped.max(axis=2), 0)
    scales = ((hi - lo) / np.float32(15)).astype(np.float16)
    s = scales.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, np.clip(np.rint(-lo / np.where(s > 0, s, 1)), 0, 15), 8).astype(np.uint8)
        sc = _per_column(scales, g, cols)
        zc = np.repeat(z, g, axis=1)[:, :cols].astype(np.float32)
        u = np.where(sc > 0, np.rint(w / np.where(sc > 0, sc, 1)) + zc, zc)
    return pack_q4(np.clip(u, 0, 15).astype(np.uint8), scales, g, z)


def decode(t: EncodedTensor) -> np.ndarray:
    """Dense float32 array of an encoded tensor (the quantized form of the original weights)."""
    p, enc = t.parts, t.encoding
    if enc == "dense":
        data = np.asarray(p[""])
        return bf16_to_f32(data) if data.dtype == np.uint16 else data.astype(np.float32)
    rows, cols = t.shape
    if enc in ("q8", "q4"):
        s = _per_column(p["scales"], t.group_size, cols)
        if enc == "q8":
            return p["qweight"].astype(np.float32) * s
        u = unpack_nibbles(np.asarray(p["qweight"]), cols).astype(np.float32)
        z = np.repeat(p["zeros"], t.group_size, axis=1)[:, :cols].astype(np.float32) if "zeros" in p else 8.0
        return (u - z) * s
    mask = unpack_mask(np.asarray(p["bitmask"]), cols)
    counts = mask.sum(axis=1)
    offsets = np.asarray(p["row_offsets"])
    if enc == "sparse-q4":
        nibbles = unpack_nibbles(np.asarray(p["values"]), 2 * int(offsets[-1]))
        nz_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        row_of = np.repeat(np.arange(rows), counts)
        slot = 2 * offsets[row_of] + (np.arange(int(counts.sum())) - nz_start[row_of])
        stored = nibbles[slot].astype(np.float32) - 8
    else:
        stored = np.asarray(p["values"]).astype(np.float32)
    out = np.zeros((rows, cols), np.float32)
    if enc == "sparse-f16":
        out[mask] = stored
    else:
        out[mask] = stored * _per_column(p["scales"], t.group_size, cols)[mask]
    return out
