"""Fixtures of the cluster backend tests: fresh SSH key pairs, and (for tests marked ``slurm``)
transports and schedulers on the test bed's real sshd and Slurm (``slurm_cluster`` fixture of
``jupyter_heroes/testing/plugin_testbed.py``)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def make_keypair() -> tuple[str, str]:
    """(OpenSSH private key text, "ssh-ed25519 AAAA..." public line) of a new ed25519 key."""
    k = ed25519.Ed25519PrivateKey.generate()
    private = k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = (
        k.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


@pytest.fixture
def keypair() -> tuple[str, str]:
    return make_keypair()


@pytest.fixture(name="make_keypair")
def make_keypair_fixture():
    return make_keypair
