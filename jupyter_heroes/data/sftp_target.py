"""A :class:`~.target.FileTarget` over SFTP, from a paramiko ``SFTPClient``.

The SFTP channel the caller hands over is the first of a small pool: each open file holds a channel
of its own until it is closed (paramiko's pipelined writes and prefetched reads are not meant to be
shared between threads), and more channels are opened on the same SSH connection as needed, up to
*max_channels* (keep it below the server's ``MaxSessions``, OpenSSH's default is 10).

``rename`` uses OpenSSH's ``posix-rename@openssh.com`` so a finished file replaces an older one
atomically. ``checksum`` runs ``sha256sum`` on the server when an exec channel is allowed
(``exec_checksum=True``, the default; the path is quoted with :func:`shlex.quote`), so verifying a
copy does not pull the file back over the network; without it the stager reads the file back.

Connection failures become :class:`~.errors.Unavailable` (transient): the caller reconnects and
runs the staging again, which resumes from the ``.part`` files.
"""

from __future__ import annotations

import asyncio
import posixpath
import shlex
import stat as statmod
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import paramiko

from .errors import Unavailable
from .target import MODES, BlockingTarget, TargetEntry, TargetFile, TargetStat, ThreadFile

T = TypeVar("T")


class SFTPTarget(BlockingTarget):
    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        *,
        max_channels: int = 4,
        timeout: float = 60.0,
        exec_checksum: bool = True,
        max_workers: int | None = None,
    ) -> None:
        super().__init__(max_workers=max_workers or max_channels + 2)
        self._transport: paramiko.Transport = sftp.get_channel().get_transport()
        self.host = "{}:{}".format(*self._transport.getpeername()[:2]) if self._transport.sock else "?"
        self.timeout = timeout
        self.exec_checksum = exec_checksum
        self.max_channels = max(1, max_channels)
        sftp.get_channel().settimeout(timeout)
        self._free: list[paramiko.SFTPClient] = [sftp]
        self._count = 1
        self._cond = threading.Condition()
        self._owned: list[paramiko.SFTPClient] = []
        # channels are handed out in the event loop (never by blocking a worker thread): an operation
        # or an open file holds one slot until it ends
        self._slots = asyncio.Semaphore(self.max_channels)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await self._run(fn, *args)

    async def open(self, path: str, mode: str) -> TargetFile:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            raw, checkin = await self._run(self._open, path, mode)
        except BaseException:
            self._slots.release()
            raise

        def on_close() -> None:  # runs in a worker thread
            checkin()
            loop.call_soon_threadsafe(self._slots.release)

        return ThreadFile(self, raw, on_close)

    # --- channel pool ---------------------------------------------------------------------------
    def _checkout(self) -> paramiko.SFTPClient:
        with self._cond:
            while True:
                if self._free:
                    return self._free.pop()
                if self._count < self.max_channels:
                    self._count += 1
                    break
                if not self._cond.wait(self.timeout):
                    raise Unavailable(
                        f"no SFTP channel to {self.host} became free within {self.timeout:.0f}s"
                    )
        try:
            client = paramiko.SFTPClient.from_transport(self._transport)
            if client is None:
                raise paramiko.SSHException("the server refused the sftp subsystem")
            client.get_channel().settimeout(self.timeout)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        self._owned.append(client)
        return client

    def _checkin(self, client: paramiko.SFTPClient) -> None:
        with self._cond:
            if client.sock.closed:
                self._count -= 1
            else:
                self._free.append(client)
            self._cond.notify()

    def _with(self, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        client = self._checkout()
        try:
            return fn(client)
        finally:
            self._checkin(client)

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (TimeoutError, paramiko.SSHException, EOFError, ConnectionError) as e:
            raise Unavailable(
                f"lost the SFTP connection to {self.host} ({type(e).__name__}: {e}); reconnect and run the staging "
                "again, it resumes where it stopped"
            ) from None
        except OSError as e:
            if e.errno is None:  # paramiko's "Socket is closed" and friends
                raise Unavailable(
                    f"lost the SFTP connection to {self.host} ({e}); reconnect and run the staging again"
                ) from None
            raise

    # --- the protocol ---------------------------------------------------------------------------
    def _stat(self, path: str) -> TargetStat:
        st = self._with(lambda c: c.lstat(path))
        return TargetStat.from_mode(st.st_mode or 0, st.st_size or 0, float(st.st_mtime or 0))

    def _open(self, path: str, mode: str) -> tuple[BinaryIO, Callable[[], None]]:
        client = self._checkout()
        try:
            f = client.open(path, mode, bufsize=-1)
            if mode == "rb":
                f.prefetch()
            else:
                f.set_pipelined(True)
        except BaseException:
            self._checkin(client)
            raise
        return f, lambda: self._checkin(client)  # type: ignore[return-value]

    def _makedirs(self, path: str) -> None:
        def make(c: paramiko.SFTPClient) -> None:
            missing = []
            p = posixpath.normpath(path)
            while p not in ("/", ""):
                try:
                    c.stat(p)
                    break
                except FileNotFoundError:
                    missing.append(p)
                    p = posixpath.dirname(p)
            for d in reversed(missing):
                try:
                    c.mkdir(d)
                except OSError:
                    if not _is_dir(c, d):  # else created meanwhile by a parallel transfer
                        raise

        self._with(make)

    def _rename(self, src: str, dst: str) -> None:
        self._with(lambda c: c.posix_rename(src, dst))

    def _remove(self, path: str) -> None:
        self._with(lambda c: c.remove(path))

    def _listdir(self, path: str) -> list[TargetEntry]:
        attrs = self._with(lambda c: c.listdir_attr(path))
        return sorted(
            (
                TargetEntry(
                    a.filename, TargetStat.from_mode(a.st_mode or 0, a.st_size or 0, float(a.st_mtime or 0))
                )
                for a in attrs
            ),
            key=lambda e: e.name,
        )

    async def realpath(self, path: str) -> str:
        return await self._call(lambda: self._with(lambda c: c.normalize(path)))

    async def checksum(self, path: str) -> str | None:
        """SHA-256 computed on the server by ``sha256sum``; None if exec is disabled or it fails."""
        if not self.exec_checksum:
            return None
        return await self._run(self._remote_sha256, path)

    def _remote_sha256(self, path: str) -> str | None:
        chan = self._transport.open_session(timeout=self.timeout)
        try:
            chan.settimeout(max(self.timeout, 600.0))
            chan.exec_command("sha256sum -- " + shlex.quote(path))
            out = b""
            while True:
                data = chan.recv(65536)
                if not data:
                    break
                out += data
            if chan.recv_exit_status() != 0:
                return None
        finally:
            chan.close()
        word = out.split(b" ", 1)[0].decode("ascii", "replace").lstrip("\\")
        return word if len(word) == 64 else None

    async def close(self) -> None:
        """Close the channels this target opened (not the caller's SFTP client nor the connection)."""
        for c in self._owned:
            c.close()
        await super().close()


def _is_dir(c: paramiko.SFTPClient, path: str) -> bool:
    try:
        return statmod.S_ISDIR(c.stat(path).st_mode or 0)
    except OSError:
        return False
