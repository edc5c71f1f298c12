"""An SSH client as the test bed's ``heroes`` account that pins the host key (paramiko ``RejectPolicy``)."""

from __future__ import annotations

import shlex

import paramiko

from jupyter_heroes.testing.sshd import SshdTestbed


class Remote:
    """A paramiko connection as the ``heroes`` account, host key checked against the pinned known_hosts."""

    def __init__(self, sshd: SshdTestbed) -> None:
        self.client = connect(sshd)

    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]:
        _, out, err = self.client.exec_command(command, timeout=timeout)
        rc = out.channel.recv_exit_status()
        return rc, out.read().decode(), err.read().decode()

    def check(self, command: str, timeout: float = 60) -> str:
        rc, out, err = self.run(command, timeout)
        assert rc == 0, f"{command!r} exited {rc}: {err}"
        return out

    def sbatch(self, *args: str) -> int:
        """``sbatch --parsable ARGS``: the job id (``--parsable`` prints ``id`` or ``id;cluster``)."""
        out = self.check("sbatch --parsable " + " ".join(shlex.quote(a) for a in args))
        return int(out.strip().split(";")[0])

    def close(self) -> None:
        self.client.close()


def connect(sshd: SshdTestbed, **kw: object) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    args = dict(username=sshd.username, key_filename=str(sshd.private_key_path), look_for_keys=False,
                allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)  # fmt: skip
    args.update(kw)
    client.connect(sshd.host, sshd.port, **args)
    return client
