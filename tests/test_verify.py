"""Verify on load: `zoo run` and `zoo inspect` refuse a file whose sha256 differs from the card's, and a
warm start does not hash again (zoo/verify.py, issue 18)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import verify
from zoo.errors import ChecksumError
from zoo.format import open_artifact

_spec = importlib.util.spec_from_file_location("zoo_tests_tiny", Path(__file__).parent / "runtime" / "tiny.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

SHARD = "model-00001.safetensors"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return tiny.write_tiny(tmp_path_factory.mktemp("verify") / "tiny")


@pytest.fixture
def model(pristine, tmp_path) -> Path:
    """A fresh copy of the tiny artifact (with tokenizer.json), safe to corrupt."""
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def zoo(*args, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_HOME": str(home), "ZOO_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def flip_tensor_byte(shard: Path) -> None:
    """Flip one bit of a q8 weight code: the file keeps its size and passes every format check."""
    data = bytearray(shard.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    start, end = next(v["data_offsets"] for k, v in header.items() if k.endswith(".qweight"))
    data[8 + n + (start + end) // 2] ^= 1
    shard.write_bytes(bytes(data))


def flip_tokenizer_byte(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace('"the"', '"thE"', 1) if '"the"' in text else text.replace("a", "b", 1))


def wrong_card_digest(path: Path) -> None:
    card = path / "zoo.yaml"
    text = card.read_text()
    digest = re.search(r"sha256: ([0-9a-f]{64})", text).group(1)
    card.write_text(text.replace(digest, "0" * 64, 1))


CORRUPTIONS = {
    SHARD: lambda m: flip_tensor_byte(m / SHARD),
    "tokenizer.json": lambda m: flip_tokenizer_byte(m / "tokenizer.json"),
    "card digest": wrong_card_digest,
}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_file_is_refused_by_run_and_inspect(model, tmp_path, corruption):
    CORRUPTIONS[corruption](model)
    named = {SHARD: SHARD, "tokenizer.json": "tokenizer.json", "card digest": None}[corruption]
    for args in (("run", model, "hi", "-n", "2", "--temperature", "0"), ("inspect", model), ("inspect", model, "--json")):
        line = one_error_line(zoo(*args, home=tmp_path / "home"))
        assert line.startswith("zoo: error:") and "sha256" in line and "zoo.yaml" in line, line
        if named:
            assert line.startswith(f"zoo: error: {named}:"), line
    proc = zoo("inspect", model, "--no-verify", "--json", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr


def test_unlisted_tokenizer_is_refused(model, tmp_path):
    card = model / "zoo.yaml"
    card.write_text(re.sub(r"- path: tokenizer.json\n  size: \d+\n  sha256: [0-9a-f]+\n", "", card.read_text()))
    line = one_error_line(zoo("inspect", model, home=tmp_path / "home"))
    assert "tokenizer.json: not listed" in line


def test_warm_start_reads_the_cache_instead_of_hashing(model, tmp_path, monkeypatch):
    cache = tmp_path / "verified.json"
    hashed: list[Path] = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: hashed.append(p) or real(p))
    art = open_artifact(model)
    files = sorted(item["path"] for item in art.card["files"])
    assert sorted(verify.verify_artifact(art, cache)) == files and len(hashed) == 3
    entries = json.loads(cache.read_text())["files"]
    assert sorted(Path(k).name for k in entries) == files
    assert verify.verify_artifact(art, cache) == [] and len(hashed) == 3  # warm: stat only
    tok = model / "tokenizer.json"
    os.utime(tok, ns=(tok.stat().st_atime_ns, tok.stat().st_mtime_ns + 1_000_000_000))
    assert verify.verify_artifact(art, cache) == ["tokenizer.json"]  # a touched file is hashed again
    cache.write_text('{"version": 1, "files": [oops')
    assert sorted(verify.verify_artifact(art, cache)) == files  # a corrupt cache is ignored ...
    assert len(json.loads(cache.read_text())["files"]) == 3  # ... and rewritten


def test_cached_digest_does_not_excuse_a_changed_file(model, tmp_path):
    cache = tmp_path / "verified.json"
    verify.verify_artifact(open_artifact(model), cache)
    flip_tensor_byte(model / SHARD)  # rewritten: a new mtime, so the cache entry no longer applies
    with pytest.raises(ChecksumError, match=SHARD):
        verify.verify_artifact(open_artifact(model), cache)


def test_cli_fills_the_cache_once(model, tmp_path):
    home = tmp_path / "home"
    assert zoo("inspect", model, "--json", home=home).returncode == 0
    cache = home / verify.CACHE_FILE
    doc = json.loads(cache.read_text())
    assert sorted(Path(k).name for k in doc["files"]) == sorted(["model-00001.safetensors", "shared-00001.safetensors",
                                                                  "tokenizer.json"])
    before = (cache.read_bytes(), cache.stat().st_mtime_ns, cache.stat().st_ino)
    proc = zoo("run", model, "hi", "-n", "2", "--temperature", "0", home=home)
    assert proc.returncode == 0, proc.stderr
    # the cache is written only after hashing something: untouched, so the warm run hashed nothing
    assert (cache.read_bytes(), cache.stat().st_mtime_ns, cache.stat().st_ino) == before
