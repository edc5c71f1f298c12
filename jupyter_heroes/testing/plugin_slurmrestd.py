"""pytest plugin: slurmrestd (JWT) in front of the test bed's Slurm, once per test session.

``slurmrestd`` -> :class:`~jupyter_heroes.testing.slurmrestd.SlurmRestdTestbed` (``.url``,
``.api_version``, ``.token(username, lifespan)``), started on a free port as the unprivileged
``slurmrest`` account after the ``slurm`` fixture, stopped by PID at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .slurm import SlurmTestbed
from .slurmrestd import SlurmRestdTestbed


@pytest.fixture(scope="session")
def slurmrestd(slurm: SlurmTestbed) -> Iterator[SlurmRestdTestbed]:
    """slurmrestd (API v0.0.38, rest_auth/jwt) on a free port on 127.0.0.1."""
    rest = SlurmRestdTestbed(slurm)
    try:
        with rest:
            yield rest
    finally:
        rest.close()
