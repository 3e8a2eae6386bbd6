"""The fuzz campaign as a benchmark: mutated artifacts, cards, templates, tokenizers and manifests through
the code paths of `zoo inspect`, `zoo run`, `zoo pull` (and `zoo verify`), counting how each case ends
(issue 18).

    python -P bench/fuzz.py [--cases 100000] [--seed 0] [--jobs 2] [--out fuzz.md] [--json fuzz.json]
    python -P bench/fuzz.py --case 1234          # replay one case in this process, verbosely

Cases run in worker processes (this script with --worker), each calling the CLI's own entry point
(zoo.cli.main.main) in-process for throughput; a worker that overruns --timeout is killed and
restarted (a hang), one that dies is a crash. A --subprocess-fraction of the cases run as a real
`python -m zoo.cli.main` child instead, which shows what a user would see (a traceback printed outside
main, a segfault). Outcomes: exit 0, usage error (2), ZooError (1, one `zoo: error:` line), other exit,
traceback, "internal error", crash, hang, and accepted corruption: exit 0 from `run`, `inspect` or
`verify` (without --no-verify) on an artifact whose shards or tokenizer differ from the card's sha256,
or from `pull` leaving a blob or snapshot file in the store that differs from its manifest. bench/fuzz_cases.py holds
the mutations. Prints a Markdown table per target x mutation kind; --out writes it to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

OUTCOMES = ("exit 0", "usage", "ZooError", "other exit", "traceback", "internal error", "crash", "hang",
            "harness error")
BAD = ("traceback", "internal error", "crash", "hang", "harness error", "accepted corruption")
READY_TIMEOUT = 900.0  # a worker's first start may compile the kernels (numba caches them afterwards)


def _load_cases():
    spec = importlib.util.spec_from_file_location("zoo_bench_fuzz_cases", Path(__file__).with_name("fuzz_cases.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fc = _load_cases()


# ---- preparing the pristine inputs ----------------------------------------------------------------------


def prepare(workdir: Path) -> Path:
    """workdir/bases: the base artifacts, a directory registry holding each, and a store that pulled it."""
    from zoo.registry.transfer import pull, push
    from zoo.store import Store

    bases = workdir / "bases"
    if (bases / "ready").is_file():
        return bases
    shutil.rmtree(bases, ignore_errors=True)
    bases.mkdir(parents=True)
    for name, art in fc.write_bases(bases).items():
        push(art, fc.MODEL, registry=str(bases / f"registry-{name}"))
        pull(fc.MODEL, registry=str(bases / f"registry-{name}"), store=Store(bases / f"home-{name}"))
    (bases / "ready").write_text("ok\n")
    return bases


# ---- one case -------------------------------------------------------------------------------------------


def run_case(case, seed: int, bases: Path, workdir: Path, timeout: float, keep: bool = False) -> dict:
    """Build the case's inputs under workdir, run its command, judge the outcome; the inputs are removed
    (`keep`: left in place, and the whole stderr returned)."""
    rng = random.Random(f"{seed}:{case.index}:mutation")
    casedir = workdir / f"case-{case.index}"
    shutil.rmtree(casedir, ignore_errors=True)
    casedir.mkdir(parents=True)
    home = casedir / "home"
    env = {"ZOO_HOME": str(home), "ZOO_CONFIG": str(casedir / "no-config.yaml"), "ZOO_DEBUG": "",
           "ZOO_REGISTRY": str(casedir / "no-registry"), "ZOO_CATALOG": str(casedir / "no-catalog")}
    art = None
    run_args = ["hi", "-n", "2", "--temperature", "0", "--json"]
    if case.target in fc.FILE_TARGETS:
        art = Path(shutil.copytree(bases / case.base, casedir / "art"))
        what = fc.mutate_artifact(art, case, rng)
        if case.mode == "resign":
            fc.resign(art)
        args = {"inspect": ["inspect", str(art), "--json"], "verify": ["verify", str(art)],
                "run": ["run", str(art), *run_args]}[case.command]
        if case.mode == "no-verify" and case.command != "verify":
            args.append("--no-verify")
    else:
        reg = Path(shutil.copytree(bases / f"registry-{case.base}", casedir / "reg"))
        env["ZOO_REGISTRY"] = str(reg)
        if case.target in ("store-blob", "store-manifest"):
            shutil.copytree(bases / f"home-{case.base}", home)
        if case.target == "registry-manifest":
            what = fc.mutate_manifest(reg / "manifests" / fc.MODEL / "latest.json", case.kind, rng)
        elif case.target == "store-manifest":
            what = fc.mutate_manifest(home / "manifests" / fc.MODEL / "latest.json", case.kind, rng)
        else:
            blobs = sorted((home if case.target == "store-blob" else reg).glob("blobs/sha256/*"))
            blob = rng.choice(blobs)
            blob.chmod(0o644)
            data = bytearray(blob.read_bytes())
            if case.kind == "flip":
                fc.flip(data, 0, len(data), rng)
            else:
                data = data[:rng.randrange(len(data))]
            blob.write_bytes(data)
            what = f"{case.kind} of blob {blob.name[:12]} in the {case.target.split('-')[0]}"
        args = ["run", fc.MODEL, *run_args] if case.target == "store-manifest" else ["pull", fc.MODEL]
    t0 = time.perf_counter()
    if case.subprocess:
        code, stderr, escaped, outcome = _as_subprocess(args, env, timeout)
    else:
        code, stderr, escaped, outcome = _in_process(args, env)
    seconds = time.perf_counter() - t0
    outcome = outcome or _classify(code, stderr, escaped)
    accepted = []
    if code == 0 and outcome == "exit 0":
        if art is not None and case.mode != "no-verify":
            accepted = fc.unvouched_files(art)
        elif art is None:
            accepted = fc.store_mismatches(home)
    lines = [line for line in stderr.splitlines() if line.strip()]
    detail = (escaped or "") or (lines[-1] if lines else "")
    result = {"index": case.index, "outcome": outcome, "accepted": accepted, "what": what, "line": detail[:400],
              "seconds": round(seconds, 3)}
    if keep:
        result.update(args=args, env=env, stderr=stderr)
    else:
        shutil.rmtree(casedir, ignore_errors=True)
    return result


def _in_process(args: list[str], env: dict) -> tuple[int, str, str | None, str | None]:
    """Run zoo's console entry point in this process: (exit code, stderr, escaped exception, None)."""
    from zoo.cli.main import main

    saved_env, saved_argv, saved_stdin = dict(os.environ), sys.argv, sys.stdin
    os.environ.update(env)
    sys.argv = ["zoo", *args]
    sys.stdin = io.StringIO("")  # as </dev/null: the worker's own stdin is the case pipe (zoo run reads piped stdin)
    out, err = io.StringIO(), io.StringIO()
    code, escaped = 0, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - anything escaping main() is a traceback for a user
        code, escaped = 1, f"{type(exc).__name__}: {exc}"[:400]
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv, sys.stdin = saved_argv, saved_stdin
    return code, err.getvalue(), escaped, None


def _as_subprocess(args: list[str], env: dict, timeout: float) -> tuple[int, str, str | None, str | None]:
    """Run `python -m zoo.cli.main` as a child: a signal death is a crash, overrunning `timeout` a hang."""
    proc = subprocess.Popen([sys.executable, "-P", "-m", "zoo.cli.main", *args], env={**os.environ, **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return -9, "", None, "hang"
    if proc.returncode < 0:
        return proc.returncode, stderr, None, "crash"
    return proc.returncode, stderr, None, None


def _classify(code: int, stderr: str, escaped: str | None) -> str:
    if escaped or "Traceback (most recent call last)" in stderr:
        return "traceback"
    if "internal error" in stderr:
        return "internal error"
    if code == 0:
        return "exit 0"
    if code == 2:
        return "usage"
    if code == 1 and "zoo: error:" in stderr:
        return "ZooError"
    return "other exit"


# ---- the worker: cases in, results out ------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Read case indices from stdin, write one JSON result per line on stdout."""
    if args.memory_gb:
        limit = int(args.memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    workdir, bases = Path(args.workdir), Path(args.bases)
    _in_process(["run", str(bases / fc.BASES[0]), "hi", "-n", "2", "--temperature", "0", "--json"],
                {"ZOO_HOME": str(workdir / "warm-home"), "ZOO_CONFIG": str(workdir / "no-config.yaml")})
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but results on the protocol pipe
    print("ready", file=out, flush=True)
    for line in sys.stdin:
        case = fc.make_case(args.seed, int(line), args.subprocess_fraction)
        try:
            result = run_case(case, args.seed, bases, workdir, args.timeout)
        except Exception as exc:  # noqa: BLE001 - a bug of this script, reported as such, not as zoo's crash
            result = {"index": case.index, "outcome": "harness error", "accepted": [], "what": "",
                      "line": f"{type(exc).__name__}: {exc}"[:400], "seconds": 0}
        print(json.dumps(result), file=out, flush=True)


class Worker:
    """A worker process (its own session, so a hang is killed with everything it started)."""

    def __init__(self, k: int, args: argparse.Namespace, bases: Path) -> None:
        self.dir = Path(args.workdir) / f"worker-{k}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "--worker", "--workdir", str(self.dir),
               "--bases", str(bases), "--seed", str(args.seed), "--timeout", str(args.timeout),
               "--subprocess-fraction", str(args.subprocess_fraction), "--memory-gb", str(args.memory_gb)]
        self.log = open(self.dir.with_suffix(".log"), "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, start_new_session=True)
        self.case = None
        self.deadline = time.monotonic() + READY_TIMEOUT

    def send(self, case, timeout: float) -> None:
        self.case = case
        self.deadline = time.monotonic() + (timeout * 2 + 10 if case.subprocess else timeout)
        self.proc.stdin.write(f"{case.index}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def campaign(args: argparse.Namespace) -> list[dict]:
    """Run cases seed:start .. start+cases over `jobs` workers; one result dict per case."""
    bases = prepare(Path(args.workdir))
    todo = [fc.make_case(args.seed, i, args.subprocess_fraction) for i in range(args.start, args.start + args.cases)]
    todo.reverse()
    results: list[dict] = []
    sel = selectors.DefaultSelector()
    workers: list[Worker] = []

    def start(k: int) -> None:
        w = Worker(k, args, bases)
        workers.append(w)
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)

    def retire(w: Worker, outcome: str) -> None:
        sel.unregister(w.proc.stdout)
        workers.remove(w)
        w.kill()
        if w.case is not None:
            results.append({"index": w.case.index, "outcome": outcome, "accepted": [], "what": "",
                            "line": f"worker {outcome} (exit {w.proc.returncode})", "seconds": args.timeout})
        elif outcome != "hang":
            raise SystemExit(f"fuzz: a worker died while starting; see {w.dir.with_suffix('.log')}")
        if todo:
            start(len(results) + len(workers) + 1000)

    for k in range(min(args.jobs, len(todo))):
        start(k)
    try:
        while workers:
            for key, _ in sel.select(timeout=0.5):
                w = key.data
                line = w.proc.stdout.readline()
                if not line:
                    w.proc.wait()
                    retire(w, "crash")
                    continue
                if w.case is not None:
                    results.append(json.loads(line))
                    if args.progress and len(results) % args.progress == 0:
                        print(f"fuzz: {len(results)}/{args.cases} cases", file=sys.stderr, flush=True)
                w.case = None
                if todo:
                    w.send(todo.pop(), args.timeout)
                else:
                    sel.unregister(w.proc.stdout)
                    workers.remove(w)
                    w.proc.stdin.close()
                    w.kill()
            for w in [w for w in workers if time.monotonic() > w.deadline]:
                if w.case is None:
                    raise SystemExit(f"fuzz: a worker did not start in {READY_TIMEOUT:.0f} s")
                retire(w, "hang")
    finally:
        for w in list(workers):
            w.kill()
    return sorted(results, key=lambda r: r["index"])


# ---- the report -----------------------------------------------------------------------------------------


def tally(results: list[dict], args: argparse.Namespace) -> tuple[dict, dict]:
    """(rows: {target / kind: Counter}, by_command: {command: Counter}) with 'cases' and every outcome."""
    rows: dict[str, Counter] = defaultdict(Counter)
    by_command: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        case = fc.make_case(args.seed, r["index"], args.subprocess_fraction)
        for counter in (rows[case.row], by_command[case.command], rows["total"]):
            counter["cases"] += 1
            counter[r["outcome"]] += 1
            counter["accepted corruption"] += bool(r["accepted"])
            counter["subprocess"] += case.subprocess
    return rows, by_command


def markdown(results: list[dict], args: argparse.Namespace, seconds: float) -> str:
    rows, by_command = tally(results, args)
    cols = ["cases", *OUTCOMES, "accepted corruption"]

    def table(title: str, data: dict[str, Counter], keys: list[str]) -> list[str]:
        out = [f"| {title} | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        out += [f"| {key} | " + " | ".join(str(data[key][c]) for c in cols) + " |" for key in keys]
        return out

    last = args.start + args.cases - 1
    lines = [f"## Fuzz campaign: {len(results)} cases, seed {args.seed} (cases {args.start}..{last})",
             "", f"{seconds:.0f} s on {args.jobs} worker(s), {platform.machine()} {os.cpu_count()} CPUs, "
             f"per-case limit {args.timeout:.0f} s, {rows['total']['subprocess']} cases as real subprocesses. "
             f"Replay one case: `python -P bench/fuzz.py --seed {args.seed} --case N`.", ""]
    lines += table("target / mutation", rows, sorted(k for k in rows if k != "total") + ["total"])
    lines += ["", *table("command", by_command, sorted(by_command))]
    findings = [r for r in results if r["outcome"] in BAD or r["accepted"]]
    lines += ["", f"### Findings ({len(findings)})", ""]
    for r in findings[:60]:
        case = fc.make_case(args.seed, r["index"], args.subprocess_fraction)
        label = "accepted corruption of " + ", ".join(r["accepted"]) if r["accepted"] else r["outcome"]
        lines.append(f"- case {r['index']}: `{case.command}` {case.row} ({case.mode}, {case.base}): {r['what']} "
                     f"-> {label}: `{r['line'][:200]}`")
    if not findings:
        lines.append("none")
    return "\n".join(lines) + "\n"


def replay(args: argparse.Namespace) -> None:
    """--case N: build the bases if needed and run one case in this process, printing everything."""
    bases = prepare(Path(args.workdir))
    case = fc.make_case(args.seed, args.case, args.subprocess_fraction)
    print(case)
    result = run_case(case, args.seed, bases, Path(args.workdir) / "replay", args.timeout, keep=True)
    stderr = result.pop("stderr")
    print(json.dumps(result, indent=1))
    print(stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--start", type=int, default=0, help="first case index (campaigns split in slices)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    p.add_argument("--subprocess-fraction", type=float, default=0.01)
    p.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit of a worker (0: none)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch (default: a new temporary directory)")
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    p.add_argument("--json", type=Path, help="write the totals and findings as JSON here")
    p.add_argument("--progress", type=int, default=0, help="print progress every N cases")
    p.add_argument("--case", type=int, help="replay one case in this process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bases", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    own_workdir = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zoo-fuzz-"))
    try:
        if args.case is not None:
            replay(args)
            return
        t0 = time.perf_counter()
        results = campaign(args)
        report = markdown(results, args, time.perf_counter() - t0)
        print(report)
        if args.out:
            args.out.write_text(report)
        if args.json:
            rows, by_command = tally(results, args)
            args.json.write_text(json.dumps({"totals": rows["total"], "rows": rows, "by_command": by_command,
                                             "findings": [r for r in results if r["outcome"] in BAD or r["accepted"]]},
                                            indent=1))
    finally:
        if own_workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
