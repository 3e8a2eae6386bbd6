"""Fixtures for the registry tests: an isolated ZOO_HOME, real tiny artifacts, real servers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.synthetic import TINY_LLAMA, write_random_model

# A small Llama big enough (~3.5 MB) that a rate-limited download can be killed midway.
MID_LLAMA = dict(TINY_LLAMA, dim=256, hidden_dim=768, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64,
                 vocab_size=2048)

CARD_EXTRA = {
    "license": "apache-2.0",
    "parameters": 1234,
    "tags": ["test"],
    "base_model": {"name": "random/tiny-llama", "source": None, "sha256": None},
    "compression": {"method": "magnitude", "sparsity": 0.5, "pattern": "unstructured", "bits": 4, "group_size": 64},
    "metrics": {"size_bytes": None, "perplexity": None, "decode_tps": None},
}


@pytest.fixture
def zoo_env(tmp_path, monkeypatch) -> Path:
    """ZOO_HOME in tmp, no user config, no default registry from the environment."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_CONFIG", str(tmp_path / "no-config.yaml"))
    for var in ("ZOO_REGISTRY", "ZOO_CATALOG", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A real tiny sparse-q4 Llama artifact written by zoo.format (read-only for tests: copy to modify)."""
    out = tmp_path_factory.mktemp("artifacts") / "tiny-sparse"
    return write_random_model(out, TINY_LLAMA, encoding="sparse-q4", sparsity=0.5, group_size=64, seed=1,
                              card=CARD_EXTRA)


@pytest.fixture(scope="session")
def mid_artifact(tmp_path_factory) -> Path:
    """A ~3.5 MB q4 Llama artifact, for interrupted and concurrent downloads."""
    out = tmp_path_factory.mktemp("artifacts") / "mid-q4"
    return write_random_model(out, MID_LLAMA, encoding="q4", group_size=64, seed=2, dense_dtype="F32")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_tree(artifact: Path, pulled: Path) -> None:
    """Every file of the artifact is in the pulled copy, byte for byte, and nothing else is."""
    want = sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file())
    got = sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file())
    assert got == want
    for rel in want:
        assert (pulled / rel).read_bytes() == (artifact / rel).read_bytes(), rel


def store_files(home: Path) -> list[str]:
    """Every file under blobs/ of a store (names only)."""
    blobs = home / "blobs" / "sha256"
    return sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []


def tamper(path: Path, offset: int = 100) -> None:
    """Flip one byte of a registry blob in place (blobs are stored read-only)."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def zoo(*args: str, env: dict) -> subprocess.CompletedProcess:
    """`zoo ARGS` in a child process with `env` (a real CLI run)."""
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """The run failed with exit 1 and one stderr line, no traceback, naming every needle."""
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
