"""Build a Hugging Face `tokenizer.json` from a GGUF file's vocabulary (byte-level BPE models).

llama.cpp's pre-tokenizers are named in `tokenizer.ggml.pre`; each maps to the split rules llama.cpp
applies (llama-vocab.cpp). We express the same rules with `tokenizers` components so that the result
tokenizes exactly as llama.cpp does (tests/convert checks this against llama-cpp-python).
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from zoo.errors import ConvertError

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_SPLIT = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp pre-tokenizer name -> (split each digit first?, main regex)
_PRE = {
    "default": (False, GPT2_SPLIT), "gpt2": (False, GPT2_SPLIT), "gpt-2": (False, GPT2_SPLIT),
    "mpt": (False, GPT2_SPLIT), "olmo": (False, GPT2_SPLIT),
    "smollm": (True, GPT2_SPLIT), "starcoder": (True, GPT2_SPLIT), "refact": (True, GPT2_SPLIT),
    "llama-bpe": (False, LLAMA3_SPLIT), "llama3": (False, LLAMA3_SPLIT),
}
CONTROL, USER_DEFINED = 3, 4  # gguf TokenType values


def build_tokenizer_json(fields: dict) -> bytes:
    """tokenizer.json bytes from GGUF key/values (`tokenizer.ggml.*` already decoded to Python values)."""
    model = fields.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ConvertError(f"GGUF tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2')")
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in _PRE:
        raise ConvertError(f"GGUF pre-tokenizer {pre!r} is not supported (known: {', '.join(sorted(_PRE))})")
    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    types: list[int] = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in fields.get("tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False, byte_fallback=False))
    digits, split = _PRE[pre]
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    steps.append(pre_tokenizers.Split(Regex(split), behavior="isolated"))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
             for i in range(len(tokens)) if types[i] in (CONTROL, USER_DEFINED)]
    specials = [a for a in added if a.special]
    tok.add_special_tokens(specials)
    tok.add_tokens([a for a in added if not a.special])
    return tok.to_str().encode("utf-8")
