"""Transports and schedulers by entry-point name, and the pair for a Cluster row."""

import pytest

from jupyter_heroes import orm
from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.localsched import LocalScheduler
from jupyter_heroes.clusters.registry import (
    BackendNotFound,
    available,
    backend_for,
    scheduler_class,
    transport_class,
)
from jupyter_heroes.clusters.slurm import SlurmScheduler
from jupyter_heroes.clusters.ssh import SSHTransport


def test_entry_points():
    assert transport_class("local") is LocalTransport and transport_class("ssh") is SSHTransport
    assert scheduler_class("local") is LocalScheduler and scheduler_class("slurm") is SlurmScheduler
    assert {"local", "ssh"} <= set(available("jupyter_heroes.transports"))
    assert scheduler_class("jupyter_heroes.clusters.slurm:SlurmScheduler") is SlurmScheduler


def test_unknown_names_list_what_is_installed():
    with pytest.raises(BackendNotFound, match=r"no scheduler named 'pbs'; installed: local, slurm"):
        scheduler_class("pbs")
    with pytest.raises(BackendNotFound, match="is not a Transport subclass"):
        transport_class("jupyter_heroes.clusters.slurm:SlurmScheduler")
    with pytest.raises(BackendNotFound, match="cannot import"):
        transport_class("nowhere.module:Thing")


def test_backend_for_cluster_rows(tmp_path, keypair):
    local = orm.Cluster(name="demo", transport="local", scheduler="local", scratch_root=str(tmp_path))
    t, s = backend_for(local)
    assert isinstance(t, LocalTransport) and isinstance(s, LocalScheduler) and s.transport is t
    assert s.scratch_root == str(tmp_path)
    priv, pub = keypair
    row = orm.Cluster(name="c1", transport="ssh", scheduler="slurm", host="login.example", port=2222, username="svc",
                      host_key=pub, scratch_root="/scratch/heroes", container_runtime="apptainer")  # fmt: skip
    t, s = backend_for(row, private_key=priv)
    assert isinstance(t, SSHTransport) and t.describe() == "svc@login.example:2222"
    assert (
        isinstance(s, SlurmScheduler)
        and s.container_runtime == "apptainer"
        and s.scratch_root == "/scratch/heroes"
    )
    with pytest.raises(ValueError, match="needs the service account's private key"):
        backend_for(row)
