"""Data invariants of SPEC.md section 4, run before any kernel reads an artifact's tensors.

The sparse checks are numba kernels (popcount over the mask) so a 7B artifact validates in about the
time it takes to read its masks. They run on one thread: a single core already reads masks at
~17 GB/s, and a 2-thread prange stalls for milliseconds whenever the other core is busy.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from zoo.errors import FormatError

from .constants import ENCODINGS, TILE_GROUP, part_shape, tile4_problem
from .encode import EncodedTensor

OK, BAD_START, DECREASING, BAD_LENGTH, BAD_END, MASK_PADDING, NIBBLE_PADDING = range(7)
_MESSAGES = {
    BAD_START: "row_offsets[0] is not 0",
    DECREASING: "row_offsets decrease at row {row}",
    BAD_LENGTH: "row {row}: mask popcount does not match its value count (row_offsets)",
    BAD_END: "row_offsets[-1] does not equal the length of values",
    MASK_PADDING: "row {row}: mask bits set beyond the last column",
    NIBBLE_PADDING: "row {row}: padding nibble is not 0",
}


@intrinsic
def _popcount(typingctx, word):
    """llvm.ctpop on a uint64 (one popcnt instruction)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)

    return types.uint64(types.uint64), codegen


@numba.njit(cache=True, nogil=True)
def _check_offsets(row_offsets, n_values):
    """Serial pass: start at 0, never decrease, end at n_values. Returns (code, row)."""
    if row_offsets[0] != 0:
        return BAD_START, 0
    for r in range(row_offsets.shape[0] - 1):
        if row_offsets[r + 1] < row_offsets[r]:
            return DECREASING, r
    if row_offsets[row_offsets.shape[0] - 1] != n_values:
        return BAD_END, 0
    return OK, 0


@numba.njit(cache=True, nogil=True)
def _check_rows(bitmask, row_offsets, cols, q4, values_u8):
    """One pass over rows: popcount == row length, mask padding 0, q4 padding nibble 0.

    bitmask: uint64 [rows, words]; row_offsets: int64 [rows + 1], already checked to lie in
    [0, len(values)]; values_u8: uint8 values (sparse-q4) or an empty array. Returns per-row codes.
    """
    rows, words = bitmask.shape
    codes = np.zeros(rows, np.int8)
    tail = cols - (words - 1) * 64  # valid bits in the last word, 1..64
    tail_mask = np.uint64(0xFFFFFFFFFFFFFFFF) if tail == 64 else (np.uint64(1) << np.uint64(tail)) - np.uint64(1)
    for r in range(rows):
        count = np.uint64(0)
        for w in range(words):
            count += _popcount(bitmask[r, w])
        if words > 0 and (bitmask[r, words - 1] & ~tail_mask) != 0:
            codes[r] = MASK_PADDING
            continue
        length = row_offsets[r + 1] - row_offsets[r]
        units = (count + np.uint64(1)) // np.uint64(2) if q4 else count
        if length != np.int64(units):
            codes[r] = BAD_LENGTH
            continue
        if q4 and count % np.uint64(2) == np.uint64(1) and (values_u8[row_offsets[r + 1] - 1] >> np.uint8(4)) != 0:
            codes[r] = NIBBLE_PADDING
    return codes


TILE_POPCOUNT, TILE_PADDING, TILE_PAD_CODE = range(7, 10)
_TILE_MESSAGES = {
    TILE_POPCOUNT: "tile {tile}, group {group}: tilemask popcount is not keep ({keep})",
    TILE_PADDING: "tile {tile}, group {group}: tilemask padding breaks the width rule (a group of width w keeps "
                  "min(keep, w) real columns, plus only the lowest keep - w positions past the last column)",
    TILE_PAD_CODE: "tile {tile}, group {group}: padding code is not 8",
}
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _low_bits(n):
    """uint64 with bits 0..n-1 set, n in 0..64."""
    if n >= 64:
        return _ONES
    return (np.uint64(1) << np.uint64(max(n, 0))) - np.uint64(1)


@numba.njit(cache=True, nogil=True)
def _check_tiles(tilemask, qweight, cols, keep):
    """tile4-q4 (SPEC.md 3.6): popcount == keep per (tile, group), the width rule, padding codes 8.

    tilemask: uint64 [tiles, 2 * groups]; qweight: uint8 [tiles, groups * 2 * keep] (shapes already
    checked). Returns (code, tile, group) of the first violation.
    """
    tiles, words = tilemask.shape
    groups = words // 2
    width = cols - (groups - 1) * 128  # real columns of the last group, 1..128
    lo_real, hi_real = _low_bits(width), _low_bits(width - 64)
    want_real = min(keep, width)
    lo_narrow = _low_bits(keep)  # the whole pattern of a last group narrower than keep (keep <= 64)
    base = (groups - 1) * 2 * keep
    for t in range(tiles):
        for g in range(groups):
            if _popcount(tilemask[t, 2 * g]) + _popcount(tilemask[t, 2 * g + 1]) != np.uint64(keep):
                return TILE_POPCOUNT, t, g
        if width == 128:
            continue
        lo, hi = tilemask[t, words - 2], tilemask[t, words - 1]
        if _popcount(lo & lo_real) + _popcount(hi & hi_real) != np.uint64(want_real):
            return TILE_PADDING, t, groups - 1
        if width < keep:
            if lo != lo_narrow or hi != np.uint64(0):
                return TILE_PADDING, t, groups - 1
            for r in range(4):
                for i in range(width, keep):
                    lane = r * keep + i
                    byte = qweight[t, base + 32 * (lane // 64) + lane % 32]
                    code = byte & np.uint8(15) if lane % 64 < 32 else byte >> np.uint8(4)
                    if code != 8:
                        return TILE_PAD_CODE, t, groups - 1
    return OK, 0, 0


def check_tile4(name: str, t: EncodedTensor) -> None:
    """Every invariant of a tile4-q4 tensor: shape, group_size, keep, part shapes, then the data."""
    problem = tile4_problem(tuple(t.shape), t.group_size, t.keep)
    if problem:
        raise FormatError(f"{name}: {problem}")
    for suffix in ("tilemask", "qweight", "scales"):
        want = part_shape("tile4-q4", suffix, tuple(t.shape), TILE_GROUP, t.keep)
        got = tuple(t.parts[suffix].shape) if suffix in t.parts else None
        if got != want:
            raise FormatError(f"{name}.{suffix}: shape {got and list(got)}, expected {list(want)}")
    code, tile, group = _check_tiles(np.asarray(t.parts["tilemask"], np.uint64), np.asarray(t.parts["qweight"], np.uint8),
                                     int(t.shape[1]), int(t.keep))
    if code != OK:
        raise FormatError(f"{name}: " + _TILE_MESSAGES[code].format(tile=tile, group=group, keep=t.keep))


def _fail(name: str, code: int, row: int) -> None:
    raise FormatError(f"{name}: {_MESSAGES[code].format(row=row)}")


def check_sparse(name: str, t: EncodedTensor) -> None:
    """Mask/offset/value consistency of a sparse-* tensor."""
    offsets, values = t.parts["row_offsets"], t.parts["values"]
    code, row = _check_offsets(offsets, np.int64(values.shape[0]))
    if code != OK:
        _fail(name, code, row)
    q4 = t.encoding == "sparse-q4"
    codes = _check_rows(t.parts["bitmask"], offsets, t.shape[1], q4, values if q4 else np.empty(0, np.uint8))
    bad = np.flatnonzero(codes)
    if bad.size:
        _fail(name, int(codes[bad[0]]), int(bad[0]))


def check_tensor(name: str, t: EncodedTensor) -> None:
    """Every data check for one logical tensor (headers were checked on open)."""
    if t.encoding == "tile4-q4":
        check_tile4(name, t)
    elif ENCODINGS[t.encoding].sparse:  # sparse-q4, sparse-q8, sparse-f16: mask + row offsets + values
        check_sparse(name, t)
    if t.encoding == "q4":
        cols = t.shape[1]
        if cols % 2 and np.any(t.parts["qweight"][:, -1] >> 4):
            row = int(np.flatnonzero(t.parts["qweight"][:, -1] >> 4)[0])
            raise FormatError(f"{name}: row {row}: padding nibble is not 0")
        if "zeros" in t.parts and t.parts["zeros"].size and t.parts["zeros"].max() > 15:
            raise FormatError(f"{name}: zero point above 15")
    if "scales" in t.parts and not np.isfinite(t.parts["scales"]).all():
        raise FormatError(f"{name}: scales not finite")
