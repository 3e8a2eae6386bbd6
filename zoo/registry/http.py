"""A read-only static HTTP(S) mirror of a directory registry (nginx, any web server, a CDN).

The server only has to serve files: `index.json` for listing, `manifests/<name>/<tag>.json`, and
`blobs/sha256/<hex>` with Range support for resumed downloads (a server that ignores Range answers
200 and the download restarts from byte 0). Credentials come from ~/.netrc (httpx, trust_env) or
the URL's user:password, and are never printed: errors name the URL without its userinfo.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx

from zoo.errors import NotFoundError, RegistryError

from .base import FileEntry, Registry, blob_key, check_name, check_tag, manifest_key, parse_manifest
from .local import INDEX_FILE


def redact(url: str) -> str:
    """The URL without user:password@."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class HttpRegistry(Registry):
    """http(s)://host/path: a static mirror of a LocalRegistry directory. Read-only."""

    read_only = True

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.url = redact(self.base)
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
                                   trust_env=True)

    def close(self) -> None:
        self.client.close()

    def _get(self, key: str, what: str) -> bytes:
        try:
            resp = self.client.get(self.base + key)
        except httpx.HTTPError as err:
            raise RegistryError(f"{self.url}: cannot fetch {what} ({type(err).__name__})") from None
        if resp.status_code == 404:
            raise NotFoundError(f"{what}: not found in registry {self.url}")
        if resp.status_code != 200:
            raise RegistryError(f"{self.url}: fetching {what} answered HTTP {resp.status_code}")
        return resp.content

    def _index(self) -> list[dict]:
        try:
            index = json.loads(self._get(INDEX_FILE, INDEX_FILE))
        except NotFoundError:
            return []
        except ValueError:
            raise RegistryError(f"{self.url}: {INDEX_FILE} is not valid JSON") from None
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
        return parse_manifest(self._get(manifest_key(name, tag), f"{name}:{tag}"), f"{name}:{tag}")

    def read_blob(self, entry: FileEntry, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        request = self.client.build_request("GET", self.base + blob_key(entry.sha256), headers=headers)
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
