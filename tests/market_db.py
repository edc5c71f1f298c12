"""A migrated database seeded with the sample marketplace, on SQLite and on the test bed's PostgreSQL
(the ``db`` fixture of tests/accounting and tests/marketplace; loaded by tests/conftest.py, so each
seeded template is built once per session).

The database is migrated (alembic, to head) and seeded once per session and per backend; each test
gets a copy of it (a file copy for SQLite, ``CREATE DATABASE ... TEMPLATE`` for PostgreSQL).
"""

from __future__ import annotations

import copy
import itertools
import shutil

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from jupyter_heroes import dbutil
from jupyter_heroes.marketplace.sample import seed

_n = itertools.count()


class DB:
    def __init__(self, url: str, ids) -> None:
        self.url = url
        self.engine = dbutil.make_engine(url)
        self.factory = dbutil.session_factory(self.engine)
        self.dialect = self.engine.dialect.name
        self.ids = ids

    def session(self):
        return dbutil.session_scope(self.factory)


def _migrate_and_seed(url: str):
    dbutil.upgrade(url)
    engine = dbutil.make_engine(url)
    with dbutil.session_scope(dbutil.session_factory(engine)) as s:
        ids = seed(s)
    engine.dispose()
    return ids


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("market") / "template.sqlite"
    return path, _migrate_and_seed(f"sqlite:///{path}")


@pytest.fixture(scope="session")
def _postgres_template(postgres):
    url = postgres.new_database("mkt_tmpl")
    return url, _migrate_and_seed(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    if request.param == "sqlite":
        template, ids = request.getfixturevalue("_sqlite_template")
        shutil.copy(template, tmp_path / "heroes.sqlite")
        url = f"sqlite:///{tmp_path / 'heroes.sqlite'}"
    else:
        template, ids = request.getfixturevalue("_postgres_template")
        src = make_url(template)
        name = f"mkt_{next(_n)}_{tmp_path.name[-12:].lower().replace('-', '_')}"
        admin = create_engine(src.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{src.database}"'))
        admin.dispose()
        url = src.set(database=name).render_as_string(hide_password=False)
    d = DB(url, copy.deepcopy(ids))  # tests may add to their copy
    yield d
    d.engine.dispose()
