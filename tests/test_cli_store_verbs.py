"""`zoo rm` (several names, --prune), `zoo cp`, `zoo list`'s MODIFIED column and "did you mean",
through the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from zoo.store import Store
from zoo.synthetic import TINY_LLAMA, write_random_model


def zoo(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny q8 Llamas with different weights (so different blobs)."""
    root = tmp_path_factory.mktemp("artifacts")
    return (write_random_model(root / "a", TINY_LLAMA, encoding="q8", seed=1),
            write_random_model(root / "b", TINY_LLAMA, encoding="q8", seed=2))


@pytest.fixture
def env(tmp_path, artifacts) -> dict:
    """An isolated ZOO_HOME holding tiny:v1 and other:latest; no registry or config from the user."""
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_REGISTRY", "ZOO_CATALOG", "HF_ENDPOINT")}
    env.update(ZOO_HOME=str(tmp_path / "home"), ZOO_CONFIG=str(tmp_path / "no-config.yaml"),
               ZOO_REGISTRY=str(tmp_path / "reg"))
    store = Store(env["ZOO_HOME"])
    store.add(artifacts[0], "tiny", "v1")
    store.add(artifacts[1], "other", "latest")
    return env


def listed(env: dict) -> list[str]:
    proc = zoo("list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return [f"{m['name']}:{m['tag']}" for m in json.loads(proc.stdout)]


def blobs(env: dict) -> list[Path]:
    return sorted((Path(env["ZOO_HOME"]) / "blobs" / "sha256").iterdir())


def test_rm_several_names_with_prune_frees_their_blobs(env):
    size = sum(p.stat().st_size for p in blobs(env))
    proc = zoo("rm", "tiny:v1", "other", "--prune", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["removed"] == ["tiny:v1", "other:latest"] and doc["errors"] == []
    assert doc["pruned"]["bytes_freed"] == size and doc["pruned"]["blobs_removed"] == 6
    assert listed(env) == [] and blobs(env) == []


def test_rm_removes_the_names_it_knows_and_fails_on_the_others(env):
    proc = zoo("rm", "tiny:v1", "nope", "--prune", env=env)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "removed tiny:v1"
    assert lines[1].startswith("zoo: error: nope:latest: not in the local store") and len(lines) == 3
    assert lines[2].startswith("pruned 3 blobs, 1 snapshots, freed ")
    assert listed(env) == ["other:latest"] and len(blobs(env)) == 3
    assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_rm_without_prune_keeps_the_blobs(env):
    before = blobs(env)
    proc = zoo("rm", "other", env=env)
    assert proc.returncode == 0 and proc.stderr == "removed other:latest\n"
    assert listed(env) == ["tiny:v1"] and blobs(env) == before


def test_cp_makes_a_second_name_sharing_the_blobs(env):
    before = blobs(env)
    proc = zoo("cp", "tiny:v1", "smol", env=env)
    assert proc.returncode == 0 and proc.stderr == "copied tiny:v1 to smol:latest\n", proc.stderr
    assert listed(env) == ["other:latest", "smol:latest", "tiny:v1"] and blobs(env) == before
    shown = [json.loads(zoo("show", name, "--json", env=env).stdout) for name in ("smol", "tiny:v1")]
    assert shown[0]["card"] == shown[1]["card"]
    again = zoo("cp", "tiny:v1", "smol:latest", "--json", env=env)  # the same manifest: nothing to do, no error
    assert again.returncode == 0 and json.loads(again.stdout)["target"] == "smol:latest"
    assert zoo("rm", "tiny:v1", "--prune", env=env).returncode == 0  # the copy keeps the blobs alive
    assert blobs(env) == before
    assert zoo("show", "smol", env=env).returncode == 0


def test_cp_refuses_a_target_naming_another_model(env):
    proc = zoo("cp", "tiny:v1", "other", env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "zoo: error: other:latest: already in the local store as another model; " \
                          "`zoo rm other:latest` first\n"
    assert listed(env) == ["other:latest", "tiny:v1"]


def test_store_copy_shares_the_manifest(env):
    store = Store(env["ZOO_HOME"])
    digest = store.copy("tiny", "v1", "alias", "x")
    assert digest == next(m["digest"] for m in store.list() if m["name"] == "tiny")
    assert store.get_manifest("alias", "x") == store.get_manifest("tiny", "v1")
    assert store.path("alias", "x") == store.path("tiny", "v1")  # one snapshot for both names
    with pytest.raises(Exception, match="not in the local store"):
        store.copy("missing", "v1", "alias", "y")


def test_list_shows_when_each_model_was_modified(env):
    manifest = Path(env["ZOO_HOME"]) / "manifests" / "other" / "latest.json"
    two_hours_ago = time.time() - 2 * 3600 - 30
    os.utime(manifest, (two_hours_ago, two_hours_ago))
    table = zoo("list", env=env)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["name", "id", "size", "modified"]
    assert rows[0].split()[0] == "other:latest" and rows[0].rstrip().endswith("2 hours ago")
    assert rows[1].split()[0] == "tiny:v1" and rows[1].rstrip().endswith(("just now", "second ago", "seconds ago"))
    doc = json.loads(zoo("list", "--json", env=env).stdout)
    stamp = datetime.fromisoformat(doc[0]["modified"])
    assert stamp.tzinfo is not None and abs(stamp.timestamp() - two_hours_ago) < 1


def test_list_fits_a_catalog_name_in_80_columns(env, artifacts):
    Store(env["ZOO_HOME"]).add(artifacts[0], "smollm2-135m-instruct-sparse50-int4", "latest")
    table = zoo("list", env={**env, "COLUMNS": "80"})
    assert table.returncode == 0, table.stderr
    assert all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
    row = next(line for line in table.stdout.splitlines() if "sparse50" in line)
    assert row.split()[0] == "smollm2-135m-instruct-sparse50-int4:latest" and row.rstrip().endswith(("ago", "now"))


@pytest.mark.parametrize("args, suggestion", [
    (("show", "tiny"), "did you mean tiny:v1?"),
    (("rm", "othr"), "did you mean other?"),
    (("cp", "tyni:v1", "x"), "did you mean tiny:v1?"),
    (("pull", "tiny"), "did you mean tiny:v1?"),
    (("run", "tyni:v1", "hi"), "did you mean tiny:v1?"),
    (("eval", "tiny"), "did you mean tiny:v1?"),
    (("show", "llama-7b-sparse90-int"), "did you mean llama-7b-sparse90-int4"),  # the built-in catalog
])
def test_a_near_name_is_suggested_in_the_one_line_error(env, args, suggestion):
    proc = zoo(*args, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and suggestion in proc.stderr, proc.stderr


def test_no_suggestion_for_a_name_nothing_resembles(env):
    proc = zoo("show", "qqqqqqqq", env=env)
    assert proc.returncode == 1 and "did you mean" not in proc.stderr and proc.stderr.count("\n") == 1
