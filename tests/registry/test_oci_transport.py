"""HTTPS by default, plain HTTP only on loopback or with --insecure (the rule docker and oras follow).

The registry (Debian's docker-registry) listens on loopback; a small HTTP proxy on loopback, named by
HTTP(S)_PROXY, carries every request to it, so the zoo CLI reaches it under a name that is not loopback
(models.example.test) through its real transport choice, TLS handshake and connection.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from zoo.registry import insecure_registries, open_registry
from zoo.registry.oci_transport import is_loopback, uses_plain_http

from .conftest import assert_same_tree, one_line_error, zoo
from .oci_server import OciRegistryServer

NAME = "models.example.test"  # not loopback by name; the proxy takes it to the loopback registry


class ProxyToRegistry:
    """An HTTP proxy on 127.0.0.1 that takes every request (CONNECT tunnels and plain absolute-form requests),
    whatever host it names, to one loopback port. Records the first line of each connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.lines: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk or len(head) > 65536:
                client.close()
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.lines.append(line)
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        if line.startswith("CONNECT "):
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            head = head[head.index(b"\r\n\r\n") + 4:]
        if head:
            upstream.sendall(head)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def plain_requests(self) -> list[str]:
        """Connections that carried plain HTTP (anything but a CONNECT tunnel)."""
        return [line for line in self.lines if not line.startswith("CONNECT ")]

    def close(self) -> None:
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxied_env(zoo_env, monkeypatch) -> dict:
    """The CLI's environment: isolated store, no credentials, no insecure setting, no trusted extra CA."""
    for var in ("ZOO_OCI_USERNAME", "ZOO_OCI_PASSWORD", "ZOO_OCI_INSECURE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(zoo_env / "no-docker-config"))
    return dict(os.environ)


@pytest.mark.parametrize(("host", "plain"), [
    ("localhost", True), ("LOCALHOST:5000", True), ("127.0.0.1:5000", True), ("127.8.9.10", True),
    ("[::1]:5000", True), ("[::ffff:127.0.0.1]:5000", True),
    ("registry.example", False), ("ghcr.io", False), ("10.0.0.1:5000", False), ("192.168.1.2", False),
    ("[2001:db8::1]:5000", False), ("localhost.example.com", False), ("127.0.0.1.example.com:5000", False),
    ("0.0.0.0:5000", False), ("[::]:5000", False), ("[::ffff:10.0.0.1]", False), ("[bad", False),
])
def test_plain_http_only_on_loopback_unless_asked(host, plain, monkeypatch):
    assert is_loopback(host) is plain
    assert uses_plain_http(host, insecure=False) is plain
    assert uses_plain_http(host, insecure=True)
    monkeypatch.delenv("ZOO_OCI_INSECURE", raising=False)
    assert open_registry(f"oci://{host}/ns").scheme == ("http" if plain else "https")
    with insecure_registries():
        assert open_registry(f"oci://{host}/ns").scheme == "http"
    assert open_registry(f"oci://{host}/ns").scheme == ("http" if plain else "https")  # only inside the block


def test_plain_http_registry_under_a_non_loopback_name_needs_insecure(tmp_path, proxied_env, tiny_artifact):
    registry = OciRegistryServer(tmp_path / "registry")
    proxy = ProxyToRegistry(registry.port)
    env = {**proxied_env, "HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}
    ref = f"oci://{NAME}:{registry.port}/zoo/tiny:v1"
    try:
        refused = zoo("push", str(tiny_artifact), ref, env=env)
        one_line_error(refused, "TLS handshake failed", "--insecure", "ZOO_OCI_INSECURE=1")
        assert proxy.lines and proxy.plain_requests() == []  # it tried HTTPS only
        assert not [r for r in registry.requests() if r.startswith(("PUT", "POST", "PATCH"))]

        pushed = zoo("push", str(tiny_artifact), ref, "--insecure", env=env)
        assert pushed.returncode == 0, pushed.stderr
        assert f" http://{NAME}:{registry.port}/v2/" in proxy.plain_requests()[0]
        # plain HTTP through the proxy: the registry logs the absolute URI it was asked for
        assert f"PUT http://{NAME}:{registry.port}/v2/zoo/tiny/manifests/v1" in registry.requests()

        one_line_error(zoo("pull", ref, env=env), "TLS handshake failed", "--insecure")
        one_line_error(zoo("search", "--registry", f"oci://{NAME}:{registry.port}/zoo", env=env), "--insecure")
        one_line_error(zoo("show", ref, env=env), "--insecure")

        pulled = zoo("pull", ref, "--insecure", "--json", env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))
        found = zoo("search", "--registry", f"oci://{NAME}:{registry.port}/zoo", "--insecure", "--json", env=env)
        assert found.returncode == 0, found.stderr
        assert [r["name"] for r in json.loads(found.stdout) if r["source"] != "catalog"] == ["tiny"]
        shown = zoo("show", ref, "--insecure", "--json", env=env)
        assert shown.returncode == 0 and json.loads(shown.stdout)["card"]["parameters"] == 1234, shown.stderr
        by_env = zoo("search", "--registry", f"oci://{NAME}:{registry.port}/zoo", "--json",
                     env={**env, "ZOO_OCI_INSECURE": "1"})
        assert by_env.returncode == 0, by_env.stderr
    finally:
        proxy.close()
        registry.stop()


def _self_signed(workdir: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_registry_is_reached_over_tls_and_an_untrusted_certificate_is_one_line(
        tmp_path, proxied_env, tiny_artifact, monkeypatch):
    cert, key = _self_signed(tmp_path / "tls", NAME)
    monkeypatch.setenv("REGISTRY_HTTP_TLS_CERTIFICATE", str(cert))  # distribution's config override by env
    monkeypatch.setenv("REGISTRY_HTTP_TLS_KEY", str(key))
    registry = OciRegistryServer(tmp_path / "registry")
    monkeypatch.delenv("REGISTRY_HTTP_TLS_CERTIFICATE")
    monkeypatch.delenv("REGISTRY_HTTP_TLS_KEY")
    proxy = ProxyToRegistry(registry.port)
    env = {**proxied_env, "HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}
    ref = f"oci://{NAME}:{registry.port}/zoo/tiny:v1"
    try:
        untrusted = zoo("push", str(tiny_artifact), ref, env=env)
        one_line_error(untrusted, "TLS certificate is not trusted", "SSL_CERT_FILE")
        assert "--insecure" not in untrusted.stderr  # plain HTTP is not the cure for a TLS registry

        trusted = {**env, "SSL_CERT_FILE": str(cert)}
        pushed = zoo("push", str(tiny_artifact), ref, env=trusted)
        assert pushed.returncode == 0, pushed.stderr
        pulled = zoo("pull", ref, "--json", env=trusted)
        assert pulled.returncode == 0, pulled.stderr
        assert_same_tree(tiny_artifact, Path(json.loads(pulled.stdout)["path"]))
        assert proxy.lines and proxy.plain_requests() == []  # every request went through a TLS tunnel
        assert any(r.startswith("PUT /v2/zoo/tiny/manifests/v1") for r in registry.requests())
    finally:
        proxy.close()
        registry.stop()


def test_a_server_error_on_a_head_is_asked_again(tmp_path):
    """docker-registry answers HTTP 500 to a blob HEAD racing another push of that blob (fault campaign, 4 concurrent
    pushes): a GET or HEAD answered 5xx is repeated with a pause, as docker does."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from zoo.registry.oci import OciRegistry

    seen: list[str] = []

    class Flaky(BaseHTTPRequestHandler):  # an external fault injector: two 500s, then the blob is there
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_response(500 if len(seen) <= 2 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reg = OciRegistry(f"oci://127.0.0.1:{server.server_address[1]}/ns")
        assert reg._blob_exists("ns/m", "sha256:" + "ab" * 32) is True
        assert len(seen) == 3 and all(path.endswith("/blobs/sha256:" + "ab" * 32) for path in seen)
        reg.close()
    finally:
        server.shutdown()
