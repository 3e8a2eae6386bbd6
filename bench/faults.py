"""The fault campaign as a benchmark (issue 19): kill -9, races, dropped connections and a full disk against
`zoo pull`, `zoo push`, `zoo build` and `zoo compress`, on every registry backend, counting corrupt states and
failed reruns (targets: 0 and 0).

    python -P bench/faults.py [--trials 50] [--scenarios kill-pull,kill-push,...] [--backends dir,http,s3,oci]
                              [--seed 0] [--workdir /tmp/zoo-bench-faults] [--layers 2]

Scenarios (backends where they apply; `local` = no registry):
  kill-pull        kill -9 of `zoo pull` at a random byte count written to the store (a quarter of the trials:
                   at a random time within an uninterrupted run), then the checks, then the same pull again
  kill-push        the same for `zoo push` (bytes in the registry directory, or sent through a counting TCP relay
                   in front of moto or docker-registry)
  kill-build       `zoo build` of a tiny catalog-style card (its recipe compresses a tiny GGUF), at a random byte
                   count of its output written under ZOO_HOME (or a random time, as above)
  kill-compress    `zoo compress --overwrite` of the tiny GGUF, at a random byte count of its output (or time)
  concurrent-pull  8 simultaneous pulls of one model into one store
  concurrent-push  4 simultaneous pushes of different tags into one registry
  pull-during-gc   `zoo pull --json` while the store's gc (what `zoo gc` calls) runs in a loop in this process: the
                   path the pull reports must exist and verify
  dropped          a server that cuts each blob's first response after a random byte count (http: a small
                   loopback server written here; oci: the tests' TCP relay in front of docker-registry)
  full-disk        pull into a store on a tmpfs smaller than the model (RLIMIT_FSIZE on the child when this
                   user cannot mount: the nearest honest substitute, and the table says which was used)
Each column counts trials (targets: 0 for corrupt and failed runs):
  corrupt      a blob that is not its sha256, a manifest naming a missing blob, a stored model or output `zoo verify`
               rejects, a registry tag that does not pull and verify, a path `zoo pull` reported that is gone
  failed runs  a run that must succeed did not: the re-run of the killed command (or one of the concurrent runs, the
               pull during gc, the pull from the dropping server, the re-pull once the disk has room)
  leftover     temp blobs, `.partial` files, staging directories, in-flight markers, upload sessions still there
               after the successful re-run; `after gc`: still there after `zoo gc` too (stores only)
  hazard       not corrupt yet: a store blob sharing its inode with the directory registry's (a change there changes
               the store), a published registry file that is not world-readable (nginx workers cannot serve it)
  bad error    a failure that is not one `zoo: error:` line (a traceback, an "internal error")
Prints one JSON line per scenario and backend (with example findings), then a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from registry.servers import Nginx  # noqa: E402  (test helper: nginx on loopback)

from zoo.synthetic import TINY_LLAMA, write_random_model  # noqa: E402

HEX = re.compile(r"^[0-9a-f]{64}$")
ZOO = [sys.executable, "-P", "-m", "zoo.cli.main"]
NAME = "faulty"
# ~3.5 MB a layer pair: big enough that a kill lands mid-blob, small enough for hundreds of trials.
MODEL = dict(TINY_LLAMA, dim=256, hidden_dim=768, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=2048)
# The tests' tiny GGUF base (tests/build/conftest.py) and a recipe like tests/build/test_build.py's.
BASE = dict(TINY_LLAMA, dim=64, hidden_dim=128, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, vocab_size=300,
            tied_embeddings=False)
RECIPE = dict(method="wanda", sparsity=0.5, bits=4, group_size=64, samples=4, seq_len=32, seed=3)
SCENARIOS = {
    "kill-pull": ("dir", "http", "s3", "oci"),
    "kill-push": ("dir", "s3", "oci"),  # the HTTP mirror is read-only
    "kill-build": ("local",),
    "kill-compress": ("local",),
    "concurrent-pull": ("dir", "http", "s3", "oci"),
    "concurrent-push": ("dir", "s3", "oci"),
    "pull-during-gc": ("dir", "http", "s3", "oci"),
    "dropped": ("http", "oci"),
    "full-disk": ("dir", "http", "s3", "oci"),
}
DEFAULT_TRIALS = {"kill-pull": 50, "kill-push": 50, "kill-build": 50, "kill-compress": 20}


# ---- backends -------------------------------------------------------------------------------------------


class Backend:
    """One registry kind; `fresh()` gives each trial its own empty namespace (a URL for --registry)."""

    name = ""
    env: dict[str, str] = {}  # what a zoo command needs to reach it

    def __init__(self, work: Path) -> None:
        self.work = work
        self.count = 0

    def fresh(self) -> str:
        raise NotImplementedError

    def seed(self, url: str, artifact: Path, tag: str = "latest") -> None:
        """Put the artifact in the registry with the library (the thing under test is the command after)."""
        from zoo.registry import insecure_registries
        from zoo.registry.transfer import push

        with insecure_registries():
            push(artifact, f"{NAME}:{tag}", registry=self.push_url(url), force=True)

    def push_url(self, url: str) -> str:
        return url

    def problems(self, url: str) -> list[str]:
        """What is inconsistent in the registry namespace now (beyond what pulling its tags shows)."""
        return []

    def leftovers(self, url: str) -> list[str]:
        return []

    def stop(self) -> None:
        pass


class DirBackend(Backend):
    name = "dir"

    def fresh(self) -> str:
        self.count += 1
        path = self.work / "dir" / f"r{self.count}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return str(path)

    def problems(self, url: str) -> list[str]:
        root = Path(url)
        out = [f"registry blob {p.name[:12]} is not its sha256" for p in (root / "blobs" / "sha256").glob("*")
               if HEX.match(p.name) and _sha256(p) != p.name]
        for manifest in (root / "manifests").rglob("*.json"):
            try:
                files = json.loads(manifest.read_text())["files"]
            except (OSError, ValueError, KeyError) as err:
                out.append(f"registry manifest {manifest.name} unreadable: {err}")
                continue
            out += [f"registry manifest names missing blob {f['sha256'][:12]}" for f in files
                    if not (root / "blobs" / "sha256" / f["sha256"]).is_file()]
        out += [f"registry file {p.relative_to(root)} not world-readable" for p in root.rglob("*")
                if p.is_file() and not p.name.startswith(".") and not p.stat().st_mode & 0o004]
        return out

    def leftovers(self, url: str) -> list[str]:
        root = Path(url)
        return [str(p.relative_to(root)) for p in root.rglob("*")  # the index lock stays, as a store's locks/ do
                if p.is_file() and p.name.startswith(".") and p.name != ".index.lock"]


class HttpBackend(DirBackend):
    """A directory registry served read-only by nginx (the tests' helper); pushes go to the directory."""

    name = "http"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        (work / "dir").mkdir(parents=True, exist_ok=True)
        self.nginx = Nginx(work / "dir", work / "nginx", rate="0")

    def fresh(self) -> str:
        return f"{self.nginx.url}/{Path(super().fresh()).name}"

    def _dir(self, url: str) -> str:
        return str(self.work / "dir" / url.rsplit("/", 1)[1])

    def push_url(self, url: str) -> str:
        return self._dir(url)

    def problems(self, url: str) -> list[str]:
        return super().problems(self._dir(url))

    def leftovers(self, url: str) -> list[str]:
        return super().leftovers(self._dir(url))

    def stop(self) -> None:
        self.nginx.stop()


class S3Backend(Backend):
    """moto's S3 server on loopback (as tests/registry/test_s3.py starts it), one prefix per trial."""

    name = "s3"
    BUCKET = "zoo-faults"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        self.env = dict(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID="zoo-bench",
                        AWS_SECRET_ACCESS_KEY="zoo-bench", AWS_REGION="us-east-1")
        os.environ.update(self.env)  # the library calls in this process (seeding, checking) too
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=self.endpoint)
        self.s3.create_bucket(Bucket=self.BUCKET)

    def fresh(self) -> str:
        self.count += 1
        return f"s3://{self.BUCKET}/r{self.count}"

    def leftovers(self, url: str) -> list[str]:
        prefix = url.split("/", 3)[3] + "/"
        uploads = self.s3.list_multipart_uploads(Bucket=self.BUCKET, Prefix=prefix).get("Uploads", [])
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.BUCKET, Prefix=prefix).get("Contents", [])]
        return [f"multipart upload {u['Key']}" for u in uploads] + \
               [k for k in keys if k.rsplit("/", 1)[-1].startswith(".") or k.endswith((".tmp", ".partial"))]

    def stop(self) -> None:
        self.server.stop()


class OciBackend(Backend):
    """Debian's docker-registry on loopback (the tests' OciRegistryServer), one namespace per trial."""

    name = "oci"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        from registry.oci_server import OciRegistryServer

        shutil.rmtree(work / "oci", ignore_errors=True)  # namespaces r1, r2, ... are fresh only in fresh storage
        self.server = OciRegistryServer(work / "oci")

    def fresh(self) -> str:
        self.count += 1
        return f"oci://{self.server.host}/r{self.count}"

    def leftovers(self, url: str) -> list[str]:
        repos = self.server.storage / "docker/registry/v2/repositories" / url.rsplit("/", 1)[1]
        return [f"upload session {p.name[:12]} under {p.parent.parent.name}" for p in repos.rglob("_uploads/*")]

    def stop(self) -> None:
        self.server.stop()


BACKENDS = {"dir": DirBackend, "http": HttpBackend, "s3": S3Backend, "oci": OciBackend}


# ---- checks ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def zoo(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*ZOO, *args], env=env, capture_output=True, text=True, timeout=timeout)


def stored_models(home: Path) -> list[str]:
    root = home / "manifests"
    return sorted(f"{p.parent.relative_to(root).as_posix()}:{p.stem}" for p in root.rglob("*.json")) if root.is_dir() \
        else []


def store_problems(home: Path, env: dict, registry_dir: Path | None = None) -> list[str]:
    """Corruption in a store: a blob that is not its sha256, a manifest naming a missing blob, a stored model
    `zoo verify` rejects, a blob sharing its inode with the registry's copy (a change there changes it here)."""
    env = dict(env, ZOO_HOME=str(home))
    blobs = home / "blobs" / "sha256"
    out = [f"store blob {p.name[:12]} is not its sha256" for p in (blobs.glob("*") if blobs.is_dir() else [])
           if HEX.match(p.name) and _sha256(p) != p.name]
    for model in stored_models(home):
        proc = zoo(["verify", model], env)
        if proc.returncode != 0:
            out.append(f"zoo verify {model}: {proc.stderr.strip().splitlines()[-1:]}")
    if registry_dir is not None and blobs.is_dir():
        for p in blobs.glob("*"):
            theirs = registry_dir / "blobs" / "sha256" / p.name
            if HEX.match(p.name) and theirs.exists() and os.path.samefile(p, theirs):
                out.append(f"store blob {p.name[:12]} shares its inode with the registry's")
    return out


def store_leftovers(home: Path) -> list[str]:
    """Files a finished command should not leave in a store: partial or temp blobs, staging snapshots and build
    directories, in-flight markers of processes that are gone."""
    out = []
    blobs = home / "blobs" / "sha256"
    out += [f"blobs/{p.name}" for p in (blobs.glob("*") if blobs.is_dir() else []) if not HEX.match(p.name)]
    snaps = home / "snapshots"
    out += [f"snapshots/{p.name}" for p in (snaps.glob(".*") if snaps.is_dir() else [])]
    out += [f"tmp/{p.name}" for p in (home / "tmp").glob("*")] if (home / "tmp").is_dir() else []
    out += [f"inflight/{p.name}" for p in (home / "inflight").glob("*.json")] if (home / "inflight").is_dir() else []
    return out


def registry_problems(backend: Backend, url: str, tags: list[str], env: dict, scratch: Path) -> list[str]:
    """Every tag the registry holds pulls into a fresh store and verifies; plus the backend's own checks."""
    from zoo.errors import NotFoundError
    from zoo.registry import insecure_registries
    from zoo.registry.transfer import pull
    from zoo.store import Store

    out = backend.problems(url)
    for tag in tags:
        home = scratch / "check-home"
        shutil.rmtree(home, ignore_errors=True)
        try:
            with insecure_registries():
                pull(f"{NAME}:{tag}", registry=url, store=Store(home))
        except NotFoundError:
            continue  # never published (the kill came before the manifest): consistent
        except Exception as err:  # noqa: BLE001 (any failure of a published tag is the finding)
            out.append(f"registry tag {tag} does not pull: {type(err).__name__}: {str(err)[:120]}")
            continue
        out += store_problems(home, env)
    return out


def one_line_error(proc: subprocess.CompletedProcess) -> bool:
    err = proc.stderr.strip().splitlines()
    return bool(err) and err[-1].startswith("zoo: error:") and "Traceback" not in proc.stderr


# ---- running and killing --------------------------------------------------------------------------------


def du(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


@dataclass
class Kill:
    """When to kill: once `watch()` (bytes so far) has grown by `at_bytes` over `base`, or at `at_seconds`."""

    at_seconds: float
    watch: Callable[[], int] | None = None
    at_bytes: int = 0
    base: int = 0


def run_and_kill(args: list[str], env: dict, kill: Kill) -> tuple[bool, int, str]:
    """Start the command, SIGKILL its process group at the kill point: (killed, exit code, stderr's tail)."""
    start = time.monotonic()
    with open(os.devnull, "wb") as devnull, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*ZOO, *args], env=env, stdout=devnull, stderr=err, start_new_session=True)
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            due = elapsed >= kill.at_seconds or (kill.watch is not None and kill.watch() - kill.base >= kill.at_bytes)
            if due:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True, proc.returncode, ""
            time.sleep(0.002 if kill.watch is None else 0.005)
        err.seek(0)
        return False, proc.returncode, err.read().decode(errors="replace").strip()[-300:]


def count_kill(t: Tally, outcome: tuple[bool, int, str]) -> None:
    """Note how the killed run ended; one that finished on its own must have succeeded."""
    killed, code, err = outcome
    t.notes["killed" if killed else "finished first"] += 1
    if not killed and code != 0:
        t.notes["failed before the kill"] += 1
        t.example(f"failed before the kill: {err}")


KINDS = ("corrupt", "rerun_failed", "leftover", "after_gc", "hazard", "bad_error")


@dataclass
class Tally:
    """Trials of one scenario and backend, counted once per kind of finding (a trial may count in several)."""

    trials: int = 0
    counts: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _this_trial: set = field(default_factory=set)

    def record(self, kind: str, items: list[str], trial: int) -> None:
        """Findings of `kind` (a hazard is a finding that is not corruption yet, e.g. a shared inode)."""
        hazards = [i for i in items if any(h in i for h in HAZARDS)]
        for k, found in ((kind, [i for i in items if i not in hazards]), ("hazard", hazards)):
            if found:
                self._this_trial.add(k)
                if len(self.examples) < 8:
                    self.examples.append(f"trial {trial} {k}: {found[0]}")

    def example(self, text: str) -> None:
        if len(self.examples) < 8:
            self.examples.append(text)

    def end_trial(self) -> None:
        self.trials += 1
        self.counts.update(self._this_trial)
        self._this_trial.clear()


HAZARDS = ("shares its inode", "not world-readable")


# ---- the scenarios --------------------------------------------------------------------------------------


class Campaign:
    """The shared inputs (the pulled model, the build card), the environment every zoo command gets, and one method
    per scenario running one trial into a Tally."""

    def __init__(self, work: Path, seed: int, layers: int) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.env = dict(os.environ, ZOO_CONFIG=str(work / "no-config.yaml"), ZOO_CATALOG=str(work / "no-catalog"),
                        ZOO_OCI_INSECURE="1")
        for var in ("ZOO_REGISTRY", "HF_ENDPOINT", "ZOO_HOME"):
            self.env.pop(var, None)
        self.artifact = work / "artifact"
        self.config = dict(MODEL, n_layers=layers)
        if not (self.artifact / "zoo.yaml").exists():
            write_random_model(self.artifact, self.config, encoding="q4", group_size=64, seed=7, dense_dtype="F32",
                               overwrite=True)
        self.size = sum(p.stat().st_size for p in self.artifact.iterdir() if p.is_file())
        self.baseline: dict[tuple[str, str], float] = {}
        self.trial = 0

    def home(self) -> tuple[Path, dict]:
        self.trial += 1
        home = self.work / "trials" / f"t{self.trial}"
        shutil.rmtree(home, ignore_errors=True)
        return home, dict(self.env, ZOO_HOME=str(home / "home"))

    def kill_point(self, key: tuple[str, str], measure, watch: Callable[[], int] | None, total: int) -> Kill:
        """A random byte count of `total` seen by `watch` (three trials in four), else a random time within an
        uninterrupted run (measured once by `measure`)."""
        if key not in self.baseline:
            self.baseline[key] = measure()
        if watch is not None and self.rng.random() < 0.75:
            return Kill(self.baseline[key] * 4 + 5, watch, self.rng.randrange(1, total), watch())
        return Kill(self.rng.uniform(0, self.baseline[key]))

    def check_rerun(self, t: Tally, trial: int, proc: subprocess.CompletedProcess, what: str) -> bool:
        if proc.returncode != 0:
            t.record("rerun_failed", [f"{what}: rc {proc.returncode}: {proc.stderr.strip()[-200:]}"], trial)
            return False
        return True

    def finish_store(self, t: Tally, trial: int, home: Path, env: dict, registry_dir: Path | None = None) -> None:
        """After a successful re-run: the store verifies, and nothing is left behind (then after `zoo gc`)."""
        t.record("corrupt", store_problems(home, env, registry_dir), trial)
        left = store_leftovers(home)
        t.record("leftover", left, trial)
        if left:
            zoo(["gc"], env)
            t.record("after_gc", store_leftovers(home), trial)

    # kill -9 of pull
    def kill_pull(self, backend: Backend, t: Tally) -> None:
        url = backend.fresh()
        backend.seed(url, self.artifact)
        home, env = self.home()
        args = ["pull", NAME, "--registry", url]

        def measure() -> float:
            start = time.monotonic()
            zoo(args, dict(env, ZOO_HOME=str(home / "measure")))
            return time.monotonic() - start

        kill = self.kill_point(("pull", backend.name), measure, lambda: du(home / "home"), self.size)
        count_kill(t, run_and_kill(args, env, kill))
        regdir = Path(url) if backend.name == "dir" else None
        t.record("corrupt", store_problems(home / "home", env, regdir), self.trial)
        if self.check_rerun(t, self.trial, zoo(args, env), "re-pull"):
            self.finish_store(t, self.trial, home / "home", env, regdir)

    # kill -9 of push
    def kill_push(self, backend: Backend, t: Tally) -> None:
        url = backend.fresh()
        home, env = self.home()
        # content of its own: a registry holding the blobs already (in any docker-registry repository) uploads nothing
        artifact = write_random_model(home / "artifact", dict(self.config), encoding="q4", group_size=64,
                                      seed=1000 + self.trial, dense_dtype="F32")
        args = ["push", str(artifact), f"{NAME}:v1", "--registry", backend.push_url(url)]

        def measure() -> float:
            start = time.monotonic()
            zoo(["push", str(self.artifact), f"{NAME}:measure", "--registry", backend.push_url(backend.fresh())], env)
            return time.monotonic() - start

        relay = None
        if backend.name == "dir":
            watch = lambda: du(Path(url))  # noqa: E731
            killed_args, killed_env = args, env
        else:  # the bytes the push has sent, counted by the tests' TCP relay in front of the server
            from registry.oci_server import DroppingRelay

            port = backend.server.port if backend.name == "oci" else int(backend.endpoint.rsplit(":", 1)[1])
            relay = DroppingRelay(port, 1 << 62, upstream=True)
            watch = lambda: len(relay.from_clients)  # noqa: E731
            killed_args, killed_env = args, dict(env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}")
            if backend.name == "oci":
                killed_args = [*args[:-1], url.replace(f":{port}/", f":{relay.port}/")]
        try:
            kill = self.kill_point(("push", backend.name), measure, watch, self.size)
            outcome = run_and_kill(killed_args, killed_env, kill)
        finally:
            if relay is not None:
                relay.close()
        count_kill(t, outcome)
        scratch = home / "check"
        t.record("corrupt", registry_problems(backend, url, ["v1"], env, scratch), self.trial)
        if self.check_rerun(t, self.trial, zoo(args, env), "re-push"):
            t.record("corrupt", registry_problems(backend, url, ["v1"], env, scratch) or
                     ([] if self._tag_pulls(backend, url, "v1", scratch) else ["v1 missing after a successful push"]),
                     self.trial)
            t.record("leftover", backend.leftovers(url), self.trial)

    def _tag_pulls(self, backend: Backend, url: str, tag: str, scratch: Path) -> bool:
        from zoo.registry import insecure_registries
        from zoo.registry.transfer import pull
        from zoo.store import Store

        shutil.rmtree(scratch / "tag-home", ignore_errors=True)
        try:
            with insecure_registries():
                pull(f"{NAME}:{tag}", registry=url, store=Store(scratch / "tag-home"))
            return True
        except Exception:  # noqa: BLE001
            return False

    # kill -9 of build and compress
    def build_inputs(self) -> tuple[Path, Path]:
        """The tiny GGUF base and a catalog-style card whose recipe rebuilds it (digests recorded once)."""
        import yaml

        from build.conftest import write_tiny_gguf  # the tests' tiny GGUF writer
        from zoo.compress import Recipe, compress

        base = self.work / "base" / "tiny.gguf"
        card_path = self.work / "base" / "card.yaml"
        if not card_path.exists():
            base.parent.mkdir(parents=True, exist_ok=True)
            write_tiny_gguf(base)
            made = compress(base, self.work / "base" / "reference", Recipe(**RECIPE), evaluate=False, overwrite=True)
            card = {"card_version": 1, "name": "faulty-build", "architecture": "llama", "license": "apache-2.0",
                    "base_model": {"name": "tiny", "source": None, "sha256": made["base_model"]["sha256"]},
                    "compression": {k: RECIPE[k] for k in ("method", "sparsity", "bits")},
                    "recipe": {"base": {"path": str(base), "sha256": made["base_model"]["sha256"]},
                               "compress": dict(RECIPE)},
                    "files": made["files"]}
            card_path.write_text(yaml.safe_dump(card, sort_keys=False))
        return base, card_path

    def kill_build(self, backend: Backend | None, t: Tally) -> None:
        _, card = self.build_inputs()
        home, env = self.home()
        args = ["build", str(card), "--yes", "--quiet"]

        def measure() -> float:
            start = time.monotonic()
            zoo(args, dict(env, ZOO_HOME=str(home / "measure")))
            return time.monotonic() - start

        reference = du(self.work / "base" / "reference")
        kill = self.kill_point(("build", "local"), measure, lambda: du(home / "home"), reference)
        count_kill(t, run_and_kill(args, env, kill))
        t.record("corrupt", store_problems(home / "home", env), self.trial)
        if self.check_rerun(t, self.trial, zoo(args, env), "re-build"):
            if "faulty-build:latest" not in stored_models(home / "home"):
                t.record("rerun_failed", ["build exited 0 but stored nothing"], self.trial)
            self.finish_store(t, self.trial, home / "home", env)

    def kill_compress(self, backend: Backend | None, t: Tally) -> None:
        base, _ = self.build_inputs()
        home, env = self.home()
        home.mkdir(parents=True)
        out = home / "out"
        args = ["compress", str(base), "-o", str(out), "--overwrite", "--no-eval", "--quiet",
                *[x for k, v in RECIPE.items() for x in (f"--{k.replace('_', '-')}", str(v))]]

        def measure() -> float:
            start = time.monotonic()
            zoo([*args[:3], str(home / "measure"), *args[4:]], env)
            shutil.rmtree(home / "measure", ignore_errors=True)
            return time.monotonic() - start

        kill = self.kill_point(("compress", "local"), measure, lambda: du(home), du(self.work / "base" / "reference"))
        count_kill(t, run_and_kill(args, env, kill))
        if out.exists():  # the kill came after the output was renamed into place: it must be whole
            proc = zoo(["verify", str(out)], env)
            t.record("corrupt", [] if proc.returncode == 0 else [f"zoo verify out: {proc.stderr.strip()[-150:]}"],
                     self.trial)
        if self.check_rerun(t, self.trial, zoo(args, env), "re-compress"):
            proc = zoo(["verify", str(out)], env)
            t.record("corrupt", [] if proc.returncode == 0 else [f"rerun output: {proc.stderr.strip()[-150:]}"],
                     self.trial)
            t.record("leftover", [p.name for p in home.iterdir() if p.name.startswith(".")], self.trial)

    # races
    def concurrent_pull(self, backend: Backend, t: Tally, n: int = 8) -> None:
        url = backend.fresh()
        backend.seed(url, self.artifact)
        home, env = self.home()
        procs = [subprocess.Popen([*ZOO, "pull", NAME, "--registry", url], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(n)]
        failed = [f"pull {i}: rc {p.returncode}: {err.strip()[-150:]}" for i, p in enumerate(procs)
                  for err in [p.communicate()[1]] if p.returncode != 0]
        t.notes["failed pulls"] += len(failed)
        t.record("rerun_failed", failed, self.trial)  # none of the 8 may fail: each is a run that must succeed
        self.finish_store(t, self.trial, home / "home", env, Path(url) if backend.name == "dir" else None)

    def concurrent_push(self, backend: Backend, t: Tally, n: int = 4) -> None:
        url = backend.fresh()
        home, env = self.home()
        tags = [f"v{i}" for i in range(n)]
        target = backend.push_url(url)
        procs = [subprocess.Popen([*ZOO, "push", str(self.artifact), f"{NAME}:{tag}", "--registry", target], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for tag in tags]
        errors = {tag: p.communicate()[1].strip() for tag, p in zip(tags, procs)}
        failed = [f"push {tag}: rc {p.returncode}: {errors[tag][-150:]}" for tag, p in zip(tags, procs) if p.returncode]
        t.notes["failed pushes"] += len(failed)
        t.record("rerun_failed", failed, self.trial)
        scratch = home / "check"
        t.record("corrupt", registry_problems(backend, url, tags, env, scratch) +
                 [f"{tag} missing after its push succeeded" for tag, p in zip(tags, procs)
                  if p.returncode == 0 and not self._tag_pulls(backend, url, tag, scratch)], self.trial)
        t.record("leftover", backend.leftovers(url), self.trial)

    def pull_during_gc(self, backend: Backend, t: Tally) -> None:
        url = backend.fresh()
        backend.seed(url, self.artifact)
        home, env = self.home()
        zoo(["pull", NAME, "--registry", url], env)  # then forget it: everything becomes garbage for gc
        zoo(["rm", NAME], env)
        pull = subprocess.Popen([*ZOO, "pull", NAME, "--registry", url, "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        from zoo.store import Store

        rounds = 0
        while pull.poll() is None:  # the library's gc, what `zoo gc` calls, as often as it can run
            Store(home / "home").gc()
            rounds += 1
        out, err = pull.communicate()
        t.notes["gc rounds"] += rounds
        if pull.returncode != 0:
            t.record("rerun_failed", [f"pull during gc: rc {pull.returncode}: {err.strip()[-150:]}"], self.trial)
            return
        path = Path(json.loads(out)["path"])
        missing = [] if path.is_dir() and (path / "zoo.yaml").is_file() else [f"reported path {path} is gone"]
        t.record("corrupt", missing + store_problems(home / "home", env), self.trial)
        t.record("leftover", store_leftovers(home / "home"), self.trial)

    # a server that drops connections
    def dropped(self, backend: Backend, t: Tally) -> None:
        url = backend.fresh()
        backend.seed(url, self.artifact)
        home, env = self.home()
        drop_after = self.rng.randrange(1 << 16, 2 << 20)  # past the headers, inside the first blobs
        if backend.name == "http":
            server = DroppingHttpServer(Path(backend.push_url(url)), drop_after)
            pull_url, resumed = server.url, lambda: server.resumed
        else:
            from registry.oci_server import DroppingRelay

            server = DroppingRelay(backend.server.port, drop_after)
            pull_url = f"oci://127.0.0.1:{server.port}/{url.rsplit('/', 1)[1]}"
            resumed = lambda: bool(re.search(rb"[Rr]ange: bytes=[1-9]", bytes(server.from_clients)))  # noqa: E731
        try:
            first = zoo(["pull", NAME, "--registry", pull_url], env)
        finally:
            server.close()
        t.notes["first pull ok" if first.returncode == 0 else "first pull failed"] += 1
        t.notes["resumed with Range"] += resumed()
        if first.returncode != 0:  # a dropped connection is retried and resumed (issue 19): this pull must succeed
            t.record("rerun_failed", [f"first pull: {first.stderr.strip()[-200:]}"], self.trial)
            if not one_line_error(first):
                t.record("bad_error", [first.stderr.strip()[-200:]], self.trial)
        t.record("corrupt", store_problems(home / "home", env), self.trial)
        if first.returncode != 0 and not self.check_rerun(t, self.trial, zoo(["pull", NAME, "--registry", url], env),
                                                          "re-pull"):
            return
        self.finish_store(t, self.trial, home / "home", env)

    # a full disk
    def full_disk(self, backend: Backend, t: Tally) -> None:
        url = backend.fresh()
        backend.seed(url, self.artifact)
        home, env = self.home()
        home.mkdir(parents=True)
        args = ["pull", NAME, "--registry", url]
        limit = self.rng.randrange(self.size // 5, self.size * 3 // 4)
        mounted = mount_tmpfs(home, limit)
        t.notes["tmpfs" if mounted else "RLIMIT_FSIZE"] += 1
        try:
            proc = subprocess.run([*ZOO, *args], env=env, capture_output=True, text=True,
                                  preexec_fn=None if mounted else (lambda: limit_file_size(limit)))
            t.notes["pull failed" if proc.returncode else "pull fit"] += 1
            if proc.returncode != 0 and not one_line_error(proc):
                t.record("bad_error", [proc.stderr.strip()[-200:]], self.trial)
            elif proc.returncode != 0 and str(home) not in proc.stderr:
                t.notes["error names no path"] += 1
            t.record("corrupt", store_problems(home / "home", env), self.trial)
            if mounted:  # room again, as after the user freed some space
                subprocess.run(["mount", "-o", f"remount,size={self.size * 4}", str(home)], check=True)
            if self.check_rerun(t, self.trial, zoo(args, env), "re-pull with room"):
                self.finish_store(t, self.trial, home / "home", env)
        finally:
            if mounted:
                subprocess.run(["umount", str(home)], check=False)


def mount_tmpfs(path: Path, size: int) -> bool:
    """A tmpfs of `size` bytes at `path` (root in a container that allows it); False when it cannot be made."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def limit_file_size(size: int) -> None:
    """In the child: no file may grow past `size` bytes, and a write past it fails (EFBIG) instead of SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


class DroppingHttpServer:
    """A static HTTP server for a directory registry that sends each blob's first response only up to
    `drop_after` bytes (with the full Content-Length) and closes the connection; honours `Range: bytes=N-`."""

    def __init__(self, root: Path, drop_after: int) -> None:
        self.root, self.drop_after, self.resumed = root, drop_after, False
        self.cut: set[str] = set()
        bench = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:  # noqa: N802
                self.serve(head=True)

            def do_GET(self) -> None:  # noqa: N802
                self.serve(head=False)

            def serve(self, head: bool) -> None:
                path = (bench.root / self.path.split("?")[0].lstrip("/")).resolve()
                if not path.is_file() or bench.root.resolve() not in path.parents:
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if match and int(match.group(1)) < len(data):
                    start = int(match.group(1))
                    bench.resumed |= start > 0
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                body = data[start:]
                if "/blobs/" in self.path and self.path not in bench.cut and len(body) > bench.drop_after:
                    bench.cut.add(self.path)
                    self.wfile.write(body[:bench.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RUNNERS = {"kill-pull": Campaign.kill_pull, "kill-push": Campaign.kill_push, "kill-build": Campaign.kill_build,
           "kill-compress": Campaign.kill_compress, "concurrent-pull": Campaign.concurrent_pull,
           "concurrent-push": Campaign.concurrent_push, "pull-during-gc": Campaign.pull_during_gc,
           "dropped": Campaign.dropped, "full-disk": Campaign.full_disk}


def run(scenarios: list[str], backends: list[str], trials: int | None, seed: int, work: Path,
        layers: int = 2) -> list[dict]:
    """Run every scenario on every requested backend it applies to; one result row each (also printed as JSON)."""
    work.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(work, seed, layers)
    started: dict[str, Backend] = {}
    rows = []
    try:
        for scenario in scenarios:
            for name in SCENARIOS[scenario]:
                if name != "local" and name not in backends:
                    continue
                if name != "local" and name not in started:
                    started[name] = BACKENDS[name](work / name)
                    campaign.env.update(started[name].env)
                tally = Tally()
                campaign.rng = random.Random(f"{seed}:{scenario}:{name}")  # a row's kill points depend on nothing else
                start = time.monotonic()
                for _ in range(trials or DEFAULT_TRIALS.get(scenario, 10)):
                    RUNNERS[scenario](campaign, started.get(name), tally)
                    tally.end_trial()
                    shutil.rmtree(work / "trials", ignore_errors=True)
                tally.seconds = time.monotonic() - start
                row = {"scenario": scenario, "backend": name, "trials": tally.trials,
                       **{k: tally.counts[k] for k in KINDS}, "notes": dict(tally.notes),
                       "seconds": round(tally.seconds, 1), "examples": tally.examples}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        for backend in started.values():
            backend.stop()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| scenario | backend | trials | corrupt | failed runs | leftover | after gc | hazard | bad error "
             "| notes | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        notes = ", ".join(f"{k} {v}" for k, v in r["notes"].items())
        lines.append(f"| {r['scenario']} | {r['backend']} | {r['trials']} | {r['corrupt']} | {r['rerun_failed']} | "
                     f"{r['leftover']} | {r['after_gc']} | {r['hazard']} | {r['bad_error']} | {notes} | "
                     f"{r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None,
                        help="per scenario and backend (default: 50 kill-pull/push/build, 20 kill-compress, 10 others)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--backends", default="dir,http,s3,oci")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the pulled model (~1.7 MB each)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-faults"))
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown scenario or backend: {', '.join(unknown)} "
                     f"(scenarios: {', '.join(SCENARIOS)}; backends: {', '.join(BACKENDS)})")
    start = time.monotonic()
    rows = run(scenarios, backends, args.trials, args.seed, args.workdir, args.layers)
    print(f"\nseed {args.seed}, {platform.node()} ({os.cpu_count()} CPUs), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - start:.0f} s in all\n")
    print(table(rows))
    bad = sum(r["corrupt"] + r["rerun_failed"] for r in rows)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
