"""A streaming response that gives its model back however the response ends, and the warm-up of the
streaming path that the server runs at start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ReleasingStream(StreamingResponse):
    """A StreamingResponse over an async generator that, once the response is over (complete, failed or
    cancelled), closes the generator and calls `on_close` exactly once.

    Releasing the model in the generator's own `finally` is not enough: when the client is gone before the
    first byte (an ASGI 2.4 server raises OSError on the status line), Starlette never starts the generator,
    so its `finally` never runs and the model would stay busy for good.
    """

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], media_type: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # a suspended generator cancels its sequence; unstarted: no-op
            self._on_close()


async def warm_streaming() -> None:
    """Load what a streamed answer needs on first use (anyio's asyncio backend, which Starlette's streaming
    response imports lazily: ~0.1 s), so the first streaming request after start-up does not pay for it."""
    async with anyio.create_task_group():
        pass
