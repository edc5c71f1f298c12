"""The PostgreSQL test bed: fresh empty databases behind password authentication."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def test_new_database_is_fresh_empty_and_usable(postgres):
    first, second = postgres.new_database(), postgres.new_database("heroes")
    assert first != second
    for url in (first, second):
        parsed = make_url(url)
        assert (parsed.drivername, parsed.host, parsed.port) == (
            "postgresql+psycopg",
            "127.0.0.1",
            postgres.port,
        )
        engine = sa.create_engine(url)
        try:
            assert sa.inspect(engine).get_table_names() == []
            with engine.begin() as conn:
                assert conn.execute(sa.text("SELECT current_user, current_database()")).one() == (
                    postgres.user,
                    parsed.database,
                )
                conn.execute(sa.text("CREATE TABLE probe (id serial PRIMARY KEY, name text NOT NULL)"))
                conn.execute(sa.text("INSERT INTO probe (name) VALUES ('a'), ('b')"))
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT name FROM probe ORDER BY id")).scalars().all() == [
                    "a",
                    "b",
                ]
        finally:
            engine.dispose()
    assert make_url(second).database.startswith("heroes_")
    # a table made in one database is not in the other
    engine = sa.create_engine(postgres.new_database())
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_tcp_needs_the_password(postgres):
    url = make_url(postgres.new_database()).set(password="not-the-password")
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()


@pytest.mark.parametrize("prefix", ["", "Upper", "1st", "x; DROP DATABASE postgres", "a" * 40])
def test_bad_prefix_is_refused(postgres, prefix):
    with pytest.raises(ValueError, match="database prefix"):
        postgres.new_database(prefix)
