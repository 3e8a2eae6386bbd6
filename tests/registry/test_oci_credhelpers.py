"""Docker credential helpers (`credsStore`, `credHelpers`) against real registries on loopback.

Each helper is a real executable the test writes into a directory on PATH (`docker-credential-<name>`, a
shell script: an outside program, as docker-credential-pass or -osxkeychain are), run by zoo the way docker
runs it. The registries: Debian's docker-registry with htpasswd auth, and with token auth whose token
service also answers docker's OAuth2 refresh-token grant (identity tokens).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from zoo.errors import RegistryError
from zoo.registry import oci_credhelper
from zoo.registry.oci_auth import docker_credentials

from .conftest import assert_same_tree, one_line_error, zoo
from .oci_server import OciRegistryServer, TokenService

USER, PASSWORD = "zoo-user", "s3cret-pass"
REFRESH = "refresh-token-9f2c"


class Helpers:
    """A bin directory on PATH for docker-credential-* scripts, and a DOCKER_CONFIG directory."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.config = root / "docker"
        self.config.mkdir()
        self.log = root / "helper.log"  # one line per call: '<helper> <args> <stdin>'

    def add(self, name: str, body: str) -> None:
        """docker-credential-<name>: logs its call, reads the server address from stdin, then runs `body`."""
        path = self.bin / f"docker-credential-{name}"
        path.write_text(f'#!/bin/sh\nserver=$(cat)\nprintf "%s %s %s\\n" "{name}" "$*" "$server" >> "{self.log}"\n'
                        f"{body}\n")
        path.chmod(0o755)

    def answer(self, name: str, host: str, user: str, secret: str) -> None:
        """A helper that holds (user, secret) for `host` and nothing else, as docker-credential-helpers answer."""
        self.add(name, f'if [ "$1" = get ] && [ "$server" = "{host}" ]; then\n'
                       f'  printf \'{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}\' "$server"\n'
                       f'else\n  echo "credentials not found in native keychain"; exit 1\nfi')

    def use(self, config: dict) -> None:
        (self.config / "config.json").write_text(json.dumps(config))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def helpers(tmp_path, zoo_env, monkeypatch) -> Helpers:
    for var in ("ZOO_OCI_USERNAME", "ZOO_OCI_PASSWORD", "ZOO_OCI_INSECURE"):
        monkeypatch.delenv(var, raising=False)
    made = Helpers(tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(made.config))
    monkeypatch.setenv("PATH", f"{made.bin}{os.pathsep}{os.environ['PATH']}")
    return made


@pytest.fixture
def auth_registry(tmp_path):
    server = OciRegistryServer(tmp_path / "auth-registry", users={USER: PASSWORD})
    yield server
    server.stop()


def test_creds_store_and_per_registry_helpers(auth_registry, helpers, tiny_artifact):
    host = auth_registry.host
    ref = f"oci://{host}/zoo/tiny:v1"
    helpers.answer("store", host, USER, PASSWORD)
    helpers.use({"credsStore": "store"})
    pushed = zoo("push", str(tiny_artifact), ref, env=dict(os.environ))
    assert pushed.returncode == 0, pushed.stderr
    assert helpers.calls() == [f"store get {host}"]  # asked once, for the server address on stdin

    # credHelpers for this host wins over credsStore (whose helper is not even installed)
    helpers.answer("per-host", host, USER, PASSWORD)
    helpers.use({"credsStore": "not-installed", "credHelpers": {host: "per-host", "other.example": "store"}})
    pulled = zoo("pull", ref, "--json", env=dict(os.environ))
    assert pulled.returncode == 0, pulled.stderr
    assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))
    assert helpers.calls()[1:] == [f"per-host get {host}"]

    # a helper that holds other credentials: the registry refuses them, one line, no secret shown
    helpers.answer("stale", host, USER, "expired-pass")
    helpers.use({"credsStore": "stale"})
    denied = zoo("pull", ref, env=dict(os.environ))
    one_line_error(denied, "access denied")
    assert "expired-pass" not in denied.stderr


def test_helper_without_credentials_means_anonymous(auth_registry, helpers, tiny_artifact):
    helpers.answer("store", "other.example:5000", USER, PASSWORD)
    helpers.use({"credsStore": "store", "auths": {auth_registry.host: {}}})
    anonymous = zoo("push", str(tiny_artifact), f"oci://{auth_registry.host}/zoo/tiny:v1", env=dict(os.environ))
    one_line_error(anonymous, "asks for credentials")
    assert helpers.calls() == [f"store get {auth_registry.host}"]


def test_anonymous_registry_runs_no_helper(tmp_path, helpers, tiny_artifact):
    server = OciRegistryServer(tmp_path / "open-registry")
    try:
        helpers.use({"credsStore": "not-installed"})
        pushed = zoo("push", str(tiny_artifact), f"oci://{server.host}/zoo/tiny:v1", env=dict(os.environ))
        assert pushed.returncode == 0, pushed.stderr  # credentials are read when a registry asks, not before
    finally:
        server.stop()


def test_missing_or_failing_helper_is_one_line(auth_registry, helpers, tiny_artifact):
    ref = f"oci://{auth_registry.host}/zoo/tiny:v1"
    helpers.use({"credsStore": "absent"})
    one_line_error(zoo("pull", ref, env=dict(os.environ)), "docker-credential-absent is not on PATH")

    helpers.add("broken", 'echo "error getting credentials: keychain locked"; exit 3')
    helpers.use({"credHelpers": {auth_registry.host: "broken"}})
    one_line_error(zoo("pull", ref, env=dict(os.environ)),
                   f"docker-credential-broken get failed for {auth_registry.host} (exit 3: error getting "
                   f"credentials: keychain locked)")

    helpers.add("garbled", "echo '{\"Username\": \"zoo-user\", '")
    helpers.use({"credsStore": "garbled"})
    one_line_error(zoo("pull", ref, env=dict(os.environ)), "docker-credential-garbled get: its answer",
                   "not valid JSON")

    helpers.add("nosecret", "echo '{\"Username\": \"zoo-user\"}'")
    helpers.use({"credsStore": "nosecret"})
    one_line_error(zoo("pull", ref, env=dict(os.environ)), "has no Username and Secret")

    helpers.use({"credsStore": "../../bin/sh"})
    one_line_error(zoo("pull", ref, env=dict(os.environ)), "is not a credential helper name")


def test_helper_output_and_time_are_bounded(helpers, monkeypatch):
    host = "registry.example:5000"
    helpers.add("flood", "head -c 1000000 /dev/zero | tr '\\0' x")
    helpers.use({"credsStore": "flood"})
    with pytest.raises(RegistryError, match="answered more than 64 KiB"):
        docker_credentials(host)

    helpers.add("stuck", "sleep 30 & wait")
    helpers.use({"credsStore": "stuck"})
    monkeypatch.setattr(oci_credhelper, "HELPER_TIMEOUT", 1.0)
    start = time.monotonic()
    with pytest.raises(RegistryError, match="did not answer within 1 s"):
        docker_credentials(host)
    assert time.monotonic() - start < 5
    assert helpers.calls() == [f"flood get {host}", f"stuck get {host}"]


class OAuthTokenService(TokenService):
    """The test token service, also answering docker's OAuth2 POST (grant_type=refresh_token): an identity
    token known here gets an access token for its user; records every form posted."""

    def __init__(self, workdir: Path, users: dict[str, str], refresh_tokens: dict[str, str]) -> None:
        super().__init__(workdir, users)
        self.refresh_tokens = refresh_tokens
        self.posts: list[dict[str, str]] = []
        service = self

        class Handler(self.server.RequestHandlerClass):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                service.posts.append(form)
                user = service.refresh_tokens.get(form.get("refresh_token", "")) \
                    if form.get("grant_type") == "refresh_token" else None
                if user is None:
                    self.send_response(400)
                    body = b'{"error": "invalid_grant"}'
                else:
                    self.send_response(200)
                    body = json.dumps({"access_token": service.token(user, form.get("scope", "").split()),
                                       "refresh_token": form["refresh_token"]}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server.RequestHandlerClass = Handler


def test_identity_token_from_a_helper_and_from_auths(tmp_path, helpers, tiny_artifact):
    token = OAuthTokenService(tmp_path / "token", {USER: PASSWORD}, {REFRESH: USER})
    server = OciRegistryServer(tmp_path / "token-registry", token=token)
    try:
        ref = f"oci://{server.host}/zoo/tiny:v1"
        helpers.answer("store", server.host, "<token>", REFRESH)
        helpers.use({"credsStore": "store"})
        pushed = zoo("push", str(tiny_artifact), ref, env=dict(os.environ))
        assert pushed.returncode == 0, pushed.stderr
        assert token.posts and all(p["grant_type"] == "refresh_token" and p["refresh_token"] == REFRESH
                                   and p["service"] == token.service for p in token.posts)
        assert any("repository:zoo/tiny:pull,push" in p["scope"] for p in token.posts)

        helpers.use({"auths": {server.host: {"identitytoken": REFRESH}}})
        pulled = zoo("pull", ref, "--json", env=dict(os.environ))
        assert pulled.returncode == 0, pulled.stderr
        assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))

        helpers.answer("revoked", server.host, "<token>", "revoked-token")
        helpers.use({"credsStore": "revoked"})
        refused = zoo("pull", ref, env=dict(os.environ))
        one_line_error(refused, "token service refused the credentials")
        assert "revoked-token" not in refused.stderr
    finally:
        server.stop()
        token.stop()
