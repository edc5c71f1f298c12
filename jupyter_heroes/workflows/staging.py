"""How the engine moves a step's inputs to the cluster and its outputs back.

The engine calls a :class:`Stager`; it does not know where users' files live. Two implementations:

- :class:`LocalStoreStager`: users' files in a local directory tree
  (``<root>/<organization>/<user>/<key>``), copied through the cluster's transport. The embedded
  default of ``heroes demo`` and the reference the object-store stager is measured against.
- the object-store stager of :mod:`jupyter_heroes.data` (S3 buckets to the cluster over SFTP).

Outputs land under ``results/<instance id>/`` in the user's storage.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..clusters.transport import Transport, TransportError
from .heroesfs import InstanceDirs, PathEscapeError, confine, sanitize


@dataclass(frozen=True)
class StageContext:
    organization: str
    user: str
    instance_id: str
    dirs: InstanceDirs


class StagingError(RuntimeError):
    reason = "staging-failed"

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Stager(Protocol):
    async def stage_in(self, ctx: StageContext, transport: Transport, keys: list[str]) -> list[str]:
        """Copy the user's objects *keys* into the instance's work directory; return remote paths."""
        ...

    async def stage_out(self, ctx: StageContext, transport: Transport, paths: list[str]) -> list[str]:
        """Copy *paths* (relative to the work directory; files or directories) to the user's storage
        under ``results/<instance>/``; return the keys written."""
        ...


class LocalStoreStager:
    """Users' files in a local directory: ``<root>/<organization>/<user>/<key>``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def user_root(self, ctx: StageContext) -> Path:
        return self.root / sanitize(ctx.organization, "organization") / sanitize(ctx.user, "user")

    def _local(self, ctx: StageContext, key: str) -> Path:
        base = str(self.user_root(ctx))
        try:
            return Path(confine(base, key))
        except PathEscapeError as e:
            raise StagingError(f"input {key!r} refused: {e}") from None

    async def stage_in(self, ctx: StageContext, transport: Transport, keys: list[str]) -> list[str]:
        written = []
        for key in keys:
            src = self._local(ctx, key)
            if src.is_symlink() or not src.is_file():
                raise StagingError(f"input {key!r} is not a file in your storage; upload it first")
            dest = ctx.dirs.path(key)
            try:
                await transport.makedirs(posixpath.dirname(dest))
                await transport.put_file(str(src), dest)
            except TransportError as e:
                raise StagingError(f"copying {key!r} to the cluster failed: {e}", e.transient) from e
            written.append(dest)
        return written

    async def stage_out(self, ctx: StageContext, transport: Transport, paths: list[str]) -> list[str]:
        keys: list[str] = []
        for rel in paths:
            remote = ctx.dirs.path(rel)
            try:
                if not await transport.exists(remote):
                    continue
                st = await transport.stat(remote)
                files = await self._walk(transport, remote) if st.is_dir else [remote]
                for f in files:
                    sub = posixpath.relpath(f, ctx.dirs.work)
                    key = f"results/{ctx.instance_id}/{sub}"
                    dest = self._local(ctx, key)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    await transport.get_file(f, str(dest))
                    keys.append(key)
            except TransportError as e:
                raise StagingError(f"copying output {rel!r} back failed: {e}", e.transient) from e
        return keys

    async def _walk(self, transport: Transport, top: str, depth: int = 0) -> list[str]:
        if depth > 20:
            return []
        out = []
        for name in await transport.listdir(top):
            p = posixpath.join(top, name)
            st = await transport.stat(p)
            if st.is_dir:
                out += await self._walk(transport, p, depth + 1)
            else:
                out.append(p)
        return out
