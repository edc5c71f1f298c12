"""LocalTransport: the Transport contract with real subprocesses and files."""

import asyncio
import logging
import os
import time

import pytest

from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.transport import TransportError, command_line


@pytest.fixture
def t():
    return LocalTransport()


async def test_run_returns_rc_stdout_stderr(t):
    r = await t.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.rc, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)


async def test_argv_is_not_a_shell(t, tmp_path):
    pwned = tmp_path / "pwned"
    r = await t.run(["echo", f"$(touch {pwned})", "`id`", "a;b"])
    assert r.stdout == f"$(touch {pwned}) `id` a;b\n"
    assert not pwned.exists()


async def test_stdin_is_passed(t):
    r = await t.run(["cat"], stdin="héllo\n")
    assert r.stdout == "héllo\n"


async def test_command_not_found_is_a_result(t):
    r = await t.run(["/nonexistent/heroes-cmd"])
    assert r.rc == 127 and "command not found" in r.stderr


async def test_a_string_is_not_an_argv(t):
    with pytest.raises(TypeError, match="argv must be a non-empty list of strings"):
        await t.run("echo hi")
    with pytest.raises(ValueError, match="NUL"):
        await t.run(["echo", "a\x00"])


async def test_timeout_kills_the_process_group(t, tmp_path):
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(TransportError, match=r"did not finish within 0.5 s") as e:
        await t.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert e.value.transient and e.value.reason == "timeout"
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the background child of a timed-out command survived")


async def test_concurrency_is_bounded():
    t = LocalTransport(max_concurrency=2)
    start = time.monotonic()
    await asyncio.gather(*(t.run(["sleep", "0.3"]) for _ in range(6)))
    assert time.monotonic() - start >= 0.85
    assert t.stats["run"] == 6


async def test_files(t, tmp_path):
    d = str(tmp_path / "a" / "b")
    await t.makedirs(d)
    await t.makedirs(d)  # idempotent
    await t.write_bytes(f"{d}/x.sh", b"#!/bin/sh\n", mode=0o700)
    st = await t.stat(f"{d}/x.sh")
    assert (st.size, st.mode, st.is_dir) == (10, 0o700, False)
    assert (await t.stat(d)).is_dir
    assert await t.listdir(d) == ["x.sh"]
    assert await t.read_bytes(f"{d}/x.sh") == b"#!/bin/sh\n"
    async with await t.open(f"{d}/y", "wb") as f:
        await f.write(b"abc")
    async with await t.open(f"{d}/y", "ab") as f:
        await f.write(b"def")
    assert await t.read_bytes(f"{d}/y") == b"abcdef"
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    await t.put_file(str(src), f"{d}/copy", mode=0o600)
    await t.get_file(f"{d}/copy", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"payload"
    await t.remove(f"{d}/y")
    assert not await t.exists(f"{d}/y")
    with pytest.raises(TransportError, match="no such file or directory") as e:
        await t.remove(f"{d}/y")
    assert e.value.reason == "not_found" and not e.value.transient
    with pytest.raises(ValueError, match="mode must be"):
        await t.open(f"{d}/y", "r+")


async def test_logs_first_word_and_duration_only(t, caplog):
    with caplog.at_level(logging.DEBUG, logger="jupyter_heroes.clusters"):
        await t.run(["echo", "secret-token-value"])
        await t.write_bytes("/dev/null", b"secret-file-content")
    text = caplog.text
    assert "run echo" in text and "secret" not in text


def test_command_line_round_trips():
    import shlex

    argv = ["sbatch", "--comment=$(id) `x` 'q' \"d\"", "a b", "x\ny", ""]
    assert shlex.split(command_line(argv)) == argv
