"""The OpenSSH test bed: key-only, pinned host keys, fault injection by SIGKILL."""

from __future__ import annotations

import io
import os
import subprocess
import time

import paramiko
import pytest
from testbed_ssh import Remote, connect

from jupyter_heroes.testing.plugin_testbed import log_tails_since

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def test_contract(sshd):
    assert (sshd.host, sshd.username) == ("127.0.0.1", "heroes")
    assert sshd.port > 1024
    assert sshd.host_key.startswith("ssh-ed25519 AAAA") and len(sshd.host_key.split()) == 2
    assert sshd.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert sshd.private_key == sshd.private_key_path.read_text()
    assert sshd.known_hosts_path.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n"


def test_heroes_is_unprivileged_and_owns_scratch(sshd, remote):
    assert remote.check("id -un; id -u").split() == ["heroes", str(os.stat(sshd.scratch_root).st_uid)]
    assert remote.check("id -u") != "0\n"
    sftp = remote.client.open_sftp()
    try:
        path = f"{sshd.scratch_root}/sftp-probe.txt"
        with sftp.open(path, "w") as f:
            f.write("written over sftp\n")
        assert remote.check(f"cat {path}") == "written over sftp\n"
        sftp.remove(path)
    finally:
        sftp.close()
    assert remote.run("touch /etc/heroes-probe")[0] != 0


def test_unknown_host_key_is_rejected(sshd):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())  # and no known_hosts loaded
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(sshd.host, sshd.port, username=sshd.username, key_filename=str(sshd.private_key_path),
                       look_for_keys=False, allow_agent=False, timeout=10)  # fmt: skip
    client.close()


def test_wrong_pinned_host_key_is_rejected(sshd, tmp_path):
    other = paramiko.Ed25519Key.from_private_key(
        io.StringIO(sshd.private_key)
    )  # an ed25519 key, not the host's
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 {other.get_base64()}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(sshd.host, sshd.port, username=sshd.username, key_filename=str(sshd.private_key_path),
                       look_for_keys=False, allow_agent=False, timeout=10)  # fmt: skip
    client.close()


def test_only_the_heroes_key_logs_in(sshd, tmp_path):
    stranger = paramiko.Ed25519Key.from_private_key(io.StringIO(_fresh_key(tmp_path)))
    with pytest.raises(paramiko.AuthenticationException):
        connect(sshd, key_filename=None, pkey=stranger)
    with pytest.raises(paramiko.AuthenticationException):  # password logins are off
        connect(sshd, key_filename=None, password="heroes")
    with pytest.raises(paramiko.AuthenticationException):  # root may not log in, even with the right key
        connect(sshd, username="root")


def test_kill_then_start_on_the_same_port_and_host_key(sshd):
    port, host_key, old_pid = sshd.port, sshd.host_key, sshd.pid
    sshd.kill()
    try:
        with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
            connect(sshd)
    finally:
        sshd.start()
    assert (sshd.port, sshd.host_key) == (port, host_key)
    assert sshd.pid != old_pid
    client = connect(sshd)  # the pinned known_hosts still matches
    _, out, _ = client.exec_command("echo back", timeout=10)
    assert out.read() == b"back\n"
    client.close()


def _fresh_key(tmp_path) -> str:
    path = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.read_text()


def test_a_failed_tests_report_gets_the_tail_of_the_logs_written_during_it(sshd):
    """What the plugin adds to a failed test's report (for failures seen only in CI's output)."""
    since = time.time() - 1
    r = Remote(sshd)
    try:
        assert r.check("echo logged-in") == "logged-in\n"
    finally:
        r.close()
    sections = dict(log_tails_since(since))
    title = f"test bed log {sshd.workdir / 'sshd.log'} (last 40 lines)"
    assert title in sections, sorted(sections)
    assert f"Accepted publickey for {sshd.username} from 127.0.0.1" in sections[title]
    assert log_tails_since(time.time() + 3600) == []  # nothing written since: nothing added
