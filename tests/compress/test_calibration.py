"""Calibration windows from one text, from several (mixed), and from the shipped texts by name."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
from zoo.compress.calibration import DEFAULT_TEXTS, calibration_path, calibration_windows
from zoo.evaluate import CALIBRATION_TEXT, CALIBRATION_TEXTS, DATA_DIR, load_tokenizer, tokenize


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """Whether `needle` is a contiguous span of `haystack`."""
    windows = np.lib.stride_tricks.sliding_window_view(haystack, needle.size)
    return bool((windows == needle).all(axis=1).any())


def test_one_text_gives_the_windows_it_always_gave(tokenizer_json):
    single = calibration_windows(tokenizer_json, 6, 32, 5, CALIBRATION_TEXT)
    listed = calibration_windows(tokenizer_json, 6, 32, 5, [CALIBRATION_TEXT])
    assert np.array_equal(single.tokens, listed.tokens) and single.card() == listed.card()
    # the windows a seeded generator draws from the whole text, as before several texts existed
    ids = tokenize(load_tokenizer(tokenizer_json), CALIBRATION_TEXT.read_text())
    starts = np.random.default_rng(5).integers(0, len(ids) - 32 + 1, size=6)
    assert np.array_equal(single.tokens, np.stack([ids[s:s + 32] for s in starts]))
    assert "texts" not in single.card()


def test_several_texts_share_the_windows_in_order(tokenizer_json, tmp_path):
    second = tmp_path / "notes.txt"
    second.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    calib = calibration_windows(tokenizer_json, 5, 24, 1, [CALIBRATION_TEXT, second])
    austen = tokenize(load_tokenizer(tokenizer_json), CALIBRATION_TEXT.read_text())
    fox = tokenize(load_tokenizer(tokenizer_json), second.read_text())
    assert calib.tokens.shape == (5, 24)
    assert all(_contains(austen, w) for w in calib.tokens[:3])  # the first text takes the remainder
    assert all(_contains(fox, w) and not _contains(austen, w) for w in calib.tokens[3:])
    card = calib.card()
    assert [t["samples"] for t in card["texts"]] == [3, 2]
    assert card["texts"][1] == {"file": "notes.txt", "samples": 2,
                                "sha256": hashlib.sha256(second.read_bytes()).hexdigest()}
    assert card["file"] == "calibration.txt + notes.txt"


def test_the_default_is_austen_and_the_model_written_text_half_each(tokenizer_json):
    default = calibration_windows(tokenizer_json, 6, 32, 5)
    named = calibration_windows(tokenizer_json, 6, 32, 5, list(DEFAULT_TEXTS))
    assert np.array_equal(default.tokens, named.tokens) and default.card() == named.card()
    assert np.array_equal(calibration_windows(tokenizer_json, 6, 32, 5, []).tokens, default.tokens)  # none named
    assert [(t["file"], t["samples"]) for t in default.card()["texts"]] == [("calibration.txt", 3),
                                                                             ("smollm2-written.txt", 3)]
    written = tokenize(load_tokenizer(tokenizer_json), CALIBRATION_TEXTS["smollm2-written"].read_text())
    assert all(_contains(written, w) for w in default.tokens[3:])


def test_shipped_texts_by_name_and_their_digests_in_the_readme():
    readme = (DATA_DIR / "README.md").read_text()
    for name, path in CALIBRATION_TEXTS.items():
        assert calibration_path(name) == path and path.is_file()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"^{digest}  {re.escape(path.name)}$", readme, re.M), f"{path.name} digest not in README"
    assert calibration_path(None) == CALIBRATION_TEXT


def test_compress_mixes_texts_given_twice_and_names_a_missing_one(tiny_llama, tmp_path):
    from .test_cli import one_line_error, zoo

    second = tmp_path / "notes.txt"
    second.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    out = tmp_path / "mixed"
    proc = zoo("compress", str(tiny_llama), "-o", str(out), "--method", "wanda", "--sparsity", "0.5", "--samples", "4",
               "--seq-len", "32", "--no-eval", "--json", "--calib", "builtin", "--calib", str(second))
    assert proc.returncode == 0, proc.stderr
    texts = json.loads(proc.stdout)["card"]["compression"]["calibration"]["texts"]
    assert [(t["file"], t["samples"]) for t in texts] == [("calibration.txt", 2), ("notes.txt", 2)]
    proc = zoo("compress", str(tiny_llama), "-o", str(tmp_path / "none"), "--method", "wanda", "--sparsity", "0.5",
               "--samples", "4", "--seq-len", "32", "--no-eval", "--calib", "builtin", "--calib", "builtin-typo")
    assert proc.returncode != 0 and "builtin-typo" in one_line_error(proc)
    assert not (tmp_path / "none").exists()
