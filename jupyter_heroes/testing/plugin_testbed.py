"""pytest plugin: the real-component test bed, one instance of each component per test session.

Fixtures (all session-scoped, started on first use, stopped by PID at the end of the session):

``slurm``           :class:`~jupyter_heroes.testing.slurm.SlurmTestbed`
``sshd``            :class:`~jupyter_heroes.testing.sshd.SshdTestbed`
``slurm_cluster``   :class:`~jupyter_heroes.testing.slurm.SlurmCluster` (``.slurm``, ``.ssh``, ``.partitions``)
``postgres``        :class:`~jupyter_heroes.testing.postgres.PostgresTestbed`
``s3_server``       :class:`~jupyter_heroes.testing.s3.S3Testbed`
``s3_tls_server``   :class:`~jupyter_heroes.testing.s3.S3Testbed` over HTTPS (``.ca_file``)
``browser``         Playwright sync ``Browser`` on headless Debian Chromium
``screenshots_dir`` ``<rootdir>/test-artifacts/screenshots/`` (created)

A component that cannot start fails every test that uses it with the tail of its log (a session
fixture's error is cached by pytest, so it is not retried per test); nothing is skipped. The start-up
time of each component is printed in the terminal summary. When a test fails, the tail of every
running component's log written to during the test is added to its report (``test bed log ...``
sections), so a failure seen only in CI can be read from CI's output.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .base import Component, tail
from .postgres import PostgresTestbed
from .s3 import S3Testbed
from .slurm import SlurmCluster, SlurmTestbed
from .sshd import SshdTestbed

if TYPE_CHECKING:
    from playwright.sync_api import Browser

_startup: dict[str, str] = {}
_running: list[Component] = []


def _run(component: Component, label: str) -> Iterator[Component]:
    t0 = time.monotonic()
    with component:
        secs = time.monotonic() - t0
        waited = getattr(component, "startup_seconds", {}).get("lock", 0.0)
        _startup[label] = f"{secs - waited:.1f} s" + (
            f" (+{waited:.0f} s waiting for another session)" if waited >= 1 else ""
        )
        _running.append(component)
        try:
            yield component
        finally:
            _running.remove(component)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmTestbed]:
    """Slurm (munge, MariaDB, slurmdbd, slurmctld, slurmd) on its fixed ports; cluster ``heroes``."""
    yield from _run(SlurmTestbed(), "slurm")  # type: ignore[misc]


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshdTestbed]:
    """OpenSSH on a free port for the unprivileged ``heroes`` account, key-only, pinned host key."""
    yield from _run(SshdTestbed(), "sshd")  # type: ignore[misc]


@pytest.fixture(scope="session")
def slurm_cluster(slurm: SlurmTestbed, sshd: SshdTestbed) -> SlurmCluster:
    """Slurm reached over ssh as ``heroes``: ``.slurm``, ``.ssh``, ``.partitions``."""
    return SlurmCluster(slurm=slurm, ssh=sshd)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresTestbed]:
    """PostgreSQL on a free port; ``postgres.new_database()`` gives a fresh empty database URL."""
    yield from _run(PostgresTestbed(), "postgres")  # type: ignore[misc]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Testbed]:
    """moto_server (S3 protocol) on a free port; any credentials are accepted."""
    yield from _run(S3Testbed(), "s3 (moto)")  # type: ignore[misc]


@pytest.fixture(scope="session")
def s3_tls_server() -> Iterator[S3Testbed]:
    """moto_server over HTTPS, its certificate signed by a CA of its own (``.ca_file``), as an
    organization's MinIO behind its centre's private CA."""
    yield from _run(S3Testbed(tls=True), "s3 over TLS (moto)")  # type: ignore[misc]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium through the Playwright sync API (use it from sync tests)."""
    from .browser import chromium

    t0 = time.monotonic()
    with chromium() as b:
        _startup["browser"] = f"{time.monotonic() - t0:.1f} s"
        yield b


@pytest.fixture(scope="session")
def screenshots_dir(pytestconfig: pytest.Config) -> Path:
    """``test-artifacts/screenshots/`` under the rootdir, created; CI keeps it as an artifact."""
    d = Path(pytestconfig.rootpath) / "test-artifacts" / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "teardown" or not report.failed:
        return
    for section in log_tails_since(since=call.start - 1):
        report.sections.append(section)


def log_tails_since(since: float, lines: int = 40) -> list[tuple[str, str]]:
    """``(title, tail)`` of each running component's ``*.log`` modified at or after *since*."""
    out = []
    for component in list(_running):
        for log in sorted(component.workdir.glob("*.log")):
            try:
                if log.stat().st_mtime < since:
                    continue
            except OSError:
                continue
            out.append((f"test bed log {log} (last {lines} lines)", tail(log, lines)))
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _startup:
        parts = ", ".join(f"{name} {took}" for name, took in _startup.items())
        terminalreporter.write_line(f"test bed start-up: {parts}")
