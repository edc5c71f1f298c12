"""A real OpenSSH server for tests: user ``heroes``, key-only, strict host keys, on a free port.

Each :class:`SshdTestbed` makes a fresh ed25519 host key and user key in its own working directory,
adds the user key to ``~heroes/.ssh/authorized_keys`` (one tagged line per instance, removed at stop)
and runs ``/usr/sbin/sshd -D`` on ``127.0.0.1:<free port>``. Clients pin the host key through
:attr:`SshdTestbed.known_hosts_path` (paramiko ``RejectPolicy``); nothing else is accepted.

Fault injection: :meth:`SshdTestbed.kill` SIGKILLs the listening sshd, :meth:`SshdTestbed.start`
brings it back on the same port with the same host key. Sessions opened before the kill keep running
(each lives in its own forked sshd), as on a real login node.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from ._daemon import discard, instance_dir, require_root, unused_port, wait_ready
from .base import Component, ComponentError, pid_alive, port_open

SSHD = "/usr/sbin/sshd"
KEY_TAG = "heroes-testbed"


def ensure_account(username: str) -> pwd.struct_passwd:
    """Create the unprivileged *username* account if it is absent (``useradd -m``) and unlock it for
    key logins: ``useradd`` leaves the password field ``!`` and sshd with ``UsePAM no`` refuses locked
    accounts even for keys, so it is set to ``*`` (no password can match)."""
    try:
        pw = pwd.getpwnam(username)
    except KeyError:
        cp = subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", username], capture_output=True, text=True, timeout=30
        )
        if cp.returncode not in (0, 9):  # 9: created meanwhile by a concurrent session
            raise ComponentError(
                f"useradd {username} failed ({cp.returncode}): {cp.stderr.strip()}"
            ) from None
        pw = pwd.getpwnam(username)
    shadow = subprocess.run(["getent", "shadow", username], capture_output=True, text=True, timeout=10).stdout
    if shadow.split(":")[1:2] != ["*"]:
        subprocess.run(["usermod", "-p", "*", username], check=True, capture_output=True, timeout=30)
    home = Path(pw.pw_dir)
    if not home.is_dir():
        home.mkdir(mode=0o755, parents=True)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    return pw


class SshdTestbed(Component):
    """OpenSSH on ``127.0.0.1:<port>`` for the unprivileged ``heroes`` account, key-only."""

    name = "sshd"
    host = "127.0.0.1"

    def __init__(
        self, workdir: Path | None = None, username: str = "heroes", port: int | None = None
    ) -> None:
        self._own_workdir = workdir is None
        super().__init__(workdir or instance_dir(self.name))
        self.username = username
        self.port = port or 0
        self.private_key_path = self.workdir / "id_ed25519"
        self.known_hosts_path = self.workdir / "known_hosts"
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"
        self.config_path = self.workdir / "sshd_config"
        self.scratch_root = Path("/nonexistent")
        self._sshd: subprocess.Popen | None = None
        self._tag = f"{KEY_TAG}:{os.getpid()}:{self.workdir.name}"

    # --- public attributes -----------------------------------------------------------------------
    @property
    def private_key(self) -> str:
        """The OpenSSH private key text of :attr:`username` (unencrypted, for tests only)."""
        return self.private_key_path.read_text()

    @property
    def host_key(self) -> str:
        """``"ssh-ed25519 AAAA..."``: the server's public host key, to pin."""
        return " ".join(Path(f"{self.host_key_path}.pub").read_text().split()[:2])

    @property
    def pid(self) -> int | None:
        return self._sshd.pid if self._sshd else None

    def ssh_argv(self, *command: str) -> list[str]:
        """The OpenSSH client command line running *command* as :attr:`username` on this server
        (key-only, pinned host key, no prompts): what a test uses to look at the cluster itself."""
        return [
            "ssh",
            "-i",
            str(self.private_key_path),
            "-p",
            str(self.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            f"{self.username}@{self.host}",
            *command,
        ]

    # --- lifecycle -------------------------------------------------------------------------------
    def _start(self) -> None:
        require_root("the sshd test bed")
        if not self.config_path.exists():
            self._configure()
        self._sshd = self.spawn([SSHD, "-D", "-e", "-f", str(self.config_path)], "sshd")
        wait_ready(
            lambda: port_open(self.port) and self._login_works(),
            20,
            f"sshd on 127.0.0.1:{self.port}",
            self.log_path("sshd"),
            [self._sshd],
        )

    def _configure(self) -> None:
        pw = ensure_account(self.username)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        for path, comment in (
            (self.host_key_path, "host"),
            (self.private_key_path, f"{self.username}@testbed"),
        ):
            if not path.exists():
                self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
        if not self.port:
            self.port = unused_port()
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {self.host_key}\n")
        self._add_authorized_key(pw)
        self.scratch_root = Path(pw.pw_dir) / "scratch" / self.workdir.name
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        for d in (self.scratch_root.parent, self.scratch_root):
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(0o755)
        self.config_path.write_text(
            "\n".join(
                [
                    "# written by jupyter_heroes.testing.sshd",
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    "PermitEmptyPasswords no",
                    f"AllowUsers {self.username}",
                    "UsePAM no",
                    "UseDNS no",
                    "StrictModes yes",
                    "PrintMotd no",
                    "X11Forwarding no",
                    "LoginGraceTime 30",
                    "MaxAuthTries 6",
                    "MaxSessions 50",
                    "MaxStartups 500:30:1000",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        self.run([SSHD, "-t", "-f", str(self.config_path)])

    def _add_authorized_key(self, pw: pwd.struct_passwd) -> None:
        pub = Path(f"{self.private_key_path}.pub").read_text().split()[:2]
        line = f"{pub[0]} {pub[1]} {self._tag}\n"
        with _authorized_keys(pw) as lines:
            lines[:] = [ln for ln in lines if not _stale(ln)] + [line]

    def _remove_authorized_key(self) -> None:
        with contextlib.suppress(KeyError), _authorized_keys(pwd.getpwnam(self.username)) as lines:
            lines[:] = [ln for ln in lines if not ln.rstrip().endswith(self._tag) and not _stale(ln)]

    def _login_works(self) -> bool:
        """One real login with the pinned host key: what every client will do."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host,
                self.port,
                username=self.username,
                key_filename=str(self.private_key_path),
                look_for_keys=False,
                allow_agent=False,
                timeout=5,
                banner_timeout=5,
                auth_timeout=5,
            )
            _, out, _ = client.exec_command("echo ok", timeout=5)
            return out.read().strip() == b"ok"
        finally:
            client.close()

    def kill(self, sessions: bool = False) -> None:
        """SIGKILL the listening sshd (fault injection); :meth:`start` restarts it on the same port.
        With *sessions*, also the per-connection sshd processes, so established connections drop
        (killing only the listener leaves them running, as on a real login node)."""
        if self._sshd is not None:
            children = descendants(self._sshd.pid) if sessions else []
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._sshd.pid, signal.SIGKILL)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._sshd.wait(timeout=10)
            if self._sshd.pid in self.pids:
                self.pids.remove(self._sshd.pid)
        self.started = False

    def stop(self) -> None:
        super().stop()
        self._remove_authorized_key()
        if self.scratch_root.name == self.workdir.name:
            discard(self.scratch_root)
        if self._own_workdir:
            discard(self.workdir)


def descendants(pid: int) -> list[int]:
    """All processes below *pid* (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@contextlib.contextmanager
def _authorized_keys(pw: pwd.struct_passwd):
    """Edit ``~/.ssh/authorized_keys`` of *pw* under a lock (concurrent test sessions share it)."""
    ssh_dir = Path(pw.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
    ssh_dir.chmod(0o700)
    path = ssh_dir / "authorized_keys"
    with open(Path("/tmp") / f"heroes-testbed-authkeys-{pw.pw_name}.lock", "w") as lock:
        deadline = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ComponentError(f"could not lock {path} within 30 s") from None
                time.sleep(0.1)
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        yield lines
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        tmp.chmod(0o600)
        tmp.replace(path)


def _stale(line: str) -> bool:
    """A key line left by a test session whose process is gone."""
    parts = line.split()
    if len(parts) < 3 or not parts[2].startswith(f"{KEY_TAG}:"):
        return False
    try:
        return not pid_alive(int(parts[2].split(":")[1]))
    except (ValueError, IndexError):
        return False
