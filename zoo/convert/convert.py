"""`convert(src, out_dir, encoding)`: a Source streamed tensor by tensor into a zoo artifact with a card.

Encodings for the linear weights (matrices other than the embedding): `auto` keeps F16 values but
stores a weight as sparse-f16 when its zeros save bytes (published pruned checkpoints become sparse
artifacts without recompression); `f16`, `bf16`, `f32` store dense; `q8`, `q4`, `sparse-*` quantize
with zoo.format.encode (numpy reference). With `q8`/`q4`, weights that hold enough zeros become
`sparse-q8`/`sparse-q4`. Norms and an untied token embedding stay dense F16 (shared across variants); a tied
embedding (it is the output head too) is stored q8 when the body is quantized, and an untied output
head is stored q8 when the body is 4-bit (4-bit heads cost too much quality).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import ConvertError
from zoo.format import ArtifactWriter, encode
from zoo.format.constants import n_words

from .source import Source, open_source

ENCODINGS = ("auto", "f16", "bf16", "f32", "q8", "q4", "sparse-f16", "sparse-q8", "sparse-q4")
SPARSE_SAVING = 0.9  # store sparse only when it takes at most 90% of the dense bytes
_SPARSE_OF = {"auto": "sparse-f16", "f16": None, "bf16": None, "f32": None, "q8": "sparse-q8", "q4": "sparse-q4"}
_BITS = {"sparse-f16": 16, "sparse-q8": 8, "sparse-q4": 4, "f16": 16, "auto": 16, "q8": 8, "q4": 4}


def sparse_pays(w: np.ndarray, dense_bits: int, sparse_encoding: str, group_size: int) -> bool:
    """Whether the sparse encoding of `w` takes at most SPARSE_SAVING of its dense encoding's bytes."""
    rows, cols = w.shape
    nnz = int(np.count_nonzero(w))
    scale_bytes = 0 if sparse_encoding == "sparse-f16" else 2 * rows * -(-cols // group_size)
    sparse = 8 * rows * n_words(cols) + 8 * (rows + 1) + nnz * _BITS[sparse_encoding] / 8 + scale_bytes
    dense = rows * cols * dense_bits / 8 + (0 if dense_bits == 16 else 2 * rows * -(-cols // group_size))
    return sparse <= SPARSE_SAVING * dense


def choose_encoding(name: str, w: np.ndarray, encoding: str, group_size: int,
                    tied: bool = False) -> tuple[str, dict]:
    """(zoo encoding, encode kwargs) for one tensor under the --encoding policy."""
    if name == "token_embd.weight" and tied and encoding in ("q8", "q4", "sparse-q8", "sparse-q4"):
        # a tied embedding is also the output head, read whole every token: q8 halves its bytes
        return "q8", {"group_size": group_size}
    if w.ndim == 1 or name == "token_embd.weight":
        return "dense", {"dtype": "F32" if encoding == "f32" else "BF16" if encoding == "bf16" else "F16"}
    if encoding in ("f16", "bf16", "f32"):
        return "dense", {"dtype": encoding.upper()}
    if encoding.startswith("sparse-"):
        return encoding, {"group_size": group_size}
    if name == "output.weight" and encoding == "q4":
        encoding = "q8"
    sparse = _SPARSE_OF[encoding]
    if sparse and sparse_pays(w, _BITS[encoding], sparse, group_size):
        return sparse, {"group_size": group_size}
    if encoding == "auto":
        return "dense", {"dtype": "F16"}
    return encoding, {"group_size": group_size}


def convert(src: str | Path | Source, out_dir: str | Path, encoding: str = "auto", group_size: int = 128,
            overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write `src` as a zoo artifact at `out_dir`; returns the path. ConvertError/FormatError on bad input."""
    if encoding not in ENCODINGS:
        raise ConvertError(f"unknown encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")
    source = src if isinstance(src, Source) else open_source(src)
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    zeros = total = 0
    names = source.names
    with ArtifactWriter(out_dir, source.config, overwrite=overwrite) as writer:
        for i, name in enumerate(names):
            if progress:
                progress(i, len(names), name)
            w = source.tensor(name)
            tensor = source.stored(name, encoding)
            if tensor is None:
                enc, kwargs = choose_encoding(name, w, encoding, group_size, source.config["tied_embeddings"])
                tensor = encode(w, enc, **kwargs)
            if w.ndim == 2 and name != "token_embd.weight":
                zeros += w.size - int(np.count_nonzero(w))
                total += w.size
            writer.add(name, tensor)
            counts[tensor.encoding] = counts.get(tensor.encoding, 0) + 1
            del w
        if source.tokenizer_json is not None:  # without one the artifact can be benchmarked, not chatted with
            writer.add_file("tokenizer.json", source.tokenizer_json)
        bits = {"q8": 8, "q4": 4, "sparse-q8": 8, "sparse-q4": 4, "f32": 32}.get(encoding, 16)
        card = {"card_version": 1, "name": card_name(out_dir), "architecture": source.config["arch"],
                "description": f"converted from {source.description}",
                "parameters": int(sum(int(np.prod(source.shape(n))) for n in names)),
                "base_model": {"name": source.description, "source": ", ".join(f.name for f in source.files),
                               "sha256": source.sha256},
                "compression": {"method": "none", "bits": bits,
                                "group_size": group_size if bits in (4, 8) else None},
                "metrics": {"sparsity": round(zeros / total, 4) if total else 0.0},
                "conversion": {"tool": "zoo convert", "encoding": encoding, "tensors": counts,
                           "seconds": round(time.perf_counter() - t0, 1)}}
        for block, fields in source.provenance().items():  # what the checkpoint states about itself
            card[block].update(fields)
        return writer.finish(card)


def card_name(out_dir: str | Path) -> str:
    """A card name (lowercase, [a-z0-9._-]) from the output directory's name."""
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(out_dir).name.lower()).strip("-._")
    return (name or "model")[:128]
