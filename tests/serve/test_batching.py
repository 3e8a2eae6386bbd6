"""Continuous batching: zoo.runtime.batch's batched decode step against the one-sequence forward, then
concurrent clients of `zoo serve` whose decode steps run together, each answer equal to the unbatched one.

The model is q4 with group 128: on AVX-512 its batched (matmul) kernel quantizes activations as the
one-token kernel does, so greedy answers agree token for token (see docs/serve.md).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness", Path(__file__).with_name("harness.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

PROMPTS = ["hello world", "the quick brown fox", "once upon a time", "what is two and two", "tell me a story",
           "good morning", "name three colors", "why is the sky blue"]
N = 64


def _unbatched(model, tok, prompt: str, n: int, chat: bool = True):
    """The greedy answer (a Result) as `zoo run --temperature 0` makes it (Session: prefill, then one token
    at a time)."""
    from zoo.runtime import SamplingParams, Session

    ids = tok.encode(tok.render_chat([{"role": "user", "content": prompt}]) if chat else prompt)
    return Session(model, tok).generate(ids, n, SamplingParams(temperature=0))


def test_batched_decode_equals_one_sequence_at_a_time(wide):
    from zoo.runtime.batch import BatchRunner

    model, tok = wide
    refs = [_unbatched(model, tok, p, N, chat=False).tokens for p in PROMPTS[:5]]
    runner = BatchRunner(model, 4)
    # sequences join at different steps and leave when done: B goes 1, 2, 3, 4, then a slot is reused
    live: list[dict] = []
    pending = [(p, r) for p, r in zip(PROMPTS[:5], refs)]
    out: dict[str, list[int]] = {}
    step = 0
    while pending or live:
        if pending and runner.free_slots and step % 3 == 0:
            prompt, ref = pending.pop(0)
            ids, slot = tok.encode(prompt), runner.acquire()
            token = int(np.argmax(runner.prefill(ids, 0, slot)))
            live.append({"prompt": prompt, "slot": slot, "pos": len(ids), "tokens": [token], "n": len(ref)})
        step += 1
        if live:
            logits = runner.decode([s["tokens"][-1] for s in live], [s["pos"] for s in live], [s["slot"] for s in live])
            assert logits.shape == (len(live), model.vocab_size)
            for b, s in enumerate(live):
                s["tokens"].append(int(np.argmax(logits[b])))
                s["pos"] += 1
            for s in [s for s in live if len(s["tokens"]) >= s["n"]]:
                live.remove(s)
                runner.release(s["slot"])
                out[s["prompt"]] = s["tokens"]
    assert [out[p] for p in PROMPTS[:5]] == refs


def test_batched_decode_of_an_mpt_model_equals_its_forward(tmp_path):
    from zoo.runtime.batch import BatchRunner
    from zoo.runtime.model import Model
    from zoo.synthetic import TINY_MPT, write_random_model

    config = dict(TINY_MPT, dim=128, hidden_dim=256, n_heads=4, clip_qkv=6.0)
    model = Model.load(write_random_model(tmp_path / "mpt", config, encoding="q4", group_size=128, seed=4), ctx=64)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    refs = []
    for ids in prompts:  # one sequence at a time on the model's own cache
        tokens = [int(np.argmax(model.forward(ids, 0)))]
        for i in range(7):
            tokens.append(int(np.argmax(model.forward([tokens[-1]], len(ids) + i))))
        refs.append(tokens)
    runner = BatchRunner(model, 3)
    slots = [runner.acquire() for _ in prompts]
    tokens = [[int(np.argmax(runner.prefill(ids, 0, s)))] for ids, s in zip(prompts, slots)]
    for i in range(7):
        logits = runner.decode([t[-1] for t in tokens], [len(ids) + i for ids in prompts], slots)
        for b, t in enumerate(tokens):
            t.append(int(np.argmax(logits[b])))
    assert tokens == refs


def test_eight_streaming_clients_are_decoded_together_and_answer_as_unbatched(server, wide):
    import ollama
    import openai

    model, tok = wide
    refs = {p: _unbatched(model, tok, p, N).text for p in PROMPTS}
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120)
    oll = ollama.Client(host=server.url, headers=server.headers, timeout=120)
    messages = lambda p: [{"role": "user", "content": p}]  # noqa: E731
    start = threading.Barrier(len(PROMPTS) + 1)  # the gone client below starts with the others

    def ask(i: int) -> str:
        prompt = PROMPTS[i]
        start.wait()
        if i % 3 == 0:
            stream = oai.chat.completions.create(model="tiny-wide", messages=messages(prompt), temperature=0,
                                                 max_tokens=N, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        if i % 3 == 1:
            parts = oll.chat(model="tiny-wide", messages=messages(prompt), stream=True,
                             options={"temperature": 0, "num_predict": N, "repeat_penalty": 1.0})
            return "".join(p.message.content for p in parts)
        body = {"model": "tiny-wide", "messages": messages(prompt), "temperature": 0, "max_tokens": N, "stream": True}
        text = ""
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers,
                          timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        return text

    def gone() -> None:  # a ninth client that leaves mid-answer: its sequence must not disturb the others
        body = {"model": "tiny-wide", "prompt": "hello", "raw": True, "options": {"temperature": 0, "num_predict": 400}}
        start.wait()
        with httpx.stream("POST", f"{server.url}/api/generate", json=body, headers=server.headers, timeout=120) as r:
            next(r.iter_lines())

    oll.generate(model="tiny-wide")  # load it first: the clients should start their answers together
    with ThreadPoolExecutor(len(PROMPTS) + 1) as pool:
        left = pool.submit(gone)
        answers = list(pool.map(ask, range(len(PROMPTS))))
        left.result()
    assert answers == [refs[p] for p in PROMPTS]
    stats = httpx.get(f"{server.url}/api/ps", headers=server.headers).json()["models"][0]["zoo"]
    assert stats["largest_batch"] >= 4 and stats["running"] == 0, stats  # decoded together, all gone now
    server.wait_for_log("tiny-wide:latest: stopped after")


@pytest.mark.slow
def test_two_hundred_requests_from_eight_clients_keep_rss_flat(server, wide):
    model, tok = wide
    refs = {p: _unbatched(model, tok, p, N).text for p in PROMPTS}
    pid = server.proc.pid

    def rss() -> int:
        text = Path(f"/proc/{pid}/status").read_text()
        return int(next(line for line in text.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024

    def ask(i: int) -> bool:
        prompt = PROMPTS[i % len(PROMPTS)]
        body = {"model": "tiny-wide", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": N, "stream": True}
        text, finished = "", False
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers,
                          timeout=120) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    finished = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    text += chunk["choices"][0]["delta"].get("content") or ""
        return finished and text == refs[prompt]

    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(ask, range(20)))
        after_20 = rss()
        rest = list(pool.map(ask, range(20, 200)))
    assert all(first) and all(rest)
    assert abs(rss() - after_20) <= 0.05 * after_20, (after_20, rss())


def test_a_stream_closed_early_still_reports_its_decode_time(wide):
    from zoo.runtime import Result, SamplingParams, Session

    model, tok = wide
    result = Result()
    pieces = Session(model, tok).stream(tok.encode("hello"), 50, SamplingParams(), None, result)
    for _ in range(3):
        next(pieces)
    pieces.close()  # what a consumer that stops reading does
    assert result.generated_tokens >= 3 and result.decode_s > 0
