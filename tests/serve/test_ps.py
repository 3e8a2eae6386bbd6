"""`zoo ps` against a real `zoo serve` on loopback: what it holds, --json, ZOO_HOST, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness", Path(__file__).with_name("harness.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def _ps(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*harness.ZOO, "ps", *args], capture_output=True, text=True, timeout=60,
                          env={**harness.zoo_env(home), **(env or {})})


def test_ps_shows_what_the_server_holds(server, oll, home):
    key = ("--api-key", server.api_key)
    empty = _ps(home, "--port", str(server.port), *key)
    assert empty.returncode == 0 and "NAME" in empty.stdout and "tiny" not in empty.stdout, empty
    oll.generate(model="tiny", prompt="hello", options={"num_predict": 2}, keep_alive="10m")
    r = _ps(home, "--port", str(server.port), *key)
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("tiny:latest"))
    assert "100% CPU" in row and "64" in row and "0/8" in row and "minutes from now" in row, r.stdout
    env = {"ZOO_HOST": f"127.0.0.1:{server.port}", "ZOO_API_KEY": server.api_key}
    doc = json.loads(_ps(home, "--json", env=env).stdout)
    assert [m["model"] for m in doc["models"]] == ["tiny:latest"] and doc["models"][0]["size"] > 0
    oll.generate(model="tiny", prompt="hello", options={"num_predict": 2}, keep_alive=-1)
    assert "Forever" in _ps(home, "--port", str(server.port), *key).stdout


def test_ps_errors_are_one_line(server, home):
    for args, env, expect in (((), {"ZOO_HOST": f"http://127.0.0.1:{harness.free_port()}"}, "no zoo server answers"),
                              (("--port", str(server.port)), {}, "wants an API key"),
                              ((), {"ZOO_HOST": "127.0.0.1:notaport"}, "ZOO_HOST")):
        r = _ps(home, *args, env=env)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("zoo: error:") and expect in r.stderr, r.stderr
