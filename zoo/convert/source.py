"""Read a model checkpoint (GGUF file, Hugging Face or compressed-tensors dir, zoo artifact) as dense float32 tensors.

`open_source(path)` is the one entry point. Every source speaks zoo's vocabulary: a config per
SPEC.md section 5 and GGUF-style tensor names, with Q/K rows in the Hugging Face "half" RoPE layout
(GGUF's llama.cpp-permuted rows are un-permuted on read; see docs/runtime.md). Tensors load lazily
one at a time so a 7B checkpoint streams through a converter or compressor in about one tensor of memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from zoo.errors import ConvertError, FormatError


class Source:
    """A checkpoint seen as zoo config + named dense float32 tensors; subclasses fill the fields."""

    config: dict
    tokenizer_json: bytes | None = None
    description: str = ""
    files: list[Path]

    def __init__(self) -> None:
        self._sha256: str | None = None

    @property
    def names(self) -> list[str]:
        """Logical tensor names (GGUF style), in the order the architecture lists them."""
        return list(self._shapes())

    def shape(self, name: str) -> tuple[int, ...]:
        """Dense shape of a tensor, without loading it."""
        return self._shapes()[name]

    def tensor(self, name: str) -> np.ndarray:
        """The dense float32 tensor `name` ([rows, cols] for matrices), loaded now."""
        if name not in self._shapes():
            raise ConvertError(f"{self.description}: no tensor {name!r}")
        out = np.ascontiguousarray(self._load(name), dtype=np.float32)
        if out.shape != self.shape(name):
            raise ConvertError(f"{self.description}: tensor {name} has shape {out.shape}, expected {self.shape(name)}")
        return out

    @property
    def sha256(self) -> str:
        """sha256 over the source file(s) in order (each file's bytes, concatenated)."""
        if self._sha256 is None:
            h = hashlib.sha256()
            for f in self.files:
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        h.update(chunk)
            self._sha256 = h.hexdigest()
        return self._sha256

    def stored(self, name: str, encoding: str):
        """`name` already in a zoo encoding that the --encoding policy `encoding` accepts (an EncodedTensor built
        from the checkpoint's own codes, no float round trip), or None to encode `tensor(name)`."""
        return None

    def provenance(self) -> dict:
        """Card fields the checkpoint states about itself, merged into the card's blocks ({block: {key: value}})."""
        return {}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _load(self, name: str) -> np.ndarray:
        raise NotImplementedError


def check_against_config(config: dict, found: dict[str, tuple[int, ...]], where: str) -> dict[str, tuple[int, ...]]:
    """Refuse unknown archs, missing/extra tensors and wrong shapes; return the expected shapes."""
    from zoo.format.architectures import expected_tensors

    try:
        expected = expected_tensors(config)
    except FormatError as err:
        raise ConvertError(f"{where}: {err}") from None
    missing = [n for n in expected if n not in found]
    if missing:
        raise ConvertError(f"{where}: missing tensor {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise ConvertError(f"{where}: tensor {name} has shape {tuple(found[name])}, expected {tuple(shape)}")
    return expected


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved pairs -> Hugging Face half layout).

    llama.cpp's converter maps each head's rows [a0..a(h/2-1), b0..] to [a0, b0, a1, b1, ...];
    this is the inverse. Rows only move, so quantization groups (along columns) are untouched.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_source(path: str | Path) -> Source:
    """Open a GGUF file, a Hugging Face checkpoint dir or a zoo artifact dir; ConvertError otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConvertError(f"{p}: no such file or directory")
    if p.is_file():
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if magic == b"GGUF":
            from .gguf_source import GGUFSource

            return GGUFSource(p)
        raise ConvertError(f"{p}: not a GGUF file (a Hugging Face checkpoint or zoo artifact is a directory)")
    if (p / "zoo.yaml").is_file():
        from .artifact_source import ArtifactSource

        return ArtifactSource(p)
    if (p / "config.json").is_file():
        from .ct_config import ct_config
        from .ct_source import CTSource
        from .hf_source import HFSource

        if (qc := ct_config(p / "config.json")) is not None:
            return CTSource(p, qc)

        return HFSource(p)
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return open_source(ggufs[0])
    raise ConvertError(f"{p}: neither a zoo artifact (zoo.yaml), a Hugging Face checkpoint (config.json) nor a GGUF file")
