"""Fixtures of the data tests.

The real S3 server (moto_server) and OpenSSH server come from the test bed's session fixtures
``s3_server`` and ``sshd`` (``jupyter_heroes/testing/plugin_testbed.py``). Until that plugin is
present, equivalent fallbacks defined here start them (same attributes, also started once per
session and stopped by PID), so these tests never assume a running service.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import paramiko
import pytest

from jupyter_heroes.data.storage import S3Storage
from jupyter_heroes.testing.base import Component, free_port, port_open, stop_pid, wait_for

HAVE_TESTBED = importlib.util.find_spec("jupyter_heroes.testing.plugin_testbed") is not None


class _MotoFallback(Component):
    name = "data-moto"
    access_key = "heroes-test"
    secret_key = "heroes-test-secret"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.endpoint}"

    def _start(self) -> None:
        exe = shutil.which("moto_server")
        assert exe, "moto_server not found: pip install 'moto[server]'"
        self.spawn([exe, "-H", "127.0.0.1", "-p", str(self.port)], "moto")
        wait_for(lambda: port_open(self.port), 30, "moto_server", self.log_path("moto"))

    def kill(self) -> None:
        for pid in self.pids:
            stop_pid(pid, grace=0, sig=signal.SIGKILL)
        self.pids.clear()
        self.started = False


class _SshdFallback(Component):
    """OpenSSH on a free port, key-only, for the current (root) account; host key pinned."""

    name = "data-sshd"
    host = "127.0.0.1"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.username = os.environ.get("USER") or "root"
        d = self.workdir
        for f in ("host_ed25519", "host_ed25519.pub", "user_ed25519", "user_ed25519.pub"):
            (d / f).unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True
        )
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "user_ed25519")], check=True
        )
        (d / "authorized_keys").write_text((d / "user_ed25519.pub").read_text())
        self.private_key_path = str(d / "user_ed25519")
        self.private_key = (d / "user_ed25519").read_text()
        self.host_key = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
        self.known_hosts_path = str(d / "known_hosts")
        Path(self.known_hosts_path).write_text(f"[{self.host}]:{self.port} {self.host_key}\n")
        self.scratch_root = str(d / "scratch")
        os.makedirs(self.scratch_root, exist_ok=True)
        (d / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {d / "host_ed25519"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 20
Subsystem sftp internal-sftp
"""
        )

    def _start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.workdir / "sshd_config")], "sshd")
        wait_for(lambda: port_open(self.port), 10, "sshd", self.log_path("sshd"))

    def kill(self) -> None:
        """SIGKILL the server and every connection it serves (its children)."""
        for pid in list(self.pids):
            children = subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True
            ).stdout.split()
            for c in children:
                stop_pid(int(c), grace=0, sig=signal.SIGKILL)
            stop_pid(pid, grace=0, sig=signal.SIGKILL)
        self.pids.clear()
        self.started = False


if not HAVE_TESTBED:

    @pytest.fixture(scope="session")
    def s3_server():
        with _MotoFallback() as s3:
            yield s3

    @pytest.fixture(scope="session")
    def sshd():
        with _SshdFallback() as s:
            yield s


@pytest.fixture
async def storage(s3_server):
    st = S3Storage(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        part_size=5 * 1024 * 1024,
        timeout=60,
    )
    yield st
    await st.close()


@pytest.fixture
def org_name() -> str:
    """A fresh organization per test, so buckets never collide between tests."""
    return "org" + uuid.uuid4().hex[:8]


@pytest.fixture
def ssh_connect(sshd):
    """Open paramiko connections to the test bed's sshd, host key pinned (RejectPolicy); all are
    closed at the end of the test."""
    clients: list[paramiko.SSHClient] = []

    def connect() -> paramiko.SSHClient:
        client = _connect(sshd)
        clients.append(client)
        return client

    yield connect
    for c in clients:
        c.close()


def _connect(sshd) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(sshd.known_hosts_path)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_filename=sshd.private_key_path,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client
