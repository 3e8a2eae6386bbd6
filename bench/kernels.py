"""Benchmark zoo's CPU kernels against numpy fp32 and our own dense q4, in one run (issue 3).

    python bench/kernels.py [--quick] [--json] [--paths avx512,portable]

For each kernel (matvec = decode, matmul = prefill of 32 tokens), encoding, shape (rows x cols),
sparsity and thread count: ms per call, GB/s of weight bytes read, and speed ratios against numpy
fp32 (BLAS, same threads) and against our dense q4 kernel of the same path — all measured here.
Matvec is timed with weights streamed from memory (rotating through copies larger than four times the
last-level cache) and cache-hot (one copy); matmul, which is compute-bound, cache-hot. Times are
the best of several repetitions: the machine is shared, best-of is the least disturbed sample.
The run also measures the streaming read bandwidth (numba prange over 2 GiB) and the cost of
import + first call with a cold and a warm numba cache (separate processes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange
from threadpoolctl import threadpool_limits

import zoo.kernels as K
from zoo.format import encode

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (1536, 576), (576, 1536)]
SPARSITIES = (0.0, 0.5, 0.7, 0.9)
GROUP = 128
TOKENS = 32
MAX_COPY_BYTES = 1 << 30  # cap on the memory spent on streamed copies of one weight


def llc_bytes() -> int:
    """Size of the last-level cache (sysfs), default 32 MiB."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
            best = max(best, int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1))
        except (OSError, ValueError):
            continue
    return best or 32 << 20


@njit(parallel=True, cache=True)
def _stream_sum(a):
    total = 0
    for i in prange(a.size):
        total += a[i]
    return total


def bandwidth_gbps(threads: int, reps: int = 5) -> float:
    """Streaming read bandwidth: a parallel sum over 2 GiB of uint64."""
    a = np.ones(1 << 28, np.uint64)  # 2 GiB
    K.set_threads(threads)
    _stream_sum(a)
    best = min(_timed(lambda: _stream_sum(a)) for _ in range(reps))
    del a
    return (1 << 31) / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_time(calls: list, reps: int) -> float:
    """Best over `reps` passes of the mean time per call of one pass through `calls`."""
    for call in calls:
        call()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for call in calls:
            call()
        best = min(best, (time.perf_counter() - t0) / len(calls))
    return best


def n_copies(nbytes: int, llc: int) -> int:
    return max(2, min(-(-4 * llc // nbytes) + 1, MAX_COPY_BYTES // max(nbytes, 1)))


def copy_tensor(t):
    return type(t)(t.encoding, t.shape, {k: v.copy() for k, v in t.parts.items()}, t.group_size)


def weight_bytes(t) -> int:
    return int(sum(v.nbytes for v in t.parts.values()))


class Bench:
    """Collects rows; the reference times (numpy, dense q4) are measured before the kernels they rate."""

    def __init__(self, args, llc: int):
        self.args, self.llc, self.rows = args, llc, []
        self.rng = np.random.default_rng(0)
        self.ref: dict[tuple, float] = {}

    def row(self, **r) -> dict:
        self.rows.append(r)
        if not self.args.json:
            print(f"{r['kernel']:6s} {r['encoding']:10s} {r['path']:8s} {r['shape']:>10s} sp={r['sparsity']:.2f} "
                  f"t={r['threads']} tok={r['tokens']:2d} {r['mode']:8s} {r['ms']:9.3f} ms {r['gbps']:6.1f} GB/s "
                  f"vs_np={r['vs_numpy_f32'] or 0:5.2f} vs_q4={r['vs_dense_q4'] or 0:5.2f}", file=sys.stderr, flush=True)
        return r

    def numpy_peer(self, w: np.ndarray, shape: str, threads: int, tokens: int, mode: str) -> float:
        key = ("numpy", shape, threads, tokens, mode)
        if key not in self.ref:
            copies = [w] + [w.copy() for _ in range(n_copies(w.nbytes, self.llc) - 1 if mode == "streamed" else 0)]
            x = self.rng.standard_normal((tokens, w.shape[1]) if tokens > 1 else w.shape[1]).astype(np.float32)
            with threadpool_limits(limits=threads):
                self.ref[key] = best_time([lambda c=c: np.dot(x, c.T) if tokens > 1 else np.dot(c, x)
                                           for c in copies], self.args.reps)
            self.row(kernel="matvec" if tokens == 1 else "matmul", encoding="numpy-f32", path="numpy", shape=shape,
                     sparsity=0.0, threads=threads, tokens=tokens, mode=mode, ms=self.ref[key] * 1e3,
                     gbps=w.nbytes / self.ref[key] / 1e9, vs_numpy_f32=1.0, vs_dense_q4=None)
        return self.ref[key]

    def ours(self, t, sparsity: float, shape: str, path: str, threads: int, tokens: int, mode: str,
             np_time: float) -> dict:
        K.set_path(path)
        K.set_threads(threads)
        nbytes = weight_bytes(t)
        copies = [t] + [copy_tensor(t) for _ in range(n_copies(nbytes, self.llc) - 1 if mode == "streamed" else 0)]
        prepared = [K.prepare(c) for c in copies]
        x = self.rng.standard_normal((tokens, t.shape[1]) if tokens > 1 else t.shape[1]).astype(np.float32)
        out = np.empty((tokens, t.shape[0]) if tokens > 1 else t.shape[0], np.float32)
        sec = best_time([lambda p=p: K.linear(x, p, out) for p in prepared], self.args.reps)
        key = ("q4", shape, path, threads, tokens, mode)
        if t.encoding == "q4":
            self.ref[key] = sec
        q4 = self.ref.get(key)
        return self.row(kernel="matvec" if tokens == 1 else "matmul", encoding=t.encoding, path=path, shape=shape,
                        sparsity=sparsity, threads=threads, tokens=tokens, mode=mode, ms=sec * 1e3,
                        gbps=nbytes / sec / 1e9, vs_numpy_f32=np_time / sec, vs_dense_q4=q4 / sec if q4 else None)


def plan(args) -> tuple[list, tuple, tuple]:
    if args.quick:
        return [(4096, 11008)], (0.0, 0.5, 0.9), (2,)
    return SHAPES, SPARSITIES, (1, 2)


def encodings_for(sparsity: float, quick: bool) -> list[str]:
    if sparsity == 0.0:
        return ["q4"] if quick else ["q4", "q8", "sparse-q4"]
    return ["sparse-q4"] if quick else ["sparse-q4", "sparse-q8", "sparse-f16"]


def run(args) -> dict:
    llc = llc_bytes()
    fast = K.available_paths()[-1]
    paths = args.paths.split(",") if args.paths else [p for p in K.available_paths()]
    shapes, sparsities, threads_list = plan(args)
    bw = {t: bandwidth_gbps(t) for t in threads_list}
    bench = Bench(args, llc)
    for rows, cols in shapes:
        shape = f"{rows}x{cols}"
        base = bench.rng.standard_normal((rows, cols)).astype(np.float32)
        weights = []
        for sparsity in sparsities:
            w = base.copy()
            if sparsity:
                w[bench.rng.random((rows, cols), dtype=np.float32) < sparsity] = 0.0
            weights += [(sparsity, encode(w, enc, group_size=GROUP)) for enc in encodings_for(sparsity, args.quick)]
        for threads in threads_list:
            for mode in ("streamed", "hot"):
                np_time = bench.numpy_peer(base, shape, threads, 1, mode)
                for path in paths:
                    for sparsity, t in weights:
                        if path != fast and t.encoding not in ("q4", "sparse-q4"):
                            continue  # other paths: the headline encodings only
                        bench.ours(t, sparsity, shape, path, threads, 1, mode, np_time)
            np_time = bench.numpy_peer(base, shape, threads, TOKENS, "hot")
            for sparsity, t in weights:
                if t.encoding in ("q4", "sparse-q4"):
                    bench.ours(t, sparsity, shape, fast, threads, TOKENS, "hot", np_time)
        del base, weights
    for r in bench.rows:
        r["bw_share"] = round(r["gbps"] / bw[r["threads"]], 3) if r["kernel"] == "matvec" else None
        for k in ("ms", "gbps", "vs_numpy_f32", "vs_dense_q4"):
            if r[k] is not None:
                r[k] = round(r[k], 4)
    return {"bandwidth_gbps": round(bw[max(bw)], 2), "bandwidth_gbps_by_threads": {str(k): round(v, 2) for k, v in bw.items()},
            "machine": machine(), "compile": compile_times(), "rows": bench.rows}


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "llc_bytes": llc_bytes(),
            "kernel_path": K.available_paths()[-1], "numba": numba.__version__, "numpy": np.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


_PROBE = """
import time; t0 = time.perf_counter()
import numpy as np, zoo.kernels as K
from zoo.format import encode
t1 = time.perf_counter()
w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32); w[::2] = 0
x = np.ones(256, np.float32); times = {}
for enc in ("q4", "sparse-q4"):
    t = encode(w, enc, group_size=128); s = time.perf_counter(); K.linear(x, t); K.linear(np.ones((4, 256), np.float32), t)
    times[enc] = time.perf_counter() - s
print(t1 - t0, times["q4"], times["sparse-q4"])
"""


def compile_times() -> dict:
    """Import + first calls (matvec and matmul of q4 and sparse-q4) in fresh processes: cold then warm cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        result = {}
        for label in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
            imp, q4, sq4 = map(float, out.stdout.split())
            result[label] = {"import_s": round(imp, 3), "first_q4_s": round(q4, 3), "first_sparse_q4_s": round(sq4, 3)}
    return result


def markdown(doc: dict) -> str:
    lines = [f"bandwidth (numba prange, 2 GiB): {doc['bandwidth_gbps_by_threads']} GB/s by threads; "
             f"machine {doc['machine']}", f"compile (import + first calls): {doc['compile']}", "",
             "| kernel | encoding | path | shape | sparsity | threads | tokens | mode | ms | GB/s | bw share | vs numpy f32 | vs dense q4 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {r['kernel']} | {r['encoding']} | {r['path']} | {r['shape']} | {r['sparsity']:.0%} | "
                     f"{r['threads']} | {r['tokens']} | {r['mode']} | {r['ms']:.3f} | {r['gbps']:.1f} | "
                     f"{fmt(r['bw_share'])} | {fmt(r['vs_numpy_f32'])} | {fmt(r['vs_dense_q4'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only 4096x11008 at 0/50/90%% with 2 threads")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--paths", default="", help="comma-separated kernel paths (default: all this CPU runs)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions; the best is reported")
    args = parser.parse_args()
    doc = run(args)
    print(json.dumps(doc) if args.json else markdown(doc))


if __name__ == "__main__":
    main()
