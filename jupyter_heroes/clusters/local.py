"""The local transport: commands are subprocesses of this machine, files are local files.

This is the embedded default for ``heroes demo`` (with :class:`~.localsched.LocalScheduler`) and the
in-process layer of the tests. Commands are started with :func:`asyncio.create_subprocess_exec` (an
argv, never a shell), each in its own session so a timeout kills the whole process group. File
operations run in the default executor so the event loop never blocks on a slow disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat as stat_mod
from typing import Any, BinaryIO

from .transport import CommandResult, FileStat, Transport, TransportError


class LocalTransport(Transport):
    """Run commands and move files on this machine, with the same interface as SSH."""

    name = "local"

    def describe(self) -> str:
        return "this machine"

    async def _do_run(self, argv: list[str], stdin: bytes | None, timeout: float) -> CommandResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            # like a shell: "command not found" is exit status 127, not a transport failure
            return CommandResult(127, "", f"{argv[0]}: command not found\n")
        except PermissionError:
            return CommandResult(126, "", f"{argv[0]}: permission denied\n")
        try:
            out, err = await proc.communicate(stdin)
        except BaseException:
            # timeout or cancellation: kill the whole process group, reap it, re-raise
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        rc = proc.returncode if proc.returncode is not None else -1
        if rc < 0:  # killed by a signal: report it the way a shell does
            rc = 128 - rc
        return CommandResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    # files: blocking calls in the default executor
    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _do_put(self, local: str, remote: str, mode: int | None) -> None:
        def put() -> None:
            shutil.copyfile(local, remote)
            if mode is not None:
                os.chmod(remote, mode)

        await self._blocking(put)

    async def _do_get(self, remote: str, local: str) -> None:
        await self._blocking(shutil.copyfile, remote, local)

    async def _do_open(self, path: str, mode: str) -> BinaryIO:
        return await self._blocking(open, path, mode)

    async def _do_write_file(self, path: str, data: bytes, mode: int | None) -> None:
        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if mode is not None:
                os.chmod(path, mode)

        await self._blocking(write)

    async def _do_stat(self, path: str) -> FileStat:
        st = await self._blocking(os.stat, path)
        return FileStat(st.st_size, st.st_mtime, stat_mod.S_IMODE(st.st_mode), stat_mod.S_ISDIR(st.st_mode))

    async def _do_listdir(self, path: str) -> list[str]:
        return await self._blocking(os.listdir, path)

    async def _do_makedirs(self, path: str, mode: int) -> None:
        await self._blocking(lambda: os.makedirs(path, mode=mode, exist_ok=True))

    async def _do_remove(self, path: str) -> None:
        await self._blocking(os.remove, path)

    async def _file_read(self, raw: BinaryIO, size: int) -> bytes:
        return await self._blocking(raw.read, size)

    async def _file_write(self, raw: BinaryIO, data: bytes) -> None:
        await self._blocking(raw.write, data)

    async def _file_close(self, raw: BinaryIO) -> None:
        await self._blocking(raw.close)

    def _classify(self, op: str, what: str, exc: BaseException) -> TransportError:
        if isinstance(exc, IsADirectoryError | NotADirectoryError):
            return TransportError(f"{op}: {exc.strerror}", False, "not_a_file")
        return super()._classify(op, what, exc)
