"""A real OCI registry on loopback for the tests (Debian's docker-registry: CNCF distribution 2.8), with optional
htpasswd auth or token auth (a small token service here, the registry checks its signed JWTs), and a TCP relay
that can drop one connection mid-response (a dropped download)."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .servers import free_port, wait_port

CONFIG = """version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: zoo-test-secret
{auth}"""

AUTH = """auth:
  htpasswd:
    realm: zoo-test
    path: {path}
"""


TOKEN_AUTH = """auth:
  token:
    realm: {realm}
    service: {service}
    issuer: zoo-test-issuer
    rootcertbundle: {bundle}
"""


def registry_binary() -> str | None:
    return shutil.which("docker-registry") or shutil.which("registry")


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (the `bcrypt` package; apache2-utils' htpasswd is not needed)."""
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


class OciRegistryServer:
    """`docker-registry serve` on 127.0.0.1:<free port>, storage in `workdir/storage`, log in `workdir/registry.log`."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, token: TokenService | None = None) -> None:
        binary = registry_binary()
        if binary is None:
            raise RuntimeError("docker-registry is not installed (scripts/setup.sh --test installs it)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.storage = workdir / "storage"
        self.log = workdir / "registry.log"
        self.port = free_port()
        auth = ""
        if users:
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
            auth = AUTH.format(path=htpasswd)
        if token:
            auth = TOKEN_AUTH.format(realm=token.realm, service=token.service, bundle=token.bundle)
        config = workdir / "config.yml"
        config.write_text(CONFIG.format(root=self.storage, port=self.port, auth=auth))
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=self._log_file, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}") from None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The access log's request lines, e.g. 'PUT /v2/ns/a/blobs/uploads/...?digest=sha256:...'."""
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if '"' in line and " HTTP/1.1" in line:
                request = line.split('"')[1]
                lines.append(request.rsplit(" ", 1)[0])
        return lines

    def blob_data(self, digest_hex: str) -> Path:
        return self.storage / "docker/registry/v2/blobs/sha256" / digest_hex[:2] / digest_hex / "data"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


class DroppingRelay:
    """127.0.0.1:<port> -> target port; the first connection that carries more than `drop_after` response bytes
    (request bytes with upstream=True) is cut there, once. Records every byte clients sent (Range headers)."""

    def __init__(self, target_port: int, drop_after: int, upstream: bool = False) -> None:
        self.target_port = target_port
        self.drop_after = drop_after
        self.upstream = upstream  # cut a request body (an upload) instead of a response
        self.dropped = False
        self.sent_to_client = 0
        self.from_clients = bytearray()
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe_down, args=(upstream, client), daemon=True).start()

    def _pipe_up(self, client: socket.socket, upstream: socket.socket) -> None:
        carried = 0
        try:
            while data := client.recv(65536):
                with self._lock:
                    cut = self.upstream and not self.dropped and carried + len(data) > self.drop_after
                    if cut:
                        self.dropped = True
                        data = data[: self.drop_after - carried]
                    self.from_clients += data
                upstream.sendall(data)
                carried += len(data)
                if cut:
                    _close(client)
                    break
        except OSError:
            pass
        finally:
            _close(upstream)

    def _pipe_down(self, upstream: socket.socket, client: socket.socket) -> None:
        carried = 0
        try:
            while data := upstream.recv(65536):
                with self._lock:
                    cut = not self.upstream and not self.dropped and carried + len(data) > self.drop_after
                    if cut:
                        self.dropped = True
                        data = data[: self.drop_after - carried]
                    self.sent_to_client += len(data)
                client.sendall(data)
                carried += len(data)
                if cut:
                    break
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def close(self) -> None:
        self.sock.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A docker token service on loopback: Basic credentials in, an RS256 JWT (x5c: its self-signed cert) out.

    Grants every requested scope to a known user, nothing to anonymous callers, 401 to wrong credentials;
    records the scopes asked for. The registry verifies the tokens against `bundle`.
    """

    service = "zoo-test-registry"

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        workdir.mkdir(parents=True, exist_ok=True)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zoo-test-token")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.bundle = workdir / "token.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.users = users
        self.scopes: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                service.scopes += scopes
                user = service.check(self.headers.get("Authorization"))
                if user is False:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": service.token(user, scopes if user else [])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check(self, header: str | None):
        """The user name, None for an anonymous request, False for wrong credentials."""
        if not header:
            return None
        try:
            user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
        except (IndexError, ValueError):
            return False
        return user if self.users.get(user) == password else False

    def token(self, user: str | None, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": "zoo-test-issuer", "sub": user or "", "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": str(time.monotonic_ns()), "access": access}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64url(signature)}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
