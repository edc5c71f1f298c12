"""Where staging copies files to and from: the small :class:`FileTarget` protocol and a local one.

A file target is a directory tree on a cluster (over SFTP: :mod:`.sftp_target`) or on this machine
(:class:`LocalTarget`). Paths are absolute POSIX paths on the target; the staging layer confines
them under an instance directory before they get here. The protocol is deliberately small so that
any transport can offer it (the clusters' SSH transport, a local directory, a test double):

============================  ===========================================================================
``await stat(path)``          size, mtime and kind *without following a final symlink* (``lstat``);
                              raises ``FileNotFoundError`` if absent
``await open(path, mode)``    a :class:`TargetFile` (``read``/``write``/``close`` coroutines, and
                              ``seek``/``flush`` for writers); modes ``rb``, ``wb`` (truncate), ``ab``
                              (append) and ``r+b`` (write at any offset of an existing file, from 0 or
                              ``seek``: how segments of a large file are written in parallel and a
                              ``.part`` resumed)
``await makedirs(path)``      create a directory and its parents; fine if it exists
``await rename(src, dst)``    move *src* onto *dst*, replacing it atomically
``await remove(path)``        remove a file
``await listdir(path)``       :class:`TargetEntry` items (name + lstat) of a directory
``await checksum(path)``      optional: SHA-256 hex computed where the file is (else the stager reads
                              the file back to verify it)
``await realpath(path)``      optional: the path with symlinks resolved (lets the stager refuse paths
                              that escape the instance directory through a symlink)
============================  ===========================================================================

Blocking implementations subclass :class:`BlockingTarget`, which runs their ``_sync`` methods in a
bounded thread pool.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import stat as statmod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar, cast, runtime_checkable

T = TypeVar("T")

MODES = ("rb", "wb", "ab", "r+b")


@dataclass(frozen=True)
class TargetStat:
    size: int
    mtime: float
    is_dir: bool = False
    is_link: bool = False

    @property
    def is_file(self) -> bool:
        return not (self.is_dir or self.is_link)

    @classmethod
    def from_mode(cls, mode: int, size: int, mtime: float) -> TargetStat:
        return cls(
            size=size or 0, mtime=mtime or 0.0, is_dir=statmod.S_ISDIR(mode), is_link=statmod.S_ISLNK(mode)
        )


@dataclass(frozen=True)
class TargetEntry:
    name: str
    stat: TargetStat


class TargetFile(Protocol):
    async def read(self, size: int = -1) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class FileTarget(Protocol):
    """See the module documentation; ``checksum`` and ``realpath`` are optional."""

    async def stat(self, path: str) -> TargetStat: ...

    async def open(self, path: str, mode: str) -> TargetFile: ...

    async def makedirs(self, path: str) -> None: ...

    async def rename(self, src: str, dst: str) -> None: ...

    async def remove(self, path: str) -> None: ...

    async def listdir(self, path: str) -> list[TargetEntry]: ...


class ThreadFile:
    """A blocking file object whose calls run in the target's thread pool."""

    def __init__(self, target: BlockingTarget, raw: Any, on_close: Callable[[], None] | None = None) -> None:
        self._target = target
        self._raw = raw
        self._on_close = on_close
        self._closed = False

    async def read(self, size: int = -1) -> bytes:
        return await self._target._run(self._raw.read, size)

    async def write(self, data: bytes) -> None:
        await self._target._run(self._raw.write, data)

    async def seek(self, offset: int) -> None:
        """Write from *offset* on (writers only)."""
        await self._target._run(self._raw.seek, offset)

    async def flush(self) -> None:
        """Return once everything written so far is on the target (acknowledged)."""
        await self._target._run(self._raw.flush)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            try:
                self._raw.close()
            finally:
                if self._on_close:
                    self._on_close()

        await asyncio.shield(self._target._run(close))

    async def __aenter__(self) -> ThreadFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class BlockingTarget:
    """Base of targets built on blocking calls: subclasses implement the ``_stat``, ``_open``, ...
    methods; the coroutines run them in a pool of *max_workers* threads."""

    def __init__(self, *, max_workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"heroes-{type(self).__name__}"
        )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._guard, fn, *args))

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        """Hook to translate a subclass's exceptions (runs in the worker thread)."""
        return fn(*args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one filesystem operation (not a read/write on an open file); subclasses may bound them."""
        return await self._run(fn, *args)

    async def stat(self, path: str) -> TargetStat:
        return await self._call(self._stat, path)

    async def open(self, path: str, mode: str) -> TargetFile:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        raw, on_close = await self._call(self._open, path, mode)
        return ThreadFile(self, raw, on_close)

    async def makedirs(self, path: str) -> None:
        await self._call(self._makedirs, path)

    async def rename(self, src: str, dst: str) -> None:
        await self._call(self._rename, src, dst)

    async def remove(self, path: str) -> None:
        await self._call(self._remove, path)

    async def listdir(self, path: str) -> list[TargetEntry]:
        return await self._call(self._listdir, path)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- to implement ---------------------------------------------------------------------------
    def _stat(self, path: str) -> TargetStat:
        raise NotImplementedError

    def _open(self, path: str, mode: str) -> tuple[BinaryIO, Callable[[], None] | None]:
        raise NotImplementedError

    def _makedirs(self, path: str) -> None:
        raise NotImplementedError

    def _rename(self, src: str, dst: str) -> None:
        raise NotImplementedError

    def _remove(self, path: str) -> None:
        raise NotImplementedError

    def _listdir(self, path: str) -> list[TargetEntry]:
        raise NotImplementedError


def sha256_of(f: BinaryIO, chunk: int = 1024 * 1024) -> str:
    h = hashlib.sha256()
    while True:
        data = f.read(chunk)
        if not data:
            return h.hexdigest()
        h.update(data)


class LocalTarget(BlockingTarget):
    """A directory tree on this machine (the local cluster backend, tests)."""

    def _stat(self, path: str) -> TargetStat:
        st = os.lstat(path)
        return TargetStat.from_mode(st.st_mode, st.st_size, st.st_mtime)

    def _open(self, path: str, mode: str) -> tuple[BinaryIO, None]:
        # O_NOFOLLOW: never write through a symlink planted at the destination
        flags = {
            "rb": os.O_RDONLY,
            "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
            "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            "r+b": os.O_WRONLY,
        }
        fd = os.open(path, flags[mode] | os.O_NOFOLLOW, 0o644)
        return cast(BinaryIO, os.fdopen(fd, "wb" if mode == "r+b" else mode)), None

    def _makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def _rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def _remove(self, path: str) -> None:
        os.remove(path)

    def _listdir(self, path: str) -> list[TargetEntry]:
        out = []
        with os.scandir(path) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                out.append(TargetEntry(e.name, TargetStat.from_mode(st.st_mode, st.st_size, st.st_mtime)))
        return sorted(out, key=lambda e: e.name)

    async def checksum(self, path: str) -> str:
        def digest() -> str:
            with open(path, "rb") as f:
                return sha256_of(f)

        return await self._run(digest)

    async def realpath(self, path: str) -> str:
        return await self._run(os.path.realpath, path)
