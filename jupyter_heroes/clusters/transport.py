"""How HEROES reaches a cluster: run a command given as an argv, move files.

A :class:`Transport` is one small base class with two thin subclasses, :class:`~.ssh.SSHTransport`
(a pooled paramiko connection to a login node) and :class:`~.local.LocalTransport` (subprocesses on
this machine, the embedded default of ``heroes demo``). Schedulers (:mod:`.scheduler`) only ever talk
to a cluster through this interface, so any scheduler runs over any transport.

Every operation goes through one choke point, :meth:`Transport._call`, which

- bounds concurrency (``max_concurrency`` operations in flight, the rest wait their turn),
- puts the operation under ``asyncio.wait_for`` with a timeout,
- logs the operation, the command's first word and the duration only (never arguments, file
  contents or keys),
- turns every failure into a :class:`TransportError` whose ``transient`` flag tells the caller
  whether trying again later can help,
- counts commands (:attr:`Transport.stats`), which the benchmarks and tests read.

Commands are argv lists. Transports that need a command *line* (SSH's exec request is a string
that the remote login shell parses) build it with :func:`shlex.join`, never by pasting user data
into a shell string.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from traitlets import Float, Integer, default
from traitlets.config import LoggingConfigurable

T = TypeVar("T")


class TransportError(Exception):
    """A command or file operation could not be carried out.

    ``message`` says what happened and what to do; ``transient`` is True when the same operation may
    succeed later (connection lost, timeout, server restarting) and False when retrying cannot help
    (host key mismatch, authentication refused, no such file); ``reason`` is a short machine code
    for API answers and metrics.
    """

    def __init__(self, message: str, transient: bool, reason: str = "transport_error") -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.reason = reason

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned: exit status, decoded stdout and stderr."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime: float
    mode: int
    is_dir: bool


def validate_argv(argv: Sequence[str]) -> list[str]:
    """An argv is a non-empty list of strings without NUL bytes (which no OS can pass on)."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence) or not argv:
        raise TypeError(
            "argv must be a non-empty list of strings, e.g. ['squeue', '--me']; a command line is not accepted"
        )
    out = []
    for a in argv:
        if not isinstance(a, str):
            raise TypeError(f"argv items must be str, got {type(a).__name__}")
        if "\x00" in a:
            raise ValueError("argv items must not contain NUL bytes")
        out.append(a)
    return out


def command_line(argv: Sequence[str]) -> str:
    """The POSIX shell command line that runs exactly *argv* (each word quoted by :func:`shlex.join`)."""
    return shlex.join(validate_argv(argv))


class RemoteFile:
    """An open file on the cluster. Methods are coroutines that run through the transport's choke
    point; use ``async with await transport.open(path, "wb") as f: await f.write(data)``."""

    def __init__(self, transport: Transport, raw: Any, path: str) -> None:
        self._transport = transport
        self._raw = raw
        self.path = path

    async def read(self, size: int = -1) -> bytes:
        return await self._transport._call("read", "", lambda: self._transport._file_read(self._raw, size))

    async def write(self, data: bytes) -> None:
        await self._transport._call("write", "", lambda: self._transport._file_write(self._raw, data))

    async def close(self) -> None:
        await self._transport._call("close", "", lambda: self._transport._file_close(self._raw))

    async def __aenter__(self) -> RemoteFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Transport(LoggingConfigurable):
    """Base class: the public coroutines validate arguments and go through :meth:`_call`; subclasses
    implement the ``_do_*`` hooks (each returns an awaitable) and :meth:`_classify`."""

    #: entry point name (``jupyter_heroes.transports``)
    name = "base"

    timeout = Float(
        60.0,
        config=True,
        help="""Default time limit, in seconds, of one command or file operation when the caller gives
        none. The command is abandoned (and its channel or process closed) when it passes; the caller
        gets a transient TransportError. Schedulers pass their own, shorter limits for polls.""",
    )
    max_concurrency = Integer(
        8,
        config=True,
        help="""How many commands and file operations may be in flight at once on this transport; more
        wait their turn. For SSH keep it below the server's MaxSessions (OpenSSH default 10): each
        command is one channel on the shared connection.""",
    )

    @default("log")
    def _log_default(self) -> logging.Logger:
        return logging.getLogger("jupyter_heroes.clusters")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._semaphore: asyncio.Semaphore | None = None
        #: counters by operation: ``stats["run"]`` is the number of commands started, ``stats["run:squeue"]``
        #: the number of squeue commands (first word of the argv, without its directory)
        self.stats: Counter[str] = Counter()

    @classmethod
    def from_cluster(cls, cluster: Any, private_key: str | None = None, **kwargs: Any) -> Transport:
        """Build from a :class:`jupyter_heroes.orm.Cluster` row (and its decrypted private key text,
        for transports that need one)."""
        return cls(**kwargs)

    # --- public API --------------------------------------------------------------------------
    async def run(
        self, argv: Sequence[str], *, stdin: bytes | str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run *argv* on the cluster and return its exit status and output. A non-zero exit status is a
        result, not an error; TransportError means the command could not be run or its result was lost."""
        argv = validate_argv(argv)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        t = self.timeout if timeout is None else timeout
        return await self._call("run", argv[0], lambda: self._do_run(argv, data, t), t)

    async def put_file(self, local_path: str, remote_path: str, *, mode: int | None = None) -> None:
        """Copy a local file to the cluster (then ``chmod`` to *mode* if given)."""
        await self._call("put_file", "", lambda: self._do_put(str(local_path), remote_path, mode))

    async def get_file(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the cluster to a local path."""
        await self._call("get_file", "", lambda: self._do_get(remote_path, str(local_path)))

    async def open(self, path: str, mode: str = "rb") -> RemoteFile:
        """Open a file on the cluster in binary mode (``rb``, ``wb``, ``ab``)."""
        if mode not in ("rb", "wb", "ab"):
            raise ValueError(f"mode must be 'rb', 'wb' or 'ab', not {mode!r}")
        raw = await self._call("open", "", lambda: self._do_open(path, mode))
        return RemoteFile(self, raw, path)

    async def read_bytes(self, path: str) -> bytes:
        async with await self.open(path, "rb") as f:
            return await f.read()

    async def write_bytes(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        """Write *data* to *path* (replacing it), then ``chmod`` to *mode* if given."""
        await self._call("write_file", "", lambda: self._do_write_file(path, data, mode))

    async def stat(self, path: str) -> FileStat:
        """Size, mtime, mode of *path*; TransportError(reason="not_found", transient=False) if absent."""
        return await self._call("stat", "", lambda: self._do_stat(path))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except TransportError as e:
            if e.reason == "not_found":
                return False
            raise
        return True

    async def listdir(self, path: str) -> list[str]:
        """Names in directory *path* (sorted)."""
        return sorted(await self._call("listdir", "", lambda: self._do_listdir(path)))

    async def makedirs(self, path: str, *, mode: int = 0o700) -> None:
        """Create *path* and missing parents (like ``mkdir -p``); existing directories are fine."""
        await self._call("makedirs", "", lambda: self._do_makedirs(path, mode))

    async def remove(self, path: str) -> None:
        """Remove a file; TransportError(reason="not_found") if it does not exist."""
        await self._call("remove", "", lambda: self._do_remove(path))

    async def close(self) -> None:
        """Release the connection or processes; the transport may be used again afterwards (it reconnects)."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def describe(self) -> str:
        """Where this transport goes, for messages (no secrets)."""
        return self.name

    # --- the choke point ---------------------------------------------------------------------
    async def _call(
        self, op: str, what: str, factory: Callable[[], Awaitable[T]], timeout: float | None = None
    ) -> T:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        t = self.timeout if timeout is None else timeout
        self.stats[op] += 1
        if what:
            self.stats[f"{op}:{what.rsplit('/', 1)[-1]}"] += 1
        start = time.monotonic()
        outcome = "ok"
        try:
            async with self._semaphore:
                return await asyncio.wait_for(factory(), t)
        except TransportError as e:
            outcome = e.reason
            raise
        except asyncio.TimeoutError:
            outcome = "timeout"
            raise TransportError(
                f"{op} {what}".strip() + f" on {self.describe()} did not finish within {t:g} s; "
                "the cluster may be overloaded or unreachable. It will be retried; if it keeps happening, "
                "check the cluster or raise the timeout.",
                transient=True,
                reason="timeout",
            ) from None
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as e:
            err = self._classify(op, what, e)
            outcome = err.reason
            raise err from e
        finally:
            self.log.debug(
                "%s %s %s%s %.3fs %s",
                self.name,
                self.describe(),
                op,
                f" {what}" if what else "",
                time.monotonic() - start,
                outcome,
            )

    def _classify(self, op: str, what: str, exc: BaseException) -> TransportError:
        """Turn a library exception into a TransportError (subclasses know their library's errors)."""
        if isinstance(exc, FileNotFoundError):
            return TransportError(f"{op}: no such file or directory on {self.describe()}", False, "not_found")
        if isinstance(exc, PermissionError):
            return TransportError(f"{op}: permission denied on {self.describe()}", False, "permission_denied")
        if isinstance(exc, (TypeError, ValueError)):
            raise exc
        return TransportError(f"{op} {what}".strip() + f" on {self.describe()} failed: {exc}", False, "error")

    # --- hooks -------------------------------------------------------------------------------
    async def _do_run(self, argv: list[str], stdin: bytes | None, timeout: float) -> CommandResult:
        raise NotImplementedError

    async def _do_put(self, local: str, remote: str, mode: int | None) -> None:
        raise NotImplementedError

    async def _do_get(self, remote: str, local: str) -> None:
        raise NotImplementedError

    async def _do_open(self, path: str, mode: str) -> Any:
        raise NotImplementedError

    async def _do_write_file(self, path: str, data: bytes, mode: int | None) -> None:
        raise NotImplementedError

    async def _do_stat(self, path: str) -> FileStat:
        raise NotImplementedError

    async def _do_listdir(self, path: str) -> list[str]:
        raise NotImplementedError

    async def _do_makedirs(self, path: str, mode: int) -> None:
        raise NotImplementedError

    async def _do_remove(self, path: str) -> None:
        raise NotImplementedError

    async def _file_read(self, raw: Any, size: int) -> bytes:
        raise NotImplementedError

    async def _file_write(self, raw: Any, data: bytes) -> None:
        raise NotImplementedError

    async def _file_close(self, raw: Any) -> None:
        raise NotImplementedError
