"""The S3 backend against moto's real S3 protocol server on loopback (ThreadedMotoServer, port 0).

Covers: push/pull round trip byte-identical through s3fs with the standard AWS_* variables,
refusing an existing tag, ranged resume of a partial blob, a tampered object, search over the
bucket's cards, and that credentials never appear in errors.
"""

from __future__ import annotations

import os

import pytest

from zoo.errors import ChecksumError, NotFoundError, RegistryError
from zoo.registry import open_registry
from zoo.registry.transfer import pull, push, search
from zoo.store import Store

from .conftest import assert_same_tree, store_files

SECRET = "zoo-test-secret-key-never-printed"


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server, zoo_env, monkeypatch):
    """AWS_* variables pointing at moto, and a fresh bucket per test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "zoo-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server}, skip_instance_cache=True)
    bucket = f"zoo-{os.urandom(4).hex()}"
    fs.mkdir(bucket)
    return fs, f"s3://{bucket}/models"


def test_round_trip_and_search(s3, tiny_artifact):
    fs, url = s3
    summary = push(tiny_artifact, f"{url}/tiny:v1")
    assert summary["registry"] == url
    result = pull(f"{url}/tiny:v1")
    assert result.downloaded_bytes == summary["size"]
    assert_same_tree(tiny_artifact, result.path)
    assert [r["name"] for r in search(registry=url, include_catalog=False, bits=4)] == ["tiny"]
    assert fs.exists(url[len("s3://"):] + "/index.json")
    assert push(tiny_artifact, f"{url}/tiny:v1")["unchanged"]  # the same files again: nothing uploaded
    push(tiny_artifact, "tiny:v1", registry=url, force=True)


def test_partial_blob_resumes_with_ranged_gets(s3, mid_artifact):
    fs, url = s3
    push(mid_artifact, f"{url}/mid")
    manifest = open_registry(url).get_manifest("mid", "latest")
    big = max(manifest["files"], key=lambda f: f["size"])
    blobs = Store().blobs
    blobs.mkdir(parents=True)
    have = big["size"] // 2 + 7
    (blobs / f"{big['sha256']}.partial").write_bytes((mid_artifact / big["path"]).read_bytes()[:have])
    result = pull(f"{url}/mid")
    assert result.downloaded_bytes == sum(f["size"] for f in manifest["files"]) - have
    assert_same_tree(mid_artifact, result.path)


def test_tampered_object_fails_and_stores_nothing(s3, tiny_artifact):
    fs, url = s3
    push(tiny_artifact, f"{url}/tiny")
    manifest = open_registry(url).get_manifest("tiny", "latest")
    shard = next(f for f in manifest["files"] if f["path"] == "model-00001.safetensors")
    key = f"{url[len('s3://'):]}/blobs/sha256/{shard['sha256']}"
    data = bytearray(fs.cat_file(key))
    data[len(data) // 2] ^= 0x10
    fs.pipe_file(key, bytes(data))
    with pytest.raises(ChecksumError, match="model-00001.safetensors"):
        pull(f"{url}/tiny")
    assert not [n for n in store_files(Store().root) if n.startswith(shard["sha256"])]  # no blob, no partial
    assert not Store().has("tiny", "latest")


def test_errors_are_one_line_and_carry_no_credentials(s3):
    _, url = s3
    with pytest.raises(NotFoundError) as missing:
        pull(f"{url}/nothing:v1")
    with pytest.raises(RegistryError) as no_bucket:
        pull("s3://no-such-bucket-zoo/models/nothing:v1")
    for err in (missing.value, no_bucket.value):
        assert SECRET not in str(err) and "zoo-test-key" not in str(err) and "\n" not in str(err)
