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


def zoo(*args, home: Path, registry: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_HOME": str(home), "ZOO_DEBUG": "", "ZOO_CONFIG": str(home / "no-config.yaml")}
    env.pop("ZOO_REGISTRY", None)
    if registry is not None:
        env["ZOO_REGISTRY"] = str(registry)
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


# ---- zoo verify DIR|NAME ----------------------------------------------------------------------------


def test_verify_dir_passes_then_lists_every_failure(model, tmp_path):
    home = tmp_path / "home"
    ok = zoo("verify", model, home=home)
    assert ok.returncode == 0, ok.stderr
    size = sum(p.stat().st_size for p in model.iterdir() if p.name != "zoo.yaml")
    assert ok.stdout.strip() == f"{model}: 3 files, {size:,} bytes: every sha256 matches"
    flip_tensor_byte(model / SHARD)
    (model / "tokenizer.json").unlink()
    proc = zoo("verify", model, home=home)
    assert proc.stdout.splitlines() == [f"{SHARD}: sha256 {verify.sha256_file(model / SHARD)[:12]}... does not match "
                                        f"{_card_digest(model, SHARD)[:12]}...", "tokenizer.json: missing"]
    assert one_error_line(proc) == f"zoo: error: {model}: 2 problem(s) found in 3 file(s) ({model})"
    doc = json.loads(zoo("verify", model, "--json", home=home).stdout)
    assert not doc["ok"] and [f["path"] for f in doc["failures"]] == [SHARD, "tokenizer.json"] and doc["files"] == 3


def _card_digest(model: Path, rel: str) -> str:
    card = (model / "zoo.yaml").read_text()
    return re.search(rf"- path: {re.escape(rel)}\n  size: \d+\n  sha256: ([0-9a-f]{{64}})", card).group(1)


def test_verify_hashes_past_the_cache_and_refreshes_it(model, tmp_path):
    """A rewrite that keeps inode, size and mtime fools the warm-start cache; `zoo verify` hashes anyway,
    and drops the stale entry so the next `zoo inspect` hashes (and refuses) too."""
    home = tmp_path / "home"
    assert zoo("inspect", model, "--json", home=home).returncode == 0  # fills the cache
    shard = model / SHARD
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    n = int.from_bytes(data[:8], "little")
    data[8 + n + 10] ^= 0x10  # a dense F16 byte: still a valid artifact
    with open(shard, "r+b") as f:  # same inode, same size ...
        f.write(data)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime
    assert zoo("inspect", model, "--json", home=home).returncode == 0  # the cache's documented blind spot
    proc = zoo("verify", model, home=home)
    assert proc.returncode == 1 and proc.stdout.startswith(f"{SHARD}: sha256 "), proc.stdout + proc.stderr
    assert "sha256" in one_error_line(zoo("inspect", model, home=home))


@pytest.mark.parametrize("damage", ["no card", "wrong digest", "zero digest", "unlisted tokenizer", "billion laughs",
                                    "not a mapping"])
def test_verify_dir_refuses_a_missing_or_inconsistent_card(model, tmp_path, damage):
    card = model / "zoo.yaml"
    if damage == "no card":
        card.unlink()
    elif damage == "wrong digest":
        card.write_text(card.read_text().replace(_card_digest(model, SHARD), "f" * 64))
    elif damage == "unlisted tokenizer":
        card.write_text(re.sub(r"- path: tokenizer.json\n  size: \d+\n  sha256: [0-9a-f]+\n", "", card.read_text()))
    elif damage == "billion laughs":
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
        card.write_text("\n".join(lines) + "\n")
    elif damage == "zero digest":
        wrong_card_digest(model)  # 64 zeros: YAML reads an integer
    else:
        card.write_text("- just\n- a list\n")
    proc = zoo("verify", model, home=tmp_path / "home")
    line = one_error_line(proc)
    hashed = {"wrong digest": 3, "unlisted tokenizer": 2}.get(damage, 0)  # a card that cannot be read: nothing
    assert line == f"zoo: error: {model}: 1 problem(s) found in {hashed} file(s) ({model})", line
    expected = {"no card": "zoo.yaml: missing", "wrong digest": "model-00001.safetensors: sha256 ",
                "unlisted tokenizer": "tokenizer.json: not listed in zoo.yaml",
                "zero digest": f"zoo.yaml: {SHARD}: zoo.yaml gives no valid sha256 for it",
                "billion laughs": "zoo.yaml: YAML more than 200000 nodes",
                "not a mapping": "zoo.yaml: not a YAML mapping"}
    assert proc.stdout.startswith(expected[damage]), proc.stdout


@pytest.fixture
def pulled(model, tmp_path) -> tuple[Path, Path]:
    """The tiny model pushed to a directory registry and pulled into a fresh store: (home, registry)."""
    home, reg = tmp_path / "home", tmp_path / "reg"
    assert zoo("push", model, "tiny", home=home, registry=reg).returncode == 0
    home.mkdir(exist_ok=True)
    proc = zoo("pull", "tiny", home=home, registry=reg)
    assert proc.returncode == 0, proc.stderr
    return home, reg


def _snapshot(home: Path) -> Path:
    (snap,) = (home / "snapshots").iterdir()
    return snap


def _replace_corrupted(path: Path) -> None:
    """Replace a file by a corrupted copy (a new inode: the registry's blob it was linked to stays intact)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(data))


def test_verify_name_checks_the_snapshot_and_the_blobs(pulled, model):
    home, reg = pulled
    ok = zoo("verify", "tiny", home=home)
    assert ok.returncode == 0 and ok.stdout.strip().startswith("tiny: 4 files"), ok.stdout + ok.stderr
    _replace_corrupted(_snapshot(home) / SHARD)
    proc = zoo("verify", "tiny:latest", home=home)
    assert proc.stdout.startswith(f"{SHARD}: sha256 "), proc.stdout
    assert one_error_line(proc).startswith("zoo: error: tiny:latest: 1 problem(s) found in 4 file(s)")
    assert "not in the local store" in one_error_line(zoo("verify", "other", home=home))


def test_pull_repairs_a_corrupted_snapshot_file(pulled, model):
    home, reg = pulled
    snap = _snapshot(home)
    _replace_corrupted(snap / SHARD)
    assert zoo("pull", "tiny", home=home, registry=reg).returncode == 0
    assert (snap / SHARD).read_bytes() == (model / SHARD).read_bytes()
    assert zoo("verify", "tiny", home=home).returncode == 0


def test_pull_does_not_trust_a_corrupted_blob_already_in_the_store(pulled, model):
    home, reg = pulled
    digest = _card_digest(model, SHARD)
    blob = home / "blobs" / "sha256" / digest
    _replace_corrupted(blob)
    line = one_error_line(zoo("verify", "tiny", home=home))
    assert "1 problem(s)" in line
    assert zoo("pull", "tiny", home=home, registry=reg).returncode == 0
    assert verify.sha256_file(blob) == digest  # fetched again, not trusted
    assert zoo("verify", "tiny", home=home).returncode == 0


def test_pull_leaves_the_snapshot_verified_for_the_first_run(pulled):
    """The pull hashed every blob it fetched: `zoo run NAME` right after it hashes nothing again."""
    home, _ = pulled
    cache = home / verify.CACHE_FILE
    entries = json.loads(cache.read_text())["files"]
    snap = _snapshot(home).resolve()
    linked = {Path(k).name for k in entries if Path(k).parent == snap}
    assert linked == {SHARD, "shared-00001.safetensors", "tokenizer.json", "zoo.yaml"}
    before = cache.stat().st_mtime_ns
    proc = zoo("run", "tiny", "hi", "-n", "2", "--temperature", "0", home=home)
    assert proc.returncode == 0, proc.stderr
    assert cache.stat().st_mtime_ns == before  # nothing hashed, nothing written


# ---- bounded parsing of cards outside the reader -----------------------------------------------------

BILLION_LAUGHS = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                           + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]) + "\n"


@pytest.mark.parametrize("card, message", [
    ("metrics: " + "[" * 20_000 + "]" * 20_000 + "\n", "YAML nested deeper than 64 levels"),  # was RecursionError
    ("metrics: {perplexity: {value: 3}}\n" + BILLION_LAUGHS, "YAML more than 200000 nodes"),
])
def test_bench_comparison_reads_cards_within_limits(model, card, message):
    """`zoo bench A B` reads each card for its table: a hostile one is a CardError, not a RecursionError."""
    from zoo.cli.run_cmd import card_metrics
    from zoo.errors import CardError

    (model / "zoo.yaml").write_text(card)
    with pytest.raises(CardError, match=message):
        card_metrics(model)
    (model / "zoo.yaml").write_text("metrics: {bits_per_weight: 4.5, perplexity: {value: 12.5}}\n")
    assert card_metrics(model) == {"bits_per_weight": 4.5, "perplexity": 12.5}


# ---- parallel hashing (verify_artifact) -------------------------------------------------------------


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", [SHARD, "shared-00001.safetensors", "tokenizer.json"])
def test_cold_start_names_the_one_corrupted_file_among_several(model, tmp_path, rel):
    """Every file is hashed (in parallel) on a cold start; the error still names the one that differs,
    and nothing is cached from a failed verification."""
    flip_last_byte(model / rel)
    cache = tmp_path / "verified.json"
    with pytest.raises(ChecksumError, match=rf"^{re.escape(rel)}: sha256 [0-9a-f]{{12}}\.\.\. does not match "):
        verify.verify_artifact(open_artifact(model), cache)
    assert not cache.exists()


def test_first_listed_mismatch_is_named_when_several_files_differ(model, tmp_path):
    art = open_artifact(model)
    listed = [item["path"] for item in art.card["files"]]
    for rel in listed[1:]:
        flip_last_byte(model / rel)
    with pytest.raises(ChecksumError, match=rf"^{re.escape(listed[1])}:"):
        verify.verify_artifact(open_artifact(model), tmp_path / "verified.json")


def test_files_are_hashed_on_several_threads_within_the_core_count(model, tmp_path, monkeypatch):
    import threading

    threads: set[str] = set()
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: threads.add(threading.current_thread().name) or real(p))
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 2)
    hashed = verify.verify_artifact(open_artifact(model), tmp_path / "verified.json")
    assert len(hashed) == 3
    assert threading.current_thread().name not in threads and 1 <= len(threads) <= 2, threads
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 1)  # one core: no pool at all
    threads.clear()
    (tmp_path / "verified.json").unlink()
    verify.verify_artifact(open_artifact(model), tmp_path / "verified.json")
    assert threads == {threading.current_thread().name}


def test_missing_file_still_raises_in_listed_order(model, tmp_path):
    art = open_artifact(model)
    listed = [item["path"] for item in art.card["files"]]
    flip_last_byte(model / listed[0])
    (model / listed[-1]).unlink()
    with pytest.raises(ChecksumError, match=rf"^{re.escape(listed[0])}:"):  # the first problem, as before
        verify.verify_artifact(art, tmp_path / "verified.json")
