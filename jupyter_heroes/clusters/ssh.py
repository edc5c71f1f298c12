"""The SSH transport: one pooled, pinned, self-healing paramiko connection per cluster.

- **One connection, many channels.** Each command is a session channel on the cluster's single
  connection (opening a channel costs a round trip; a new connection costs a TCP handshake, a key
  exchange and a public-key signature). SFTP runs on a channel of the same connection. TCP_NODELAY
  is set: without it Nagle's algorithm and delayed ACKs add ~40 ms to every channel request.
- **Strict host-key pinning.** The cluster's pinned public host key (``"ssh-ed25519 AAAA..."``) is
  the only entry of a fresh :class:`paramiko.HostKeys`; ``~/.ssh/known_hosts`` is never read and
  unknown keys are refused (:class:`paramiko.RejectPolicy`). A different key raises
  :class:`HostKeyMismatchError`, naming both SHA256 fingerprints.
- **Reconnects** with jittered exponential backoff when the connection drops, bounded by the
  operation's timeout. A command whose channel could not be opened is retried on the new
  connection; a command that was already sent is never re-sent (it may have run: ``sbatch`` twice
  is two jobs) and fails with a transient :class:`~.transport.TransportError` instead.
- **Never blocks the event loop:** paramiko calls run in a bounded thread pool, one thread per
  allowed concurrent operation. Keepalives detect dead connections between commands.
- The private key is given as text (decrypted from the database by the caller); it is parsed once
  and never logged or shown in errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import random
import re
import select
import socket
import stat as stat_mod
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from traitlets import Bool, Float, Integer

from .transport import CommandResult, FileStat, Transport, TransportError, command_line

_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}\$?$", re.IGNORECASE)
_HOST_RE = re.compile(r"^[A-Za-z0-9.:_\[\]-]{1,255}$")


class HostKeyMismatchError(TransportError):
    """The server presented a host key other than the pinned one: never connect (possible
    man-in-the-middle), and tell the operator both fingerprints."""

    def __init__(self, where: str, presented: paramiko.PKey, pinned: paramiko.PKey) -> None:
        self.presented_fingerprint = presented.fingerprint
        self.pinned_fingerprint = pinned.fingerprint
        super().__init__(
            f"The SSH host key of {where} did not match the pinned one: the server presented "
            f"{presented.get_name()} {presented.fingerprint}, the cluster's pinned key is "
            f"{pinned.get_name()} {pinned.fingerprint}. HEROES refused to connect. If the cluster's "
            "administrators changed the host key, update the cluster's pinned host key after checking "
            "the new fingerprint with them; otherwise someone may be intercepting the connection.",
            transient=False,
            reason="host_key_mismatch",
        )


class _NotSent(Exception):
    """The channel could not be opened: the command never reached the server, so retrying is safe."""


def _send_eof(chan: paramiko.Channel) -> None:
    """``chan.shutdown_write()`` without its race (paramiko/paramiko#1705, #1115): paramiko builds the
    EOF under the channel's lock but sends it after releasing it, so when a short command ends at that
    moment the transport thread can answer the server's CLOSE first. The late EOF then names a channel
    OpenSSH has already freed, and it drops the whole connection ("ieof packet referred to
    nonexistent channel"), taking every command in flight on it along. Sending while holding the lock,
    as paramiko's own ``Channel.send`` does, keeps EOF before CLOSE (the fix of paramiko-ng#101)."""
    build = getattr(chan, "_send_eof", None)
    send = getattr(chan.transport, "_send_user_message", None)
    if build is None or send is None:  # a paramiko without these internals: its own, racy way
        chan.shutdown_write()
        return
    with chan.lock:
        if chan.closed or chan.eof_sent:
            return
        m = build()
        if m is not None:
            send(m)


def _detail(exc: BaseException | None) -> str:
    """What went wrong, also for the exceptions paramiko raises without a message."""
    if exc is None:
        return "no reason given"
    if str(exc):
        return str(exc)
    return "the server closed the connection" if isinstance(exc, EOFError) else type(exc).__name__


def parse_public_key(text: str) -> paramiko.PKey:
    """``"ssh-ed25519 AAAA... [comment]"`` (one line of a ``.pub`` or ``ssh-keyscan``) -> PKey."""
    parts = (text or "").strip().split()
    if len(parts) >= 3 and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        parts = parts[1:]  # a known_hosts line: drop the host pattern
    if len(parts) < 2:
        raise ValueError(
            "the pinned host key must be the server's public host key on one line, "
            "'ssh-ed25519 AAAA...' (from /etc/ssh/ssh_host_ed25519_key.pub on the login node or ssh-keyscan)"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
        return paramiko.PKey.from_type_string(parts[0], blob)
    except (binascii.Error, paramiko.SSHException, ValueError) as e:
        raise ValueError(
            f"the pinned host key is not a valid {parts[0]} public key ({type(e).__name__})"
        ) from None


def parse_private_key(text: str) -> paramiko.PKey:
    """OpenSSH or PEM private key text (unencrypted) -> PKey. Errors never include the key."""
    data = (text or "").strip().encode() + b"\n"
    try:
        try:
            loaded: Any = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        kind = (
            "is encrypted (HEROES needs an unencrypted key)"
            if "encrypt" in str(e).lower() or "password" in str(e).lower()
            else "could not be read"
        )
        raise ValueError(
            f"the cluster's private key {kind}: give the OpenSSH private key text ('-----BEGIN OPENSSH PRIVATE KEY-----')"
        ) from None
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        cls: Any = paramiko.Ed25519Key
    elif isinstance(loaded, rsa.RSAPrivateKey):
        cls = paramiko.RSAKey
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        cls = paramiko.ECDSAKey
    else:
        raise ValueError(f"unsupported private key type {type(loaded).__name__}; use ed25519, ecdsa or rsa")
    return cls.from_private_key(io.StringIO(data.decode()))


class SSHTransport(Transport):
    """Commands and files on a cluster's login node over one pooled SSH connection."""

    name = "ssh"

    connect_timeout = Float(
        15.0,
        config=True,
        help="""Seconds allowed for one connection attempt: TCP connect, SSH banner, key exchange and
        authentication each get this long. Failed attempts are retried with backoff until the
        operation's own timeout passes.""",
    )
    keepalive_interval = Integer(
        30,
        config=True,
        help="""Seconds between SSH keepalive messages on an idle connection (0 disables them). They
        keep firewalls from dropping the connection and let a dead one be noticed before the next
        command.""",
    )
    backoff_base = Float(
        0.25,
        config=True,
        help="""First delay, in seconds, before reconnecting after a failed connection attempt; it
        doubles with each further failure (with +/-50% jitter) up to backoff_max.""",
    )
    backoff_max = Float(
        30.0,
        config=True,
        help="Longest delay, in seconds, between two reconnection attempts (see backoff_base).",
    )
    tcp_nodelay = Bool(
        True,
        config=True,
        help="""Disable Nagle's algorithm on the connection. Each command costs a few small request/reply
        packets; with Nagle and delayed ACKs each can wait ~40 ms.""",
    )

    def __init__(
        self,
        host: str,
        *,
        username: str,
        host_key: str,
        private_key: str,
        port: int = 22,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not host or not _HOST_RE.match(host):
            raise ValueError(f"invalid cluster host {host!r}: give a host name or IP address")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"invalid SSH port {port!r}: give a number between 1 and 65535")
        if not username or not _USER_RE.match(username):
            raise ValueError(
                f"invalid SSH username {username!r}: give the cluster service account's login name"
            )
        if not private_key:
            raise ValueError("the SSH transport needs the service account's private key (OpenSSH key text)")
        self.host = host
        self.port = port
        self.username = username
        self._host_key = parse_public_key(host_key)
        self._pkey = parse_private_key(private_key)
        self._hostkey_name = host if port == 22 else f"[{host}]:{port}"
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()
        self._conn_lock: asyncio.Lock | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._last_error: TransportError | None = None

    @classmethod
    def from_cluster(cls, cluster: Any, private_key: str | None = None, **kwargs: Any) -> SSHTransport:
        """Build from a :class:`jupyter_heroes.orm.Cluster` row and its decrypted private key text."""
        return cls(
            cluster.host,
            port=cluster.port or 22,
            username=cluster.username,
            host_key=cluster.host_key,
            private_key=private_key or "",
            **kwargs,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"<SSHTransport {self.describe()}>"

    def describe(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def pinned_fingerprint(self) -> str:
        return self._host_key.fingerprint

    @property
    def connected(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    # --- thread pool and connection ----------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.max_concurrency + 2, thread_name_prefix=f"heroes-ssh-{self.host}"
            )
        return self._pool

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    def _connect_blocking(self, timeout: float) -> paramiko.SSHClient:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            if self.tcp_nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = paramiko.SSHClient()
            # a fresh HostKeys holding only the pinned key; system and user known_hosts are never loaded
            client.get_host_keys().add(self._hostkey_name, self._host_key.get_name(), self._host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.username,
                    pkey=self._pkey,
                    sock=sock,
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    channel_timeout=timeout,
                )
            except paramiko.BadHostKeyException as e:
                client.close()
                raise HostKeyMismatchError(f"{self.host}:{self.port}", e.key, e.expected_key) from None
            except BaseException:
                client.close()
                raise
        except BaseException:
            sock.close()
            raise
        t = client.get_transport()
        if t is not None and self.keepalive_interval:
            t.set_keepalive(self.keepalive_interval)
        return client

    async def _connection(self, deadline: float) -> paramiko.Transport:
        """The live connection, (re)connecting with jittered exponential backoff if needed, until the
        caller's *deadline* (``time.monotonic()``); when the next attempt is due after it, fail fast
        with the last connection error."""
        t = self._client.get_transport() if self._client else None
        if t is not None and t.is_active():
            return t
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
        async with self._conn_lock:
            while True:
                t = self._client.get_transport() if self._client else None
                if t is not None and t.is_active():
                    return t
                self._drop_blocking_later()
                now = time.monotonic()
                if self._last_error is not None and self._next_attempt > deadline:
                    raise TransportError(
                        f"{self._last_error.message} (next reconnection attempt in {self._next_attempt - now:.1f} s)",
                        True,
                        self._last_error.reason,
                    )
                if self._next_attempt > now:
                    await asyncio.sleep(self._next_attempt - now)
                attempt_timeout = max(1.0, min(self.connect_timeout, deadline - time.monotonic()))
                loop = asyncio.get_running_loop()
                fut = loop.run_in_executor(self._executor(), self._connect_blocking, attempt_timeout)
                try:
                    client = await asyncio.shield(fut)
                except asyncio.CancelledError:
                    # the attempt goes on in its thread; close whatever it yields
                    fut.add_done_callback(
                        lambda f: not f.cancelled() and f.exception() is None and f.result().close()
                    )
                    raise
                except TransportError:
                    raise
                except Exception as e:
                    err = self._classify("connect", "", e)
                    self._last_error = err
                    if not err.transient:
                        raise err from e
                    self._failures += 1
                    delay = min(self.backoff_max, self.backoff_base * 2 ** (self._failures - 1))
                    self._next_attempt = time.monotonic() + delay * random.uniform(0.5, 1.5)
                    self.log.info(
                        "SSH connection to %s failed (%s); retrying in %.2fs",
                        self.describe(),
                        err.reason,
                        delay,
                    )
                    continue
                self._client = client
                self._last_error = None
                self._failures = 0
                self._next_attempt = 0.0
                self.stats["connect"] += 1
                self.log.info(
                    "SSH connected to %s (host key %s)", self.describe(), self._host_key.fingerprint
                )
                return client.get_transport()

    def _drop_blocking_later(self) -> None:
        """Forget a dead connection (closing it in the pool: paramiko's close may block)."""
        client, self._client = self._client, None
        sftp, self._sftp = self._sftp, None
        if client is not None:

            def close() -> None:
                if sftp is not None:
                    try:
                        sftp.close()
                    except Exception:
                        pass
                client.close()

            self._executor().submit(close)

    async def disconnect(self) -> None:
        """Close the connection now (the next operation reconnects); the thread pool stays."""
        client, self._client = self._client, None
        sftp, self._sftp = self._sftp, None
        if client is not None:

            def close() -> None:
                with self._sftp_lock:
                    if sftp is not None:
                        sftp.close()
                client.close()

            await self._blocking(close)

    async def close(self) -> None:
        client, self._client = self._client, None
        sftp, self._sftp = self._sftp, None
        pool, self._pool = self._pool, None

        def close() -> None:
            if sftp is not None:
                try:
                    sftp.close()
                except Exception:
                    pass
            if client is not None:
                client.close()

        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, close)
            pool.shutdown(wait=False)

    # --- commands ----------------------------------------------------------------------------
    async def _do_run(self, argv: list[str], stdin: bytes | None, timeout: float) -> CommandResult:
        cmd = command_line(argv)
        deadline = time.monotonic() + timeout
        while True:
            t = await self._connection(deadline)
            try:
                return await self._blocking(
                    self._exec_blocking, t, cmd, stdin, max(0.1, deadline - time.monotonic())
                )
            except _NotSent as e:
                cause = e.__cause__
                if t.is_active() and isinstance(cause, paramiko.ChannelException):
                    # the server refused a channel (MaxSessions): wait a little and try again
                    await asyncio.sleep(random.uniform(0.05, 0.2))
                elif t.is_active():
                    raise TransportError(
                        f"could not open an SSH channel to {self.describe()}: {_detail(cause)}",
                        True,
                        "channel_failed",
                    ) from e
                # else: the connection died before the command was sent; reconnect and send it

    def _exec_blocking(
        self, t: paramiko.Transport, cmd: str, stdin: bytes | None, timeout: float
    ) -> CommandResult:
        deadline = time.monotonic() + timeout
        try:
            chan = t.open_session(timeout=min(timeout, self.connect_timeout))
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise _NotSent() from e
        try:
            chan.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chan.exec_command(cmd)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if not t.is_active():
                    raise _NotSent() from e  # the request never got an answer: the command did not start
                raise
            pending = memoryview(stdin or b"")
            if not pending:
                _send_eof(chan)
            out: list[bytes] = []
            err: list[bytes] = []
            chan.fileno()  # a pipe select() can wait on, set by stdout and stderr data

            def drain() -> bool:
                got = False
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                    got = True
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                    got = True
                return got

            def check_time() -> float:
                if not t.is_active():
                    raise ConnectionAbortedError("connection lost while the command was running")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("command timed out")
                return remaining

            # read stdout and stderr until EOF, feeding stdin as the window allows (never all at
            # once: a command that echoes its input would fill our receive window and deadlock)
            while True:
                progressed = drain()
                if pending and chan.send_ready():
                    n = chan.send(pending[:32768])
                    pending = pending[n:]
                    progressed = True
                    if not pending:
                        _send_eof(chan)
                if (
                    (chan.eof_received or chan.closed)
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                remaining = check_time()
                if not progressed:
                    select.select([chan], [], [], min(remaining, 0.01 if pending else 1.0))
            # OpenSSH may send the exit status before or after the last data; wait for it after EOF
            while not chan.exit_status_ready():
                chan.status_event.wait(min(check_time(), 0.5))
            rc = chan.exit_status
            if rc == -1 and not t.is_active():
                raise ConnectionAbortedError("connection lost before the command's exit status arrived")
            return CommandResult(
                rc, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")
            )
        finally:
            chan.close()

    # --- files (SFTP on the same connection, serialized) -------------------------------------
    async def open_sftp(self) -> paramiko.SFTPClient:
        """A new SFTP client on the pooled connection (connecting first if needed), for bulk copies
        that run their own channels in parallel (the data layer's ``SFTPTarget``). The caller closes
        it; it dies with the connection (a reconnect needs a new one). Counts as one channel against
        the server's ``MaxSessions`` until closed."""
        deadline = time.monotonic() + self.timeout
        t = await self._connection(deadline)

        def open_client() -> paramiko.SFTPClient:
            client = paramiko.SFTPClient.from_transport(t)
            if client is None:
                raise paramiko.SSHException("the server refused the sftp subsystem")
            return client

        try:
            return await self._blocking(open_client)
        except Exception as e:
            raise self._classify("open_sftp", "", e) from e

    async def _sftp_call(self, fn: Any, *args: Any) -> Any:
        t = await self._connection(time.monotonic() + self.timeout)

        def call() -> Any:
            with self._sftp_lock:
                if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
                    client = self._client
                    if client is None or not t.is_active():
                        raise ConnectionAbortedError("connection lost")
                    self._sftp = client.open_sftp()
                return fn(self._sftp, *args)

        return await self._blocking(call)

    async def _do_put(self, local: str, remote: str, mode: int | None) -> None:
        def put(sftp: paramiko.SFTPClient) -> None:
            sftp.put(local, remote)
            if mode is not None:
                sftp.chmod(remote, mode)

        await self._sftp_call(put)

    async def _do_get(self, remote: str, local: str) -> None:
        await self._sftp_call(lambda sftp: sftp.get(remote, local))

    async def _do_open(self, path: str, mode: str) -> Any:
        return await self._sftp_call(lambda sftp: sftp.open(path, mode))

    async def _do_write_file(self, path: str, data: bytes, mode: int | None) -> None:
        def write(sftp: paramiko.SFTPClient) -> None:
            with sftp.open(path, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            if mode is not None:
                sftp.chmod(path, mode)

        await self._sftp_call(write)

    async def _do_stat(self, path: str) -> FileStat:
        st = await self._sftp_call(lambda sftp: sftp.stat(path))
        m = st.st_mode or 0
        return FileStat(st.st_size or 0, float(st.st_mtime or 0), stat_mod.S_IMODE(m), stat_mod.S_ISDIR(m))

    async def _do_listdir(self, path: str) -> list[str]:
        return await self._sftp_call(lambda sftp: sftp.listdir(path))

    async def _do_makedirs(self, path: str, mode: int) -> None:
        def makedirs(sftp: paramiko.SFTPClient) -> None:
            prefix = "/" if path.startswith("/") else ""
            parts = [p for p in path.split("/") if p]
            cur = prefix
            for p in parts:
                cur = f"{cur}{p}" if cur in ("", "/") else f"{cur}/{p}"
                try:
                    st = sftp.stat(cur)
                except FileNotFoundError:
                    try:
                        sftp.mkdir(cur, mode)
                    except OSError:
                        st = sftp.stat(cur)  # created concurrently?
                        if not stat_mod.S_ISDIR(st.st_mode or 0):
                            raise
                    continue
                if not stat_mod.S_ISDIR(st.st_mode or 0):
                    raise NotADirectoryError(f"{cur} exists and is not a directory")

        await self._sftp_call(makedirs)

    async def _do_remove(self, path: str) -> None:
        await self._sftp_call(lambda sftp: sftp.remove(path))

    async def _file_read(self, raw: Any, size: int) -> bytes:
        def read() -> bytes:
            with self._sftp_lock:
                if size < 0:
                    raw.prefetch()
                return raw.read() if size < 0 else raw.read(size)

        return await self._blocking(read)

    async def _file_write(self, raw: Any, data: bytes) -> None:
        def write() -> None:
            with self._sftp_lock:
                raw.write(data)

        await self._blocking(write)

    async def _file_close(self, raw: Any) -> None:
        def close() -> None:
            with self._sftp_lock:
                raw.close()

        await self._blocking(close)

    # --- errors ------------------------------------------------------------------------------
    def _classify(self, op: str, what: str, exc: BaseException) -> TransportError:
        where = self.describe()
        if isinstance(exc, paramiko.AuthenticationException):
            return TransportError(
                f"SSH authentication as {self.username} on {self.host}:{self.port} was refused: check that the "
                "cluster's service account has HEROES' public key in ~/.ssh/authorized_keys and is not locked.",
                False,
                "auth_failed",
            )
        if isinstance(exc, socket.gaierror):
            return TransportError(
                f"cannot resolve the cluster host {self.host!r}: {exc.strerror}", True, "unreachable"
            )
        if isinstance(exc, ConnectionRefusedError | paramiko.ssh_exception.NoValidConnectionsError):
            return TransportError(
                f"{where} refused the SSH connection: is sshd running and the port right?",
                True,
                "unreachable",
            )
        if isinstance(exc, socket.timeout | TimeoutError):
            return TransportError(f"{op} {what}".strip() + f" on {where} timed out", True, "timeout")
        if isinstance(exc, ConnectionAbortedError):
            return TransportError(
                f"the SSH connection to {where} was lost during {op} {what}".strip()
                + ("; the command may or may not have run" if op == "run" else "")
                + ". It will reconnect.",
                True,
                "connection_lost",
            )
        if isinstance(exc, FileNotFoundError):
            return TransportError(f"{op}: no such file or directory on {where}", False, "not_found")
        if isinstance(exc, PermissionError):
            return TransportError(f"{op}: permission denied on {where}", False, "permission_denied")
        if isinstance(exc, NotADirectoryError):
            return TransportError(f"{op}: {exc}", False, "not_a_directory")
        if isinstance(exc, paramiko.SSHException | EOFError | OSError):
            self._drop_if_dead()
            if self.connected and not isinstance(exc, paramiko.SSHException | EOFError | ConnectionError):
                # an SFTP status error on a healthy connection (e.g. "Failure"): retrying will not help
                return TransportError(f"{op} on {where} failed: {exc}", False, "error")
            return TransportError(
                f"SSH {op} {what}".strip() + f" on {where} failed: {_detail(exc)}",
                True,
                "connection_lost",
            )
        return super()._classify(op, what, exc)

    def _drop_if_dead(self) -> None:
        t = self._client.get_transport() if self._client else None
        if self._client is not None and (t is None or not t.is_active()):
            self._drop_blocking_later()
