"""Requests that end before their answer starts: the model they asked for must be released (its busy count
back to zero), or it would never expire nor be unloaded."""

from __future__ import annotations

import importlib.util
import json
import socket
import time
from pathlib import Path

import httpx

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness", Path(__file__).with_name("harness.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def _post_and_hang_up(port: int, path: str, body: dict) -> None:
    """Send a whole request, then close the connection before any byte of the answer arrives."""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + data)


def _loaded(url: str) -> list[str]:
    return [m["model"] for m in httpx.get(f"{url}/api/ps").json()["models"]]


def test_a_stream_cancelled_before_its_first_byte_releases_the_model(home, tmp_path):
    srv = harness.Server(harness.zoo_env(home), tmp_path / "serve.log", "--keep-alive", "1s").start()
    try:
        # the model is not loaded yet: the client is gone before the load ends and the answer starts
        _post_and_hang_up(srv.port, "/api/generate", {"model": "tiny", "prompt": "hello", "stream": True})
        _post_and_hang_up(srv.port, "/v1/chat/completions", {"model": "tiny", "stream": True,
                                                             "messages": [{"role": "user", "content": "hi"}]})
        srv.wait_for_log("loaded tiny:latest")
        deadline = time.monotonic() + 15
        while _loaded(srv.url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _loaded(srv.url) == [], srv.log()  # released: its 1 s keep-alive ran out
        assert "unloaded tiny:latest (keep-alive expired)" in srv.log()
    finally:
        srv.stop()


def test_a_stream_cancelled_while_the_model_is_busy_releases_it(home, tmp_path):
    srv = harness.Server(harness.zoo_env(home), tmp_path / "serve.log", "--keep-alive", "1s", "--ctx", "16384").start()
    long = {"model": "tiny-long", "prompt": "hello", "raw": True, "options": {"temperature": 0, "num_predict": 16000}}
    try:
        with httpx.stream("POST", f"{srv.url}/api/generate", json=long, timeout=30) as r:
            assert json.loads(next(r.iter_lines()))["done"] is False  # the model is busy with this answer
            _post_and_hang_up(srv.port, "/api/generate", long)
            _post_and_hang_up(srv.port, "/v1/completions", {"model": "tiny-long", "prompt": "hi", "stream": True})
            time.sleep(1)
        deadline = time.monotonic() + 15
        while _loaded(srv.url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _loaded(srv.url) == [], srv.log()
    finally:
        srv.stop()


def _asgi_post(app, path: str, body: dict, send_raises: bool) -> list[dict]:
    """One POST through the app as an ASGI 2.4 server drives it; with send_raises, the client is gone before
    the first byte: sending the status line raises OSError, as the 2.4 spec has servers do."""
    import asyncio

    data = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}}
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": data, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if send_raises:
            raise OSError("the client closed the connection")
        sent.append(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:  # the ClientDisconnect Starlette raises back to the server
            pass

    asyncio.run(run())
    return sent


def test_an_asgi_2_4_client_gone_before_the_first_byte_releases_the_model(home):
    from zoo.serve import ModelManager, create_app
    from zoo.store import Store

    manager = ModelManager(keep_alive=None)
    name = manager.add_path(Store(home).path("tiny", "latest"))
    entry = manager.load_blocking(name)
    app = create_app(manager)
    chat = {"model": name, "stream": True, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for path, body in (("/api/generate", {"model": name, "prompt": "hello", "options": {"num_predict": 2}}),
                       ("/v1/chat/completions", chat)):
        assert _asgi_post(app, path, body, send_raises=True) == []
        assert entry.busy == 0, path
        sent = _asgi_post(app, path, body, send_raises=False)  # and the model still answers
        assert sent[0]["status"] == 200 and entry.busy == 0
