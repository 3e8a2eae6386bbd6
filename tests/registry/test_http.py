"""The static HTTP mirror against a real nginx on loopback (started and stopped here).

Covers: push to a directory registry then pull through nginx (byte-identical), Range resume of a
partial blob (206), a pull SIGKILLed at a random moment resuming, two concurrent pulls leaving one
copy and downloading each blob once, a tampered blob, and the mirror being read-only.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.errors import ChecksumError, NotFoundError, RegistryError
from zoo.registry.local import LocalRegistry
from zoo.registry.transfer import pull, push, search
from zoo.store import Store

from .conftest import assert_same_tree, store_files, tamper
from .servers import Nginx


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    server = Nginx(root, tmp_path_factory.mktemp("nginx"), rate="512k")
    yield server
    server.stop()


def _partials(home: Path) -> dict[str, int]:
    """Sizes of the pull's partial blobs; one that completes (is renamed) between listing and stat is left out."""
    sizes = {}
    for p in (home / "blobs" / "sha256").glob("*.partial"):
        try:
            sizes[p.name] = p.stat().st_size
        except FileNotFoundError:
            continue
    return sizes


def test_round_trip_through_nginx(zoo_env, nginx, tiny_artifact):
    push(tiny_artifact, "tiny:v1", registry=str(nginx.root))
    result = pull(f"{nginx.url}/tiny:v1")
    assert_same_tree(tiny_artifact, result.path)
    assert [r["name"] for r in search(registry=nginx.url, include_catalog=False)] == ["tiny"]
    with pytest.raises(NotFoundError):
        pull(f"{nginx.url}/absent:v1")


def test_mirror_is_read_only(zoo_env, nginx, tiny_artifact):
    with pytest.raises(RegistryError, match="read-only"):
        push(tiny_artifact, f"{nginx.url}/tiny:v9")


def test_partial_blob_resumes_with_a_range_request(zoo_env, nginx, mid_artifact):
    push(mid_artifact, "mid-range", registry=str(nginx.root))
    manifest = LocalRegistry(nginx.root).get_manifest("mid-range", "latest")
    big = max(manifest["files"], key=lambda f: f["size"])
    blobs = zoo_env / "home" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    have = big["size"] // 3
    (blobs / f"{big['sha256']}.partial").write_bytes((mid_artifact / big["path"]).read_bytes()[:have])
    result = pull(f"{nginx.url}/mid-range")
    assert result.downloaded_bytes == sum(f["size"] for f in manifest["files"]) - have
    assert_same_tree(mid_artifact, result.path)
    assert f'"GET /blobs/sha256/{big["sha256"]} HTTP/1.1" 206 {big["size"] - have}' in nginx.access_log()


def _default_sigint() -> None:
    """In the child: SIGINT delivered and handled by Python, whatever the test runner's process inherited."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_a_worker_thread(pid: int, signum: int) -> None:
    """A signal as the kernel may deliver it: to one of the download threads, not the main one."""
    libc = ctypes.CDLL(None, use_errno=True)
    workers = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert workers and libc.tgkill(pid, workers[-1], signum) == 0, os.strerror(ctypes.get_errno())


def _pull_process(url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo.cli.main", "pull", url, "--json"], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)


def _slow_pull_underway(url: str, home: Path) -> subprocess.Popen:
    """`zoo pull` of `url` through the rate-limited location, returned once its first bytes are on disk."""
    proc = _pull_process(url)
    deadline = time.monotonic() + 60
    while not any(_partials(home).values()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    return proc


def test_pull_killed_at_a_random_moment_resumes(zoo_env, nginx, mid_artifact):
    push(mid_artifact, "mid-kill", registry=str(nginx.root))
    manifest = LocalRegistry(nginx.root).get_manifest("mid-kill", "latest")
    total = sum(f["size"] for f in manifest["files"])
    home = zoo_env / "home"
    proc = _slow_pull_underway(f"{nginx.url}/slow/mid-kill", home)  # 512 KB/s per connection
    delay = random.uniform(0.0, 2.0)  # the two blobs download in parallel, ~4 s at 512 KB/s each
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the pull finished before the kill (delay {delay:.2f}s)"
    assert not Store().has("mid-kill", "latest")
    assert [p.name.split("-")[0] for p in (home / "inflight").iterdir()] == [str(proc.pid)]  # its gc marker stayed
    done = {f["sha256"]: f["size"] for f in manifest["files"] if f["sha256"] in store_files(home)}
    partial = sum(_partials(home).values())
    assert 0 < sum(done.values()) + partial < total, f"delay {delay:.2f}s"
    result = pull(f"{nginx.url}/mid-kill")  # the next pull picks up where the killed one stopped
    assert not list((home / "inflight").iterdir())  # and sweeps the dead pull's marker, as it does its partials
    assert result.reused_bytes == sum(done.values())
    assert result.downloaded_bytes == total - sum(done.values()) - partial
    assert_same_tree(mid_artifact, result.path)
    assert not _partials(home)


def test_concurrent_pulls_both_succeed_and_leave_one_copy(zoo_env, nginx, mid_artifact):
    push(mid_artifact, "mid-conc", registry=str(nginx.root))
    manifest = LocalRegistry(nginx.root).get_manifest("mid-conc", "latest")
    url = f"{nginx.url}/slow/mid-conc"
    log_start = len(nginx.access_log())
    procs = [_pull_process(url) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-300:] for o in outs]
    docs = [json.loads(o[0]) for o in outs]
    assert docs[0]["path"] == docs[1]["path"]
    assert docs[0]["downloaded_bytes"] + docs[1]["downloaded_bytes"] == sum(f["size"] for f in manifest["files"])
    assert sorted(store_files(zoo_env / "home")) == sorted(f["sha256"] for f in manifest["files"])
    log = nginx.access_log()[log_start:]
    for f in manifest["files"]:  # each blob crossed the wire once
        assert log.count(f"GET /slow/blobs/sha256/{f['sha256']} ") == 1
    assert_same_tree(mid_artifact, Path(docs[0]["path"]))


def test_tampered_blob_on_the_mirror(zoo_env, nginx, tiny_artifact):
    push(tiny_artifact, "tiny-bad", registry=str(nginx.root))
    manifest = LocalRegistry(nginx.root).get_manifest("tiny-bad", "latest")
    shard = next(f for f in manifest["files"] if f["path"] == "shared-00001.safetensors")
    blob = nginx.root / "blobs" / "sha256" / shard["sha256"]
    original = blob.read_bytes()
    tamper(blob)
    try:
        with pytest.raises(ChecksumError, match="shared-00001.safetensors"):
            pull(f"{nginx.url}/tiny-bad")
        assert not [n for n in store_files(zoo_env / "home") if n.startswith(shard["sha256"])]  # no blob, no partial
        assert not Store().has("tiny-bad", "latest")
    finally:
        blob.write_bytes(original)  # other tests share this blob (same bytes)


def test_gc_during_a_pull_keeps_what_the_pull_needs(zoo_env, nginx, mid_artifact):
    push(mid_artifact, "mid-gc", registry=str(nginx.root))
    home = zoo_env / "home"
    proc = _slow_pull_underway(f"{nginx.url}/slow/mid-gc", home)
    before = _partials(home)
    assert Store().gc()["blobs_removed"] == 0  # the running pull's blobs and partials are in use
    assert all(name in _partials(home) or name[: -len(".partial")] in store_files(home) for name in before)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-300:]
    assert_same_tree(mid_artifact, Path(json.loads(out)["path"]))


def test_credentials_in_the_url_are_never_echoed(zoo_env, nginx):
    url = nginx.url.replace("http://", "http://reader:s3cr3t-pw@")
    with pytest.raises(NotFoundError) as err:
        pull(f"{url}/absent:v1")
    assert "s3cr3t-pw" not in str(err.value) and "127.0.0.1" in str(err.value)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_pull_promptly_and_it_resumes(zoo_env, nginx, mid_artifact, signum):
    name = f"mid-sig{signum}"
    push(mid_artifact, name, registry=str(nginx.root))
    home = zoo_env / "home"
    proc = _slow_pull_underway(f"{nginx.url}/slow/{name}", home)
    _signal_a_worker_thread(proc.pid, signum)
    start = time.monotonic()
    _, err = proc.communicate(timeout=30)
    want = 130 if signum == signal.SIGINT else 128 + signum  # the CLI's exit codes: interrupted / stopped
    assert proc.returncode == want, err.decode()[-300:]
    assert time.monotonic() - start < 5  # the other blob downloads stopped at their next chunk
    assert _partials(home) and not Store().has(name, "latest")
    assert not list((home / "inflight").iterdir())  # the pull's gc marker went with it
    result = pull(f"{nginx.url}/{name}")
    assert result.downloaded_bytes < sum(p.stat().st_size for p in mid_artifact.iterdir())
    assert_same_tree(mid_artifact, result.path)
