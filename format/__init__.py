"""zoo.format: the zoo container (SPEC.md) — encodings, reader, writer and validation.

Public API: `encode`, `decode`, `EncodedTensor`, `open_artifact`, `ArtifactWriter`, `validate`.
"""

from .constants import DEFAULT_GROUP_SIZE, ENCODINGS, FORMAT_VERSION
from .encode import EncodedTensor, decode, encode, pack_q4, pack_q8, pack_sparse

__all__ = ["DEFAULT_GROUP_SIZE", "ENCODINGS", "FORMAT_VERSION", "EncodedTensor", "decode", "encode",
           "pack_q4", "pack_q8", "pack_sparse"]
