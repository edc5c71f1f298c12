"""A real PostgreSQL server for tests (Debian's binaries), on a free port on 127.0.0.1.

:class:`PostgresTestbed` runs ``initdb`` into a fresh data directory owned by the ``postgres`` OS user,
starts ``postgres`` as that user (unix socket in the working directory, TCP on ``127.0.0.1:<port>``),
and creates a password-authenticated login role for the tests. :meth:`PostgresTestbed.new_database`
returns the SQLAlchemy URL of a fresh, empty database owned by that role.

TCP connections need the password (``scram-sha-256``); only the superuser on the private unix socket
is trusted. Durability is switched off (``fsync=off``): the data lives for one test session.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from ._daemon import discard, instance_dir, require_root, unused_port, wait_ready
from .base import Component, ComponentError, stop_pid

_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``postgres``."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [d for d in found if (d / "postgres").exists()]
    if not found:
        raise ComponentError(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: "
            "install the Debian package 'postgresql' (see .ci/install-testbed.sh)"
        )
    return max(found, key=lambda d: [int(x) for x in re.findall(r"\d+", d.parent.name)] or [0])


class PostgresTestbed(Component):
    """PostgreSQL on ``127.0.0.1:<free port>``; :meth:`new_database` hands out empty databases."""

    name = "postgres"
    host = "127.0.0.1"
    stop_grace = 15.0

    def __init__(self, workdir: Path | None = None, user: str = "heroes_test") -> None:
        self._own_workdir = workdir is None
        super().__init__(workdir or instance_dir(self.name))
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.bindir = postgres_bindir()
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "run"
        self._counter = itertools.count(1)
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        require_root("the PostgreSQL test bed")
        pg = pwd.getpwnam("postgres")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for d, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o755)):
            d.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chown(d, pg.pw_uid, pg.pw_gid)
        self.run(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8",
             "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            user="postgres", cwd=self.workdir, timeout=120,
        )  # fmt: skip
        self.port = self.port or unused_port()
        self._proc = self.spawn(
            [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.socket_dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB"],
            "postgres", user="postgres", cwd=self.workdir,
        )  # fmt: skip
        wait_ready(
            self._ping, 60, f"postgres on 127.0.0.1:{self.port}", self.log_path("postgres"), [self._proc]
        )
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )

    def stop(self) -> None:
        if self._proc is not None:
            stop_pid(self._proc.pid, grace=self.stop_grace, sig=signal.SIGINT)  # SIGINT: "fast" shutdown
            self._proc = None
        super().stop()
        if self._own_workdir:
            discard(self.workdir)

    # --- public ----------------------------------------------------------------------------------
    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of *database* for the test role, over TCP with the password."""
        return f"{driver}://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """Create a fresh, empty database owned by the test role; return its SQLAlchemy URL
        (``postgresql+psycopg://heroes_test:...@127.0.0.1:PORT/<prefix>_<n>_<random>``)."""
        if not _PREFIX.match(prefix):
            raise ValueError(
                f"database prefix {prefix!r}: use 1-31 lowercase letters, digits or '_', starting with a letter"
            )
        name = f"{prefix}_{next(self._counter)}_{secrets.token_hex(3)}"
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user))
            )
        return self.url(name)

    # --- helpers ---------------------------------------------------------------------------------
    def _admin(self):
        """Superuser connection over the private unix socket (trusted)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=5)  # fmt: skip

    def _ping(self) -> bool:
        with self._admin() as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
