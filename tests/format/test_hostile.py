"""Hostile inputs a reader must refuse in one line, fast (issue 18): deep or duplicate-key JSON in a header,
the zoo metadata or a manifest; alias-bomb or deeply nested YAML cards; symlinks leaving the artifact."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corrupt import drop_card_files, read_shard, write_shard

from zoo import card as zoo_card
from zoo.errors import CardError, FormatError, RegistryError
from zoo.format import open_artifact
from zoo.untrusted import MAX_JSON_DEPTH, MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from zoo.registry.base import MAX_MANIFEST_BYTES, parse_manifest
from zoo.synthetic import TINY_LLAMA, write_random_model

SHARD = "model-00001.safetensors"
DEEP = 100_000  # far past Python's recursion limit: a recursive parser would raise RecursionError
# a billion laughs: 9 levels of 9 aliases each, 9**9 = 387,420,489 leaves once expanded
BILLION_LAUGHS = ("card_version: 1\narchitecture: llama\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                  + "".join(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10)))


@pytest.fixture
def artifact(tmp_path) -> Path:
    return write_random_model(tmp_path / "tiny", TINY_LLAMA, encoding="q8", group_size=32)


def zoo(*args, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_DEBUG": "", **({"ZOO_HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60)


def refused_in_one_line(proc: subprocess.CompletedProcess, words: str) -> None:
    """Exit 1, one line on stderr naming the problem, no traceback and no 'internal error'."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert words in lines[0], lines[0]


def rewrite_header(shard: Path, header_json: bytes) -> None:
    """Replace the shard's JSON header (tensor data kept as is); the card stops listing sizes."""
    drop_card_files(shard.parent)
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header_json += b" " * (-(8 + len(header_json)) % 8)
    shard.write_bytes(struct.pack("<Q", len(header_json)) + header_json + raw[8 + n:])


def set_zoo_metadata(shard: Path, text: str) -> None:
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["zoo"] = text
    rewrite_header(shard, json.dumps(header).encode())


# --- JSON: safetensors headers, zoo metadata, manifests ---

def test_deeply_nested_header_is_refused(artifact):
    shard = artifact / SHARD
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + n].rstrip()
    rewrite_header(shard, header[:-1] + b',"deep":' + b"[" * DEEP + b"]" * DEEP + b"}")
    with pytest.raises(FormatError, match="nested deeper than"):
        open_artifact(artifact)
    refused_in_one_line(zoo("inspect", artifact, "--no-verify"), "nested deeper than")


def test_header_nested_just_past_the_limit_is_refused(artifact):
    shard = artifact / SHARD
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    deep = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH  # with the header object: one level too many
    rewrite_header(shard, raw[8:8 + n].rstrip()[:-1] + b',"deep":' + deep + b"}")
    with pytest.raises(FormatError, match=f"deeper than {MAX_JSON_DEPTH}"):
        open_artifact(artifact)


def test_duplicate_tensor_key_in_header_is_refused(artifact):
    shard = artifact / SHARD
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    entry = json.dumps(header[name])
    text = raw[8:8 + n].rstrip()
    rewrite_header(shard, text[:-1] + f',"{name}":{entry}}}'.encode())  # the same entry twice: last-wins would accept it
    with pytest.raises(FormatError, match="duplicate JSON key"):
        open_artifact(artifact)
    refused_in_one_line(zoo("inspect", artifact, "--no-verify"), "duplicate JSON key")


def test_deeply_nested_zoo_metadata_is_refused(artifact):
    shard = artifact / SHARD
    meta, _ = read_shard(shard)
    set_zoo_metadata(shard, json.dumps(meta)[:-1] + ', "x": ' + "[" * DEEP + "]" * DEEP + "}")
    with pytest.raises(FormatError, match="zoo metadata: JSON nested deeper than"):
        open_artifact(artifact)
    refused_in_one_line(zoo("inspect", artifact, "--no-verify"), "nested deeper than")


def test_duplicate_key_in_zoo_metadata_is_refused(artifact):
    shard = artifact / SHARD
    meta, tensors = read_shard(shard)
    write_shard(shard, meta, tensors)
    set_zoo_metadata(shard, json.dumps(meta)[:-1] + f', "format_version": "{meta["format_version"]}"}}')
    with pytest.raises(FormatError, match="duplicate JSON key 'format_version'"):
        open_artifact(artifact)


def manifest(**extra) -> dict:
    return {"manifest_version": 1, "files": [{"path": "a.safetensors", "size": 1, "sha256": "0" * 64}],
            "card": {"card_version": 1}, **extra}


def test_manifest_limits():
    parse_manifest(json.dumps(manifest()).encode(), "m")  # a plain manifest passes
    deep = json.dumps(manifest())[:-1] + ', "x": ' + "[" * DEEP + "]" * DEEP + "}"
    with pytest.raises(RegistryError, match="nested deeper than"):
        parse_manifest(deep.encode(), "m")
    with pytest.raises(RegistryError, match="duplicate JSON key 'files'"):
        parse_manifest((json.dumps(manifest())[:-1] + ', "files": []}').encode(), "m")
    big = json.dumps(manifest(padding="x" * MAX_MANIFEST_BYTES)).encode()
    with pytest.raises(RegistryError, match="exceeds the limit"):
        parse_manifest(big, "m")


# --- YAML: cards ---

def test_billion_laughs_card_is_refused_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(CardError, match=f"more than {MAX_YAML_NODES} nodes"):
        zoo_card.parse(BILLION_LAUGHS, source="zoo.yaml")
    assert time.monotonic() - start < 2


def test_recursive_alias_card_is_refused():
    with pytest.raises(CardError, match="aliases expanded"):
        zoo_card.parse("card_version: 1\narchitecture: llama\nloop: &a [*a]\n", source="zoo.yaml")


@pytest.mark.parametrize("nested", [
    "x: " + "[" * DEEP + "]" * DEEP,  # flow style, far past the recursion limit
    "x: " + "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH,  # under the top mapping: one level too many
    "".join(f"{'  ' * i}k:\n" for i in range(MAX_YAML_DEPTH)) + "  " * MAX_YAML_DEPTH + "v",  # block style
])
def test_deeply_nested_card_is_refused(nested):
    start = time.monotonic()
    with pytest.raises(CardError, match=f"nested deeper than {MAX_YAML_DEPTH}"):
        zoo_card.parse(f"card_version: 1\narchitecture: llama\n{nested}\n", source="zoo.yaml")
    assert time.monotonic() - start < 2


def test_oversized_card_is_refused():
    with pytest.raises(CardError, match="exceed the limit"):
        zoo_card.parse("card_version: 1\narchitecture: llama\ndescription: " + "x" * MAX_YAML_BYTES + "\n")


def test_card_with_anchors_in_bounds_still_loads():
    card = zoo_card.parse("card_version: 1\narchitecture: llama\ntags: &t [a, b]\ndescription: ok\n")
    assert card["tags"] == ["a", "b"]


@pytest.mark.parametrize("text", [BILLION_LAUGHS, "card_version: 1\nx: " + "[" * DEEP + "]" * DEEP + "\n"])
def test_hostile_card_in_an_artifact_is_refused_by_inspect(artifact, text):
    (artifact / "zoo.yaml").write_text(text)
    with pytest.raises(FormatError, match="zoo.yaml: YAML"):
        open_artifact(artifact)
    start = time.monotonic()
    refused_in_one_line(zoo("inspect", artifact), "zoo.yaml")
    refused_in_one_line(zoo("push", artifact, "hostile:v1", home=artifact.parent / "home"), "zoo.yaml")
    assert time.monotonic() - start < 30  # two CLI start-ups included; the parse itself is milliseconds


# --- symlinks leaving the artifact directory ---

def test_shard_symlinked_outside_is_refused(artifact, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (artifact / SHARD).rename(outside / SHARD)
    (artifact / SHARD).symlink_to(outside / SHARD)
    with pytest.raises(FormatError, match=f"{SHARD}: a symlink leading outside"):
        open_artifact(artifact)
    refused_in_one_line(zoo("inspect", artifact, "--no-verify"), "symlink leading outside")
    refused_in_one_line(zoo("inspect", artifact), "symlink leading outside")


def test_tokenizer_symlinked_outside_is_refused(artifact, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (artifact / "tokenizer.json").symlink_to(secret)
    with pytest.raises(FormatError, match="tokenizer.json: a symlink leading outside"):
        open_artifact(artifact)
    refused_in_one_line(zoo("inspect", artifact, "--no-verify"), "symlink leading outside")


def test_symlink_inside_the_artifact_and_a_symlinked_artifact_are_fine(artifact, tmp_path):
    (artifact / "copy.bin").symlink_to(artifact / "zoo.yaml")  # inside: harmless, not a shard
    link = tmp_path / "link"
    link.symlink_to(artifact)  # the directory itself reached through a symlink
    assert open_artifact(link).config["arch"] == "llama"
