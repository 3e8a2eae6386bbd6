"""The official `ollama` client, unchanged, against `zoo serve`: chat and generate, streaming and not,
token counts, stop, seed, keep_alive, tags/show/ps/version, and the errors (404, 400)."""

from __future__ import annotations

import httpx
import ollama
import pytest

CHAT = [{"role": "user", "content": "hello world"}]


def test_chat_greedy_equals_in_process_generation(oll, local):
    # Ollama's defaults apply where the request says nothing: repeat_penalty 1.1
    ids, ref = local("hello world", 12, temperature=0, repetition_penalty=1.1)
    r = oll.chat(model="tiny", messages=CHAT, options={"temperature": 0, "num_predict": 12})
    assert r.model == "tiny:latest" and r.done and r.message.role == "assistant"
    assert r.message.content == ref.text and ref.text
    assert r.prompt_eval_count == len(ids) and r.eval_count == len(ref.tokens)
    assert r.done_reason == {"length": "length", "eos": "stop"}[ref.finish_reason]
    assert r.total_duration > 0 and r.eval_duration > 0


def test_generate_returns_the_context_token_for_token(oll, local):
    ids, ref = local("hello world", 10, temperature=0, repetition_penalty=1.0)
    r = oll.generate(model="tiny", prompt="hello world", options={"temperature": 0, "num_predict": 10,
                                                                  "repeat_penalty": 1.0})
    assert r.response == ref.text and list(r.context) == ids + ref.tokens
    raw_ids, raw = local("the quick", 6, chat=False, temperature=0, repetition_penalty=1.0)
    r = oll.generate(model="tiny", prompt="the quick", raw=True, options={"temperature": 0, "num_predict": 6,
                                                                          "repeat_penalty": 1.0})
    assert r.response == raw.text and list(r.context) == raw_ids + raw.tokens and r.prompt_eval_count == len(raw_ids)


def test_streams_are_ndjson_pieces_of_the_whole_answer(oll):
    opts = {"temperature": 0, "num_predict": 10}
    whole = oll.chat(model="tiny", messages=CHAT, options=opts)
    parts = list(oll.chat(model="tiny", messages=CHAT, options=opts, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and len(parts) > 2
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count and parts[-1].prompt_eval_count == whole.prompt_eval_count
    gen = list(oll.generate(model="tiny", prompt="hello world", options=opts, stream=True))
    assert "".join(p.response for p in gen) == oll.generate(model="tiny", prompt="hello world", options=opts).response
    assert gen[-1].done and gen[-1].context


def test_seed_and_stop_options(oll, local):
    _, ref = local("hello world", 24, temperature=1.0, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=5)
    opts = {"temperature": 1.0, "seed": 5, "num_predict": 24}
    assert oll.chat(model="tiny", messages=CHAT, options=opts).message.content == ref.text
    stop = ref.text[5:8]
    cut = ref.text.find(stop)
    r = oll.chat(model="tiny", messages=CHAT, options={**opts, "stop": [stop]})
    assert r.message.content == ref.text[:cut] and r.done_reason == "stop"


def test_tags_show_version(oll, server):
    tags = {m.model: m for m in oll.list().models}
    assert set(tags) == {"tiny:latest", "tiny-long:latest", "tiny-wide:latest"}
    assert tags["tiny:latest"].details.family == "llama" and tags["tiny:latest"].size > 0
    shown = oll.show("tiny")
    assert "<|im_start|>" in shown.template and shown.modelinfo["llama.context_length"] == 64
    assert shown.details.format == "zoo"
    assert httpx.get(f"{server.url}/api/version", headers=server.headers).json()["version"]


def test_ps_lists_the_loaded_model_and_keep_alive_zero_unloads(oll):
    oll.generate(model="tiny", prompt="hello", options={"num_predict": 2})
    loaded = oll.ps().models
    assert [m.model for m in loaded] == ["tiny:latest"] and loaded[0].context_length == 64
    assert loaded[0].expires_at is not None
    oll.generate(model="tiny", prompt="hello", options={"num_predict": 2}, keep_alive=0)
    assert oll.ps().models == []
    r = oll.generate(model="tiny")  # an empty prompt loads the model, as in Ollama
    assert r.done and r.done_reason == "load" and [m.model for m in oll.ps().models] == ["tiny:latest"]


def test_max_loaded_unloads_the_least_recently_used(oll):
    oll.generate(model="tiny", prompt="hello", options={"num_predict": 2})
    oll.generate(model="tiny-long", prompt="hello", options={"num_predict": 2})
    assert [m.model for m in oll.ps().models] == ["tiny-long:latest"]  # the server runs with --max-loaded 1
    oll.chat(model="tiny", messages=CHAT, options={"num_predict": 2})
    assert [m.model for m in oll.ps().models] == ["tiny:latest"]


def test_errors_are_ollama_error_bodies(oll, server):
    with pytest.raises(ollama.ResponseError) as err:
        oll.chat(model="no-such-model", messages=CHAT)
    assert err.value.status_code == 404 and "no-such-model" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oll.show("no-such-model")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        oll.chat(model="tiny", messages=CHAT, options={"temperature": -1})
    assert err.value.status_code == 400 and "temperature" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oll.generate(model="tiny", prompt="the quick brown fox jumps " * 20)
    assert err.value.status_code == 400 and "64" in err.value.error and "context" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oll.generate(model="tiny", prompt="hello", keep_alive="soon")
    assert err.value.status_code == 400
    r = httpx.post(f"{server.url}/api/chat", content=b"{not json", headers=server.headers)
    assert r.status_code == 400 and set(r.json()) == {"error"}
    r = httpx.get(f"{server.url}/api/nothing-here", headers=server.headers)
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_num_ctx_narrows_the_context_and_too_large_is_400(oll):
    r = oll.generate(model="tiny-long", prompt="hello", raw=True, options={"temperature": 0, "num_ctx": 20})
    assert r.prompt_eval_count + r.eval_count == 20 and r.done_reason == "length"  # filled its own window
    with pytest.raises(ollama.ResponseError) as err:
        oll.generate(model="tiny-long", prompt="hello", raw=True, options={"num_ctx": 20, "num_predict": 40})
    assert err.value.status_code == 400 and "20" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oll.generate(model="tiny-long", prompt="hello", options={"num_ctx": 100000})
    assert err.value.status_code == 400 and "100000" in err.value.error and "16384" in err.value.error
