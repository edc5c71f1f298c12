"""pytest fixtures of the Keycloak-shaped OIDC provider (loaded by ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .oidc import OIDCProvider


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The provider, started once per test session on a free port with :data:`~.oidc.DEFAULT_USERS`.

    Tests that change users at the provider create their own (``oidc_provider.set_user(...)`` with a
    name of their own) so they do not disturb each other; clients are registered with
    ``oidc_provider.add_client(...)`` once the redirect URIs are known.
    """
    with OIDCProvider(workdir=tmp_path_factory.mktemp("oidc")) as op:
        yield op  # type: ignore[misc]
