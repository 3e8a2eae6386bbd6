"""The spec-only reader (spec_reader.py) decodes every committed vector exactly as zoo does."""

from pathlib import Path

import numpy as np
import pytest

import spec_reader
from zoo.format import decode, open_artifact

VECTORS = Path(__file__).parent.parent / "data" / "format"


@pytest.mark.parametrize("vector", sorted(p.name for p in VECTORS.iterdir() if p.is_dir() and p.name != "__pycache__"))
def test_spec_reader_matches_zoo(vector):
    config, tensors = spec_reader.read_artifact(VECTORS / vector)
    art = open_artifact(VECTORS / vector)
    assert config == art.config
    assert set(tensors) == set(art.tensors)
    for name, dense in tensors.items():
        np.testing.assert_allclose(decode(art.tensors[name]), dense, rtol=1e-6, atol=0, err_msg=name)
