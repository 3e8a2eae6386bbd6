"""`zoo convert`, `zoo run` and `zoo bench` as a user runs them: subprocesses, stdout/stderr, exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from zoo.runtime import SamplingParams, Session, load

_spec = importlib.util.spec_from_file_location("zoo_tests_tiny", Path(__file__).with_name("tiny.py"))
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

ZOO = [sys.executable, "-m", "zoo.cli.main"]
HOME = tempfile.mkdtemp(prefix="zoo-test-home-")  # the verified-digest cache and store stay out of the user's home


def zoo(*args, input=None, timeout=300):
    return subprocess.run([*ZOO, *map(str, args)], capture_output=True, text=True, input=input, timeout=timeout,
                          env={**os.environ, "ZOO_DEBUG": "", "ZOO_HOME": HOME})


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return tiny.write_tiny(tmp_path_factory.mktemp("cli") / "tiny")


def _one_line_error(r, code=1):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("zoo: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_run_json_matches_the_library(tiny_path):
    r = zoo("run", tiny_path, "hello world", "--json", "--temperature", "0", "-n", "6", "--threads", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("text", "tokens", "prompt_tokens", "generated_tokens", "prefill_tps", "decode_tps", "load_s"):
        assert key in doc
    model, tok = load(tiny_path)
    ids = tok.encode(tok.render_chat([{"role": "user", "content": "hello world"}]))
    res = Session(model, tok).generate(ids, 6, SamplingParams(temperature=0))
    assert doc["tokens"] == res.tokens and doc["text"] == res.text
    assert doc["prompt_tokens"] == len(ids) and doc["generated_tokens"] == len(res.tokens)


def test_run_streams_text_and_verbose_stats(tiny_path):
    r = zoo("run", tiny_path, "hello world", "--temperature", "0", "-n", "6", "--verbose", "--raw")
    assert r.returncode == 0, r.stderr
    doc = json.loads(zoo("run", tiny_path, "hello world", "--json", "--temperature", "0", "-n", "6", "--raw").stdout)
    assert r.stdout == doc["text"] + "\n"
    assert "tok/s" in r.stderr and "peak RSS" in r.stderr and "load:" in r.stderr


def test_bench_json(tiny_path):
    r = zoo("bench", tiny_path, "--json", "--prompt-tokens", "16", "--gen-tokens", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["prefill_tps"] > 0 and doc["decode_tps"] > 0 and doc["peak_rss_mb"] > 10 and doc["load_s"] > 0


def test_convert_cli_and_refusals(tmp_path, tiny_path):
    r = zoo("convert", tiny_path, "-o", tmp_path / "copy", "--encoding", "q4", "--group-size", "64", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["encodings"] == {"dense": 5, "q4": 14, "q8": 1}  # 5 norms; 7 linears x 2 layers; tied embedding q8
    assert (tmp_path / "copy" / "tokenizer.json").is_file()
    assert "already exists" in _one_line_error(zoo("convert", tiny_path, "-o", tmp_path / "copy"))
    assert "unknown encoding" in _one_line_error(zoo("convert", tiny_path, "-o", tmp_path / "x", "-e", "q3"))
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    assert "GGUF" in _one_line_error(zoo("convert", tmp_path / "junk.gguf", "-o", tmp_path / "y"))
    (tmp_path / "empty").mkdir()
    assert "neither" in _one_line_error(zoo("convert", tmp_path / "empty", "-o", tmp_path / "z"))


def test_run_refuses_bad_input_with_one_line(tmp_path, tiny_path):
    assert "no such artifact" in _one_line_error(zoo("run", tmp_path / "missing", "hi"))
    assert "top-p" in _one_line_error(zoo("run", tiny_path, "hi", "--top-p", "0"))
    assert "context length exceeded" in _one_line_error(zoo("run", tiny_path, "hi", "-n", "500"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = broken / "model-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated: the card's size no longer matches
    _one_line_error(zoo("run", broken, "hi"))
    r = zoo("run", tiny_path, "hi", "--max-tokens", "abc")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def _default_sigint() -> None:
    """In the child: SIGINT delivered and handled by Python, whatever the test runner's process inherited."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_generation_cleanly(tmp_path):
    path = tiny.write_tiny(tmp_path / "long", max_seq_len=200_000)
    proc = subprocess.Popen([*ZOO, "run", str(path), "the fox", "--raw", "-n", "190000", "--ctx", "200000",
                             "--temperature", "1", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        first = proc.stdout.read(1)  # generation has started
        assert first
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
