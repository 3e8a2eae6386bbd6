"""A zoo artifact as a Source: tensors decoded to dense float32 (the quantized values), one at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .source import Source, unpermute_rope_rows


class ArtifactSource(Source):
    """An artifact directory; `tensor()` decodes with the numpy reference (compression input, not runtime)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from zoo.format import open_artifact

        self._art = open_artifact(path)  # FormatError (a ZooError) on any structural problem
        self._validated = False
        self.config = dict(self._art.config)
        self.files = sorted(self._art.files)
        tok = path / "tokenizer.json"
        self.tokenizer_json = tok.read_bytes() if tok.is_file() else None
        self._expected = {n: tuple(t.shape) for n, t in self._art.tensors.items()}
        # Sources always speak the "half" RoPE layout: interleaved Q/K rows are un-permuted on read.
        self._interleaved = self.config.get("rope_layout") == "interleaved"
        if self._interleaved:
            self.config["rope_layout"] = "half"
        self.description = f"zoo artifact {path.name} ({self.config['arch']})"

    @property
    def artifact(self):
        """The opened zoo.format artifact (card, config, files), for consumers that need more than tensors."""
        return self._art

    def encoded(self, name: str):
        """The stored EncodedTensor (zero-copy views), for consumers that keep encodings as they are."""
        self._validate()
        return self._art.tensors[name]

    def _validate(self) -> None:
        if not self._validated:
            self._art.validate()
            self._validated = True

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return self._expected

    def _load(self, name: str) -> np.ndarray:
        from zoo.format import decode

        w = decode(self.encoded(name))
        if self._interleaved and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = self.config["n_heads"] if name.endswith("attn_q.weight") else self.config["n_kv_heads"]
            w = unpermute_rope_rows(w, heads)
        return w
