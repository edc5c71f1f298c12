"""SSHTransport against the test bed's real OpenSSH server (user ``heroes``, key-only, pinned host key).

Faults are injected at the boundary: the listening sshd is SIGKILLed (``sshd.kill()``), and for a
dropped connection the per-connection sshd processes serving it are killed too.
"""

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import string
import time
from pathlib import Path

import pytest

from jupyter_heroes.clusters.ssh import HostKeyMismatchError, SSHTransport
from jupyter_heroes.clusters.transport import TransportError

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def transport(sshd, **kw) -> SSHTransport:
    args = {
        "port": sshd.port,
        "username": sshd.username,
        "host_key": sshd.host_key,
        "private_key": sshd.private_key,
    }
    args.update(kw)
    return SSHTransport(sshd.host, **args)


def fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def kill_sshd_and_its_sessions(sshd) -> None:
    """SIGKILL the listener and the per-connection sshd processes: established connections drop."""
    sshd.kill(sessions=True)


@pytest.fixture
async def ssh(sshd):
    t = transport(sshd)
    yield t
    await t.close()


async def test_argv_arrives_literally_and_runs_as_the_service_account(ssh, sshd):
    pwned = f"{sshd.scratch_root}/pwned-{secrets.token_hex(4)}"
    args = [
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        f"a; touch {pwned}",
        "it's",
        'say "hi"',
        "x\ny",
        "../..",
        "*",
        "",
    ]
    r = await ssh.run(["printf", "[%s]\n", *args])
    assert r.rc == 0 and r.stdout == "".join(f"[{a}]\n" for a in args)
    assert not await ssh.exists(pwned)
    assert (await ssh.run(["id", "-un"])).stdout == f"{sshd.username}\n"
    r = await ssh.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.rc, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert (await ssh.run(["no-such-command-heroes"])).rc == 127


async def test_large_stdin_stdout_and_stderr_at_once(ssh):
    data = (string.ascii_letters * 60000)[:3_000_000]
    r = await ssh.run(["sh", "-c", "cat; head -c 3000000 /dev/zero | tr '\\0' e >&2"], stdin=data)
    assert r.rc == 0 and r.stdout == data and r.stderr == "e" * 3_000_000


async def test_one_pooled_connection_for_everything(ssh, sshd):
    await asyncio.gather(*(ssh.run(["true"]) for _ in range(30)))
    for _ in range(5):
        await ssh.run(["true"])
    path = f"{sshd.scratch_root}/pooled-{secrets.token_hex(4)}"
    await ssh.write_bytes(path, b"x")
    assert await ssh.read_bytes(path) == b"x"
    await ssh.remove(path)
    assert ssh.stats["connect"] == 1 and ssh.stats["run"] == 35


async def test_many_short_parallel_commands_never_drop_the_connection(ssh):
    """paramiko's shutdown_write() could send EOF after the server's CLOSE was answered; OpenSSH then
    dropped the connection and every command on it (~1 round in 10 of this loop before the fix)."""
    for _ in range(20):
        results = await asyncio.gather(*(ssh.run(["true"]) for _ in range(30)))
        assert all(r.rc == 0 for r in results)
    assert ssh.stats["connect"] == 1 and ssh.stats["run"] == 600


async def test_timeout_of_a_remote_command(ssh):
    start = time.monotonic()
    with pytest.raises(TransportError, match="did not finish within 1 s") as e:
        await ssh.run(["sleep", "30"], timeout=1)
    assert e.value.transient and time.monotonic() - start < 5
    assert (await ssh.run(["echo", "ok"])).stdout == "ok\n"  # the connection is still usable


async def test_sftp_files(ssh, sshd, tmp_path):
    d = f"{sshd.scratch_root}/files-{secrets.token_hex(4)}/a/b"
    await ssh.makedirs(d)
    await ssh.makedirs(d)
    await ssh.write_bytes(f"{d}/run.sh", b"#!/bin/sh\necho hi\n", mode=0o700)
    st = await ssh.stat(f"{d}/run.sh")
    assert (st.size, st.mode, st.is_dir) == (18, 0o700, False)
    assert (await ssh.run(["stat", "-c", "%a %U", f"{d}/run.sh"])).stdout == f"700 {sshd.username}\n"
    assert (await ssh.run([f"{d}/run.sh"])).stdout == "hi\n"
    async with await ssh.open(f"{d}/log", "wb") as f:
        await f.write(b"line1\n")
    async with await ssh.open(f"{d}/log", "ab") as f:
        await f.write(b"line2\n")
    assert await ssh.read_bytes(f"{d}/log") == b"line1\nline2\n"
    assert await ssh.listdir(d) == ["log", "run.sh"]
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(300_000))
    await ssh.put_file(str(local), f"{d}/up.bin", mode=0o600)
    await ssh.get_file(f"{d}/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()
    await ssh.remove(f"{d}/up.bin")
    with pytest.raises(TransportError, match="no such file or directory") as e:
        await ssh.stat(f"{d}/up.bin")
    assert e.value.reason == "not_found" and not e.value.transient
    with pytest.raises(TransportError) as e:
        await ssh.write_bytes("/etc/heroes-not-allowed", b"x")
    assert e.value.reason == "permission_denied"


async def test_host_key_mismatch_is_refused_with_both_fingerprints(sshd, keypair, caplog):
    _, other = keypair
    t = transport(sshd, host_key=other)
    with caplog.at_level(logging.DEBUG, logger="jupyter_heroes.clusters"):
        with pytest.raises(HostKeyMismatchError, match="did not match the pinned one") as e:
            await t.run(["true"])
    msg = str(e.value)
    assert f"server presented ssh-ed25519 {fingerprint(sshd.host_key)}" in msg
    assert f"pinned key is ssh-ed25519 {fingerprint(other)}" in msg
    assert not e.value.transient and t.stats["connect"] == 0
    key_body = sshd.private_key.splitlines()[1]
    assert key_body not in caplog.text and key_body not in msg
    await t.close()


async def test_unknown_client_key_is_refused(sshd, keypair):
    t = transport(sshd, private_key=keypair[0])
    with pytest.raises(
        TransportError, match="SSH authentication as heroes .* was refused: check .*authorized_keys"
    ) as e:
        await t.run(["true"])
    assert e.value.reason == "auth_failed" and not e.value.transient
    await t.close()


async def test_listener_killed_mid_operation_pooled_connection_carries_on(ssh, sshd):
    await ssh.run(["true"])
    running = asyncio.ensure_future(ssh.run(["sh", "-c", "sleep 1; echo done"]))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(sshd.kill)
    try:
        assert (await running).stdout == "done\n"  # sessions live in their own sshd processes
        assert (await ssh.run(["echo", "still"])).stdout == "still\n"  # so does the pooled connection
        fresh = transport(sshd, timeout=2)
        with pytest.raises(TransportError, match="refused the SSH connection: is sshd running") as e:
            await fresh.run(["true"])
        assert e.value.transient and e.value.reason == "unreachable"
        await fresh.close()
    finally:
        await asyncio.to_thread(sshd.start)
    assert ssh.stats["connect"] == 1


async def test_connection_dropped_mid_operation_then_reconnects(ssh, sshd):
    await ssh.run(["true"])
    running = asyncio.ensure_future(ssh.run(["sh", "-c", "sleep 5; echo done"]))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(kill_sshd_and_its_sessions, sshd)
    pending = None
    try:
        with pytest.raises(
            TransportError, match="was lost during run sh; the command may or may not have run"
        ) as e:
            await running
        assert e.value.transient and e.value.reason == "connection_lost"
        with pytest.raises(TransportError, match="refused the SSH connection") as e:
            await ssh.run(["true"], timeout=1.5)
        assert e.value.transient
        # an operation started while the server is down succeeds once it is back (backoff, then reconnect)
        pending = asyncio.ensure_future(ssh.run(["echo", "back"], timeout=30))
        await asyncio.sleep(0.5)
        assert not pending.done()
    finally:
        await asyncio.to_thread(sshd.start)
    assert (await pending).stdout == "back\n"
    assert ssh.stats["connect"] == 2
    expected = await asyncio.to_thread(Path("/etc/hostname").read_bytes)
    assert await ssh.read_bytes("/etc/hostname") == expected  # SFTP reopened on the new connection
