"""llama.cpp's own quantizations of a base model as peer points on a sweep's chart (issue 17).

The base is written once as an F16 GGUF (zoo convert, then zoo export), llama.cpp's quantizer
(llama-cpp-python's `llama_model_quantize`, with llama.cpp's own per-tensor mixes for the _M types)
turns it into each peer type, and each peer file is then measured like a zoo point: perplexity by
zoo's protocol on exactly those weights (the GGUF's tensors dequantized by `gguf`), size from the
file, bits per weight over the block linears, decode speed (if asked) from llama.cpp itself.
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from pathlib import Path
from typing import Callable

from zoo.errors import CompressError

Progress = Callable[[str], None]
SPEED_PROMPT = 32  # tokens of prompt, then SPEED_DECODE generated: the same shape as zoo.runtime.bench.measure
SPEED_DECODE = 32


class PeerType(str, Enum):
    """llama.cpp quantization types offered as peers (llama.cpp's names)."""

    Q4_0 = "Q4_0"
    Q4_K_M = "Q4_K_M"
    Q3_K_M = "Q3_K_M"
    Q2_K = "Q2_K"

    @property
    def ftype(self) -> str:
        """The llama_cpp constant naming this type for the quantizer."""
        return f"LLAMA_FTYPE_MOSTLY_{self.value}"


def parse_peers(text: str) -> list[PeerType]:
    """'Q4_0,Q2_K' -> [PeerType...]; CompressError naming the choices for anything else."""
    names = [t.strip().upper() for t in text.split(",") if t.strip()]
    known = {p.value: p for p in PeerType}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise CompressError(f"unknown llama.cpp peer type {', '.join(bad) or repr(text)} "
                            f"(choose from {', '.join(known)})")
    return [known[n] for n in dict.fromkeys(names)]


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise CompressError("llama.cpp peers need llama-cpp-python (bash scripts/setup.sh installs it, "
                            "or pip install llama-cpp-python)") from None
    # llama.cpp logs through llama-cpp-python's logger: its quantizer prints a line per tensor at INFO
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def base_gguf(source, work: Path, progress: Progress | None = None) -> Path:
    """The base model (a zoo.convert Source) as an F16 GGUF in `work`: what llama.cpp quantizes from."""
    from zoo.convert.convert import convert
    from zoo.convert.export_gguf import export_gguf

    f16 = work / "base-f16"
    if progress:
        progress("peers: writing the base as an F16 GGUF for llama.cpp's quantizer")
    convert(source, f16, encoding="f16", overwrite=True)
    out = work / "base-f16.gguf"
    out.unlink(missing_ok=True)
    export_gguf(f16, out, "f16")
    return out


def quantize(base: Path, out: Path, peer: PeerType, threads: int) -> None:
    """llama.cpp's quantizer: `base` (F16 GGUF) -> `out` in `peer`'s type."""
    llama_cpp = require_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, peer.ftype)
    params.nthread = threads
    out.unlink(missing_ok=True)
    if llama_cpp.llama_model_quantize(str(base).encode(), str(out).encode(), params) != 0 or not out.is_file():
        raise CompressError(f"llama.cpp could not quantize {base.name} to {peer.value}")


def block_bits_per_weight(path: Path) -> float:
    """Stored bits per weight of the block linears (blk.* matrices), as zoo's cards count them."""
    from gguf import GGUFReader

    nbytes = count = 0
    for t in GGUFReader(path).tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            nbytes += int(t.n_bytes)
            count += int(t.n_elements)
    return round(8 * nbytes / count, 4)


def decode_tps(path: Path, threads: int) -> float:
    """llama.cpp's greedy decode tokens/s after a SPEED_PROMPT-token prompt (first token excluded)."""
    llama_cpp = require_llama_cpp()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=SPEED_PROMPT + SPEED_DECODE + 8, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    prompt = [int(t) for t in llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 8, add_bos=True)]
    prompt = prompt[:SPEED_PROMPT]
    started = None
    for i, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1, reset=True)):
        if i == 0:
            started = time.perf_counter()  # the prompt is processed and the first token sampled
        elif i == SPEED_DECODE:
            break
    elapsed = time.perf_counter() - started
    llm.close()
    return round(SPEED_DECODE / elapsed, 2)


def peer_points(source, peers: list[PeerType], root: Path, base: dict, base_technical: dict | None, *,
                eval_text=None, eval_ctx: int = 512, eval_windows: int | None = 64, speed: bool = False,
                threads: int = 1, keep: bool = False, progress: Progress | None = None) -> list[dict]:
    """One sweep point per peer type (the fields of zoo.compress.sweep.FIELDS, pattern 'llama.cpp')."""
    from zoo.convert.source import open_source
    from zoo.evaluate import TECHNICAL_TEXT, perplexity

    work = root / "llama.cpp"
    work.mkdir(parents=True, exist_ok=True)
    base_file = base_gguf(source, work, progress)
    points = []
    for peer in peers:
        out = work / f"{peer.value}.gguf"
        if progress:
            progress(f"peer llama.cpp {peer.value} -> {out}")
        quantize(base_file, out, peer, threads)
        quantized = open_source(out)
        ppl = perplexity(quantized, eval_text, eval_ctx, eval_windows, progress, engine="reference")
        tech = (perplexity(quantized, TECHNICAL_TEXT, eval_ctx, eval_windows, progress, engine="reference")
                if base_technical is not None else None)
        points.append({"pattern": "llama.cpp", "peer": peer.value, "sparsity": 0.0, "bits": peer.value,
                       "perplexity": ppl["perplexity"], "ratio": round(ppl["perplexity"] / base["perplexity"], 4),
                       "technical_ratio": round(tech["perplexity"] / base_technical["perplexity"], 4) if tech else None,
                       "size_bytes": out.stat().st_size, "bits_per_weight": block_bits_per_weight(out),
                       "decode_tps": decode_tps(out, threads) if speed else None,
                       "path": str(out) if keep else None})
    return points
