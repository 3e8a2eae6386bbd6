"""`zoo serve` as a process: preloading, keep-alive expiry, client disconnects, the exposure warning, and
clean exits on SIGINT and SIGTERM."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness", Path(__file__).with_name("harness.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

LONG = {"model": "tiny-long", "prompt": "hello", "raw": True, "options": {"temperature": 0, "num_predict": 16000}}


def _stopped(log: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"tiny-long:latest: stopped after (\d+) of (\d+) tokens", log)]


def test_a_client_going_away_stops_its_generation(server):
    with httpx.stream("POST", f"{server.url}/api/generate", json=LONG, headers=server.headers, timeout=30) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines))["done"] is False
        next(lines)
    stopped = _stopped(server.wait_for_log("stopped after"))
    assert len(stopped) == 1 and stopped[0][0] < stopped[0][1] == 16000
    with pytest.raises(httpx.ReadTimeout):  # a non-streaming request whose client gives up
        httpx.post(f"{server.url}/api/generate", json={**LONG, "stream": False}, headers=server.headers, timeout=0.8)
    deadline = time.monotonic() + 20
    while len(_stopped(server.log())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = _stopped(server.log())
    assert len(stopped) == 2 and stopped[1][0] < 16000, server.log()
    r = httpx.post(f"{server.url}/api/generate", headers=server.headers, timeout=30,  # the model is free again
                   json={**LONG, "stream": False, "options": {"num_predict": 3}})
    assert r.status_code == 200 and r.json()["eval_count"] == 3


def test_preloaded_directory_stays_while_others_expire_and_ctrl_c_exits_cleanly(home, tmp_path):
    local = harness.write_chat_model(tmp_path / "local-model", seed=2)
    srv = harness.Server(harness.zoo_env(home), tmp_path / "serve.log", "--models", str(local),
                         "--keep-alive", "1s", "--max-loaded", "2", "--ctx", "16384").start()
    try:
        assert "loaded local-model:latest" in srv.log()

        def loaded() -> list[str]:
            return [m["model"] for m in httpx.get(f"{srv.url}/api/ps").json()["models"]]

        assert loaded() == ["local-model:latest"]
        r = httpx.post(f"{srv.url}/v1/completions", json={"model": "local-model", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        r = httpx.post(f"{srv.url}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200 and sorted(loaded()) == ["local-model:latest", "tiny:latest"]
        deadline = time.monotonic() + 15
        while "tiny:latest" in loaded() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loaded() == ["local-model:latest"]  # tiny expired after its 1 s keep-alive; the preloaded one stays
        assert "unloaded tiny:latest (keep-alive expired)" in srv.log()
        assert {m["id"] for m in httpx.get(f"{srv.url}/v1/models").json()["data"]} == \
            {"tiny:latest", "tiny-long:latest", "tiny-wide:latest", "local-model:latest"}
        lines: list[dict] = []
        started = threading.Event()

        def stream() -> None:  # an answer much longer than the 5 s that running answers get after Ctrl-C
            with httpx.stream("POST", f"{srv.url}/api/generate", json=LONG, timeout=60) as r:
                for line in r.iter_lines():
                    lines.append(json.loads(line))
                    started.set()

        client = threading.Thread(target=stream)
        client.start()
        assert started.wait(60)
    finally:
        code = srv.stop(signal.SIGINT)
    client.join(60)
    log = srv.log()
    assert code == 130 and "Application shutdown complete" in log and "Traceback" not in log, (code, log)
    assert "tiny-long:latest: stopped after" in log and "(the server is stopping)" in log
    assert lines[-1]["done"] is True and 0 < lines[-1]["eval_count"] < 16000  # ended cleanly, cut short
    assert lines[-1]["eval_duration"] > 0  # the time it decoded for, though cut short


def test_public_host_warns_and_a_bad_preload_is_one_line(home):
    r = subprocess.run([*harness.ZOO, "serve", "--host", "0.0.0.0", "--port", str(harness.free_port()),
                        "--models", "no-such-model"], capture_output=True, text=True, timeout=120,
                       env=harness.zoo_env(home))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "zoo: warning: listening on 0.0.0.0: other machines can reach this server" in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("zoo: error:")]
    assert len(errors) == 1 and "no-such-model" in errors[0]


def test_bad_options_are_usage_errors(home):
    r = subprocess.run([*harness.ZOO, "serve", "--keep-alive", "soon"], capture_output=True, text=True,
                       timeout=60, env=harness.zoo_env(home))
    assert r.returncode == 2 and "--keep-alive" in r.stderr and "Traceback" not in r.stderr


def test_start_up_loads_what_the_first_streamed_answer_needs():
    """The app's start-up loads anyio's asyncio backend, which Starlette's streaming response would
    otherwise import during the first streamed answer (~0.1 s added to its time to first token)."""
    code = ("import asyncio, sys\n"
            "from zoo.serve import ModelManager, create_app\n"
            "app = create_app(ModelManager())\n"
            "before = 'anyio._backends._asyncio' in sys.modules\n"
            "async def start():\n"
            "    async with app.router.lifespan_context(app):\n"
            "        return 'anyio._backends._asyncio' in sys.modules\n"
            "print(before, asyncio.run(start()))\n")
    out = subprocess.run([*harness.ZOO[:2], "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]
