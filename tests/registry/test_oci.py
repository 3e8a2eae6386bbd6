"""The OCI backend against a real CNCF distribution registry on loopback, cross-checked with oras-py."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from zoo.errors import ChecksumError, RegistryError
from zoo.registry import open_registry, parse_ref
from zoo.registry.oci import OciRegistry, parse_oci_ref
from zoo.registry.oci_layout import MODEL_ARTIFACT, MODEL_CONFIG, OCI_MANIFEST, WEIGHT_RAW
from zoo.registry.transfer import build_manifest
from zoo.store import Store
from zoo.synthetic import TINY_LLAMA, write_random_model

from .conftest import CARD_EXTRA, assert_same_tree, sha256, store_files, zoo
from .oci_server import DroppingRelay, OciRegistryServer, TokenService

USER, PASSWORD = "zoo-user", "s3cret-pass"


@pytest.fixture
def registry(tmp_path):
    server = OciRegistryServer(tmp_path / "registry")
    yield server
    server.stop()


@pytest.fixture
def auth_registry(tmp_path):
    server = OciRegistryServer(tmp_path / "auth-registry", users={USER: PASSWORD})
    yield server
    server.stop()


@pytest.fixture
def cli_env(zoo_env, monkeypatch) -> dict:
    for var in ("ZOO_OCI_USERNAME", "ZOO_OCI_PASSWORD", "ZOO_OCI_INSECURE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(zoo_env / "no-docker-config"))
    return dict(os.environ)


def uploaded_digests(server: OciRegistryServer, since: int = 0) -> list[str]:
    """Digests the registry received as uploads (the final PUT ...?digest=), from its access log."""
    return [m.group(1) for line in server.requests()[since:] if line.startswith("PUT ")
            for m in [re.search(r"digest=sha256(?:%3A|:)([0-9a-f]{64})", line)] if m]


def oras_client(server: OciRegistryServer):
    import oras.provider

    return oras.provider.Registry(hostname=server.host, insecure=True)


def test_parse_oci_ref_and_transport_choice(monkeypatch):
    assert parse_oci_ref("oci://ghcr.io/org/models/tiny:v1") == ("oci://ghcr.io/org/models", "tiny", "v1")
    assert parse_oci_ref("oci://127.0.0.1:5000/tiny") == ("oci://127.0.0.1:5000", "tiny", "latest")
    digest = "ab" * 32
    assert parse_ref(f"oci://h:1/ns/tiny@sha256:{digest}").tag == f"sha256-{digest}"
    with pytest.raises(RegistryError, match="@sha256"):
        parse_oci_ref("oci://h/ns/tiny@sha256:xyz")
    with pytest.raises(RegistryError, match="expected oci://"):
        parse_oci_ref("oci://host-only")
    monkeypatch.delenv("ZOO_OCI_INSECURE", raising=False)
    assert open_registry("oci://registry.example/ns").scheme == "https"  # plain HTTP only when asked ...
    for loopback in ("localhost:5000", "127.0.0.2", "[::1]:5000"):
        assert open_registry(f"oci://{loopback}/ns").scheme == "http"  # ... or on loopback
    assert open_registry("oci://10.0.0.1:5000/ns").scheme == "https"
    monkeypatch.setenv("ZOO_OCI_INSECURE", "1")
    assert open_registry("oci://registry.example/ns").scheme == "http"
    with pytest.raises(RegistryError, match="lowercase"):
        OciRegistry("oci://localhost/ns")._repo("Tiny")


def test_cli_push_pull_search_and_digest_reference(registry, cli_env, tiny_artifact):
    ref = f"oci://{registry.host}/zoo/tiny:v1"
    pushed = zoo("push", str(tiny_artifact), ref, "--json", env=cli_env)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["files"] == 3

    pulled = zoo("pull", ref, "--json", env=cli_env)
    assert pulled.returncode == 0, pulled.stderr
    assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))

    found = zoo("search", "--registry", f"oci://{registry.host}/zoo", "--min-sparsity", "0.5", "--json", env=cli_env)
    assert found.returncode == 0, found.stderr
    hits = [r for r in json.loads(found.stdout) if r["source"] != "catalog"]
    assert [(r["name"], r["tag"], r["parameters"]) for r in hits] == [("tiny", "v1", 1234)]

    head = oras_client(registry).do_request(f"http://{registry.host}/v2/zoo/tiny/manifests/v1", "HEAD",
                                            headers={"Accept": OCI_MANIFEST})
    digest = head.headers["Docker-Content-Digest"]
    by_digest = zoo("pull", f"oci://{registry.host}/zoo/tiny@{digest}", "--json", env=cli_env)
    assert by_digest.returncode == 0, by_digest.stderr
    assert_same_tree(tiny_artifact, Path(json.loads(by_digest.stdout)["path"]))


def test_layout_read_back_with_oras(registry, tiny_artifact, tmp_path):
    reg = OciRegistry(f"oci://{registry.host}/zoo")
    manifest, _ = build_manifest(tiny_artifact, "tiny", "v1")
    reg.push("tiny", "v1", manifest, tiny_artifact)

    client = oras_client(registry)
    oci = client.get_manifest(f"{registry.host}/zoo/tiny:v1")
    assert oci["mediaType"] == OCI_MANIFEST and oci["artifactType"] == MODEL_ARTIFACT
    assert oci["config"]["mediaType"] == MODEL_CONFIG
    files = sorted(p.name for p in tiny_artifact.iterdir())
    assert sorted(layer["annotations"]["org.opencontainers.image.title"] for layer in oci["layers"]) == files
    for layer in oci["layers"]:
        path = tiny_artifact / layer["annotations"]["org.opencontainers.image.title"]
        assert layer["digest"] == f"sha256:{sha256(path)}" and layer["size"] == path.stat().st_size
        assert (layer["mediaType"] == WEIGHT_RAW) == path.name.endswith(".safetensors")
    notes = oci["annotations"]
    assert notes["org.cncf.model.architecture"] == "llama" and notes["org.cncf.model.parameters"] == "1234"
    assert notes["org.cncf.model.format"] == "safetensors" and notes["org.cncf.model.quantization"] == "int4-g64"
    assert notes["org.cncf.model.sparsity"] == "0.5" and notes["org.opencontainers.image.title"] == "tiny"

    config = client.get_blob(f"{registry.host}/zoo/tiny:v1", oci["config"]["digest"]).content
    assert oci["config"]["digest"] == f"sha256:{hashlib.sha256(config).hexdigest()}"
    doc = json.loads(config)
    assert doc["config"]["paramSize"] == "1.2K" and doc["config"]["precision"] == "int4"
    assert doc["modelfs"]["diff_ids"] == [layer["digest"] for layer in oci["layers"]]
    assert doc["zoo"]["card"]["parameters"] == 1234

    out = tmp_path / "oras-out"
    client.pull(target=f"{registry.host}/zoo/tiny:v1", outdir=str(out))
    assert_same_tree(tiny_artifact, out)


def test_pull_what_oras_pushed(registry, cli_env, tiny_artifact, tmp_path):
    client = oras_client(registry)
    files = [str(p) for p in sorted(tiny_artifact.iterdir())]
    client.push(target=f"{registry.host}/others/tiny:v1", files=files, disable_path_validation=True)
    pulled = zoo("pull", f"oci://{registry.host}/others/tiny:v1", "--json", env=cli_env)
    assert pulled.returncode == 0, pulled.stderr
    assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))

    weights = [f for f in files if f.endswith(".safetensors")]  # no zoo.yaml: not a zoo model
    client.push(target=f"{registry.host}/others/bare:v1", files=weights, disable_path_validation=True)
    refused = zoo("pull", f"oci://{registry.host}/others/bare:v1", env=cli_env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "not a zoo model" in refused.stderr and "Traceback" not in refused.stderr


def test_second_push_uploads_nothing_and_variants_share_the_base_shard(registry, tmp_path):
    base = write_random_model(tmp_path / "a", TINY_LLAMA, encoding="sparse-q4", sparsity=0.5, group_size=64,
                              seed=1, card=CARD_EXTRA)
    variant = write_random_model(tmp_path / "b", TINY_LLAMA, encoding="q8", group_size=64, seed=1)
    shared = sha256(base / "shared-00001.safetensors")
    assert shared == sha256(variant / "shared-00001.safetensors")

    reg = OciRegistry(f"oci://{registry.host}/zoo")
    manifest, _ = build_manifest(base, "base", "v1")
    reg.push("base", "v1", manifest, base)
    assert shared in uploaded_digests(registry)
    first = registry.requests()

    again = OciRegistry(f"oci://{registry.host}/zoo")
    again.push("base", "v1", manifest, base)  # identical content: succeeds, uploads nothing
    second = registry.requests()[len(first):]
    assert not [r for r in second if r.startswith(("POST", "PATCH"))] and uploaded_digests(registry, len(first)) == []
    assert again.stats["uploaded_bytes"] == 0 and again.get_manifest("base", "v1") == manifest
    assert again.stats["present"] == len(manifest["files"])

    mark = len(registry.requests())
    other = OciRegistry(f"oci://{registry.host}/zoo")
    variant_manifest, _ = build_manifest(variant, "variant", "v1")
    other.push("variant", "v1", variant_manifest, variant)
    lines = registry.requests()[mark:]
    assert any(f"mount=sha256%3A{shared}" in line and "from=zoo%2Fbase" in line for line in lines), lines
    uploaded = uploaded_digests(registry, mark)
    assert shared not in uploaded
    assert {sha256(variant / "model-00001.safetensors"), sha256(variant / "zoo.yaml")} <= set(uploaded)
    assert other.stats["mounts"] == 1
    assert other.stats["uploaded_bytes"] < sum(f["size"] for f in variant_manifest["files"]) + 4096 - \
        (variant / "shared-00001.safetensors").stat().st_size
    assert registry.blob_data(shared).is_file()

    other.delete_manifest("variant", "v1")
    assert not other.has_manifest("variant", "v1") and other.has_manifest("base", "v1")


def test_chunked_upload_and_dropped_download_resumes_with_range(registry, mid_artifact, zoo_env):
    reg = OciRegistry(f"oci://{registry.host}/zoo", chunk_size=256 << 10)
    manifest, _ = build_manifest(mid_artifact, "mid", "v1")
    reg.push("mid", "v1", manifest, mid_artifact)
    assert len([r for r in registry.requests() if r.startswith("PATCH ")]) >= 10  # 3.5 MB in 256 KiB chunks

    total = sum(f["size"] for f in manifest["files"])
    relay = DroppingRelay(registry.port, drop_after=1 << 20)
    try:
        via_relay = OciRegistry(f"oci://127.0.0.1:{relay.port}/zoo")
        result = Store(zoo_env / "home").pull(via_relay, "mid", "v1")
        via_relay.close()
    finally:
        relay.close()
    assert relay.dropped
    assert re.search(rb"range: bytes=[1-9][0-9]*-", bytes(relay.from_clients).lower())
    assert result.downloaded_bytes == total
    assert relay.sent_to_client < total + (1 << 20) // 2  # resumed where it broke, not restarted from byte 0
    assert_same_tree(mid_artifact, result.path)


def test_corrupt_blob_in_registry_is_refused(registry, cli_env, zoo_env, tiny_artifact):
    ref = f"oci://{registry.host}/zoo/tiny:v1"
    assert zoo("push", str(tiny_artifact), ref, env=cli_env).returncode == 0
    digest = sha256(tiny_artifact / "model-00001.safetensors")
    data = registry.blob_data(digest)
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    pulled = zoo("pull", ref, env=cli_env)
    assert pulled.returncode == 1 and pulled.stderr.count("\n") == 1, pulled.stderr
    assert "does not match" in pulled.stderr and "Traceback" not in pulled.stderr
    assert digest not in store_files(zoo_env / "home")
    with pytest.raises(ChecksumError):
        Store(zoo_env / "home2").pull(OciRegistry(f"oci://{registry.host}/zoo"), "tiny", "v1")


def test_basic_auth_from_env_and_docker_config(auth_registry, cli_env, zoo_env, tiny_artifact):
    ref = f"oci://{auth_registry.host}/zoo/tiny:v1"
    anonymous = zoo("push", str(tiny_artifact), ref, env=cli_env)
    assert anonymous.returncode == 1 and anonymous.stderr.count("\n") == 1, anonymous.stderr
    assert "asks for credentials" in anonymous.stderr

    wrong = zoo("push", str(tiny_artifact), ref, env={**cli_env, "ZOO_OCI_USERNAME": USER,
                                                      "ZOO_OCI_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "access denied" in wrong.stderr and "wrong" not in wrong.stderr and "Traceback" not in wrong.stderr

    good = zoo("push", str(tiny_artifact), ref, env={**cli_env, "ZOO_OCI_USERNAME": USER, "ZOO_OCI_PASSWORD": PASSWORD})
    assert good.returncode == 0, good.stderr

    docker = zoo_env / "docker"
    docker.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {f"http://{auth_registry.host}": {"auth": token}}}))
    pulled = zoo("pull", ref, "--json", env={**cli_env, "DOCKER_CONFIG": str(docker)})
    assert pulled.returncode == 0, pulled.stderr
    assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))
    found = zoo("search", "--registry", f"oci://{auth_registry.host}/zoo", "--json",
                env={**cli_env, "DOCKER_CONFIG": str(docker)})
    assert [r["name"] for r in json.loads(found.stdout) if r["source"] != "catalog"] == ["tiny"], found.stderr


def test_bearer_token_flow(tmp_path, cli_env, tiny_artifact):
    token = TokenService(tmp_path / "token", {USER: PASSWORD})
    server = OciRegistryServer(tmp_path / "token-registry", token=token)
    try:
        ref = f"oci://{server.host}/zoo/tiny:v1"
        creds = {**cli_env, "ZOO_OCI_USERNAME": USER, "ZOO_OCI_PASSWORD": PASSWORD}
        anonymous = zoo("push", str(tiny_artifact), ref, env=cli_env)  # an anonymous token grants nothing
        assert anonymous.returncode == 1 and "access denied" in anonymous.stderr, anonymous.stderr
        wrong = zoo("pull", ref, env={**creds, "ZOO_OCI_PASSWORD": "nope"})
        assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
        assert "token service refused" in wrong.stderr

        assert zoo("push", str(tiny_artifact), ref, env=creds).returncode == 0
        variant = write_random_model(tmp_path / "variant", TINY_LLAMA, encoding="q8", group_size=64, seed=1)
        pushed = zoo("push", str(variant), f"oci://{server.host}/zoo/variant:v1", env=creds)
        assert pushed.returncode == 0, pushed.stderr
        assert "repository:zoo/tiny:pull" in token.scopes  # the mount asked for pull on its source repository
        assert any("mount=sha256" in line and "from=zoo%2Ftiny" in line for line in server.requests())

        pulled = zoo("pull", ref, "--json", env=creds)
        assert pulled.returncode == 0, pulled.stderr
        assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))
        found = zoo("search", "--registry", f"oci://{server.host}/zoo", "--json", env=creds)
        assert sorted(r["name"] for r in json.loads(found.stdout) if r["source"] != "catalog") == ["tiny", "variant"]
        assert "registry:catalog:*" in token.scopes
    finally:
        server.stop()
        token.stop()


def test_chunked_upload_resumes_after_a_dropped_connection(registry, mid_artifact, zoo_env):
    relay = DroppingRelay(registry.port, drop_after=(1 << 20) + 5000, upstream=True)
    try:
        reg = OciRegistry(f"oci://127.0.0.1:{relay.port}/zoo", chunk_size=256 << 10)
        manifest, _ = build_manifest(mid_artifact, "mid", "v1")
        reg.push("mid", "v1", manifest, mid_artifact)
        reg.close()
    finally:
        relay.close()
    assert relay.dropped
    lines = registry.requests()
    status = [i for i, r in enumerate(lines) if re.match(r"GET /v2/zoo/mid/blobs/uploads/[0-9a-f-]+\?", r)]
    assert status, "the upload's status (its Range) was not asked after the drop"
    # distribution 2.8 refuses the status of an upload whose PATCH broke ("upload resumed at wrong offset"),
    # so the blob starts again in a new upload session
    assert "POST /v2/zoo/mid/blobs/uploads/" in lines[status[0]:]
    result = Store(zoo_env / "home").pull(OciRegistry(f"oci://{registry.host}/zoo"), "mid", "v1")
    assert_same_tree(mid_artifact, result.path)


def test_cli_push_of_identical_content_again_succeeds_and_uploads_nothing(registry, cli_env, mid_artifact):
    """A retry after a push whose manifest landed (e.g. killed right after it): success, nothing uploaded."""
    relay = DroppingRelay(registry.port, drop_after=1 << 40)  # never drops: counts the bytes clients send
    ref = f"oci://127.0.0.1:{relay.port}/zoo/mid:v1"
    try:
        first = zoo("push", str(mid_artifact), ref, "--json", env=cli_env)
        assert first.returncode == 0 and not json.loads(first.stdout)["unchanged"], first.stderr
        size = json.loads(first.stdout)["size"]
        sent_first, mark = len(relay.from_clients), len(registry.requests())
        assert sent_first > size  # the first push carried every blob

        again = zoo("push", str(mid_artifact), ref, env=cli_env)
        assert again.returncode == 0, again.stderr
        assert "already in" in again.stderr and "nothing uploaded" in again.stderr
        sent_again = len(relay.from_clients) - sent_first
        assert sent_again < 16 << 10, sent_again  # requests and headers only: no blob, no manifest
        assert not [r for r in registry.requests()[mark:] if r.startswith(("PUT", "POST", "PATCH"))]

        forced = zoo("push", str(mid_artifact), ref, "--force", "--json", env=cli_env)  # re-tags: blobs skipped
        assert forced.returncode == 0, forced.stderr
        assert len(relay.from_clients) - sent_first - sent_again < 64 << 10
        assert not [r for r in registry.requests()[mark:] if r.startswith(("POST", "PATCH"))]
    finally:
        relay.close()
