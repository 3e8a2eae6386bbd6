"""A zoo artifact seen by an exporter: dense float32 weights of every encoding, one MLP width, zeros counted.

Exporters (export_hf, export_gguf) write formats that store every weight densely, so they read the
artifact through ArtifactSource (the numpy reference decode of each encoding, Q/K rows in the Hugging
Face "half" RoPE layout) and pad a neuron-pruned model's per-layer MLP widths to one width with zero
neurons: a zero row of gate/up and a zero column of down add exactly nothing to the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import ConvertError

from .artifact_source import ArtifactSource

_FFN_ROWS = ("ffn_gate.weight", "ffn_up.weight")  # [hidden, dim]: pad rows
_FFN_COLS = ("ffn_down.weight",)  # [dim, hidden]: pad columns


@dataclass
class ExportResult:
    """What an export wrote: where, in which type, and the sparsity it stores densely."""

    path: Path
    target: str  # "hf" or "gguf"
    dtype: str  # f16, f32, q8_0, q4_0
    size_bytes: int
    zeros: int  # zero entries of the linear weights (embedding and padding excluded)
    weights: int  # entries of the linear weights
    padded_mlp: bool  # per-layer MLP widths were padded with zero neurons to one width
    fallback: list[str]  # tensors stored in another type than asked (e.g. F16 when a row is not whole blocks)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def open_artifact_for_export(path: str | Path) -> ArtifactSource:
    """The artifact at `path` as a Source; ConvertError (one line) when it is not a zoo artifact."""
    p = Path(path)
    if not p.is_dir() or not (p / "zoo.yaml").is_file():
        raise ConvertError(f"{p}: not a zoo artifact (a directory with zoo.yaml)")
    return ArtifactSource(p)


class ExportWeights:
    """Dense float32 tensors of an artifact under zoo's GGUF-style names, MLP padded to `hidden_dim`."""

    def __init__(self, path: str | Path, mlp_width: Callable[[dict], int] | None = None, verify: bool = False) -> None:
        """`mlp_width(config)`: the one MLP width the target needs (default: the widest layer's);
        `verify`: check the files against the card's sha256 first (zoo.verify, cached), as `zoo run` does."""
        self.source = open_artifact_for_export(path)
        if verify:
            from zoo.verify import verify_artifact

            verify_artifact(self.source.artifact)
        self.path = Path(path)
        self.card: dict = dict(self.source.artifact.card or {})
        self.tokenizer_json: bytes | None = self.source.tokenizer_json
        widths = hidden_of(self.source.config)
        self.hidden_dim = mlp_width(self.source.config) if mlp_width else max(widths)
        if max(widths) > self.hidden_dim:
            raise ConvertError(f"{path}: MLP width {max(widths)} is larger than the {self.hidden_dim} the target allows")
        self.padded = any(w != self.hidden_dim for w in widths)
        self.config = {**self.source.config, "hidden_dim": self.hidden_dim}
        self.zeros = self.weights = 0

    @property
    def names(self) -> list[str]:
        return self.source.names

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape after padding."""
        shape = self.source.shape(name)
        if name.endswith(_FFN_ROWS):
            return (self.hidden_dim, shape[1])
        if name.endswith(_FFN_COLS):
            return (shape[0], self.hidden_dim)
        return shape

    def tensor(self, name: str) -> np.ndarray:
        """float32 [rows, cols] (or [n]) decoded, padded; counts the zeros of linear weights as it goes."""
        w = self.source.tensor(name)
        if w.ndim == 2 and name != "token_embd.weight":
            self.zeros += w.size - int(np.count_nonzero(w))
            self.weights += w.size
        shape = self.shape(name)
        if w.shape != shape:
            out = np.zeros(shape, np.float32)
            out[:w.shape[0], :w.shape[1]] = w
            w = out
        return w


def hidden_of(config: dict) -> list[int]:
    """Per-layer MLP widths of a config (an int, or a list after neuron pruning)."""
    hidden = config["hidden_dim"]
    return list(hidden) if isinstance(hidden, list) else [int(hidden)] * int(config["n_layers"])


def as_dtype(name: str, w: np.ndarray, dtype: type) -> np.ndarray:
    """`w` cast to float16/float32; ConvertError when a value does not fit (f16 overflow)."""
    with np.errstate(over="ignore"):  # checked below, with the tensor's name
        out = w.astype(dtype)
    if not np.all(np.isfinite(out)):
        raise ConvertError(f"{name}: values overflow {np.dtype(dtype).name} (export with --type f32)")
    return out
