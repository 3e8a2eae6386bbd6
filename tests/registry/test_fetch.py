"""zoo.registry.fetch, the blob-body path of the HTTP-mirror and OCI backends, against small HTTP servers on
loopback: a redirect to another origin (a registry whose blobs live in object storage) never carries the
registry's credentials, bodies arrive in whole 1 MiB pieces, and a body cut short is asked again with Range."""

from __future__ import annotations

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from zoo.errors import RegistryError
from zoo.registry.fetch import BODY_CHUNK, open_body, resuming

BLOB = os.urandom(3 * BODY_CHUNK + 12345)


class BlobServer:
    """Serves BLOB at /blob (with Range), redirects /moved to `redirect_to`, and cuts the first `cuts` bodies
    after `cut_at` bytes; records every request's headers."""

    def __init__(self, redirect_to: str | None = None, cuts: int = 0, cut_at: int = BODY_CHUNK + 100) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.cuts, self.cut_at = cuts, cut_at
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path == "/moved":
                    self.send_response(307)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(self.headers.get("Range", "bytes=0-")[len("bytes="):].rstrip("-"))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(BLOB) - start))
                self.end_headers()
                body = BLOB[start:]
                if server.cuts:
                    server.cuts -= 1
                    self.wfile.write(body[:server.cut_at])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reopen(self, pos: int):
        """What a resumed download does: ask /blob again from `pos`; (body, the offset it starts at)."""
        body = open_body(f"{self.url}/blob", {"Range": f"bytes={pos}-"})
        return body, pos if body.status_code == 206 else 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    store = BlobServer()  # the object storage a registry redirects blob GETs to
    registry = BlobServer(redirect_to=f"{store.url}/blob?X-Signature=abc")
    yield registry, store
    registry.close()
    store.close()


def test_a_redirect_to_another_origin_drops_the_credentials_and_the_body_comes_whole(servers):
    registry, store = servers
    body = open_body(f"{registry.url}/moved", {}, authorization="Bearer registry-token")
    try:
        assert body.status_code == 200 and body.url == f"{store.url}/blob?X-Signature=abc"
        pieces = list(body.chunks())
    finally:
        body.close()
    assert hashlib.sha256(b"".join(pieces)).digest() == hashlib.sha256(BLOB).digest()
    assert [len(p) for p in pieces[:-1]] == [BODY_CHUNK] * (len(pieces) - 1)  # whole pieces, not 64 KiB reads
    assert registry.requests[0][1]["authorization"] == "Bearer registry-token"
    assert "authorization" not in store.requests[0][1]
    assert store.requests[0][0] == "/blob?X-Signature=abc"


def test_a_body_cut_short_is_asked_again_from_where_it_stopped(servers):
    _, store = servers
    store.cuts = 2

    first = open_body(f"{store.url}/blob", {})
    got = b"".join(resuming(first, 0, len(BLOB), store.reopen, "model.safetensors", retries=3, pause=0.01))
    assert got == BLOB
    ranges = [headers.get("range") for _, headers in store.requests]
    assert ranges == [None, f"bytes={store.cut_at}-", f"bytes={2 * store.cut_at}-"]


def test_a_body_cut_more_often_than_retries_is_one_line(servers):
    _, store = servers
    store.cuts = 5

    with pytest.raises(RegistryError, match=r"model.safetensors: download interrupted \(IncompleteRead\)"):
        for _ in resuming(open_body(f"{store.url}/blob", {}), 0, len(BLOB), store.reopen, "model.safetensors",
                          retries=2, pause=0.01):
            pass
