"""A one-trial slice of the fault campaign (bench/faults.py, issue 19), so the campaign code cannot rot: kill -9 of
a pull and a full disk on a directory registry, a connection dropped mid-blob by an HTTP mirror and by the tests'
relay in front of docker-registry; and the campaign's checks shown to see damage planted in a store and a registry."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

FAULTS = Path(__file__).resolve().parents[1] / "bench" / "faults.py"


def load_faults():
    spec = importlib.util.spec_from_file_location("zoo_bench_faults", FAULTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_slice_of_the_campaign_finds_no_corruption_and_every_rerun_succeeds(tmp_path, monkeypatch):
    for var in ("ZOO_REGISTRY", "ZOO_HOME", "ZOO_CATALOG"):
        monkeypatch.delenv(var, raising=False)
    faults = load_faults()
    rows = faults.run(["kill-pull", "full-disk"], ["dir"], 1, 3, tmp_path / "work", layers=1)
    rows += faults.run(["dropped"], ["http", "oci"], 1, 3, tmp_path / "work", layers=1)
    assert [(r["scenario"], r["backend"], r["trials"]) for r in rows] == \
        [("kill-pull", "dir", 1), ("full-disk", "dir", 1), ("dropped", "http", 1), ("dropped", "oci", 1)]
    for row in rows:
        assert (row["corrupt"], row["rerun_failed"], row["bad_error"], row["hazard"]) == (0, 0, 0, 0), row
    pull, disk, dropped_http, dropped = (r["notes"] for r in rows)
    assert dropped_http == {"first pull ok": 1, "resumed with Range": 1}  # the mirror's cut body resumed too
    assert pull.get("killed", 0) + pull.get("finished first", 0) == 1
    assert disk.get("pull failed") == 1 or "RLIMIT_FSIZE" in disk  # a tmpfs smaller than the model cannot fit it
    assert dropped == {"first pull ok": 1, "resumed with Range": 1}  # cut once, resumed where it was cut
    assert "| kill-pull | dir | 1 | 0 | 0 |" in faults.table(rows)
    assert not (tmp_path / "work" / "trials").exists()  # every trial cleans up after itself (and unmounts)


def test_the_checks_see_damage_planted_in_a_store_and_a_registry(tmp_path, monkeypatch):
    """The campaign's zeros mean something: a flipped store blob is corruption, a stray .partial and a staging
    snapshot are leftovers, a flipped registry blob is corruption."""
    from zoo.registry.transfer import pull, push
    from zoo.store import Store
    from zoo.synthetic import TINY_LLAMA, write_random_model

    faults = load_faults()
    art = write_random_model(tmp_path / "art", TINY_LLAMA, encoding="q4", group_size=64, seed=1)
    registry = tmp_path / "registry"
    push(art, f"{faults.NAME}:latest", registry=str(registry))
    home = tmp_path / "home"
    pull(faults.NAME, registry=str(registry), store=Store(home))
    env = dict(os.environ, ZOO_CONFIG=str(tmp_path / "no-config.yaml"))
    assert faults.store_problems(home, env) == [] and faults.store_leftovers(home) == []
    blob = max((home / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    (home / "blobs" / "sha256" / f"{'0' * 64}.partial").write_bytes(b"x")
    (home / "snapshots" / ".tmp-planted").mkdir()
    problems = faults.store_problems(home, env)
    assert any("is not its sha256" in p for p in problems) and any("zoo verify" in p for p in problems)
    assert sorted(faults.store_leftovers(home)) == [f"blobs/{'0' * 64}.partial", "snapshots/.tmp-planted"]
    backend = faults.DirBackend(tmp_path)
    assert not [p for p in backend.problems(str(registry)) if "sha256" in p]
    reg_blob = registry / "blobs" / "sha256" / blob.name
    reg_blob.chmod(0o644)
    reg_blob.write_bytes(bytes(data))
    assert any("registry blob" in p for p in backend.problems(str(registry)))
