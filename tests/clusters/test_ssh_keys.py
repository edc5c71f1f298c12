"""SSHTransport configuration: pinned host keys, private keys as text, and the mismatch message
(no server needed; the connection itself is tested against the test bed's sshd)."""

import base64
import hashlib

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jupyter_heroes.clusters.ssh import (
    HostKeyMismatchError,
    SSHTransport,
    parse_private_key,
    parse_public_key,
)


def make_keypair():
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


def openssh_fingerprint(public_line: str) -> str:
    """What ``ssh-keygen -lf`` prints, computed independently of paramiko."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_public_key_forms():
    _, pub = make_keypair()
    k = parse_public_key(pub)
    assert k.get_name() == "ssh-ed25519" and k.fingerprint == openssh_fingerprint(pub)
    assert parse_public_key(pub + " root@host").fingerprint == k.fingerprint
    assert parse_public_key("[127.0.0.1]:2222 " + pub).fingerprint == k.fingerprint  # a known_hosts line


@pytest.mark.parametrize("text", ["", "AAAA", "ssh-ed25519", "ssh-ed25519 not-base64!", "ssh-ed25519 QUJD"])
def test_bad_public_keys_are_refused_with_help(text):
    with pytest.raises(ValueError, match="pinned host key"):
        parse_public_key(text)


def test_private_key_text_and_errors_never_echo_the_key():
    priv, pub = make_keypair()
    assert parse_private_key(priv).get_base64() == pub.split()[1]
    broken = priv.replace("A", "B", 5)
    with pytest.raises(ValueError) as e:
        parse_private_key(broken)
    assert "could not be read" in str(e.value) and broken[40:80] not in str(e.value)
    k = ed25519.Ed25519PrivateKey.generate()
    encrypted = k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(ValueError, match="is encrypted"):
        parse_private_key(encrypted)


def test_mismatch_message_names_both_fingerprints():
    _, presented = make_keypair()
    _, pinned = make_keypair()
    e = HostKeyMismatchError("login.example:22", parse_public_key(presented), parse_public_key(pinned))
    msg = str(e)
    assert "did not match the pinned one" in msg
    assert openssh_fingerprint(presented) in msg and openssh_fingerprint(pinned) in msg
    assert e.transient is False and e.reason == "host_key_mismatch"


def test_constructor_validates_and_repr_hides_the_key():
    priv, pub = make_keypair()
    t = SSHTransport("login.example", port=2222, username="svc", host_key=pub, private_key=priv)
    assert repr(t) == "<SSHTransport svc@login.example:2222>"
    assert priv.splitlines()[1] not in repr(t.__dict__.get("_pkey"))
    assert t.pinned_fingerprint == openssh_fingerprint(pub)
    with pytest.raises(ValueError, match="invalid SSH port 0"):
        SSHTransport("h", port=0, username="svc", host_key=pub, private_key=priv)
    with pytest.raises(ValueError, match="invalid SSH username"):
        SSHTransport("h", username="a b", host_key=pub, private_key=priv)
    with pytest.raises(ValueError, match="invalid cluster host"):
        SSHTransport("h;id", username="svc", host_key=pub, private_key=priv)
    with pytest.raises(ValueError, match="needs the service account's private key"):
        SSHTransport("h", username="svc", host_key=pub, private_key="")


def test_paramiko_mismatch_exception_is_what_we_translate():
    # guard against paramiko renaming the attributes HostKeyMismatchError relies on
    _, a = make_keypair()
    _, b = make_keypair()
    e = paramiko.BadHostKeyException("h", parse_public_key(a), parse_public_key(b))
    assert e.key.fingerprint == openssh_fingerprint(a) and e.expected_key.fingerprint == openssh_fingerprint(
        b
    )


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (EOFError(), "the server closed the connection"),  # paramiko raises it without a message
        (paramiko.SSHException(), "SSHException"),
        (paramiko.SSHException("Key-exchange timed out"), "Key-exchange timed out"),
    ],
)
def test_connection_errors_without_a_message_still_say_what_happened(exc, words):
    private, _ = make_keypair()
    _, host_public = make_keypair()
    t = SSHTransport("login.example.org", username="heroes", host_key=host_public, private_key=private)
    err = t._classify("run", "squeue", exc)
    assert str(err) == f"SSH run squeue on heroes@login.example.org:22 failed: {words}"
    assert err.transient and err.reason == "connection_lost"
