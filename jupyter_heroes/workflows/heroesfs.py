"""HEROES-FS: where a workflow instance lives on a cluster.

Every instance gets its own directory under the cluster's scratch root::

    <scratch_root>/<organization>/<project>/<user>/<instance id>/
        work/                   working directory shared by the steps: staged inputs and outputs
        logs/                   stdout/stderr of every step and the EAR plugin's CSVs (HEROES_LOGS_PATH)
        work/.heroes/           batch scripts written by the scheduler

Names are sanitised (lowercase letters, digits, ``-`` ``_`` ``.``, no leading dot) so a user name or a
project name can never add a path segment, and every path handed out is checked to stay below the
instance root: ``..``, absolute paths and NUL/control characters are refused. Symlinks are the
cluster's business: staging refuses to follow them (see :mod:`jupyter_heroes.data.staging`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

_SAFE = re.compile(r"[^a-z0-9._-]+")


class PathEscapeError(ValueError):
    """A relative path would leave its root."""

    reason = "path-escape"


def sanitize(name: str, what: str = "name") -> str:
    """A single safe path segment derived from *name* (stable; a short hash keeps distinct names distinct)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} is empty")
    clean = _SAFE.sub("-", name.lower()).strip("-.")[:48] or "x"
    if clean != name:
        clean = f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return clean


def confine(root: str, relative: str) -> str:
    """``root/relative`` normalised, refusing anything that would not stay strictly below *root*."""
    if not isinstance(relative, str) or not relative:
        raise PathEscapeError("the path is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in relative) or "\\" in relative:
        raise PathEscapeError(f"{relative!r} contains control characters or backslashes")
    if relative.startswith("/"):
        raise PathEscapeError(f"{relative!r} is absolute; give a path relative to the instance directory")
    parts = relative.split("/")
    if any(p == ".." for p in parts):
        raise PathEscapeError(f"{relative!r} contains '..'")
    full = posixpath.normpath(posixpath.join(root, relative))
    if full == root or not full.startswith(root.rstrip("/") + "/"):
        raise PathEscapeError(f"{relative!r} does not stay below {root}")
    return full


@dataclass(frozen=True)
class InstanceDirs:
    """The directories of one instance on one cluster."""

    root: str

    @classmethod
    def for_instance(
        cls, scratch_root: str, organization: str, project: str | None, user: str, instance_id: str
    ) -> InstanceDirs:
        if not scratch_root.startswith("/"):
            raise ValueError(f"the cluster's scratch root must be an absolute path, got {scratch_root!r}")
        if not re.fullmatch(r"[0-9a-f]{8,64}", instance_id):
            raise ValueError(f"instance id {instance_id!r} is not a HEROES instance id")
        parts = [
            sanitize(organization, "organization"),
            sanitize(project or "default", "project"),
            sanitize(user, "user"),
            instance_id,
        ]
        return cls(posixpath.join(posixpath.normpath(scratch_root), *parts))

    @property
    def logs(self) -> str:
        return posixpath.join(self.root, "logs")

    @property
    def control(self) -> str:
        return posixpath.join(self.root, ".heroes")

    @property
    def work(self) -> str:
        return posixpath.join(self.root, "work")

    def path(self, relative: str) -> str:
        """A file of the instance's work directory (inputs land here, outputs are read from here)."""
        return confine(self.work, relative)

    def log(self, step: str, stream: str = "out", array: bool = False) -> str:
        """The stdout (``out``) or stderr (``err``) file of a step; ``%a`` is the array task index."""
        if stream not in ("out", "err"):
            raise ValueError("stream is 'out' or 'err'")
        suffix = "-%a" if array else ""
        return posixpath.join(self.logs, f"{sanitize(step, 'step')}{suffix}.{stream}")
