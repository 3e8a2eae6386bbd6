"""zoo.format: the zoo container (SPEC.md) — encodings, reader, writer and validation.

Public API: `encode`, `decode`, `EncodedTensor`, `open_artifact`, `ArtifactWriter`; pack helpers
for compressors that choose their own codes and scales.
"""

from .architectures import expected_tensors
from .constants import DEFAULT_GROUP_SIZE, ENCODINGS, FORMAT_VERSION, Q4_TOP_CODE, TILE_KEEP, TILE_ROWS
from .encode import (EncodedTensor, decode, encode, kept_mask, pack_q4, pack_q8, pack_sparse, pack_tile4_q4,
                     q4_zero_point_grid, stored_scales, stored_zeros)
from .reader import Artifact, open_artifact
from .writer import ArtifactWriter

__all__ = ["DEFAULT_GROUP_SIZE", "ENCODINGS", "FORMAT_VERSION", "Q4_TOP_CODE", "TILE_KEEP", "TILE_ROWS", "Artifact", "ArtifactWriter",
           "EncodedTensor", "decode", "encode", "expected_tensors", "kept_mask", "open_artifact", "pack_q4", "pack_q8", "pack_sparse",
           "pack_tile4_q4", "q4_zero_point_grid", "stored_scales", "stored_zeros"]
