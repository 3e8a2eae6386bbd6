"""Ollama-compatible routes: /api/chat, /api/generate (NDJSON streams, or one object with stream false),
/api/tags, /api/show, /api/ps, /api/version.

Sampling defaults are Ollama's documented ones (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1);
`num_predict` below 1 means "until the context is full", as in Ollama. An empty chat or prompt loads the
model (`done_reason: "load"`), or unloads it with keep_alive 0, as Ollama does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from zoo import __version__
from zoo.runtime import SamplingParams

from .errors import ApiError, ErrorCode, failure
from .generation import Job, generate
from .listing import ModelInfo, available, find
from .manager import Loaded, parse_duration
from .streaming import ReleasingStream

router = APIRouter(prefix="/api")

DONE_REASON = {"eos": "stop", "stop": "stop", "length": "length", "interrupted": "stop"}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Ollama ignores what it does not know, and so do we


class Options(_Lenient):
    num_predict: int | None = None
    num_ctx: int | None = Field(None, ge=1)  # the request's context window, at most the loaded model's
    temperature: float = Field(0.8, ge=0, allow_inf_nan=False)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.9, gt=0, le=1, allow_inf_nan=False)
    repeat_penalty: float = Field(1.1, gt=0, allow_inf_nan=False)
    seed: int | None = None
    stop: str | list[str] | None = None

    def job(self, prompt_ids: list[int]) -> Job:
        seed = self.seed if self.seed is not None and self.seed >= 0 else None  # Ollama: negative = random
        params = SamplingParams(self.temperature, self.top_k, self.top_p, self.repeat_penalty, seed)
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        max_tokens = self.num_predict if self.num_predict is not None and self.num_predict > 0 else None
        return Job(prompt_ids, max_tokens, params, stop, ctx=self.num_ctx)


class Message(_Lenient):
    role: str
    content: str = ""
    images: list[Any] | None = None


class _Generate(_Lenient):
    model: str = Field(min_length=1)
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | float | None = None
    format: str | dict | None = None

    def check(self) -> float | None | bool:
        """Refuse what is not built; return the request's keep-alive (True: the server's)."""
        if self.format:
            raise ApiError(ErrorCode.BAD_REQUEST, "format: structured (JSON) output is not supported")
        return True if self.keep_alive is None else parse_duration(self.keep_alive)


class ChatRequest(_Generate):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Any] | None = None


class GenerateRequest(_Generate):
    prompt: str = ""
    system: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[Any] | None = None
    suffix: str | None = None


class ShowRequest(_Lenient):
    model: str | None = None
    name: str | None = None  # older clients


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


async def _answer(request: Request, body: _Generate, prompt_ids_of, kind: str):
    """Load the model, check the request, then answer with one object or an NDJSON stream."""
    t0 = time.perf_counter()
    keep_alive = body.check()
    manager = request.app.state.manager
    entry = await manager.get(body.model)
    load_s = time.perf_counter() - t0
    ids = None
    try:
        ids = prompt_ids_of(entry)
        if ids is not None:
            job = body.options.job(ids)
            job.fit(entry.model.ctx)  # refuse before a stream starts (a 400, not an error inside a 200)
    except BaseException:
        manager.release(entry, keep_alive)
        raise
    head = {"model": entry.name}
    empty = {"message": {"role": "assistant", "content": ""}} if kind == "chat" else {"response": ""}
    if ids is None:  # no messages / no prompt: load (or unload with keep_alive 0) and say so
        manager.release(entry, keep_alive)
        return {**head, "created_at": _now(), **empty, "done": True,
                "done_reason": "unload" if keep_alive == 0 else "load"}

    def piece(text: str) -> dict:
        out = {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text}
        return {**head, "created_at": _now(), **out, "done": False}

    def final(text: str) -> dict:
        r = job.result
        out = {**piece(text), "done": True, "done_reason": DONE_REASON[r.finish_reason],
               "total_duration": _ns(time.perf_counter() - t0), "load_duration": _ns(load_s),
               "prompt_eval_count": r.prompt_tokens, "prompt_eval_duration": _ns(r.prefill_s),
               "eval_count": r.generated_tokens, "eval_duration": _ns(r.decode_s)}
        if kind == "generate":
            out["context"] = list(ids) + list(r.tokens)
        return out

    if not body.stream:
        try:
            text = "".join([p async for p in generate(entry, job, request.is_disconnected)])
        finally:
            manager.release(entry, keep_alive)
        return final(text)

    async def lines() -> AsyncIterator[str]:
        try:
            async for text in generate(entry, job):
                yield json.dumps(piece(text)) + "\n"
            yield json.dumps(final("")) + "\n"
        except Exception as err:  # the status line is sent: the error goes in the stream, as Ollama does
            yield json.dumps({"error": str(failure(err))}) + "\n"

    return ReleasingStream(lines(), lambda: manager.release(entry, keep_alive), "application/x-ndjson")


@router.post("/chat")
async def chat(body: ChatRequest, request: Request):
    """A chat turn through the model's chat template."""
    if body.tools:
        raise ApiError(ErrorCode.BAD_REQUEST, "tools: not supported")
    if any(m.images for m in body.messages):
        raise ApiError(ErrorCode.BAD_REQUEST, "images: not supported (text models only)")
    messages = [{"role": m.role, "content": m.content} for m in body.messages]

    def prompt_ids(entry: Loaded) -> list[int] | None:
        if not messages:
            return None
        return entry.tok.encode(entry.tok.render_chat(messages, add_generation_prompt=True))

    return await _answer(request, body, prompt_ids, "chat")


@router.post("/generate")
async def generate_route(body: GenerateRequest, request: Request):
    """A completion: the prompt through the chat template (with `system`), or as is with raw true;
    `context` (the ids a previous answer returned) continues that conversation."""
    if body.images:
        raise ApiError(ErrorCode.BAD_REQUEST, "images: not supported (text models only)")
    if body.suffix:
        raise ApiError(ErrorCode.BAD_REQUEST, "suffix: fill-in-the-middle is not supported")

    def prompt_ids(entry: Loaded) -> list[int] | None:
        if not body.prompt:
            return None
        if body.context and any(not 0 <= t < entry.model.vocab_size for t in body.context):
            raise ApiError(ErrorCode.BAD_REQUEST, f"context: token ids must be in [0, {entry.model.vocab_size})")
        if body.raw:
            text = body.prompt
        else:
            system = [{"role": "system", "content": body.system}] if body.system else []
            text = entry.tok.render_chat(system + [{"role": "user", "content": body.prompt}])
        return list(body.context or []) + entry.tok.encode(text, add_bos=None if not body.context else False)

    return await _answer(request, body, prompt_ids, "generate")


def _details(info: ModelInfo) -> dict:
    """Ollama's `details` from the card: family, parameter count, quantization (bits and sparsity)."""
    m = info.metrics
    arch = m["architecture"] or "unknown"
    params = m["parameters"]
    size = (f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M") if params else ""
    quant = [f"{m['bits']}-bit" if m["bits"] else "", f"sparse{round(m['sparsity'] * 100)}" if m["sparsity"] else ""]
    base = (info.card.get("base_model") or {}).get("name") if isinstance(info.card.get("base_model"), dict) else None
    return {"parent_model": base or "", "format": "zoo", "family": arch, "families": [arch],
            "parameter_size": size, "quantization_level": " ".join(q for q in quant if q)}


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat()


@router.get("/tags")
async def tags(request: Request):
    """The models this server can answer with (the local store and --models directories)."""
    return {"models": [{"name": m.name, "model": m.name, "modified_at": _iso(m.created), "size": m.size,
                        "digest": m.digest, "details": _details(m)} for m in available(request.app.state.manager)]}


@router.post("/show")
async def show(body: ShowRequest, request: Request):
    """A model's card fields and chat template (it must be in the store or served from a directory)."""
    from zoo.format import open_artifact
    from zoo.store import Store

    manager = request.app.state.manager
    name = body.model or body.name
    info = find(manager, name or "")
    if info is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"model {name!r} not found (not in the local store)")
    path = manager.paths.get(info.name) or Store().path(*info.name.rsplit(":", 1))
    config = open_artifact(path).config
    arch = config.get("arch", "unknown")
    model_info = {"general.architecture": arch, "general.parameter_count": info.metrics["parameters"],
                  f"{arch}.context_length": config.get("max_seq_len"), f"{arch}.embedding_length": config.get("dim"),
                  f"{arch}.block_count": config.get("n_layers"), "zoo.card": info.card}
    return {"modelfile": "", "parameters": "", "template": (config.get("tokenizer") or {}).get("chat_template") or "",
            "license": info.card.get("license") or "", "details": _details(info), "model_info": model_info,
            "capabilities": ["completion"], "modified_at": _iso(info.created)}


@router.get("/ps")
async def ps(request: Request):
    """The models loaded now, with when each will be unloaded (and, under "zoo", its batch scheduler's counts)."""
    manager = request.app.state.manager
    listed = {m.name: m for m in available(manager)}
    out = []
    for entry in list(manager.loaded.values()):
        info = listed.get(entry.name) or ModelInfo(entry.name, entry.size, "", 0, {})
        expires = entry.expires_wall()
        out.append({"name": entry.name, "model": entry.name, "size": entry.size, "size_vram": 0,
                    "digest": info.digest, "details": _details(info), "context_length": entry.model.ctx,
                    "expires_at": _iso(expires) if expires is not None else "9999-12-31T23:59:59+00:00",
                    "zoo": entry.scheduler.stats()})
    return {"models": out}


@router.get("/version")
async def version():
    """The server's version (zoo's)."""
    return {"version": __version__}
