"""Generation on a tiny model: sampling controls, seeds, stop strings, EOS, context errors, chat reuse."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import RuntimeModelError
from zoo.runtime import SamplingParams, Session, load
from zoo.runtime.sampling import Sampler

_spec = importlib.util.spec_from_file_location("zoo_tests_tiny", Path(__file__).with_name("tiny.py"))
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tiny.write_tiny(tmp_path_factory.mktemp("tiny") / "tiny")
    return load(path)


def _session(tiny_model) -> Session:
    model, tok = tiny_model
    return Session(model, tok)


def test_greedy_is_argmax_of_the_forward(tiny_model):
    model, tok = tiny_model
    ids = tok.encode("the quick brown fox")
    res = _session(tiny_model).generate(ids, max_tokens=5, params=SamplingParams(temperature=0))
    seq = list(ids)
    for t in res.tokens:  # replay without the KV cache: full forward each step
        assert t == int(np.argmax(model.forward(seq, 0)))
        seq.append(t)


def test_seed_reproduces_and_top_k_1_is_greedy(tiny_model):
    ids = tiny_model[1].encode("hello world")
    sample = SamplingParams(temperature=1.5, top_k=50, top_p=0.95, seed=7)
    a = _session(tiny_model).generate(ids, 12, sample)
    b = _session(tiny_model).generate(ids, 12, sample)
    assert a.tokens == b.tokens
    others = {tuple(_session(tiny_model).generate(ids, 12, SamplingParams(temperature=1.5, seed=s)).tokens)
              for s in range(4)}
    assert len(others) > 1  # sampling really samples
    greedy = _session(tiny_model).generate(ids, 12, SamplingParams(temperature=0)).tokens
    assert _session(tiny_model).generate(ids, 12, SamplingParams(temperature=1.0, top_k=1, seed=3)).tokens == greedy


def test_sampler_filters():
    logits = np.array([0.0, 3.0, 2.9, -1.0, 1.0], np.float32)
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {s(logits) for _ in range(50)} <= {1, 2}
    s = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=0))
    assert {s(logits) for _ in range(100)} == {1, 2}
    penalized = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0))
    assert penalized(logits, history=[1]) == 2  # 3.0/2 < 2.9
    with pytest.raises(RuntimeModelError):
        Sampler(SamplingParams(top_p=0))


def test_stop_string_eos_and_max_tokens(tiny_model):
    model, tok = tiny_model
    ids = tok.encode("the lazy dog")
    free = _session(tiny_model).generate(ids, 20, SamplingParams(temperature=0))
    assert free.finish_reason in ("length", "eos")
    assert len(free.text) > 3
    stop = free.text[2:4]
    cut = _session(tiny_model).generate(ids, 20, SamplingParams(temperature=0), stop=[stop])
    assert cut.finish_reason == "stop" and cut.text == free.text[:free.text.find(stop)]
    pieces = []
    _session(tiny_model).generate(ids, 20, SamplingParams(temperature=0), stop=[stop], on_text=pieces.append)
    assert "".join(pieces) == cut.text  # held-back text never leaks a partial stop string
    # make the first greedy token an EOS
    first = free.tokens[0]
    tok.eos_ids.add(first)
    try:
        res = _session(tiny_model).generate(ids, 20, SamplingParams(temperature=0))
        assert res.finish_reason == "eos" and res.tokens == [] and res.text == ""
    finally:
        tok.eos_ids.discard(first)


def test_context_length_is_refused_clearly(tiny_model):
    model, tok = tiny_model
    with pytest.raises(RuntimeModelError, match="context length exceeded"):
        _session(tiny_model).generate([5] * 60, max_tokens=10)
    with pytest.raises(RuntimeModelError, match="context length exceeded"):
        model.forward([5] * 65, 0)
    with pytest.raises(RuntimeModelError, match="outside the vocabulary"):
        model.forward([10**6], 0)


def test_chat_history_reuses_the_cache_and_matches_a_fresh_run(tiny_model):
    model, tok = tiny_model
    params = SamplingParams(temperature=0)
    chat = Session(model, tok)
    messages = [{"role": "user", "content": "hello"}]
    first = chat.generate(chat.chat_ids(messages), 6, params)
    messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "the fox"}]
    ids = chat.chat_ids(messages)
    full = tok.encode(tok.render_chat(messages))
    assert len(ids) < len(full)  # only the new turn is computed
    second = chat.generate(ids, 6, params)
    fresh = Session(model, tok)
    assert fresh.generate(full, 6, params).tokens == second.tokens
