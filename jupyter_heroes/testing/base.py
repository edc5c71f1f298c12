"""Process management for the test bed: start a real component, wait until it answers, stop it by PID.

Every component of the test bed (``slurm.py``, ``sshd.py``, ``postgres.py``, ``s3.py``, ``oidc.py``,
``hub.py``) is a :class:`Component`: ``start()`` launches its processes with :meth:`Component.spawn` (or
records the PID file of a daemon that forks), ``stop()`` stops them by PID, TERM then KILL. Components
are usable as context managers, so benchmarks start them without pytest; the pytest fixtures in
``plugin_*.py`` wrap them once per test session.

Working files (configs, logs, data) live under :func:`testbed_dir` (``$HEROES_TESTBED_DIR``, default
``/tmp/heroes-testbed``). Ports are picked free at start unless a component needs a fixed one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class ComponentError(RuntimeError):
    """A test-bed component did not start; the message includes the tail of its log."""


def testbed_dir() -> Path:
    d = Path(os.environ.get("HEROES_TESTBED_DIR", "/tmp/heroes-testbed"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def node_dir() -> Path:
    """Where ``.ci/install-testbed.sh`` installs the npm packages of ``testing/package.json``."""
    return Path(os.environ.get("HEROES_TESTBED_NODE", "/opt/heroes-testbed/node"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, log: Path | None = None, interval: float = 0.2
) -> Any:
    """Call *check* until it returns a truthy value (exceptions count as falsy) or *timeout* passes."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:
            last_exc = e
        time.sleep(interval)
    raise ComponentError(
        f"{what} not ready after {timeout:.0f}s"
        + (f" (last error: {last_exc})" if last_exc else "")
        + (f"\n--- tail of {log}:\n{tail(log)}" if log else "")
    )


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not Path(path).exists():
        return "(no log)"
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """TERM (or *sig*), then KILL after *grace* seconds (slurmd ignores TERM while its controller is down)."""
    if not pid or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


def read_pidfile(path: Path | str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def exclusive(name: str, timeout: float = 1800) -> Iterator[None]:
    """Hold a machine-wide lock: system-singleton components (Slurm on its fixed ports, the munge and
    MariaDB daemons) are used by one test session at a time; a second session waits."""
    path = Path("/tmp") / f"heroes-testbed-{name}.lock"
    with open(path, "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ComponentError(
                        f"another test session holds {path} for more than {timeout:.0f}s"
                    ) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Component:
    """A real component started and stopped by PID. Subclasses implement :meth:`_start` (launch and
    wait until ready) and may extend :meth:`stop`; PIDs of processes they launch or whose PID files
    they read go in ``self.pids`` and are stopped in reverse order."""

    name = "component"
    stop_grace = 10.0

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir) if workdir else testbed_dir() / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pids: list[int] = []
        self._logs: list[IO[bytes]] = []
        self.started = False

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Component:
        if not self.started:
            try:
                self._start()
            except BaseException:
                self.stop()
                raise
            self.started = True
        return self

    def _start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:
        for pid in reversed(self.pids):
            stop_pid(pid, grace=self.stop_grace)
        self.pids.clear()
        for f in self._logs:
            f.close()
        self._logs.clear()
        self.started = False

    def __enter__(self) -> Component:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers ---------------------------------------------------------------------------------
    def log_path(self, what: str) -> Path:
        return self.workdir / f"{what}.log"

    def spawn(
        self,
        argv: list[str],
        log: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> subprocess.Popen:
        """Launch *argv* in its own session (so a kill reaches only it), output to ``<log>.log``."""
        out = open(self.log_path(log), "ab")
        self._logs.append(out)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            user=user,
        )
        self.pids.append(proc.pid)
        return proc

    def run(
        self, argv: list[str], check: bool = True, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess:
        """Run a short setup command; its failure raises with the command's output."""
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
        if check and cp.returncode != 0:
            raise ComponentError(
                f"{self.name}: {' '.join(argv)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"
            )
        return cp
