"""Backends for running jobs on clusters: transports (how to reach a cluster) and schedulers (how to
run batch jobs there). See :mod:`.transport`, :mod:`.scheduler` and ``docs/developer/backends.md``.

Names are imported lazily so that ``import jupyter_heroes.clusters`` stays cheap (paramiko is only
loaded with the SSH transport).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Transport": "transport",
    "TransportError": "transport",
    "CommandResult": "transport",
    "FileStat": "transport",
    "LocalTransport": "local",
    "SSHTransport": "ssh",
    "HostKeyMismatchError": "ssh",
    "Scheduler": "scheduler",
    "SchedulerError": "scheduler",
    "SubmitError": "scheduler",
    "JobState": "scheduler",
    "JobStatus": "scheduler",
    "JobAccounting": "scheduler",
    "CheckItem": "scheduler",
    "JobSpec": "spec",
    "JobSpecError": "spec",
    "SlurmScheduler": "slurm",
    "LocalScheduler": "localsched",
    "backend_for": "registry",
    "transport_class": "registry",
    "scheduler_class": "registry",
    "BackendNotFound": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
