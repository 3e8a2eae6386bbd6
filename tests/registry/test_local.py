"""The local store and the local-directory registry: round trip, integrity, safety, rm/gc, resolve.

Everything here is real: artifacts written by zoo.format, files on disk, the store's own locks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from zoo.errors import CardError, ChecksumError, FormatError, NotFoundError, RegistryError
from zoo.registry import parse_ref
from zoo.registry.base import check_manifest, manifest_bytes
from zoo.registry.local import LocalRegistry
from zoo.registry.transfer import build_manifest, pull, push, search, show
from zoo.store import Store, resolve

from .conftest import assert_same_tree, sha256, store_files, tamper


def test_push_pull_round_trip_is_byte_identical(zoo_env, tiny_artifact):
    reg = zoo_env / "reg"
    summary = push(tiny_artifact, "tiny:v1", registry=str(reg))
    assert summary["files"] == 3 and summary["warnings"] == []
    result = pull("tiny:v1", registry=str(reg))
    assert result.downloaded_bytes == summary["size"] and result.reused_bytes == 0
    assert_same_tree(tiny_artifact, result.path)
    for entry in result.files:  # every blob is stored under its verified sha256
        assert sha256(Store().blob_path(entry.sha256)) == entry.sha256
    from zoo.format import open_artifact

    open_artifact(result.path).validate()  # the pulled copy is a valid artifact
    again = pull("tiny:v1", registry=str(reg))
    assert again.downloaded_bytes == 0 and again.reused_bytes == summary["size"]


def test_default_registry_from_environment_and_config(zoo_env, tiny_artifact, monkeypatch):
    reg = zoo_env / "env-reg"
    monkeypatch.setenv("ZOO_REGISTRY", str(reg))
    push(tiny_artifact, "tiny", registry=None)
    assert (reg / "manifests" / "tiny" / "latest.json").is_file()
    monkeypatch.delenv("ZOO_REGISTRY")
    config = zoo_env / "config.yaml"
    config.write_text(f"registry: {reg}\n")
    monkeypatch.setenv("ZOO_CONFIG", str(config))
    assert pull("tiny").tag == "latest"


def test_push_refuses_other_content_under_an_existing_tag_without_force(zoo_env, tiny_artifact, mid_artifact):
    reg = str(zoo_env / "reg")
    assert not push(tiny_artifact, "tiny:v1", registry=reg)["unchanged"]
    before = sorted((p.relative_to(reg), p.stat().st_mtime_ns) for p in Path(reg).rglob("*"))
    assert push(tiny_artifact, "tiny:v1", registry=reg)["unchanged"]  # the same files: idempotent, nothing written
    assert sorted((p.relative_to(reg), p.stat().st_mtime_ns) for p in Path(reg).rglob("*")) == before
    with pytest.raises(RegistryError, match="already exists.*--force"):
        push(mid_artifact, "tiny:v1", registry=reg)
    assert push(mid_artifact, "tiny:v1", registry=reg, force=True)["name"] == "tiny"


def test_push_validates_artifact_and_card_first(zoo_env, tiny_artifact):
    reg = zoo_env / "reg"
    broken = zoo_env / "broken"
    shutil.copytree(tiny_artifact, broken)
    card = (broken / "zoo.yaml").read_text()
    (broken / "zoo.yaml").write_text(card.replace("architecture: llama", "architecture: gpt5"))
    with pytest.raises(CardError, match="architecture"):
        push(broken, "broken", registry=str(reg))
    (broken / "zoo.yaml").write_text(card)
    shard = broken / "model-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # same size, different bytes: only the checksum can tell
    shard.write_bytes(bytes(data))
    with pytest.raises((ChecksumError, FormatError), match="model-00001"):
        push(broken, "broken", registry=str(reg))
    (broken / "notes.txt").write_text("not listed")
    shard.write_bytes((tiny_artifact / "model-00001.safetensors").read_bytes())
    with pytest.raises(CardError, match="notes.txt"):
        push(broken, "broken", registry=str(reg))
    assert not reg.exists() or not any((reg / "manifests").rglob("*.json"))


def test_tampered_blob_fails_with_checksum_error_and_stores_nothing(zoo_env, tiny_artifact):
    reg = zoo_env / "reg"
    push(tiny_artifact, "tiny:v1", registry=str(reg))
    manifest = LocalRegistry(reg).get_manifest("tiny", "v1")
    shard = next(f for f in manifest["files"] if f["path"] == "model-00001.safetensors")
    tamper(reg / "blobs" / "sha256" / shard["sha256"])
    with pytest.raises(ChecksumError, match="model-00001.safetensors"):
        pull("tiny:v1", registry=str(reg))
    assert not [n for n in store_files(zoo_env / "home") if n.startswith(shard["sha256"])]  # no blob, no partial
    assert not Store().has("tiny", "v1")


def _write_manifest(reg: Path, name: str, files: list[dict], card: dict | None = None) -> None:
    path = reg / "manifests" / name / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest_bytes({"manifest_version": 1, "name": name, "tag": "latest", "files": files,
                                     "card": card or {"card_version": 1, "architecture": "llama"}}))


@pytest.mark.parametrize("bad_path", ["../escape.bin", "/etc/passwd", "a/../../b", "./x", "a//b", "c:\\x"])
def test_manifest_with_unsafe_path_is_refused(zoo_env, bad_path):
    reg = zoo_env / "reg"
    _write_manifest(reg, "evil", [{"path": bad_path, "size": 1, "sha256": "0" * 64}])
    with pytest.raises(RegistryError, match="path"):
        pull("evil", registry=str(reg))
    assert not (zoo_env / "escape.bin").exists() and not (zoo_env / "home" / "manifests").exists()


def test_symlinked_manifest_and_blob_are_refused(zoo_env, tiny_artifact):
    reg = zoo_env / "reg"
    push(tiny_artifact, "tiny:v1", registry=str(reg))
    (reg / "manifests" / "tiny" / "link.json").symlink_to(reg / "manifests" / "tiny" / "v1.json")
    with pytest.raises(RegistryError, match="symlink"):
        pull("tiny:link", registry=str(reg))
    manifest = LocalRegistry(reg).get_manifest("tiny", "v1")
    blob = reg / "blobs" / "sha256" / manifest["files"][0]["sha256"]
    target = zoo_env / "elsewhere"
    shutil.copy(blob, target)
    blob.unlink()
    blob.symlink_to(target)
    with pytest.raises(RegistryError, match="symlink"):
        pull("tiny:v1", registry=str(reg))


@pytest.mark.parametrize("ref", ["../x", "a/../b", "UPPER:..", "x:", "x:bad/tag", "-lead", "a b", "a/b/c/d"])
def test_invalid_names_are_refused(ref):
    with pytest.raises(RegistryError):
        parse_ref(ref)


def test_references_parse():
    assert parse_ref("m") == parse_ref("m:latest")
    assert parse_ref("s3://bucket/pre/fix/m:v2") == type(parse_ref("m"))("s3://bucket/pre/fix", "m", "v2")
    assert parse_ref("http://127.0.0.1:8080/reg/m").registry == "http://127.0.0.1:8080/reg"
    hf = parse_ref("hf://org/repo@v1")
    assert (hf.registry, hf.name, hf.tag) == ("hf://", "org/repo", "v1")
    assert parse_ref("hf://org/repo").tag == "main"


def test_interrupted_push_leaves_no_manifest(zoo_env, tiny_artifact):
    """A push that fails after some blobs (here: a directory squats on the last blob's key) writes no manifest."""
    reg = zoo_env / "reg"
    manifest, _ = build_manifest(tiny_artifact, "tiny", "v1")
    last = manifest["files"][-1]["sha256"]
    (reg / "blobs" / "sha256" / last).mkdir(parents=True)
    with pytest.raises(RegistryError, match="cannot store blob"):
        push(tiny_artifact, "tiny:v1", registry=str(reg))
    assert LocalRegistry(reg).list_manifests() == []
    (reg / "blobs" / "sha256" / last).rmdir()
    push(tiny_artifact, "tiny:v1", registry=str(reg))  # the retry uploads only what is missing
    assert LocalRegistry(reg).list_manifests() == [("tiny", "v1")]


def test_rm_and_gc(zoo_env, tiny_artifact, mid_artifact):
    reg = str(zoo_env / "reg")
    push(tiny_artifact, "tiny:v1", registry=reg)
    push(tiny_artifact, "tiny:v2", registry=reg)
    push(mid_artifact, "mid", registry=reg)
    for ref in ("tiny:v1", "tiny:v2", "mid"):
        pull(ref, registry=reg)
    store = Store()
    assert [(m["name"], m["tag"]) for m in store.list()] == [("mid", "latest"), ("tiny", "v1"), ("tiny", "v2")]
    n_blobs = len(store_files(zoo_env / "home"))
    store.remove("tiny", "v1")
    assert store.gc() == {"blobs_removed": 0, "snapshots_removed": 1, "bytes_freed": 0}  # v2 has the same files
    assert len(store_files(zoo_env / "home")) == n_blobs
    store.remove("mid", "latest")
    freed = store.gc()
    mid_bytes = sum(p.stat().st_size for p in mid_artifact.iterdir())
    assert freed["blobs_removed"] == len(list(mid_artifact.iterdir())) and freed["bytes_freed"] == mid_bytes
    assert store.path("tiny", "v2").is_dir()
    with pytest.raises(NotFoundError):
        store.remove("mid", "latest")
    store.remove("tiny", "v2")
    store.gc()
    assert store_files(zoo_env / "home") == [] and store.list() == []


def test_resolve_pulls_when_missing_and_accepts_paths(zoo_env, tiny_artifact):
    reg = str(zoo_env / "reg")
    push(tiny_artifact, "tiny:v1", registry=reg)
    assert resolve(tiny_artifact) == tiny_artifact
    path = resolve("tiny:v1", registry=reg)
    assert_same_tree(tiny_artifact, path)
    shutil.rmtree(reg)  # now only the store has it: resolve must not touch the registry
    assert resolve("tiny:v1") == path
    shutil.rmtree(path)  # a deleted snapshot is rebuilt from the blobs
    assert_same_tree(tiny_artifact, resolve("tiny:v1"))
    with pytest.raises(NotFoundError):
        resolve("./no/such/dir")
    with pytest.raises(NotFoundError):
        resolve("other:v1", registry=reg)


def test_search_and_show_read_registry_cards_and_catalog(zoo_env, tiny_artifact):
    reg = str(zoo_env / "reg")
    push(tiny_artifact, "tiny:v1", registry=reg)
    names = [r["name"] for r in search(registry=reg, min_sparsity=0.5, bits=4)]
    assert "tiny" in names and "llama-7b-sparse90-int4" in names
    assert "mpt-7b-sparse60-int8" not in names
    assert [r["name"] for r in search("tiny", registry=reg)] == ["tiny"]
    assert [r["name"] for r in search(registry=reg, arch="mpt")] == ["mpt-7b-sparse60-int8"]
    good = search(registry=reg, max_perplexity=100.0)  # only measured cards can pass a filter on perplexity
    assert good and all(r["source"] == "catalog" and r["perplexity"] <= 100.0 for r in good)
    assert not {"tiny", "llama-7b-sparse90-int4"} & {r["name"] for r in good}
    index = json.loads((zoo_env / "reg" / "index.json").read_text())
    assert [(m["name"], m["tag"]) for m in index["models"]] == [("tiny", "v1")]
    assert show("tiny:v1", registry=reg)["source"] == reg
    assert show("llama-7b-sparse90-int4")["source"] == "catalog"
    pull("tiny:v1", registry=reg)
    assert show("tiny:v1")["source"] == "store"
    with pytest.raises(NotFoundError):
        show("nothing-here")


def test_blobs_are_shared_between_tags_and_models(zoo_env, tiny_artifact, tmp_path):
    """Two variants of one base model share their shared-*.safetensors blob: it is stored once."""
    from zoo.synthetic import TINY_LLAMA, write_random_model

    other = write_random_model(tmp_path / "tiny-q8", TINY_LLAMA, encoding="sparse-q8", sparsity=0.5, group_size=64,
                               seed=1)
    assert sha256(other / "shared-00001.safetensors") == sha256(tiny_artifact / "shared-00001.safetensors")
    reg = str(zoo_env / "reg")
    push(tiny_artifact, "tiny", registry=reg)
    push(other, "tiny-q8", registry=reg)
    first = pull("tiny", registry=reg)
    second = pull("tiny-q8", registry=reg)
    assert second.reused_bytes == os.path.getsize(other / "shared-00001.safetensors")
    assert len(store_files(zoo_env / "home")) == 5  # 2 model shards + 2 cards + 1 shared
    assert first.path != second.path


def sha256_of(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pull_never_shares_an_inode_with_the_registry(zoo_env, tiny_artifact):
    """A blob changed in place in the registry must not change the store's copy (it did when they were hard
    links: the fault campaign of 2026-12-06); and what the registry publishes is world-readable (0600 manifests
    made an ordinary nginx answer 403)."""
    import stat

    reg = zoo_env / "reg"
    push(tiny_artifact, "tiny", registry=str(reg))
    result = pull("tiny", registry=str(reg))
    for entry in result.files:
        stored, published = Store().blob_path(entry.sha256), reg / "blobs" / "sha256" / entry.sha256
        assert stored.stat().st_ino != published.stat().st_ino
    big = max(result.files, key=lambda e: e.size)
    published = reg / "blobs" / "sha256" / big.sha256
    published.chmod(0o644)
    with open(published, "r+b") as f:  # in place: same inode
        f.seek(big.size // 2)
        f.write(b"\xff" * 8)
    assert sha256_of(Store().blob_path(big.sha256)) == big.sha256
    published_files = [p for p in reg.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert published_files and all(p.stat().st_mode & stat.S_IROTH for p in published_files), \
        [oct(p.stat().st_mode) for p in published_files]


def test_copying_pull_round_trip_tamper_and_resume(zoo_env, tiny_artifact, mid_artifact):
    """The in-kernel copy path verifies what it wrote and resumes a partial blob."""
    reg = zoo_env / "reg"
    push(mid_artifact, "mid", registry=str(reg))
    store = Store()
    manifest = LocalRegistry(reg).get_manifest("mid", "latest")
    big = max(manifest["files"], key=lambda f: f["size"])
    store.blobs.mkdir(parents=True)
    have = big["size"] // 3
    (store.blobs / f"{big['sha256']}.partial").write_bytes((mid_artifact / big["path"]).read_bytes()[:have])
    result = pull("mid", registry=str(reg), store=store)
    assert result.downloaded_bytes == sum(f["size"] for f in manifest["files"]) - have
    assert_same_tree(mid_artifact, result.path)
    for entry in result.files:  # copies, not links
        assert store.blob_path(entry.sha256).stat().st_ino != (reg / "blobs" / "sha256" / entry.sha256).stat().st_ino
    push(tiny_artifact, "tiny", registry=str(reg))
    shard = next(f for f in LocalRegistry(reg).get_manifest("tiny", "latest")["files"]
                 if f["path"] == "model-00001.safetensors")
    tamper(reg / "blobs" / "sha256" / shard["sha256"])
    with pytest.raises(ChecksumError, match="model-00001.safetensors"):
        pull("tiny", registry=str(reg), store=store)
    assert not [n for n in store_files(zoo_env / "home") if n.startswith(shard["sha256"])]
    assert not store.has("tiny", "latest")


def test_registry_interface_reads_byte_ranges(zoo_env, tiny_artifact):
    reg = LocalRegistry(zoo_env / "reg")
    push(tiny_artifact, "tiny", registry=str(reg.root))
    entry = next(e for e in check_manifest(reg.get_manifest("tiny", "latest")) if e.path == "model-00001.safetensors")
    start, chunks = reg.read_blob(entry, 1000)
    assert start == 1000 and b"".join(chunks) == (tiny_artifact / entry.path).read_bytes()[1000:]
    assert reg.has_blob(entry) and reg.list_manifests() == [("tiny", "latest")]
    reg.delete_manifest("tiny", "latest")
    assert reg.list_manifests() == [] and json.loads((reg.root / "index.json").read_text())["models"] == []


def test_push_a_model_from_the_store_by_name(zoo_env, tiny_artifact, tmp_path):
    """`zoo push NAME` publishes a stored model (e.g. one built from a recipe) without naming its directory."""
    stored = Store().add(tiny_artifact, "built", "v1")
    assert_same_tree(tiny_artifact, stored.path)
    registry = str(tmp_path / "registry")
    push("built:v1", "shared:v2", registry=registry)
    assert_same_tree(tiny_artifact, pull("shared:v2", registry=registry).path)
    with pytest.raises(NotFoundError, match="neither an artifact directory"):
        push("not-stored:v1", "x:v1", registry=registry)
