"""Fixtures of the data tests.

The real S3 server (moto_server) and OpenSSH server come from the test bed's session fixtures
``s3_server`` and ``sshd`` (``jupyter_heroes/testing/plugin_testbed.py``), started once per session
and stopped by PID; these fixtures build clients on top of them.
"""

from __future__ import annotations

import uuid

import paramiko
import pytest

from jupyter_heroes.data.storage import S3Storage


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
    client.load_host_keys(str(sshd.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_filename=str(sshd.private_key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client
