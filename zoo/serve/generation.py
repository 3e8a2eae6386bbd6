"""One generation for an HTTP request: zoo.runtime's Session.stream run in a worker thread, its text pieces
handed to the event loop, stopped when the client goes away.

The model's KV cache serves one sequence at a time, so a generation holds the model's lock from start
to end (requests to one model queue; batching them is a later piece). Each request starts from an empty
history (`Session.reset`), so an answer does not depend on the requests before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from zoo.runtime import Result, SamplingParams

from .errors import ApiError, ErrorCode
from .manager import Loaded

log = logging.getLogger("zoo.serve")
POLL_S = 0.25  # how often a non-streaming request checks whether its client is still there


@dataclass
class Job:
    """What to generate: prompt token ids, at most max_tokens new ones (None = the rest of the context)."""

    prompt_ids: list[int]
    max_tokens: int | None
    params: SamplingParams
    stop: list[str] = field(default_factory=list)
    result: Result = field(default_factory=Result)

    def fit(self, ctx: int) -> None:
        """Check the prompt and max_tokens against the context (400 naming the limits) and fill in the default."""
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


_DONE = object()
_WORKQUEUE = threading.Lock()


def _kernels_exclusive():
    """A lock when numba runs on its workqueue threading layer, which aborts the process if two threads
    launch parallel kernels at once (two models generating together); nothing on omp or tbb."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = None
    return _WORKQUEUE if layer in (None, "workqueue") else contextlib.nullcontext()


async def generate(entry: Loaded, job: Job,
                   disconnected: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[str]:
    """Yield the text pieces of `job` (job.result is complete once the iterator ends).

    Closing the iterator early (a streaming client went away: Starlette cancels the response) or
    `disconnected()` turning true (checked every POLL_S) stops the worker at its next piece, and so does
    the manager's `halt` (the server is stopping: the answer ends normally, cut short); the model's lock is
    released only once the worker has let go of the KV cache.
    """
    job.fit(entry.model.ctx)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            with _kernels_exclusive():
                _run()
        except BaseException as err:  # handed to the request, which turns it into the API's error
            loop.call_soon_threadsafe(queue.put_nowait, err)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    def _run() -> None:
        entry.session.reset()
        pieces = entry.session.stream(job.prompt_ids, job.max_tokens, job.params, job.stop, job.result)
        try:
            for piece in pieces:
                if stop.is_set() or entry.halt.is_set():
                    job.result.finish_reason = "interrupted"
                    if entry.halt.is_set():
                        log.info("%s: stopped after %d of %d tokens (the server is stopping)", entry.name,
                                 job.result.generated_tokens, job.max_tokens)
                    break
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        finally:
            pieces.close()

    done = False
    async with entry.lock:
        worker = loop.run_in_executor(None, work)
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
                if item is _DONE or isinstance(item, BaseException):
                    done = True
                    if item is _DONE:
                        return
                    raise item
                yield item
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):  # the lock is held until the worker is out of the KV cache
                await worker
            if not done:
                log.info("%s: stopped after %d of %d tokens (request cancelled: the client went away)", entry.name,
                         job.result.generated_tokens, job.max_tokens)
