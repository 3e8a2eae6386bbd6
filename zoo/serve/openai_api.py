"""OpenAI-compatible routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models.

Streaming answers are server-sent events (`data: {chunk}` ... `data: [DONE]`), with a last usage chunk
when `stream_options.include_usage` is set. Defaults follow OpenAI's (temperature 1, top_p 1); `top_k`
and `repeat_penalty` are accepted as extras, as llama.cpp's server does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from zoo.runtime import SamplingParams

from .errors import ApiError, ErrorCode, failure
from .generation import Job, generate
from .listing import available
from .streaming import ReleasingStream

router = APIRouter(prefix="/v1")

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "interrupted": "stop"}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # fields other clients send and this server does not use


class TextPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" for p in self.content):
            raise ApiError(ErrorCode.BAD_REQUEST, "messages: only text content is supported (no images or audio)")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    repeat_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def job(self, prompt_ids: list[int]) -> Job:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(ErrorCode.BAD_REQUEST, f"{name}: not supported (send 0 or leave it out)")
        if self.n != 1:
            raise ApiError(ErrorCode.BAD_REQUEST, "n: only one choice per request is supported")
        if self.logprobs:
            raise ApiError(ErrorCode.BAD_REQUEST, "logprobs: not supported")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        params = SamplingParams(temperature=1.0 if self.temperature is None else self.temperature,
                                top_k=self.top_k or 0, top_p=1.0 if self.top_p is None else self.top_p,
                                repetition_penalty=self.repeat_penalty or 1.0, seed=self.seed)
        return Job(prompt_ids, self.max_tokens, params, stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)


def _usage(job: Job) -> dict:
    r = job.result
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.generated_tokens,
            "total_tokens": r.prompt_tokens + r.generated_tokens}


def _sse(doc: dict | str) -> str:
    return f"data: {doc if isinstance(doc, str) else json.dumps(doc)}\n\n"


async def _answer(request: Request, body: _Sampling, prompt_ids_of, kind: Literal["chat", "text"]):
    """Load the model, check the request, then answer whole or as a server-sent event stream."""
    manager = request.app.state.manager
    entry = await manager.get(body.model)
    try:
        job = body.job(prompt_ids_of(entry))
        if isinstance(body, ChatRequest) and body.max_completion_tokens is not None:
            job.max_tokens = body.max_completion_tokens
        job.fit(entry.model.ctx)  # refuse before a stream starts (a 400, not an error inside a 200)
    except BaseException:
        manager.release(entry)
        raise
    name = entry.name
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    obj = "chat.completion" if kind == "chat" else "text_completion"

    def choice(text: str | None, finish: str | None, first: bool = False) -> dict:
        if kind == "text":
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta = {} if text is None else {"content": text}
        if first:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    if not body.stream:
        try:
            text = "".join([p async for p in generate(entry, job, request.is_disconnected)])
        finally:
            manager.release(entry)
        finish = FINISH[job.result.finish_reason]
        first = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish} if kind == "chat" else choice(text, finish))
        return {"id": rid, "object": obj, "created": created, "model": name, "choices": [first],
                "usage": _usage(job), "system_fingerprint": None}

    usage_field = {"usage": None} if body.include_usage else {}

    async def events() -> AsyncIterator[str]:
        chunk = {"id": rid, "object": f"{obj}.chunk" if kind == "chat" else obj, "created": created,
                 "model": name, "system_fingerprint": None}
        try:
            if kind == "chat":
                yield _sse({**chunk, "choices": [choice("", None, first=True)], **usage_field})
            async for piece in generate(entry, job):
                yield _sse({**chunk, "choices": [choice(piece, None)], **usage_field})
            yield _sse({**chunk, "choices": [choice(None, FINISH[job.result.finish_reason])], **usage_field})
            if body.include_usage:
                yield _sse({**chunk, "choices": [], "usage": _usage(job)})
            yield _sse("[DONE]")
        except Exception as err:  # the status line is sent: the error goes in the stream, as OpenAI does
            api = failure(err)
            yield _sse({"error": {"message": str(api), "type": api.code.openai_type, "code": api.code.value}})

    return ReleasingStream(events(), lambda: manager.release(entry), "text/event-stream", {"Cache-Control": "no-cache"})


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    """A chat turn through the model's chat template."""
    if body.tools:
        raise ApiError(ErrorCode.BAD_REQUEST, "tools: not supported")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]

    def prompt_ids(entry) -> list[int]:
        return entry.tok.encode(entry.tok.render_chat(messages, add_generation_prompt=True))

    return await _answer(request, body, prompt_ids, "chat")


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request):
    """A plain completion of the prompt text (no chat template); the prompt may be token ids."""
    if body.echo or body.suffix:
        raise ApiError(ErrorCode.BAD_REQUEST, "echo and suffix: not supported")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise ApiError(ErrorCode.BAD_REQUEST, "prompt: one prompt per request is supported")
        prompt = prompt[0]

    def prompt_ids(entry) -> list[int]:
        if isinstance(prompt, str):
            return entry.tok.encode(prompt)
        if any(not 0 <= t < entry.model.vocab_size for t in prompt):
            raise ApiError(ErrorCode.BAD_REQUEST, f"prompt: token ids must be in [0, {entry.model.vocab_size})")
        return list(prompt)

    return await _answer(request, body, prompt_ids, "text")


@router.get("/models")
async def models(request: Request):
    """The models this server can answer with: the local store and --models directories, with card metrics."""
    data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": "zoo", "zoo": m.metrics}
            for m in available(request.app.state.manager)]
    return {"object": "list", "data": data}
