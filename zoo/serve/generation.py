"""One generation for an HTTP request: a Job submitted to the model's Scheduler (continuous batching:
its decode steps run together with the other requests'), its text pieces handed to the event loop, the
sequence cancelled when the client goes away.

Each request starts from an empty history, so an answer does not depend on the requests before it or
beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from zoo.runtime import Result, SamplingParams

from .errors import ApiError, ErrorCode
from .manager import Loaded
from .scheduler import DONE

POLL_S = 0.25  # how often a non-streaming request checks whether its client is still there


@dataclass
class Job:
    """What to generate: prompt token ids, at most max_tokens new ones (None = the rest of the context)."""

    prompt_ids: list[int]
    max_tokens: int | None
    params: SamplingParams
    stop: list[str] = field(default_factory=list)
    ctx: int | None = None  # the request's own context window (Ollama's num_ctx); None = the model's
    result: Result = field(default_factory=Result)

    def fit(self, ctx: int) -> None:
        """Check the prompt and max_tokens against the context (400 naming the limits) and fill in the default.
        `ctx` is the loaded model's context; a request's own `ctx` may narrow it, not widen it."""
        if self.ctx is not None:
            if self.ctx > ctx:
                raise ApiError(ErrorCode.CONTEXT, f"num_ctx {self.ctx} exceeds the model's context of {ctx} tokens "
                                                  f"(send num_ctx <= {ctx}, or serve it with a larger --ctx)")
            ctx = self.ctx
        n = len(self.prompt_ids)
        if n == 0:
            raise ApiError(ErrorCode.BAD_REQUEST, "the prompt is empty: nothing to generate from")
        if n >= ctx:
            raise ApiError(ErrorCode.CONTEXT, f"context length exceeded: the prompt is {n} tokens and the "
                                              f"context is {ctx} tokens (at least 1 must be left to generate)")
        if self.max_tokens is None:
            self.max_tokens = ctx - n
        elif n + self.max_tokens > ctx:
            raise ApiError(ErrorCode.CONTEXT, f"context length exceeded: {n} prompt tokens + {self.max_tokens} "
                                              f"max tokens = {n + self.max_tokens} > the context of {ctx} tokens")
        self.result = Result(prompt_tokens=n)


async def generate(entry: Loaded, job: Job,
                   disconnected: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[str]:
    """Yield the text pieces of `job` (job.result is complete once the iterator ends).

    Closing the iterator early (a streaming client went away) or `disconnected()` turning true (checked
    every POLL_S) cancels the sequence: the scheduler drops it at its next step and frees its KV slot.
    The manager's `halt` (the server is stopping) ends it normally, cut short.
    """
    job.fit(entry.model.ctx)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def emit(item: object) -> None:  # called from the scheduler thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server has stopped, nobody waits for this
            pass

    seq = entry.scheduler.submit(job, emit)
    done = False
    next_check = time.monotonic() + POLL_S
    try:
        while True:
            if disconnected is None:
                item = await queue.get()
            else:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, next_check - time.monotonic()))
                except asyncio.TimeoutError:
                    item = None
                if time.monotonic() >= next_check:
                    if await disconnected():
                        return
                    next_check = time.monotonic() + POLL_S
                if item is None:
                    continue
            if item is DONE or isinstance(item, BaseException):
                done = True
                if item is DONE:
                    return
                raise item
            yield item
    finally:
        if not done:
            entry.scheduler.cancel(seq)
