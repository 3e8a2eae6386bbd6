"""The docker config (~/.docker/config.json or $DOCKER_CONFIG) can come from anywhere: it is read within the
readers' JSON limits, and one that is deep, huge or has duplicate keys gives no credentials instead of a
RecursionError or a silently chosen entry (issue 18)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from zoo.registry import oci_auth
from zoo.registry.oci_auth import docker_credentials

HOST = "registry.example:5000"
TOKEN = base64.b64encode(b"alice:secret").decode()


@pytest.fixture
def docker(tmp_path, monkeypatch) -> Path:
    """An empty DOCKER_CONFIG directory, with no credentials in the environment."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("ZOO_OCI_USERNAME", raising=False)
    monkeypatch.delenv("ZOO_OCI_PASSWORD", raising=False)
    return tmp_path


def test_a_plain_config_gives_credentials(docker):
    (docker / "config.json").write_text(json.dumps({"auths": {f"https://{HOST}": {"auth": TOKEN}}}))
    assert docker_credentials(HOST) == ("alice", "secret")


def test_deep_config_gives_none(docker):
    (docker / "config.json").write_text('{"auths": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert docker_credentials(HOST) is None


def test_huge_config_gives_none(docker):
    padding = "x" * oci_auth.MAX_DOCKER_CONFIG_BYTES
    (docker / "config.json").write_text(json.dumps({"auths": {HOST: {"auth": TOKEN}}, "padding": padding}))
    assert docker_credentials(HOST) is None


def test_duplicate_keys_give_none(docker):
    other = base64.b64encode(b"mallory:guess").decode()
    (docker / "config.json").write_text('{"auths": {"%s": {"auth": "%s"}, "%s": {"auth": "%s"}}}'
                                        % (HOST, TOKEN, HOST, other))
    assert docker_credentials(HOST) is None


def test_config_that_is_not_an_object_gives_none(docker):
    (docker / "config.json").write_text('["auths"]')
    assert docker_credentials(HOST) is None
