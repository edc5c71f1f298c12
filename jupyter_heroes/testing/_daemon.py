"""Small helpers shared by the test-bed components of ``slurm.py``, ``sshd.py``, ``postgres.py``, ``s3.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .base import ComponentError, free_port, port_open, tail, testbed_dir


def instance_dir(name: str) -> Path:
    """A fresh working directory ``<testbed_dir>/<name>-XXXX`` (several test sessions may run at once,
    so components on free ports never share one). Mode 755 so daemons running as their own users
    (postgres, mysql, slurm) can reach subdirectories they own."""
    d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=testbed_dir()))
    d.chmod(0o755)
    return d


def require_root(what: str) -> None:
    """The test bed creates accounts and runs daemons as their own users: it needs root."""
    if os.geteuid() != 0:
        raise ComponentError(f"{what} needs root (it creates users and runs daemons as their own accounts)")


def keep_workdirs() -> bool:
    """``HEROES_TESTBED_KEEP=1`` keeps each component's working directory (logs, configs) after stop."""
    return os.environ.get("HEROES_TESTBED_KEEP", "") not in ("", "0")


def discard(workdir: Path) -> None:
    """Remove a per-instance working directory at stop, unless :func:`keep_workdirs`."""
    if not keep_workdirs():
        shutil.rmtree(workdir, ignore_errors=True)


def unused_port() -> int:
    """A free port on 127.0.0.1 that nothing answers on right now."""
    for _ in range(20):
        port = free_port()
        if not port_open(port):
            return port
    raise ComponentError("no free TCP port on 127.0.0.1")


def wait_ready(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    log: Path | None,
    procs: Iterable[subprocess.Popen] = (),
    interval: float = 0.1,
) -> Any:
    """Call *check* until it returns a truthy value (exceptions count as "not yet").

    Unlike :func:`base.wait_for`, a daemon in *procs* that exits ends the wait at once, and both
    failures carry the tail of *log*: a crash is reported in a second, not after the deadline."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        for p in procs:
            if p.poll() is not None:
                raise ComponentError(
                    f"{what}: {_program(p)} exited with code {p.returncode} while starting"
                    f"\n--- tail of {log}:\n{tail(log)}"
                )
        try:
            result = check()
            if result:
                return result
        except Exception as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise ComponentError(
                f"{what} not ready after {timeout:.0f}s"
                + (f" (last error: {last_exc})" if last_exc else "")
                + f"\n--- tail of {log}:\n{tail(log)}"
            )
        time.sleep(interval)


def _program(proc: subprocess.Popen) -> str:
    args = proc.args
    first = args[0] if isinstance(args, list | tuple) and args else args
    return Path(str(first)).name
