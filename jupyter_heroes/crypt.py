"""Encryption at rest of the secrets the service stores (cluster private keys, S3 secret keys).

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key the
operator provides in ``$HEROES_CRYPT_KEY`` (or ``c.HeroesService.crypt_key``): one or more Fernet keys
separated by ``;``. The first encrypts; all decrypt, so keys can be rotated by prepending a new one.
Generate a key with::

    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"

Clear-text secrets are never returned by the API nor written to logs; only code that uses them
(the SSH transport, the S3 client) calls :meth:`SecretBox.decrypt`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

CRYPT_KEY_ENV = "HEROES_CRYPT_KEY"


class NoEncryptionKey(RuntimeError):
    """No key is configured, so secrets cannot be stored or read."""

    def __init__(self) -> None:
        super().__init__(
            "The HEROES service has no encryption key, so it cannot store secrets. Set $HEROES_CRYPT_KEY "
            '(or c.HeroesService.crypt_key) to a Fernet key; generate one with: python -c "from '
            'cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )


class SecretBox:
    """Encrypts and decrypts short secrets with the configured Fernet key(s)."""

    def __init__(self, keys: str | list[str] | None) -> None:
        if isinstance(keys, str):
            keys = [k.strip() for k in keys.split(";") if k.strip()]
        self._fernet: MultiFernet | None = None
        if keys:
            try:
                self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
            except (ValueError, TypeError) as e:
                raise ValueError(
                    f"{CRYPT_KEY_ENV} / c.HeroesService.crypt_key must hold Fernet keys (32 url-safe "
                    "base64-encoded bytes) separated by ';'; generate one with Fernet.generate_key()"
                ) from e

    @classmethod
    def from_env(cls) -> SecretBox:
        return cls(os.environ.get(CRYPT_KEY_ENV, ""))

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def encrypt(self, secret: str) -> bytes:
        if self._fernet is None:
            raise NoEncryptionKey()
        return self._fernet.encrypt(secret.encode("utf-8"))

    def decrypt(self, blob: bytes) -> str:
        if self._fernet is None:
            raise NoEncryptionKey()
        try:
            return self._fernet.decrypt(bytes(blob)).decode("utf-8")
        except InvalidToken as e:
            raise ValueError(
                f"a stored secret cannot be decrypted with the configured key(s): was {CRYPT_KEY_ENV} "
                "changed? Put the previous key after the new one (separated by ';') to rotate"
            ) from e


def new_client_secret() -> str:
    """A fresh OAuth client secret (shown once to the caller)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """One-way hash of a high-entropy generated secret, as stored in ``org_clients.secret_hash``."""
    salt = secrets.token_hex(8)
    digest = hashlib.sha256((salt + secret).encode()).hexdigest()
    return f"sha256:{salt}:{digest}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        algo, salt, digest = stored.split(":", 2)
    except ValueError:
        return False
    if algo != "sha256":
        return False
    return hmac.compare_digest(hashlib.sha256((salt + secret).encode()).hexdigest(), digest)
