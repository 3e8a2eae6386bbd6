"""GGUF `tokenizer.ggml.*` values from a tokenizer.json: the inverse of gguf_tokenizer.build_tokenizer_json.

Byte-level BPE only (llama.cpp's "gpt2" tokenizer model). The llama.cpp pre-tokenizer name is read off
the tokenizer.json's split rules, the way gguf_tokenizer maps each name to rules; tokens are the
vocabulary plus the added tokens (special ones CONTROL, others USER_DEFINED), padded with unused
"[PAD<i>]" tokens to the model's vocab_size as llama.cpp's own converter does.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.errors import ConvertError
from zoo.untrusted import MAX_HEADER_BYTES, loads_json

from .gguf_tokenizer import CONTROL, GPT2_SPLIT, LLAMA3_SPLIT, USER_DEFINED

NORMAL, UNUSED = 1, 5  # gguf TokenType values
# the Llama 3 split as transformers' tokenizer.json spells it (gguf_tokenizer spells the case-insensitive part out)
_LLAMA3_HF_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                    r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# (digits split one by one first?, split rule) -> llama.cpp pre-tokenizer name; None = ByteLevel's own GPT-2 regex.
_PRE_NAMES = {(True, GPT2_SPLIT): "smollm", (True, None): "smollm", (False, GPT2_SPLIT): "gpt-2",
              (False, None): "gpt-2", (False, LLAMA3_SPLIT): "llama-bpe", (False, _LLAMA3_HF_SPLIT): "llama-bpe"}


@dataclass
class GGUFVocab:
    """What a GGUF file says about its tokenizer (keys tokenizer.ggml.model/pre/tokens/token_type/merges)."""

    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]


def gguf_vocab(tokenizer_json: bytes, vocab_size: int) -> GGUFVocab:
    """The GGUF vocabulary of a byte-level BPE tokenizer.json; ConvertError for any other kind."""
    doc = loads_json(tokenizer_json, "tokenizer.json", ConvertError, max_bytes=MAX_HEADER_BYTES)
    if not isinstance(doc, dict):
        raise ConvertError("tokenizer.json: not a JSON object")
    model = doc.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or (doc.get("decoder") or {}).get("type") != "ByteLevel":
        raise ConvertError("tokenizer.json: only byte-level BPE tokenizers can be exported to GGUF "
                           f"(this one is {model.get('type')}, decoder {(doc.get('decoder') or {}).get('type')})")
    by_id: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in model["vocab"].items()}
    for added in doc.get("added_tokens") or []:
        by_id[added["id"]] = (added["content"], CONTROL if added.get("special") else USER_DEFINED)
    if max(by_id) >= vocab_size:
        raise ConvertError(f"tokenizer.json: token id {max(by_id)} is outside the model's vocabulary ({vocab_size})")
    tokens, types = [], []
    for i in range(vocab_size):
        token, kind = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(token)
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return GGUFVocab(_pre_name(doc.get("pre_tokenizer")), tokens, types, merges)


def _pre_name(pre: dict | None) -> str:
    """llama.cpp's pre-tokenizer name for the tokenizer.json's pre_tokenizer, or ConvertError."""
    steps = (pre or {}).get("pretokenizers", [pre]) if (pre or {}).get("type") == "Sequence" else [pre or {}]
    digits = any(s.get("type") == "Digits" and s.get("individual_digits") for s in steps)
    splits = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if len(splits) > 1 or not byte_level or (not splits and not byte_level[0].get("use_regex", True)):
        splits = ["(unrecognized)"]
    name = _PRE_NAMES.get((digits, splits[0] if splits else None))
    if name is None:
        raise ConvertError("tokenizer.json: its pre-tokenizer matches none llama.cpp knows "
                           "(supported: the GPT-2, SmolLM and Llama 3 split rules)")
    return name
