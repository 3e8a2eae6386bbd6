"""Pull throughput: `zoo pull` from a local-directory registry, nginx and an OCI registry, against cp and curl.

    python bench/pull.py [--workdir /tmp/zoo-bench-pull] [--repeats 5] [--layers 8]

Builds a random q4 Llama artifact (about 1 GB with the defaults), pushes it to a directory
registry, serves that directory with nginx on loopback, pushes it to Debian's docker-registry (the CNCF
distribution registry, as tests/registry/oci_server.py starts it) on loopback, then alternates, per repeat:
  cp     copy every blob file to a fresh directory (the same bytes a pull writes); also `cp && sync`
  pull   `zoo pull NAME` into a fresh ZOO_HOME from the directory registry (the whole command: an in-kernel
         copy, copy_file_range, never a hard link: a store shares no inode with a registry)
  curl   curl every blob from nginx into a fresh directory (one process per file)
  pull   `zoo pull http://…/NAME` into a fresh ZOO_HOME (the whole command)
  curl   curl every blob from the OCI registry (GET /v2/REPO/blobs/sha256:…) into a fresh directory; and
         `curl | tee FILE | openssl dgst -sha256`, the same download that also hashes what it writes, as a
         pull does (OpenSSL's sha256, as Python's hashlib: coreutils' sha256sum is 2-3x slower here)
  pull   `zoo pull NAME --registry oci://…` into a fresh ZOO_HOME (the whole command)
and the same pulls as library calls in this process (no interpreter start-up); the local pull is also
compared with `cp && sync` (the store fsyncs what it writes).
Every run reads warm page cache and writes to the same disk, after an os.sync() so no run waits on
another's writeback; the pull also hashes (sha256), fsyncs and hard-links a snapshot to its store blobs. Prints a Markdown table (median of the repeats) and one JSON line.
Each run's CPU time (user+sys of the client; the pull's includes its hashing) and the docker-registry server's are
recorded too and printed as CPU seconds per GB: on a machine shared with other work the wall clock is noise,
the CPU per byte is not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from registry.oci_server import OciRegistryServer  # noqa: E402  (test helper: docker-registry on loopback)
from registry.servers import Nginx  # noqa: E402  (test helper: nginx on loopback)

from zoo.registry.local import LocalRegistry  # noqa: E402
from zoo.registry.transfer import pull, push  # noqa: E402
from zoo.synthetic import LLAMA_7B, write_random_model  # noqa: E402


def _cpu(who: int) -> float:
    """User+sys seconds of this process (RUSAGE_SELF, all its threads) or of its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pid: int) -> float:
    """User+sys seconds a running server process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Clock:
    """Wall time and CPU time of one run: the client's (child processes or this process) and the OCI server's."""

    def __init__(self, server_pid: int, in_process: bool = False) -> None:
        self.server_pid, self.who = server_pid, resource.RUSAGE_SELF if in_process else resource.RUSAGE_CHILDREN

    def __enter__(self) -> Clock:
        os.sync()  # no earlier run's dirty pages left for this one to wait on
        self.cpu0, self.server0, self.start = _cpu(self.who), _server_cpu(self.server_pid), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.start
        self.cpu = _cpu(self.who) - self.cpu0
        self.server = _server_cpu(self.server_pid) - self.server0


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _pull_in_process(home: Path, ref: str, registry: str | None, server_pid: int) -> Clock:
    """The library call `zoo.registry.transfer.pull` (no interpreter start-up) into a fresh store."""
    from zoo.store import Store

    store = Store(_fresh(home))
    with Clock(server_pid, in_process=True) as clock:
        pull(ref, registry=registry, store=store)
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-pull"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=8, help="decoder layers of the 7B-shaped model (≈ 100 MB each)")
    args = parser.parse_args()
    missing = [tool for tool in ("curl", "openssl") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench/pull.py needs {' and '.join(missing)} on PATH")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    config = dict(LLAMA_7B, n_layers=args.layers)
    artifact = work / "artifact"
    if not (artifact / "zoo.yaml").exists():
        write_random_model(artifact, config, encoding="q4", group_size=128, seed=0, direct=True, overwrite=True)
    registry = work / "registry"
    if not (registry / "manifests" / "bench" / "latest.json").exists():
        push(artifact, "bench", registry=str(registry), force=True)
    manifest = LocalRegistry(registry).get_manifest("bench", "latest")
    blobs = [registry / "blobs" / "sha256" / f["sha256"] for f in manifest["files"]]
    total = sum(f["size"] for f in manifest["files"])
    nginx = Nginx(registry, work / "nginx", rate="0")
    try:
        oci = OciRegistryServer(work / "oci")
    except RuntimeError:
        nginx.stop()
        raise
    oci_url = f"oci://{oci.host}/zoo"
    push(artifact, "bench", registry=oci_url)  # content already there: uploads nothing
    env = dict(os.environ, ZOO_CONFIG=str(work / "no-config.yaml"))
    env.pop("ZOO_REGISTRY", None)
    zoo = [sys.executable, "-m", "zoo.cli.main", "pull"]
    keys = ("cp", "cp+sync", "pull-local", "lib-local", "curl", "pull-nginx", "lib-nginx", "curl-oci", "curl-oci+sha",
            "pull-oci", "lib-oci")
    times: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}  # client user+sys seconds
    server_cpu: dict[str, list[float]] = {k: [] for k in keys}  # docker-registry's user+sys seconds

    def record(key: str, clock: Clock) -> None:
        times[key].append(clock.wall)
        cpu[key].append(clock.cpu)
        server_cpu[key].append(clock.server)

    def commands(key: str, *cmds: list[str], env: dict | None = None) -> None:
        with Clock(oci.proc.pid) as clock:
            for cmd in cmds:
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        record(key, clock)

    try:
        for _ in range(max(1, args.repeats)):
            for p in blobs:  # warm the page cache for every contender alike
                p.read_bytes()
            out = _fresh(work / "out")
            commands("cp", ["cp", *map(str, blobs), str(out)])
            out = _fresh(work / "out")
            commands("cp+sync", ["sh", "-c", 'cp "$@" && sync', "cp", *map(str, blobs), str(out)])
            home = _fresh(work / "home")
            commands("pull-local", [*zoo, "bench", "--registry", str(registry)], env=dict(env, ZOO_HOME=str(home)))
            record("lib-local", _pull_in_process(work / "home", "bench", str(registry), oci.proc.pid))
            out = _fresh(work / "out")
            commands("curl", *(["curl", "-sf", "-o", str(out / p.name), f"{nginx.url}/blobs/sha256/{p.name}"]
                               for p in blobs))
            out = _fresh(work / "out")
            commands("curl-oci", *(["curl", "-sfL", "-o", str(out / p.name),
                                    f"http://{oci.host}/v2/zoo/bench/blobs/sha256:{p.name}"] for p in blobs))
            out = _fresh(work / "out")
            commands("curl-oci+sha", *(["sh", "-c", 'curl -sfL "$1" | tee "$2" | openssl dgst -sha256', "curl",
                                        f"http://{oci.host}/v2/zoo/bench/blobs/sha256:{p.name}", str(out / p.name)]
                                       for p in blobs))
            home = _fresh(work / "home")
            commands("pull-oci", [*zoo, "bench", "--registry", oci_url], env=dict(env, ZOO_HOME=str(home)))
            record("lib-oci", _pull_in_process(work / "home", "bench", oci_url, oci.proc.pid))
            home = _fresh(work / "home")
            commands("pull-nginx", [*zoo, f"{nginx.url}/bench"], env=dict(env, ZOO_HOME=str(home)))
            record("lib-nginx", _pull_in_process(work / "home", f"{nginx.url}/bench", None, oci.proc.pid))
    finally:
        nginx.stop()
        oci.stop()
        shutil.rmtree(work / "out", ignore_errors=True)
        shutil.rmtree(work / "home", ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: total / v / 1e6 for k, v in med.items()}
    per_gb = {k: statistics.median(v) / (total / 1e9) for k, v in cpu.items()}
    server_per_gb = {k: statistics.median(v) / (total / 1e9) for k, v in server_cpu.items()}
    print(f"{total / 1e6:.0f} MB in {len(blobs)} files, median of {args.repeats}, "
          f"{platform.node()} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| source | plain copy | MB/s | `zoo pull` command | MB/s | ratio | library pull | MB/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, copy, cmd, lib in (("local directory", "cp", "pull-local", "lib-local"),
                                  ("nginx (loopback)", "curl", "pull-nginx", "lib-nginx"),
                                  ("OCI docker-registry (loopback)", "curl-oci", "pull-oci", "lib-oci")):
        print(f"| {label} | {copy} {med[copy]:.2f} s | {rate[copy]:.0f} | {med[cmd]:.2f} s | {rate[cmd]:.0f} | "
              f"{med[copy] / med[cmd]:.0%} | {med[lib]:.2f} s | {rate[lib]:.0f} | {med[copy] / med[lib]:.0%} |")
    print(f"| local directory, against a durable copy | cp && sync {med['cp+sync']:.2f} s | {rate['cp+sync']:.0f} | "
          f"{med['pull-local']:.2f} s | {rate['pull-local']:.0f} | {med['cp+sync'] / med['pull-local']:.0%} | "
          f"{med['lib-local']:.2f} s | {rate['lib-local']:.0f} | {med['cp+sync'] / med['lib-local']:.0%} |")
    print(f"| OCI, against curl that also hashes (`curl | tee | openssl dgst`) | {med['curl-oci+sha']:.2f} s | "
          f"{rate['curl-oci+sha']:.0f} | {med['pull-oci']:.2f} s | {rate['pull-oci']:.0f} | "
          f"{med['curl-oci+sha'] / med['pull-oci']:.0%} | {med['lib-oci']:.2f} s | {rate['lib-oci']:.0f} | "
          f"{med['curl-oci+sha'] / med['lib-oci']:.0%} |")
    print("\nCPU seconds per GB (median; client user+sys, the command's includes interpreter start-up)\n")
    print("| source | plain copy | `zoo pull` command | library pull | "
          "docker-registry server: copy / command / library |")
    print("|---|---|---|---|---|")
    for label, copy, cmd, lib in (("local directory", "cp", "pull-local", "lib-local"),
                                  ("nginx (loopback)", "curl", "pull-nginx", "lib-nginx"),
                                  ("OCI docker-registry (loopback)", "curl-oci", "pull-oci", "lib-oci")):
        server = " / ".join(f"{server_per_gb[k]:.2f}" for k in (copy, cmd, lib)) if "OCI" in label else "—"
        print(f"| {label} | {copy} {per_gb[copy]:.2f} | {per_gb[cmd]:.2f} | {per_gb[lib]:.2f} | {server} |")
    print(json.dumps({"bytes": total, "files": len(blobs), "runs": times, "cpu": cpu, "server_cpu": server_cpu,
                      "cpu_s_per_gb": per_gb,
                      "ratio_local": med["cp"] / med["pull-local"], "ratio_nginx": med["curl"] / med["pull-nginx"],
                      "ratio_local_library": med["cp"] / med["lib-local"],
                      "ratio_nginx_library": med["curl"] / med["lib-nginx"],
                      "ratio_oci": med["curl-oci"] / med["pull-oci"],
                      "ratio_oci_library": med["curl-oci"] / med["lib-oci"],
                      "ratio_oci_hashing_curl": med["curl-oci+sha"] / med["pull-oci"],
                      "ratio_oci_library_hashing_curl": med["curl-oci+sha"] / med["lib-oci"]}))


if __name__ == "__main__":
    main()
