"""An engine on a migrated SQLite database with one organization, user and local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from jupyter_heroes import dbutil
from jupyter_heroes.orm import Cluster, ClusterQueue, Organization, User, WorkflowTemplate
from jupyter_heroes.workflows.engine import BackendPool, WorkflowEngine
from jupyter_heroes.workflows.events import EventBus
from jupyter_heroes.workflows.staging import LocalStoreStager
from jupyter_heroes.workflows.templates import load_template

TEMPLATES = Path(__file__).parents[2] / "templates"


class World:
    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'heroes.sqlite'}"
        dbutil.upgrade(url)
        self.engine_sql = dbutil.make_engine(url)
        self.factory = dbutil.session_factory(self.engine_sql)
        self.store = tmp_path / "store"
        self.scratch = tmp_path / "scratch"
        self.events = EventBus()
        with dbutil.session_scope(self.factory) as s:
            org = Organization(name="orga", display_name="Org A")
            other = Organization(name="orgb")
            s.add_all([org, other])
            s.flush()
            s.add(User(name="alice"))
            c = Cluster(
                org_id=org.id,
                name="local",
                transport="local",
                scheduler="local",
                scratch_root=str(self.scratch),
            )
            c.queues.append(ClusterQueue(name="debug"))
            s.add(c)
            for f in sorted(TEMPLATES.glob("*.yaml")):
                t = load_template(f.read_text())
                s.add(
                    WorkflowTemplate(
                        org_id=org.id,
                        name=t.name,
                        version=t.version,
                        application_id=t.application,
                        spec=t.source,
                    )
                )
        self.new_engine()

    def new_engine(self) -> WorkflowEngine:
        self.engine = WorkflowEngine(
            self.factory, BackendPool(), LocalStoreStager(self.store), self.events, poll_interval=0.2
        )
        return self.engine

    def ids(self):
        with dbutil.session_scope(self.factory) as s:
            org = s.query(Organization).filter_by(name="orga").one()
            user = s.query(User).filter_by(name="alice").one()
            cluster = s.query(Cluster).filter_by(name="local").one()
            return org, user, cluster

    def submit(self, template: str, params: dict | None = None) -> str:
        with dbutil.session_scope(self.factory) as s:
            org = s.query(Organization).filter_by(name="orga").one()
            user = s.query(User).filter_by(name="alice").one()
            cluster = s.query(Cluster).filter_by(name="local").one()
            trow = s.query(WorkflowTemplate).filter_by(name=template).one()
            inst = self.engine.create_instance(
                s, org=org, user=user, template_row=trow, params=params, cluster=cluster
            )
            return inst.id


@pytest_asyncio.fixture
async def world(tmp_path):
    w = World(tmp_path)
    yield w
    await w.engine.stop()
    await w.engine.backends.close()
    w.engine_sql.dispose()


@pytest.fixture
def anyio_backend():
    return "asyncio"
