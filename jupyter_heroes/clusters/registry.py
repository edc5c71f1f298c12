"""Find transports and schedulers by name, the way JupyterHub finds spawners: by entry point.

``jupyter_heroes.transports`` (``local``, ``ssh``) and ``jupyter_heroes.schedulers`` (``local``,
``slurm``) are declared in ``pyproject.toml``; a package can add its own. A name may also be a full
``module:Class`` or ``module.Class`` path. :func:`backend_for` builds the pair for a
:class:`jupyter_heroes.orm.Cluster` row.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from .scheduler import Scheduler
from .transport import Transport

TRANSPORTS = "jupyter_heroes.transports"
SCHEDULERS = "jupyter_heroes.schedulers"


class BackendNotFound(LookupError):
    """No transport or scheduler has that name."""


def available(group: str) -> dict[str, str]:
    """Installed names of *group* -> ``module:Class``."""
    return {ep.name: ep.value for ep in entry_points(group=group)}


def _load(group: str, name: str, base: type) -> Any:
    if not isinstance(name, str) or not name:
        raise BackendNotFound(
            f"give a {group.rsplit('.', 1)[-1][:-1]} name; installed: {', '.join(sorted(available(group)))}"
        )
    eps = {ep.name: ep for ep in entry_points(group=group)}
    if name in eps:
        cls = eps[name].load()
    elif ":" in name or "." in name:
        module, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise BackendNotFound(f"cannot import {name!r}: {e}") from None
    else:
        kind = group.rsplit(".", 1)[-1][:-1]
        raise BackendNotFound(f"no {kind} named {name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise BackendNotFound(f"{name!r} is not a {base.__name__} subclass")
    return cls


def transport_class(name: str) -> type[Transport]:
    return _load(TRANSPORTS, name, Transport)


def scheduler_class(name: str) -> type[Scheduler]:
    return _load(SCHEDULERS, name, Scheduler)


def backend_for(cluster: Any, private_key: str | None = None, **config: Any) -> tuple[Transport, Scheduler]:
    """The transport and scheduler of a cluster row (``transport``, ``scheduler``, ``host``...).
    *private_key* is the decrypted key text (SSH only); *config* (e.g. ``config=traitlets Config``)
    is passed to both constructors. Keep the pair for the cluster's lifetime: the transport holds
    its pooled connection."""
    transport = transport_class(cluster.transport).from_cluster(cluster, private_key, **config)
    scheduler = scheduler_class(cluster.scheduler).from_cluster(cluster, transport, **config)
    return transport, scheduler
