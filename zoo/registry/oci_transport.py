"""How zoo reaches an OCI registry: HTTPS, plain HTTP only on loopback or when asked, as docker and oras decide.

`uses_plain_http(host, insecure)` is the rule; `unreachable(...)` turns a request that got no HTTP answer
(an untrusted certificate, a TLS handshake with a plain-HTTP server, a refused connection) into one line.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from http.client import HTTPException
from urllib.parse import urlsplit

import httpx

from zoo.errors import RegistryError

INSECURE_HINT = "pass --insecure (or set ZOO_OCI_INSECURE=1) to allow plain HTTP to it"


def is_loopback(host: str) -> bool:
    """'localhost', 127.0.0.0/8 or ::1 (also as ::ffff:127.x.y.z), with or without a port: where plain HTTP
    needs no --insecure. Decided on the name as written, never on what DNS answers for it."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def uses_plain_http(host: str, insecure: bool) -> bool:
    """The transport for `host` (HOST[:PORT]): HTTPS, plain HTTP only on loopback or when asked (--insecure)."""
    return insecure or is_loopback(host)


def _ssl_error(err: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError beneath an httpx error (httpx -> httpcore -> ssl), if a TLS failure caused it."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None or isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(err: BaseException) -> str:
    """'ConnectError: [Errno 111] Connection refused': the error's type and its first line, short."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:160]}" if text else type(err).__name__


def unreachable(err: httpx.HTTPError | OSError | HTTPException, url: str, scheme: str, what: str) -> RegistryError:
    """One line for a request to registry `url` (reached over `scheme`) that got no HTTP answer (an httpx error,
    or what http.client and the socket raise on the blob-body path, zoo.registry.fetch)."""
    tls = _ssl_error(err)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return RegistryError(f"{url}: {what}: its TLS certificate is not trusted ({tls.verify_message or tls.reason}); "
                             f"add its CA certificate to SSL_CERT_FILE")
    plain_hint = f"; if it serves plain HTTP, {INSECURE_HINT}" if scheme == "https" else ""
    if tls is not None:
        return RegistryError(f"{url}: {what}: TLS handshake failed ({tls.reason or type(tls).__name__}){plain_hint}")
    hint = plain_hint if isinstance(err, (httpx.ConnectError, ConnectionRefusedError, socket.gaierror)) else ""
    return RegistryError(f"{url}: {what}: cannot connect ({_reason(err)}){hint}")
