"""What a killed pull, build or compress leaves is removed by the next run or by gc, and only when its owner is
dead; a pull running beside gc keeps its snapshot (fault campaign of 2026-12-06, issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from zoo.registry.transfer import pull, push
from zoo.store import Store


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_gc_removes_a_dead_owners_staging_and_keeps_a_live_one(zoo_env, tiny_artifact):
    push(tiny_artifact, "tiny", registry=str(zoo_env / "reg"))
    store = Store()
    pull("tiny", registry=str(zoo_env / "reg"), store=store)
    dead, live = dead_pid(), os.getppid()  # the pytest runner's parent is alive for the whole test
    staged = {name: store.snapshots / name for name in (f".tmp-{dead}-ab_c1", f".tmp-{live}-ab_c2")}
    built = {name: store.root / "tmp" / name for name in (f"build-tiny-q4-{dead}-x1", f"build-tiny-q4-{live}-x2")}
    for path in [*staged.values(), *built.values()]:
        path.mkdir(parents=True)
        (path / "model-00001.safetensors").write_bytes(b"half")
    store.gc()
    assert not staged[f".tmp-{dead}-ab_c1"].exists() and staged[f".tmp-{live}-ab_c2"].is_dir()
    assert not built[f"build-tiny-q4-{dead}-x1"].exists() and built[f"build-tiny-q4-{live}-x2"].is_dir()
    assert len([p for p in store.snapshots.iterdir() if not p.name.startswith(".")]) == 1  # the pulled model's


def test_gc_keeps_the_snapshot_a_running_pull_is_making(zoo_env):
    """A pull records the snapshot it will make with its blobs: gc between the snapshot and the manifest
    (the pull's last step) no longer deletes it, so the path the pull reports exists."""
    store = Store()
    snapshot = store.snapshots / ("ab" * 32)
    snapshot.mkdir(parents=True)
    store.inflight.mkdir(parents=True)
    (store.inflight / f"{os.getppid()}-x.json").write_text(json.dumps(["cd" * 32, "ab" * 32]))
    assert store.gc()["snapshots_removed"] == 0 and snapshot.is_dir()
    (store.inflight / f"{os.getppid()}-x.json").rename(store.inflight / f"{dead_pid()}-x.json")  # the pull died
    assert store.gc()["snapshots_removed"] == 1 and not snapshot.exists()


def test_gc_keeps_a_pull_that_finishes_between_its_reads(zoo_env, tiny_artifact):
    """A pull that writes its manifest and drops its marker while gc runs keeps its snapshot: gc reads the
    markers before the manifests. Here the pull finishes right after gc listed the manifests; reading them
    first lost the snapshot (bench/faults.py pull-during-gc, S3, 1 trial in 10, 2026-12-07)."""
    push(tiny_artifact, "tiny", registry=str(zoo_env / "reg"))
    pull("tiny", registry=str(zoo_env / "reg"), store=Store())

    pending: dict[str, bytes] = {}  # the manifest the pull will write, once it is "running"

    class FinishingPull(Store):
        """The store as gc sees it while a pull of tiny:latest is between its snapshot and its manifest."""

        def list(self) -> list[dict]:
            items = super().list()
            if pending:  # the pull finishes now: manifest written, then its marker dropped
                manifest.write_bytes(pending.pop("manifest"))
                marker.unlink()
            return items

    store = FinishingPull()
    [item] = store.list()
    snapshot = store.snapshots / item["digest"]
    manifest = store.root / "manifests" / "tiny" / "latest.json"
    marker = store.inflight / f"{os.getppid()}-x.json"
    assert manifest.is_file() and snapshot.is_dir()
    manifest_bytes = pending["manifest"] = manifest.read_bytes()
    blobs = [store.blob_path(f["sha256"]) for f in json.loads(manifest_bytes)["files"]]
    manifest.unlink()
    store.inflight.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps([b.name for b in blobs] + [item["digest"]]))  # as Store.pull registers it
    store.gc()
    assert snapshot.is_dir() and all(b.is_file() for b in blobs)
    assert manifest.is_file() and not marker.exists()  # the pull did finish during gc


def test_a_new_compress_removes_what_a_killed_one_left(tmp_path):
    from zoo.compress import Recipe, compress
    from zoo.synthetic import TINY_LLAMA, write_random_model

    src = write_random_model(tmp_path / "src", TINY_LLAMA, encoding="dense", seed=0)
    out = tmp_path / "out"
    dead = dead_pid()
    left = [tmp_path / f".out.compress-{dead}", tmp_path / f"..out.compress-{dead}.tmp-k3_x", tmp_path /
            f".out.one-shot-{dead}"]
    running = tmp_path / f".out.compress-{os.getppid()}"  # another compress of the same OUT, still running
    for path in [*left, running]:
        path.mkdir()
    compress(src, out, Recipe(method="magnitude", sparsity=0.5), evaluate=False)
    assert out.is_dir() and not any(p.exists() for p in left) and running.is_dir()


def test_a_push_removes_the_blob_a_killed_push_was_writing(zoo_env, tiny_artifact, mid_artifact):
    reg = zoo_env / "reg"
    push(tiny_artifact, "tiny", registry=str(reg))
    blobs = reg / "blobs" / "sha256"
    stale = blobs / f".{'ab' * 32}.{dead_pid()}-q1w2.tmp"
    running = blobs / f".{'cd' * 32}.{os.getppid()}-q1w2.tmp"  # a push still writing it
    stale.write_bytes(b"half a blob")
    running.write_bytes(b"half a blob")
    push(mid_artifact, "mid", registry=str(reg))
    assert not stale.exists() and running.exists()


def test_a_pull_sweeps_the_gc_markers_of_dead_pulls_only(zoo_env, tiny_artifact):
    """A killed pull's inflight marker goes at the next pull (not only at `zoo gc`); a running pull's stays."""
    push(tiny_artifact, "tiny", registry=str(zoo_env / "reg"))
    store = Store()
    store.inflight.mkdir(parents=True)
    dead, live = dead_pid(), os.getppid()
    for pid in (dead, live):
        (store.inflight / f"{pid}-k3y_x9.json").write_text(json.dumps(["ab" * 32]))
    pull("tiny", registry=str(zoo_env / "reg"), store=store)
    assert [p.name for p in store.inflight.iterdir()] == [f"{live}-k3y_x9.json"]
