"""Progress events: the engine publishes, the REST event stream and the widgets subscribe.

An event is a plain dict with at least ``type`` (``instance`` or ``job``), ``instance``, ``org_id``,
``state`` and ``ts``. Subscribers get their own bounded queue; a slow subscriber loses its oldest
events (and is told so by a ``{"type": "overflow"}`` event) instead of slowing the engine down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class EventBus:
    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subscribers: list[tuple[asyncio.Queue[Event], Callable[[Event], bool]]] = []

    def publish(self, event: Event) -> None:
        event.setdefault("ts", time.time())
        for queue, accept in list(self._subscribers):
            if not accept(event):
                continue
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait({"type": "overflow", "ts": event["ts"]})
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, accept: Callable[[Event], bool] = lambda e: True
    ) -> AsyncIterator[asyncio.Queue[Event]]:
        """``async with bus.subscribe(filter) as queue: event = await queue.get()``."""
        entry: tuple[asyncio.Queue[Event], Callable[[Event], bool]] = (asyncio.Queue(self.maxsize), accept)
        self._subscribers.append(entry)
        try:
            yield entry[0]
        finally:
            self._subscribers.remove(entry)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
