"""Blob bodies over http.client in 1 MiB pieces: the download path of the HTTP-mirror and OCI backends.

httpx (through httpcore and h11) reads a body 64 KiB at a time and copies every piece in Python before
handing it over, and the store's hash/write pipeline then paid two thread hand-offs per 64 KiB: a pull from
the loopback OCI registry cost ~2.9 CPU s/GB against curl's ~1.0 (bench/pull.py, 2026-12-07). Here one
`read(BODY_CHUNK)` fills one bytes object in C (BufferedReader loops recv_into), no Python per packet.
1 MiB, not 8: the piece is still in L2 when it is hashed and written, and malloc hands the freed piece
back without page faults (8 MiB pieces measured ~0.5 CPU s/GB dearer).

Proxies are httpx's job: callers check `needs_proxy(url)` and keep httpx for those URLs.
"""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urljoin, urlsplit

import httpx

from zoo.errors import RegistryError

BODY_CHUNK = 1 << 20  # bytes per read of a blob body
MAX_REDIRECTS = 5
REDIRECTS = frozenset((301, 302, 303, 307, 308))
MAX_ERROR_BODY = 64 << 10  # bytes of an error answer read for its message
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # what a dropped or refused connection raises here


class TooManyRedirects(http.client.HTTPException):
    """More than MAX_REDIRECTS redirects for one GET."""


def needs_proxy(url: str) -> bool:
    """A proxy from the environment (HTTP(S)_PROXY, ALL_PROXY, minus NO_PROXY) applies to `url`."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class Body:
    """An answered GET (after redirects): its status, headers, final URL, and the body to read."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str) -> None:
        self._conn, self._resp, self.url = conn, resp, url
        self.status_code = resp.status
        self.headers = resp.headers  # case-insensitive .get()

    def chunks(self) -> Iterator[bytes]:
        """The body, BODY_CHUNK bytes a piece (the last one shorter); it simply ends if the connection closes
        early, so compare the bytes with the length expected. Network errors (NETWORK_ERRORS) propagate."""
        while chunk := self._resp.read(BODY_CHUNK):
            yield chunk

    def read_small(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """Up to `limit` bytes of the body (an error answer), b'' if the connection fails."""
        try:
            return self._resp.read(limit)
        except NETWORK_ERRORS:
            return b""

    def close(self) -> None:
        self._conn.close()


class HttpxBody:
    """An httpx streamed response (the proxied path) as a Body: status_code, headers, chunks(), close()."""

    def __init__(self, resp: httpx.Response) -> None:
        self._resp, self.status_code, self.headers = resp, resp.status_code, resp.headers

    def chunks(self) -> Iterator[bytes]:
        """The body as httpx hands it over; its errors re-raised as ConnectionError (one of NETWORK_ERRORS)."""
        try:
            yield from self._resp.iter_raw()
        except httpx.HTTPError as err:
            raise ConnectionError(f"{type(err).__name__}: {err}") from err

    def close(self) -> None:
        self._resp.close()


def open_body(url: str, headers: dict[str, str], *, authorization: str | None = None, timeout: float = 60.0,
              ssl_context: ssl.SSLContext | None = None) -> Body:
    """GET `url`, following redirects. `authorization` goes to `url`'s own origin only, never to a host a
    redirect names (a presigned blob-store URL refuses a second credential; httpx strips it the same way).
    Raises NETWORK_ERRORS when no answer comes; any status is returned."""
    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=ssl_context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        sent = {"User-Agent": "zoo", "Accept-Encoding": "identity", **headers}
        if authorization and _origin(url) == origin:
            sent["Authorization"] = authorization
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=sent)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        location = resp.getheader("Location")
        if resp.status in REDIRECTS and location:
            conn.close()
            url = urljoin(url, location)
            continue
        return Body(conn, resp, url)
    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def resuming(first: Body | HttpxBody, start: int, size: int, reopen: Callable[[int], tuple[Body | HttpxBody, int]],
             what: str, retries: int, pause: float = 0.2) -> Iterator[bytes]:
    """The chunks of a `size`-byte blob whose body `first` starts at byte `start`; a dropped connection or a
    body that ends early is asked again from where it broke (`reopen(pos)` -> (body, its start)), up to
    `retries` times with a growing pause. A server that then ignores Range ends it with one line."""
    body, pos, tries = first, start, 0
    try:
        while True:
            try:
                for chunk in body.chunks():
                    pos += len(chunk)
                    yield chunk
                if pos >= size:
                    return
                raise http.client.IncompleteRead(b"", size - pos)
            except NETWORK_ERRORS as err:
                body.close()
                if pos >= size:
                    return  # every byte arrived (the caller verifies them); nothing left to ask for
                tries += 1
                if tries > retries:
                    raise RegistryError(f"{what}: download interrupted ({type(err).__name__}); "
                                        f"pull again to resume") from None
                time.sleep(pause * 2 ** tries)
                body, got = reopen(pos)
                if got != pos:
                    raise RegistryError(f"{what}: download interrupted and the registry ignores Range; "
                                        f"pull again") from None
    finally:
        body.close()
