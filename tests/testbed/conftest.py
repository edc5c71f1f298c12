"""Fixtures for the tests of the test bed itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testbed_ssh import Remote

from jupyter_heroes.testing.sshd import SshdTestbed


@pytest.fixture
def remote(sshd: SshdTestbed) -> Iterator[Remote]:
    r = Remote(sshd)
    yield r
    r.close()
