"""jupyter_heroes.background.spawn: background tasks kept until they end, failures logged."""

from __future__ import annotations

import asyncio
import gc
import logging

from jupyter_heroes.background import running, spawn


async def test_a_task_is_kept_until_it_ends():
    done = asyncio.Event()
    gate = asyncio.get_running_loop().create_future()

    async def work() -> None:
        await gate
        done.set()

    before = set(running)  # other tests' tasks may still be there
    spawn(work(), "waiting work")  # the caller drops the task
    await asyncio.sleep(0)
    gc.collect()
    mine = running - before
    assert len(mine) == 1 and not next(iter(mine)).done()
    gate.set_result(None)
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0)
    assert not (running & mine)


async def test_a_failure_is_logged_with_what_it_was(caplog):
    async def boom() -> None:
        raise RuntimeError("cluster unreachable")

    with caplog.at_level(logging.ERROR, logger="jupyter_heroes.background"):
        task = spawn(boom(), "launching workflow w1")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records] == ["launching workflow w1 failed: cluster unreachable"]
    assert caplog.records[0].exc_info[0] is RuntimeError and task not in running


async def test_a_cancelled_task_is_not_a_failure(caplog):
    with caplog.at_level(logging.ERROR, logger="jupyter_heroes.background"):
        task = spawn(asyncio.sleep(30), "sleeping")
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert caplog.records == [] and task not in running
