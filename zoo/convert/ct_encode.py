"""compressed-tensors integer codes as zoo encodings, without a float round trip: which zoo encoding keeps them, and
what keeping them changed (scales rounded to float16, int8 -128 clipped) or why it cannot (the note goes on the card).

Codes arrive from ct_source as {"q": codes [rows, cols] int16, "d": q - zero point [rows, cols] int16, "s": scales and
"z": zero points shaped as the scheme's groups, "g_idx", "args": the scheme}; w is the exact dense product d * s.
"""

from __future__ import annotations

import numpy as np

from zoo.format import EncodedTensor, encode, pack_q4, pack_q8, pack_sparse

from .convert import choose_encoding, sparse_pays

KEEPS = ("auto", "q4", "q8", "sparse-q4", "sparse-q8")  # --encoding values under which codes can be kept


def zoo_group_size(args: dict, cols: int) -> int:
    """zoo's group size for the scheme: the checkpoint's groups, or one group a row (channel, tensor)."""
    return args["group_size"] if args["strategy"] == "group" else -(-cols // 128) * 128


def target(codes: dict, encoding: str, w: np.ndarray) -> tuple[str | None, str | None]:
    """(note: why the codes cannot be kept, or what keeping them changes; zoo encoding that keeps them, or None)."""
    args, d = codes["args"], codes["d"]
    gs = zoo_group_size(args, w.shape[1])
    if encoding not in KEEPS:
        return f"--encoding {encoding}: decoded and re-encoded", None
    if codes["g_idx"] is not None:
        return "activation-ordered groups (g_idx): decoded and re-encoded", None
    if args["strategy"] == "block":
        return "block scales: decoded and re-encoded", None
    no_fit = f"group size {gs} does not fit zoo's groups: decoded and re-encoded"
    if args["bits"] <= 4 and encoding in ("auto", "q4", "sparse-q4"):
        if args["symmetric"]:
            if gs % 64 == 0 and (encoding == "sparse-q4" or sparse_pays(w, 4, "sparse-q4", gs)):
                return None, "sparse-q4"
            return (None, "q4") if gs % 32 == 0 and encoding != "sparse-q4" else (no_fit, None)
        if encoding == "sparse-q4":
            return "asymmetric codes (sparse-q4 has no zero points): decoded and re-encoded", None
        if gs % 64 == 0 and sparse_pays(w, 4, "sparse-q8", gs):  # q - z in [-15, 15] as sparse-q8 values
            return None, "sparse-q8"
        return (None, "q4") if gs % 32 == 0 else (no_fit, None)
    if encoding in ("q4", "sparse-q4"):
        return f"{args['bits']}-bit codes to --encoding {encoding}: decoded and re-encoded", None
    if int(d.max(initial=0)) > 127 or int(d.min(initial=0)) < -128:
        return "codes beyond q8's [-127, 127]: decoded and re-encoded", None
    clip = "codes kept, int8 code -128 clipped to -127" if int(d.min(initial=0)) == -128 else None
    if gs % 64 == 0 and (encoding == "sparse-q8" or sparse_pays(w, 8, "sparse-q8", gs)):
        return clip, "sparse-q8"
    return (clip, "q8") if gs % 32 == 0 and encoding != "sparse-q8" else (no_fit, None)


def keep_codes(codes: dict, encoding: str, w: np.ndarray) -> tuple[EncodedTensor | None, str | None]:
    """(the codes as a zoo tensor or None, the card's note or None when kept exactly)."""
    note, enc = target(codes, encoding, w)
    if enc is None:
        return None, note
    args, (rows, cols) = codes["args"], w.shape
    gs = zoo_group_size(args, cols)
    d, s = codes["d"], np.broadcast_to(codes["s"], (rows, codes["s"].shape[1]))  # [rows, G]
    live = np.pad(d, ((0, 0), (0, -cols % gs))).reshape(rows, -1, gs).any(axis=2)  # groups with a nonzero weight
    s = np.where(live, s, 0)  # a group of zeros has scale 0 (SPEC.md 3.4), whatever the checkpoint stored
    s16 = s.astype(np.float16)
    if not np.all(np.isfinite(s16)):
        return None, "scales beyond float16: decoded and re-encoded"
    notes = [note] if note else []
    if not np.array_equal(s16.astype(np.float32), s):
        notes.append("codes kept, scales rounded to float16")
    if enc == "q4":
        zeros = None if args["symmetric"] else (np.broadcast_to(codes["z"], s.shape) + 8).astype(np.uint8)
        tensor = pack_q4((codes["q"] + 8).astype(np.uint8), s16, gs, zeros)
    elif enc == "sparse-q4":
        tensor = pack_sparse(enc, d != 0, (d + 8).astype(np.uint8), s16, gs)
    else:
        d8 = np.maximum(d, -127).astype(np.int8)  # q8 stops at -127 (the note says so when a -128 was there)
        tensor = pack_q8(d8, s16, gs) if enc == "q8" else pack_sparse(enc, d != 0, d8, s16, gs)
    return tensor, "; ".join(notes) or None


def requantize(name: str, w: np.ndarray, args: dict, tied: bool) -> EncodedTensor:
    """`auto` for codes zoo cannot keep: zoo's own q4 / q8 rounding (sparse where it pays) at the checkpoint's width."""
    gs = args["group_size"] if args["strategy"] == "group" and args["group_size"] % 64 == 0 else 128
    enc, kwargs = choose_encoding(name, w, "q4" if args["bits"] <= 4 else "q8", gs, tied)
    return encode(w, enc, **kwargs)
