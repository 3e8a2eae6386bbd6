"""The official `openai` client, unchanged, against `zoo serve`: chat and completions, streaming and not,
usage, stop strings, seeds, the model list and the errors (404, 400, 401)."""

from __future__ import annotations

import httpx
import openai
import pytest

CHAT = [{"role": "user", "content": "hello world"}]


def test_chat_greedy_equals_in_process_generation(oai, local):
    ids, ref = local("hello world", 12, temperature=0)
    r = oai.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=12)
    assert r.model == "tiny:latest" and r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text and ref.text
    assert r.choices[0].finish_reason == {"length": "length", "eos": "stop"}[ref.finish_reason]
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(ref.tokens)
    assert r.usage.total_tokens == len(ids) + len(ref.tokens)


def test_chat_stream_equals_the_whole_answer_and_reports_usage(oai):
    whole = oai.chat.completions.create(model="tiny:latest", messages=CHAT, temperature=0, max_tokens=10)
    chunks = list(oai.chat.completions.create(model="tiny:latest", messages=CHAT, temperature=0, max_tokens=10,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed, not one piece
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    plain = list(oai.chat.completions.create(model="tiny:latest", messages=CHAT, temperature=0, max_tokens=10,
                                             stream=True))
    assert all(c.usage is None for c in plain)


def test_completion_sends_the_prompt_without_template(oai, local):
    ids, ref = local("the quick brown fox", 9, chat=False, temperature=0)
    r = oai.completions.create(model="tiny", prompt="the quick brown fox", temperature=0, max_tokens=9)
    assert r.object == "text_completion"
    assert r.choices[0].text == ref.text and r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(ref.tokens) == 9 and r.choices[0].finish_reason == "length"
    streamed = oai.completions.create(model="tiny", prompt="the quick brown fox", temperature=0, max_tokens=9,
                                      stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert chunks[-1].usage.completion_tokens == 9
    by_ids = oai.completions.create(model="tiny", prompt=ids, temperature=0, max_tokens=9)
    assert by_ids.choices[0].text == ref.text


def test_seed_reproduces_a_sampled_answer(oai, local):
    _, ref = local("hello world", 16, temperature=1.0, top_p=0.95, seed=7)
    texts = [oai.chat.completions.create(model="tiny", messages=CHAT, temperature=1.0, top_p=0.95, seed=7,
                                         max_tokens=16).choices[0].message.content for _ in range(2)]
    assert texts == [ref.text, ref.text]
    others = {oai.chat.completions.create(model="tiny", messages=CHAT, temperature=1.0, seed=s,
                                          max_tokens=16).choices[0].message.content for s in (1, 2, 3)}
    assert len(others) > 1  # the seed is used, not a constant


def test_stop_string_ends_the_answer_before_it(oai, local):
    _, ref = local("hello world", 24, temperature=1.0, seed=3)
    stop = ref.text[6:9]
    cut = ref.text.find(stop)
    assert len(stop) == 3 and cut >= 0
    r = oai.chat.completions.create(model="tiny", messages=CHAT, temperature=1.0, seed=3, max_tokens=24,
                                    stop=[stop, "never appears"])
    assert r.choices[0].message.content == ref.text[:cut] and r.choices[0].finish_reason == "stop"
    streamed = oai.chat.completions.create(model="tiny", messages=CHAT, temperature=1.0, seed=3, max_tokens=24,
                                           stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == ref.text[:cut]


def test_models_lists_the_store_with_card_metrics(oai):
    models = {m.id: m for m in oai.models.list()}
    assert set(models) == {"tiny:latest", "tiny-long:latest", "tiny-wide:latest"}
    extra = models["tiny:latest"].model_extra["zoo"]
    assert extra["architecture"] == "llama" and extra["size_bytes"] > 0


def test_unknown_model_is_404_with_openai_error_body(oai):
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="no-such-model", messages=CHAT)
    assert err.value.status_code == 404
    assert err.value.body["code"] == "model_not_found" and "no-such-model" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="/etc", prompt="x")  # a path is not a model name


@pytest.mark.parametrize("bad", [{"temperature": 3}, {"top_p": 0}, {"max_tokens": 0}, {"n": 2}, {"seed": -1},
                                 {"presence_penalty": 1.0}, {"messages": []}, {"stop": 5}])
def test_bad_parameters_are_400(oai, bad):
    args = {"model": "tiny", "messages": CHAT, "max_tokens": 4, **bad}
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(**args)
    assert err.value.status_code == 400 and err.value.body["type"] == "invalid_request_error"
    assert "Traceback" not in err.value.body["message"]


def test_context_overflow_is_400_naming_the_limits(oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(model="tiny", prompt="the quick brown fox jumps " * 20, max_tokens=4)
    assert err.value.body["code"] == "context_length_exceeded" and "64" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="tiny", messages=CHAT, max_tokens=60)
    message = err.value.body["message"]
    assert "60" in message and "64" in message


def test_api_key_is_checked_on_every_route(server):
    import ollama

    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=server.url).list()
    assert err.value.status_code == 401
    for method, path in [("GET", "/"), ("GET", "/api/version"), ("GET", "/api/ps"), ("POST", "/api/show"),
                         ("POST", "/api/chat"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")]:
        r = httpx.request(method, server.url + path, json={"model": "tiny"})
        assert r.status_code == 401, path
    assert httpx.get(server.url + "/", headers=server.headers).status_code == 200


def test_concurrent_requests_to_one_model_are_batched_and_answer_alike(oai, wide):
    from concurrent.futures import ThreadPoolExecutor

    from zoo.runtime import SamplingParams, Session

    model, tok = wide
    ids = tok.encode(tok.render_chat(CHAT))
    ref = Session(model, tok).generate(ids, 20, SamplingParams(temperature=0))

    def ask(i: int) -> str:
        if i % 2:
            return oai.chat.completions.create(model="tiny-wide", messages=CHAT, temperature=0,
                                               max_tokens=20).choices[0].message.content
        stream = oai.chat.completions.create(model="tiny-wide", messages=CHAT, temperature=0, max_tokens=20,
                                             stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, range(12)))
    assert answers == [ref.text] * 12  # one KV slot per sequence: interleaved sequences do not mix
