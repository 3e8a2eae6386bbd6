"""Reference encode/decode in numpy: dense array -> parts (SPEC.md section 3) -> dense array.

These are the definition the kernels and the compressor are tested against. Compressors that pick
their own codes and scales (GPTQ) build parts with `pack_q4`, `pack_q8`, `pack_sparse` and
`pack_tile4_q4`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.errors import FormatError

from .constants import (DEFAULT_GROUP_SIZE, ENCODINGS, MASK_WORD_BITS, MAX_GROUP_SIZE, Q4_TOP_CODE, TILE_GROUP,
                        TILE_LANE_CHUNK, TILE_ROWS, bf16_to_f32, f32_to_bf16, n_groups, n_words, tile4_problem)


@dataclass
class EncodedTensor:
    """A logical tensor in one encoding: its parts keyed by suffix ('' for the dense part).

    `meta` holds what else describes it: "dtype" of a dense tensor (not stored), "keep" (K) of a
    tile4-q4 tensor (stored in the metadata entry).
    """

    encoding: str
    shape: tuple[int, ...]
    parts: dict[str, np.ndarray]
    group_size: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts.values()))

    @property
    def keep(self) -> int | None:
        """K of a tile4-q4 tensor (kept columns per tile and group); None for other encodings."""
        keep = self.meta.get("keep")
        return None if keep is None else int(keep)

    def metadata(self) -> dict:
        """The tensor's entry in __metadata__["zoo"]["tensors"]."""
        entry = {"encoding": self.encoding, "shape": [int(s) for s in self.shape]}
        if self.group_size is not None:
            entry["group_size"] = int(self.group_size)
        for key in ENCODINGS[self.encoding].meta_keys:
            entry[key] = int(self.meta[key])
        return entry


def _check_group(encoding: str, group_size: int | None) -> int | None:
    spec = ENCODINGS[encoding]
    if not spec.grouped:
        return None
    if group_size is None or not 0 < group_size <= MAX_GROUP_SIZE or group_size % spec.group_multiple:
        raise FormatError(f"{encoding}: group_size must be a positive multiple of {spec.group_multiple} up to "
                          f"{MAX_GROUP_SIZE}")
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


def _tile4_keep(shape: tuple[int, ...], group_size: object, keep: object) -> int:
    problem = tile4_problem(tuple(shape), group_size, keep)
    if problem:
        raise FormatError(problem)
    return int(keep)


def _group_widths(cols: int) -> np.ndarray:
    """Real columns in each 128-column group: int64 [n_groups]."""
    return np.minimum(TILE_GROUP, cols - TILE_GROUP * np.arange(n_groups(cols, TILE_GROUP)))


def pack_tile4_q4(codes: np.ndarray, kept: np.ndarray, scales: np.ndarray, keep: int) -> EncodedTensor:
    """A tile4-q4 tensor (SPEC.md 3.6) from signed codes, the tiles' kept columns and per-row scales.

    codes: int [rows, cols] in [-8, 7] (value = code * scale; 0 at every position a tile does not keep);
    kept: bool [rows/4, cols], the real columns tile t keeps, exactly min(keep, width) per 128-column group;
    scales: float16 [rows, n_groups]; keep: K in TILE_KEEP. The padding of a last group narrower than K
    (its lowest K - width positions past the last column) is added here, with codes 8.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise FormatError(f"tile4-q4: codes must be 2-D, got shape {codes.shape}")
    rows, cols = codes.shape
    k = _tile4_keep((rows, cols), TILE_GROUP, keep)
    tiles, groups = rows // TILE_ROWS, n_groups(cols, TILE_GROUP)
    kept = np.asarray(kept)
    if kept.shape != (tiles, cols) or kept.dtype != bool:
        raise FormatError(f"tile4-q4: kept must be bool [{tiles}, {cols}], got {kept.dtype} {list(kept.shape)}")
    scales = np.asarray(scales)
    if scales.shape != (rows, groups):
        raise FormatError(f"tile4-q4: scales must be [{rows}, {groups}], got {list(scales.shape)}")
    if not np.issubdtype(codes.dtype, np.integer) or (codes.size and (codes.min() < -8 or codes.max() > 7)):
        raise FormatError("tile4-q4: codes must be integers in [-8, 7]")
    codes = codes.astype(np.int8)
    stray = (codes.reshape(tiles, TILE_ROWS, cols) != 0) & ~kept[:, None, :]
    if stray.any():
        t, r, c = (int(i[0]) for i in np.nonzero(stray))
        raise FormatError(f"tile4-q4: row {TILE_ROWS * t + r}, column {c}: nonzero code at a column tile {t} "
                          f"does not keep")
    padded = np.zeros((tiles, groups * TILE_GROUP), bool)
    padded[:, :cols] = kept
    grouped = padded.reshape(tiles, groups, TILE_GROUP)
    counts = grouped.sum(axis=2)
    widths = _group_widths(cols)
    want = np.minimum(k, widths)
    bad = counts != want[None, :]
    if bad.any():
        t, g = (int(i[0]) for i in np.nonzero(bad))
        raise FormatError(f"tile4-q4: tile {t}, group {g}: {int(counts[t, g])} kept columns, keep {k} needs "
                          f"{int(want[g])} (min(keep, group width {int(widths[g])}))")
    if widths[-1] < k:  # the width rule: the lowest k - w padding positions fill a narrow last group
        grouped[:, -1, widths[-1]:k] = True
    tilemask = np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(tiles, 2 * groups)
    # column (absolute) of the i-th kept position of each (tile, group), ascending: int64 [tiles, groups, k]
    where = np.nonzero(grouped.reshape(tiles * groups, TILE_GROUP))[1].reshape(tiles, groups, k)
    where = where + (TILE_GROUP * np.arange(groups))[None, :, None]
    wide = np.zeros((tiles, TILE_ROWS, groups * TILE_GROUP), np.int8)  # padding columns hold code 0 (u = 8)
    wide[:, :, :cols] = codes.reshape(tiles, TILE_ROWS, cols)
    lanes = np.take_along_axis(wide, where.reshape(tiles, 1, groups * k), axis=2)  # [tiles, 4, groups * k]
    lanes = lanes.reshape(tiles, TILE_ROWS, groups, k).transpose(0, 2, 1, 3)  # lane L = r*k + i
    u = (lanes.astype(np.int16) + 8).astype(np.uint8).reshape(tiles, groups, -1, 2, TILE_LANE_CHUNK // 2)
    qweight = (u[:, :, :, 0, :] | (u[:, :, :, 1, :] << 4)).reshape(tiles, groups * 2 * k)
    stored_scales = scales.astype(np.float16).reshape(tiles, TILE_ROWS, groups).transpose(0, 2, 1)
    parts = {"tilemask": np.ascontiguousarray(tilemask), "qweight": np.ascontiguousarray(qweight),
             "scales": np.ascontiguousarray(stored_scales.reshape(tiles, TILE_ROWS * groups))}
    return EncodedTensor("tile4-q4", (rows, cols), parts, TILE_GROUP, meta={"keep": k})


def _encode_tile4_q4(w: np.ndarray, group_size: int, keep: object) -> EncodedTensor:
    """Reference tile4-q4: each tile keeps the columns where any of its rows is nonzero, filled up to
    min(K, width) per group with its lowest other columns; scales and codes as q4 (SPEC.md 3.5)."""
    rows, cols = w.shape
    k = _tile4_keep((rows, cols), group_size, keep)
    tiles, groups = rows // TILE_ROWS, n_groups(cols, TILE_GROUP)
    padded = np.zeros((tiles, groups * TILE_GROUP), bool)
    padded[:, :cols] = (w != 0).reshape(tiles, TILE_ROWS, cols).any(axis=1)
    grouped = padded.reshape(tiles, groups, TILE_GROUP)
    counts = grouped.sum(axis=2)
    over = counts > k
    if over.any():
        t, g = (int(i[0]) for i in np.nonzero(over))
        raise FormatError(f"tile4-q4: tile {t} (rows {TILE_ROWS * t}..{TILE_ROWS * t + 3}), group {g} (columns "
                          f"{TILE_GROUP * g}..{min(cols, TILE_GROUP * (g + 1)) - 1}) has {int(counts[t, g])} nonzero "
                          f"columns: does not fit tile4 with keep {k}")
    widths = _group_widths(cols)
    free = ~grouped
    free[:, -1, widths[-1]:] = False  # padding positions are not columns
    need = np.minimum(k, widths)[None, :] - counts
    grouped |= free & (np.cumsum(free, axis=2, dtype=np.int16) <= need[:, :, None])
    scales = group_scales(w, TILE_GROUP, 7)
    return pack_tile4_q4(_codes(w, scales, TILE_GROUP, 7), padded[:, :cols], scales, k)


def encode(w: np.ndarray, encoding: str, group_size: int = DEFAULT_GROUP_SIZE, zeros: bool = False,
           dtype: str = "F16", keep: int | None = None) -> EncodedTensor:
    """Encode a dense array with the reference rounding of SPEC.md 3.5.

    `dtype` applies to `dense` (F32, F16 or BF16); `zeros` asks q4 for asymmetric zero points;
    sparse encodings store exactly the nonzero entries of `w`; tile4-q4 needs `keep` (K) and
    group_size 128, and refuses a (tile, group) with more than K nonzero columns.
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
    if encoding == "tile4-q4":
        return _encode_tile4_q4(w, group_size, keep)
    if keep is not None:
        raise FormatError(f"{encoding}: takes no keep (only tile4-q4 does)")
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


def q4_zero_point_grid(grouped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scales f16, zero points u8) [rows, groups] of q4 with zero points for weights [rows, groups, group]: each
    group spans [min(lo, 0), max(hi, 0)] on 15 steps (SPEC.md 3.5); a group of zeros has scale 0, zero point 8."""
    lo, hi = np.minimum(grouped.min(axis=2), 0), np.maximum(grouped.max(axis=2), 0)
    with np.errstate(over="ignore", invalid="ignore"):
        scales = ((hi - lo) / np.float32(Q4_TOP_CODE)).astype(np.float16)
    s = scales.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, np.clip(np.rint(-lo / np.where(s > 0, s, 1)), 0, Q4_TOP_CODE), 8).astype(np.uint8)
    return scales, z


def _encode_q4_asymmetric(w: np.ndarray, g: int) -> EncodedTensor:
    rows, cols = w.shape
    ng = n_groups(cols, g)
    padded = np.zeros((rows, ng * g), np.float32)
    padded[:, :cols] = w
    scales, z = q4_zero_point_grid(padded.reshape(rows, ng, g))
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = _per_column(scales, g, cols)
        zc = np.repeat(z, g, axis=1)[:, :cols].astype(np.float32)
        u = np.where(sc > 0, np.rint(w / np.where(sc > 0, sc, 1)) + zc, zc)
    return pack_q4(np.clip(u, 0, Q4_TOP_CODE).astype(np.uint8), scales, g, z)


def kept_mask(t: EncodedTensor) -> np.ndarray | None:
    """bool [rows, cols] of the positions a sparse encoding stores (a tile4-q4 tile's kept columns in each of its
    rows), None for encodings that store every position (whose zeros are codes like any other)."""
    if t.encoding == "tile4-q4":
        rows, cols = t.shape
        tilemask = np.ascontiguousarray(t.parts["tilemask"], "<u8")
        bits = np.unpackbits(tilemask.view(np.uint8).reshape(tilemask.shape[0], -1), axis=1, bitorder="little")
        return np.repeat(bits[:, :cols].astype(bool), TILE_ROWS, axis=0)[:rows]
    if t.encoding.startswith("sparse-"):
        return unpack_mask(np.asarray(t.parts["bitmask"]), t.shape[1])
    return None


def decode(t: EncodedTensor) -> np.ndarray:
    """Dense float32 array of an encoded tensor (the quantized form of the original weights)."""
    p, enc = t.parts, t.encoding
    if enc == "dense":
        data = np.asarray(p[""])
        return bf16_to_f32(data) if data.dtype == np.uint16 else data.astype(np.float32)
    rows, cols = t.shape
    if enc == "tile4-q4":
        return _decode_tile4_q4(t)
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


def stored_scales(t: EncodedTensor) -> np.ndarray:
    """The group scales of a quantized tensor (q8, q4, sparse-q4/q8, tile4-q4) as float16 [rows, groups], row by
    row whatever the stored order (tile4-q4 stores them tile by tile); q4's zero points: `stored_zeros`."""
    if t.encoding not in ("q8", "q4", "sparse-q8", "sparse-q4", "tile4-q4"):
        raise FormatError(f"{t.encoding}: no group scales")
    scales = np.asarray(t.parts["scales"])
    if t.encoding != "tile4-q4":
        return scales
    rows, cols = t.shape
    tiles, groups = rows // TILE_ROWS, n_groups(cols, TILE_GROUP)
    return np.ascontiguousarray(scales.reshape(tiles, groups, TILE_ROWS).transpose(0, 2, 1).reshape(rows, groups))


def stored_zeros(t: EncodedTensor) -> np.ndarray | None:
    """The zero points uint8 [rows, groups] of a q4 tensor that stores them; None for a symmetric encoding."""
    return np.asarray(t.parts["zeros"]) if t.encoding == "q4" and "zeros" in t.parts else None


def tile4_columns(tilemask: np.ndarray, keep: int) -> np.ndarray:
    """Positions (absolute, padding included) each (tile, group) keeps, ascending: int64 [tiles, groups, keep].

    Raises FormatError when a (tile, group) does not hold exactly `keep` bits.
    """
    tiles, words = tilemask.shape
    groups = words // 2
    bits = np.unpackbits(np.ascontiguousarray(tilemask, "<u8").view(np.uint8).reshape(tiles, -1), axis=1,
                         bitorder="little").reshape(tiles, groups, TILE_GROUP).astype(bool)
    counts = bits.sum(axis=2)
    if np.any(counts != keep):
        t, g = (int(i[0]) for i in np.nonzero(counts != keep))
        raise FormatError(f"tile4-q4: tile {t}, group {g}: tilemask popcount {int(counts[t, g])} is not keep {keep}")
    where = np.nonzero(bits.reshape(tiles * groups, TILE_GROUP))[1].reshape(tiles, groups, keep)
    return where + (TILE_GROUP * np.arange(groups))[None, :, None]


def tile4_lanes(qweight: np.ndarray, keep: int) -> np.ndarray:
    """Codes u of every (tile, group) block by row in tile and kept rank: uint8 [tiles, groups, 4, keep]."""
    tiles = qweight.shape[0]
    block = np.asarray(qweight).reshape(tiles, -1, 4 * keep // TILE_LANE_CHUNK, 1, TILE_LANE_CHUNK // 2)
    lanes = np.concatenate([block & 0x0F, block >> 4], axis=3)  # lanes 0..31 low nibbles, 32..63 high
    return lanes.reshape(tiles, -1, TILE_ROWS, keep)


def _decode_tile4_q4(t: EncodedTensor) -> np.ndarray:
    rows, cols = t.shape
    k = int(t.meta["keep"])
    tiles, groups = rows // TILE_ROWS, n_groups(cols, TILE_GROUP)
    where = tile4_columns(np.asarray(t.parts["tilemask"]), k)
    u = tile4_lanes(t.parts["qweight"], k)  # [tiles, groups, 4, k]
    s = np.asarray(t.parts["scales"]).astype(np.float32).reshape(tiles, groups, TILE_ROWS)
    values = (u.astype(np.float32) - 8) * s[..., None]
    out = np.zeros((tiles, TILE_ROWS, groups * TILE_GROUP), np.float32)
    index = np.broadcast_to(where.reshape(tiles, 1, groups * k), (tiles, TILE_ROWS, groups * k))
    np.put_along_axis(out, index, values.transpose(0, 2, 1, 3).reshape(tiles, TILE_ROWS, groups * k), axis=2)
    return np.ascontiguousarray(out.reshape(rows, groups * TILE_GROUP)[:, :cols])
