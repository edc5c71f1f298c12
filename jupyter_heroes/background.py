"""Coroutines started in the background (fire and forget) that are neither lost nor silent.

``asyncio.ensure_future(coro)`` without keeping the task is a known trap: the event loop holds only
weak references to tasks, so a task nobody references can be garbage-collected before it finishes
(the ``asyncio.create_task`` documentation says to keep a reference), and its exception is reported
only as "Task exception was never retrieved" when it is collected. :func:`spawn` keeps every task
until it ends and logs what failed, saying what the task was for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("jupyter_heroes.background")

#: the tasks started with :func:`spawn` that have not ended yet
running: set[asyncio.Task[Any]] = set()


def spawn(
    coro: Coroutine[Any, Any, Any], what: str, logger: logging.Logger | None = None
) -> asyncio.Task[Any]:
    """Run *coro* on the running event loop in the background. *what* names it in the log line
    written if it fails ("launching workflow 3f2a..."). Returns the task (cancel it to stop it)."""
    task = asyncio.ensure_future(coro)
    running.add(task)

    def ended(t: asyncio.Task[Any]) -> None:
        running.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            (logger or log).error("%s failed: %s", what, exc, exc_info=exc)

    task.add_done_callback(ended)
    return task
