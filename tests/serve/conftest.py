"""Fixtures: a temporary store with two tiny chat models, one real `zoo serve` for the module's tests, the
official OpenAI and Ollama clients pointed at it, and the same model loaded in-process as the reference."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness", Path(__file__).with_name("harness.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    """ZOO_HOME with tiny:latest (context 64), tiny-long:latest (context 16384, no EOS: an answer as
    long as asked: 16000 tokens take tens of seconds) and tiny-wide:latest (q4 group 128, context 512, no
    EOS: the batching tests') in its store."""
    from zoo.store import Store

    root = tmp_path_factory.mktemp("serve")
    store = Store(root / "home")
    store.add(harness.write_chat_model(root / "tiny", seed=0), "tiny", "latest")
    store.add(harness.write_chat_model(root / "tiny-long", seed=1, max_seq_len=16384, eos=False), "tiny-long", "latest")
    store.add(harness.write_chat_model(root / "tiny-wide", seed=3, max_seq_len=512, eos=False, wide=True),
              "tiny-wide", "latest")
    return root / "home"


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    """One `zoo serve --api-key ... --max-loaded 1 --ctx 16384`, stopped by SIGTERM after the module (it must exit cleanly)."""
    srv = harness.Server(harness.zoo_env(home), tmp_path_factory.mktemp("log") / "serve.log", "--max-loaded", "1",
                         "--ctx", "16384", api_key=API_KEY).start()
    yield srv
    code = srv.stop(signal.SIGTERM)
    log = srv.log()
    assert "Traceback" not in log, log
    assert code == 128 + signal.SIGTERM and "Application shutdown complete" in log, (code, log)


@pytest.fixture(scope="module")
def oai(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def oll(server):
    import ollama

    return ollama.Client(host=server.url, headers=server.headers, timeout=60)


@pytest.fixture(scope="session")
def reference(home):
    """tiny:latest loaded in this process: what the server must reproduce."""
    from zoo.runtime import load
    from zoo.store import Store

    return load(Store(home).path("tiny", "latest"))


@pytest.fixture(scope="session")
def local(reference):
    """generate(prompt, max_tokens, chat=True, **SamplingParams) in-process as `zoo run` does (chat template
    unless chat=False); returns (prompt ids, Result)."""
    from zoo.runtime import SamplingParams, Session

    model, tok = reference

    def generate(prompt: str, max_tokens: int, chat: bool = True, **params):
        ids = tok.encode(tok.render_chat([{"role": "user", "content": prompt}]) if chat else prompt)
        return ids, Session(model, tok).generate(ids, max_tokens, SamplingParams(**params))

    return generate


@pytest.fixture(scope="session")
def wide(home):
    """tiny-wide:latest loaded in this process."""
    from zoo.runtime import load
    from zoo.store import Store

    return load(Store(home).path("tiny-wide", "latest"))
