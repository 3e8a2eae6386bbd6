"""The Hugging Face Hub backend against two real servers on loopback, started and stopped here.

- Uploads: our own small Hub-API server (tests/registry/hub_server.py) — huggingface_hub's real
  HfApi.create_repo / create_commit (preupload, LFS batch + PUT, NDJSON commit) / create_tag with
  Xet disabled, token-checked; it commits into real git repos. It also serves `/resolve/` with
  Range, which covers the resumed-download path of the backend.
- Downloads: `olah` (a third-party Hub mirror from PyPI) in offline mode over those same git repos:
  the pull reads zoo.yaml and every file through olah's `/resolve/` (olah ignores Range, so the
  backend's restart-from-zero path is what runs there).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from zoo.errors import ChecksumError, RegistryError
from zoo.registry.transfer import pull, push
from zoo.store import Store

from .conftest import assert_same_tree, store_files
from .hub_server import HubServer, _git
from .servers import free_port, wait_port

TOKEN = "hf_zootest_token_never_printed"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub"), token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def olah(hub, tmp_path_factory):
    work = tmp_path_factory.mktemp("olah")
    port = free_port()
    (work / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\nrepos-path = "{work}/repos"\nmirrors-path = ["{hub.root}"]\n'
        f'metadata-cache-ttl = 0\n[accessibility]\noffline = true\n')
    proc = subprocess.Popen([sys.executable, "-c", "from olah.server import cli; cli()", "-c", "olah.toml"],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def as_hub(zoo_env, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


def test_push_to_hub_api_then_pull_through_olah(as_hub, olah, tiny_artifact, monkeypatch):
    summary = push(tiny_artifact, "hf://zoo-org/tiny@v1")
    assert summary["name"] == "zoo-org/tiny" and summary["tag"] == "v1"
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_DISABLE_XET  # self-hosted endpoint: Xet off
    repo = as_hub.repo_dir("zoo-org/tiny")
    readme = (repo / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["base_model"] == "random/tiny-llama" and front["base_model_relation"] == "quantized"
    assert front["library_name"] == "zoo" and front["license"] == "apache-2.0" and "llama" in front["tags"]
    assert _git(repo, "tag", "-l").decode().split() == ["v1"]
    monkeypatch.setenv("HF_ENDPOINT", olah)  # downloads go through olah
    result = pull("hf://zoo-org/tiny@v1")
    assert (result.name, result.tag) == ("zoo-org/tiny", "v1")
    assert_same_tree(tiny_artifact, result.path)
    assert Store().has("zoo-org/tiny", "v1")


def test_existing_revision_needs_force(as_hub, tiny_artifact, mid_artifact):
    push(tiny_artifact, "hf://zoo-org/moving@stable")
    with pytest.raises(RegistryError, match="already exists"):
        push(mid_artifact, "hf://zoo-org/moving@stable")
    push(mid_artifact, "hf://zoo-org/moving@stable", force=True)
    assert_same_tree(mid_artifact, pull("hf://zoo-org/moving@stable").path)


def test_resume_with_range_on_the_hub_protocol(as_hub, mid_artifact):
    push(mid_artifact, "hf://zoo-org/mid")  # revision main
    shard = mid_artifact / "shared-00001.safetensors"
    blobs = Store().blobs
    blobs.mkdir(parents=True)
    from .conftest import sha256

    have = shard.stat().st_size // 4
    (blobs / f"{sha256(shard)}.partial").write_bytes(shard.read_bytes()[:have])
    result = pull("hf://zoo-org/mid")
    assert result.downloaded_bytes == sum(p.stat().st_size for p in mid_artifact.iterdir()) - have
    assert f"GET /zoo-org/mid/resolve/main/shared-00001.safetensors bytes={have}-" in as_hub.requests
    assert_same_tree(mid_artifact, result.path)


def test_tampered_file_in_a_hub_repo(as_hub, olah, tiny_artifact, monkeypatch):
    push(tiny_artifact, "hf://zoo-org/tampered")
    repo = as_hub.repo_dir("zoo-org/tampered")
    shard = repo / "model-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x55
    shard.write_bytes(bytes(data))
    _git(repo, "commit", "-qam", "tamper")
    monkeypatch.setenv("HF_ENDPOINT", olah)
    with pytest.raises(ChecksumError, match="model-00001.safetensors"):
        pull("hf://zoo-org/tampered")
    assert not Store().has("zoo-org/tampered", "main")
    digest = next(f["sha256"] for f in yaml.safe_load((repo / "zoo.yaml").read_text())["files"]
                  if f["path"] == "model-00001.safetensors")
    assert not [n for n in store_files(Store().root) if n.startswith(digest)]  # neither blob nor partial


def test_wrong_token_is_refused_without_echoing_it(zoo_env, hub, tiny_artifact, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_value")
    with pytest.raises(RegistryError) as err:
        push(tiny_artifact, "hf://zoo-org/denied")
    assert "hf_wrong_token_value" not in str(err.value) and TOKEN not in str(err.value)
    assert "401" in str(err.value)


def test_search_lists_a_namespaces_zoo_models_on_the_hub(as_hub, tiny_artifact, mid_artifact):
    """hf://<org> as a registry: HfApi.list_models(author=org, filter="zoo") on our Hub-API server
    (which matches README front-matter tags, as the Hub does), then each repo's zoo.yaml."""
    from zoo.registry.transfer import search

    push(tiny_artifact, "hf://search-org/sparse-one")
    push(mid_artifact, "hf://search-org/dense-one")
    push(tiny_artifact, "hf://other-org/elsewhere")
    found = search(registry="hf://search-org", include_catalog=False)
    assert sorted(r["name"] for r in found) == ["search-org/dense-one", "search-org/sparse-one"]
    sparse = search(registry="hf://search-org", include_catalog=False, min_sparsity=0.5)
    assert [r["name"] for r in sparse] == ["search-org/sparse-one"] and sparse[0]["bits"] == 4
    assert "GET /api/models" in as_hub.requests
    with pytest.raises(RegistryError, match="name a Hub namespace"):
        search(registry="hf://", include_catalog=False)
