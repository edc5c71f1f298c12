"""Load the test-bed fixtures (every ``jupyter_heroes/testing/plugin_*.py`` is a pytest plugin) and the
seeded marketplace database shared by tests/accounting and tests/marketplace."""

import pkgutil

import pytest
from sqlalchemy import text

import jupyter_heroes.testing as _testing
from jupyter_heroes import dbutil

pytest_plugins = sorted(
    f"jupyter_heroes.testing.{m.name}"
    for m in pkgutil.iter_modules(_testing.__path__)
    if m.name.startswith("plugin_")
)
# tests/market_db.py: the seeded marketplace database of tests/accounting and tests/marketplace
pytest_plugins.append("market_db")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request, tmp_path):
    """The URL of an empty database (no schema): an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'heroes.sqlite'}"
    return request.getfixturevalue("postgres").new_database("empty")


@pytest.fixture
def database_at(empty_db_url):
    """``database_at(revision)``: the empty database upgraded to alembic *revision*, holding organization
    ``acme``, as ``(url, engine)``: where each migration test starts."""

    def at(revision: str):
        dbutil.upgrade(empty_db_url, revision)
        engine = dbutil.make_engine(empty_db_url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (name, display_name, kind, active, created) "
                    "VALUES ('acme', 'Acme', 'client', true, '2025-01-01 00:00:00')"
                )
            )
        return empty_db_url, engine

    return at
