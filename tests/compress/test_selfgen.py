"""Calibration windows the model writes itself (zoo compress --calib-generated)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.compress import Recipe, compress
from zoo.compress.selfgen import generated_windows
from zoo.convert.source import open_source
from zoo.errors import CompressError


def test_generated_windows_are_seeded_token_ids_of_the_model(tiny_llama, tmp_path):
    source = open_source(tiny_llama)
    a = generated_windows(source, 3, 40, 0, tmp_path)
    b = generated_windows(source, 3, 40, 0, tmp_path)
    c = generated_windows(source, 3, 40, 1, tmp_path)
    assert a.shape == (3, 40) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() < source.config["vocab_size"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len({tuple(r) for r in a}) == 3  # every window its own text
    assert not list(tmp_path.iterdir()), "the temporary f16 model was left behind"


def test_compress_mixes_text_and_generated_windows_and_says_so(tiny_llama, tmp_path):
    recipe = Recipe(method="wanda", sparsity=0.5, samples=6, seq_len=32, calib_generated=2)
    card = compress(tiny_llama, tmp_path / "m", recipe, evaluate=False)
    cal = card["compression"]["calibration"]
    assert cal["samples"] == 6 and cal["generated"] == 2 and "sampled from the base model" in cal["generation"]
    plain = compress(tiny_llama, tmp_path / "p", Recipe(method="wanda", sparsity=0.5, samples=6, seq_len=32),
                     evaluate=False)
    assert "generated" not in plain["compression"]["calibration"]
    assert card["files"] != plain["files"]  # the generated windows changed the statistics


def test_calib_generated_is_bounded_by_samples():
    with pytest.raises(CompressError, match="--calib-generated must be between 0 and --samples"):
        Recipe(samples=4, calib_generated=5).validated()
