"""slurmrestd (Slurm's REST API, JWT authentication) on a free port, for the test bed's Slurm.

:class:`SlurmRestdTestbed` starts Debian's ``/usr/sbin/slurmrestd`` as a child process stopped by PID::

    SLURM_JWT=daemon slurmrestd -a rest_auth/jwt -u slurmrest 127.0.0.1:<free port>

slurmrestd refuses to run as root (or as the SlurmUser): ``-u`` drops to the unprivileged system
account ``slurmrest`` (created if absent) after binding. It needs ``AuthAltTypes=auth/jwt`` in
``slurm.conf`` and ``slurmdbd.conf``, which :class:`~.slurm.SlurmTestbed` writes when the
``slurm-wlm-jwt-plugin`` package is installed. Tokens come from ``scontrol token`` (:meth:`token`).
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from ._daemon import discard, instance_dir, require_root, unused_port, wait_ready
from .base import Component, ComponentError
from .slurm import SlurmTestbed

SLURMRESTD = "/usr/sbin/slurmrestd"
API_VERSION = "v0.0.38"


def ensure_system_account(username: str) -> None:
    """An unprivileged system account without home or login shell (``useradd --system``)."""
    cp = subprocess.run(["id", "-u", username], capture_output=True, timeout=10)
    if cp.returncode == 0:
        return
    cp = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", username],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if cp.returncode not in (0, 9):  # 9: created meanwhile by a concurrent session
        raise ComponentError(f"useradd {username} failed ({cp.returncode}): {cp.stderr.strip()}")


class SlurmRestdTestbed(Component):
    """slurmrestd in front of a running :class:`SlurmTestbed`: ``.url`` (``http://127.0.0.1:PORT``),
    ``.api_version`` (``v0.0.38``), ``.token(username, lifespan)``, ``.kill()``/``.start()``."""

    name = "slurmrestd"
    stop_grace = 5.0

    def __init__(self, slurm: SlurmTestbed, user: str = "slurmrest", workdir: Path | None = None) -> None:
        super().__init__(workdir or instance_dir(self.name))
        self.slurm = slurm
        self.user = user
        self.port = 0
        self.api_version = API_VERSION
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        require_root("the slurmrestd test bed")
        if not os.path.exists(SLURMRESTD):
            raise ComponentError(f"{SLURMRESTD} is missing: apt-get install slurmrestd slurm-wlm-jwt-plugin")
        if not self.slurm.jwt:
            raise ComponentError(
                "slurmrestd needs JWT authentication, but the Slurm test bed wrote slurm.conf without "
                "AuthAltTypes=auth/jwt because slurm-wlm-jwt-plugin is not installed: apt-get install slurm-wlm-jwt-plugin"
            )
        if not self.slurm.started:
            raise ComponentError("start the Slurm test bed before slurmrestd")
        ensure_system_account(self.user)
        self.port = self.port or unused_port()
        # -u drops privileges after binding; SLURM_JWT=daemon: slurmrestd speaks JWT to slurmctld/slurmdbd
        self._proc = self.spawn(
            [SLURMRESTD, "-a", "rest_auth/jwt", "-u", self.user, f"127.0.0.1:{self.port}"],
            self.name,
            env={"SLURM_JWT": "daemon"},
        )
        wait_ready(self._answers, 30, "slurmrestd", self.log_path(self.name), [self._proc])

    def _answers(self) -> bool:
        """Any HTTP answer means it listens (without a token it answers 401)."""
        try:
            with urllib.request.urlopen(f"{self.url}/openapi/v3", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True

    def token(self, username: str = "heroes", lifespan: int = 3600) -> str:
        """A JWT for *username* from ``scontrol token`` (run as root, which may mint any user's)."""
        cp = self.run(["scontrol", "token", f"username={username}", f"lifespan={int(lifespan)}"])
        for line in cp.stdout.splitlines():
            if line.startswith("SLURM_JWT="):
                return line.split("=", 1)[1].strip()
        raise ComponentError("scontrol token printed no SLURM_JWT= line")

    def kill(self) -> None:
        """Stop slurmrestd by PID (fault injection); :meth:`start` brings it back on the same port."""
        if self._proc is not None:
            self.stop()

    def stop(self) -> None:
        super().stop()
        self._proc = None

    def close(self) -> None:
        """Stop and remove the working directory (logs kept with ``HEROES_TESTBED_KEEP=1``)."""
        self.stop()
        discard(self.workdir)
