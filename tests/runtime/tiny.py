"""A tiny random Llama artifact with a real byte-level BPE tokenizer (trained here) and a chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from zoo.format import ArtifactWriter, encode, expected_tensors
from zoo.synthetic import TINY_LLAMA, random_tensor

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["the quick brown fox jumps over the lazy dog", "sparse quantized models run on the cpu",
          "hello world, this is zoo", "numbers 0123456789 and punctuation !?.,;:"] * 20


def tokenizer_json() -> bytes:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str().encode()


def write_tiny(path: Path, encoding: str = "q8", seed: int = 0, max_seq_len: int = 64) -> Path:
    """Write the artifact; EOS is <|im_end|> (id 2)."""
    tj = tokenizer_json()
    vocab = Tokenizer.from_str(tj.decode()).get_vocab_size()
    config = dict(TINY_LLAMA, vocab_size=vocab, n_layers=2, max_seq_len=max_seq_len,
                  tokenizer={"bos_token_id": None, "eos_token_ids": [2], "add_bos": False, "chat_template": TEMPLATE})
    rng = np.random.default_rng(seed)
    with ArtifactWriter(path, config) as w:
        for name, shape in expected_tensors(config).items():
            t = random_tensor(rng, name, shape, 0.0) * (20.0 if name == "token_embd.weight" else 1.0)
            linear = len(shape) == 2 and name != "token_embd.weight"
            w.add(name, encode(t, encoding, group_size=32) if linear else encode(t, "dense", dtype="F16"))
        w.add_file("tokenizer.json", tj)
        return w.finish({"card_version": 1, "name": "tiny", "architecture": "llama"})
