"""A read-only static HTTP(S) mirror of a directory registry (nginx, any web server, a CDN).

The server only has to serve files: `index.json` for listing, `manifests/<name>/<tag>.json`, and
`blobs/sha256/<hex>` with Range support for resumed downloads (a server that ignores Range answers
200 and the download restarts from byte 0). Credentials come from ~/.netrc (httpx, trust_env) or
the URL's user:password, and are never printed: errors name the URL without its userinfo.
"""

from __future__ import annotations

import base64
import netrc
from collections.abc import Iterator
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import httpx

from zoo.errors import NotFoundError, RegistryError

from .base import MAX_MANIFEST_BYTES, FileEntry, Registry, blob_key, check_name, check_tag, manifest_key, \
    parse_manifest
from .fetch import NETWORK_ERRORS, needs_proxy, open_body
from .local import INDEX_FILE


def redact(url: str) -> str:
    """The URL without user:password@."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


MAX_INDEX_BYTES = 256 << 20  # index.json: every name, tag and card of the mirror (a card is kilobytes)


def _basic_auth(origin: SplitResult) -> str | None:
    """Basic credentials for the registry host: from the URL's user:password, else ~/.netrc."""
    user, password = origin.username, origin.password
    if user is None:
        try:
            found = netrc.netrc().authenticators(origin.hostname or "")
        except (OSError, netrc.NetrcParseError):
            found = None
        if not found:
            return None
        user, _, password = found
    token = base64.b64encode(f"{unquote(user)}:{unquote(password or '')}".encode()).decode()
    return f"Basic {token}"


class HttpRegistry(Registry):
    """http(s)://host/path: a static mirror of a LocalRegistry directory. Read-only."""

    read_only = True

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.url = redact(self.base)
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
                                   trust_env=True)
        self.timeout = timeout  # seconds without a byte before a blob body (fetch.py) counts as dropped

    def close(self) -> None:
        self.client.close()

    def _get(self, key: str, what: str, limit: int) -> bytes:
        """A small document (index, manifest), read whole but never past `limit` bytes."""
        try:
            with self.client.stream("GET", self.base + key) as resp:
                if resp.status_code == 404:
                    raise NotFoundError(f"{what}: not found in registry {self.url}")
                if resp.status_code != 200:
                    raise RegistryError(f"{self.url}: fetching {what} answered HTTP {resp.status_code}")
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise RegistryError(f"{self.url}: {what} is larger than {limit >> 20} MiB; refused")
        except httpx.HTTPError as err:
            raise RegistryError(f"{self.url}: cannot fetch {what} ({type(err).__name__})") from None
        return bytes(data)

    def _index(self) -> list[dict]:
        from zoo.untrusted import MAX_YAML_DEPTH, loads_json

        try:
            data = self._get(INDEX_FILE, INDEX_FILE, MAX_INDEX_BYTES)
        except NotFoundError:
            return []
        index = loads_json(data, f"{self.url}: {INDEX_FILE}", RegistryError, max_bytes=MAX_INDEX_BYTES,
                           max_depth=MAX_YAML_DEPTH + 3)  # index > models > model > a card as deep as a card may be
        models = index.get("models") if isinstance(index, dict) else None
        if not isinstance(models, list):
            raise RegistryError(f"{self.url}: {INDEX_FILE} has no 'models' list")
        return [m for m in models if isinstance(m, dict)]

    def list_manifests(self) -> list[tuple[str, str]]:
        return sorted((check_name(m.get("name")), check_tag(m.get("tag"))) for m in self._index())

    def list_cards(self) -> Iterator[tuple[str, str, dict]]:
        for m in self._index():
            if isinstance(m.get("card"), dict):
                yield check_name(m.get("name")), check_tag(m.get("tag")), m["card"]

    def get_manifest(self, name: str, tag: str) -> dict:
        return parse_manifest(self._get(manifest_key(name, tag), f"{name}:{tag}", MAX_MANIFEST_BYTES), f"{name}:{tag}")

    def read_blob(self, entry: FileEntry, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        url = self.base + blob_key(entry.sha256)
        if needs_proxy(url):
            return self._read_blob_httpx(entry, url, offset)
        return self._read_blob_direct(entry, url, offset)

    def _read_blob_direct(self, entry: FileEntry, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Blob bodies through http.client in 1 MiB pieces (fetch.py): the CPU per byte of curl plus the hash."""
        origin = urlsplit(self.base)
        try:
            body = open_body(url, {"Range": f"bytes={offset}-"} if offset else {},
                             authorization=_basic_auth(origin), timeout=self.timeout)  # origin only (fetch.py)
        except NETWORK_ERRORS as err:
            raise RegistryError(f"{entry.path}: cannot download from {self.url} ({type(err).__name__})") from None
        if body.status_code == 404:
            body.close()
            raise NotFoundError(f"{entry.path}: blob sha256:{entry.sha256[:12]} missing from {self.url}")
        if body.status_code not in (200, 206):
            body.close()
            raise RegistryError(f"{entry.path}: {self.url} answered HTTP {body.status_code}")
        start = offset if body.status_code == 206 else 0

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.chunks()  # a body that ends early ends here: the store resumes it (Range)
            except NETWORK_ERRORS as err:
                raise RegistryError(f"{entry.path}: download interrupted ({type(err).__name__}); "
                                    f"pull again to resume") from None
            finally:
                body.close()

        return start, chunks()

    def _read_blob_httpx(self, entry: FileEntry, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Through a proxy (HTTP(S)_PROXY): httpx, which knows how to use one."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        request = self.client.build_request("GET", url, headers=headers)
        try:
            resp = self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise RegistryError(f"{entry.path}: cannot download from {self.url} ({type(err).__name__})") from None
        if resp.status_code == 404:
            resp.close()
            raise NotFoundError(f"{entry.path}: blob sha256:{entry.sha256[:12]} missing from {self.url}")
        if resp.status_code not in (200, 206):
            resp.close()
            raise RegistryError(f"{entry.path}: {self.url} answered HTTP {resp.status_code}")
        start = offset if resp.status_code == 206 else 0

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.iter_bytes()  # as it arrives: a kill loses at most one network read
            except httpx.HTTPError as err:
                raise RegistryError(f"{entry.path}: download interrupted ({type(err).__name__}); "
                                    f"pull again to resume") from None
            finally:
                resp.close()

        return start, chunks()
