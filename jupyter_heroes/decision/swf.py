"""Read Standard Workload Format (SWF) traces: the Parallel Workloads Archive's accounting logs.

One job a line, 18 whitespace-separated fields (see :data:`FIELDS`); ``-1`` means unknown and becomes
``None`` here. Lines starting with ``;`` are header comments; ``; Key: value`` lines are collected into
:attr:`SwfTrace.header` (repeated keys such as ``Queue`` or ``Note`` keep every value, in order). Some
logs append fields after the 18th (the ALEA MetaCentrum logs add the node list, the queue name and the
PBS resource string); they are kept as strings in :attr:`SwfJob.extra`.

Files ending in ``.gz`` are decompressed on the fly. A malformed line raises :class:`SwfError` naming
the file and line number, so a bad trace is never silently half-read.

Reference: Feitelson, Tsafrir, Krakov, "Experience with using the Parallel Workloads Archive",
JPDC 74(10), 2014; https://www.cs.huji.ac.il/labs/parallel/workload/swf.html
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from .predict import FinishedJob

#: The 18 standard fields, in file order.
FIELDS: tuple[str, ...] = (
    "job_id",
    "submit_time",
    "wait_time",
    "run_time",
    "allocated_procs",
    "avg_cpu_time",
    "used_memory",
    "requested_procs",
    "requested_time",
    "requested_memory",
    "status",
    "user_id",
    "group_id",
    "app_id",
    "queue",
    "partition",
    "preceding_job",
    "think_time",
)

#: Status codes of field 11 (SWF 2.2).
STATUS_FAILED = 0
STATUS_COMPLETED = 1
STATUS_CANCELLED = 5


class SwfError(ValueError):
    """A trace line could not be parsed; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class SwfJob:
    """One SWF record. Every standard field is ``None`` when the log says ``-1`` (unknown).

    Times are in seconds; ``submit_time`` is relative to the header's ``UnixStartTime`` when the trace
    has one, absolute (Unix epoch) otherwise. Memory fields are in KB per processor (SWF convention).
    """

    job_id: int
    submit_time: float
    wait_time: float | None
    run_time: float | None
    allocated_procs: int | None
    avg_cpu_time: float | None
    used_memory: float | None
    requested_procs: int | None
    requested_time: float | None
    requested_memory: float | None
    status: int | None
    user_id: int | None
    group_id: int | None
    app_id: int | None
    queue: int | None
    partition: int | None
    preceding_job: int | None
    think_time: float | None
    extra: tuple[str, ...] = ()

    @property
    def end_time(self) -> float | None:
        """``submit + wait + run``, or ``None`` when the run time is unknown (wait unknown counts as 0)."""
        if self.run_time is None:
            return None
        return self.submit_time + (self.wait_time or 0.0) + self.run_time


@dataclass(slots=True)
class SwfTrace:
    """A parsed trace: its header and its jobs in file order."""

    path: str
    header: dict[str, list[str]] = field(default_factory=dict)
    jobs: list[SwfJob] = field(default_factory=list)

    def header_value(self, key: str) -> str | None:
        """First value of header ``key`` (case-insensitive), or ``None``."""
        for k, values in self.header.items():
            if k.lower() == key.lower() and values:
                return values[0]
        return None

    def header_number(self, key: str, default: float = 0.0) -> float:
        """Numeric header value (e.g. ``UnixStartTime``, ``TimeZone``), ``default`` if absent or not numeric."""
        value = self.header_value(key)
        try:
            return float(value) if value is not None else default
        except ValueError:
            return default

    @property
    def name(self) -> str:
        """File name without directory and ``.swf``/``.gz`` suffixes."""
        base = os.path.basename(self.path)
        for suffix in (".gz", ".swf"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        return base


_INT_FIELDS = frozenset(
    {
        "job_id",
        "allocated_procs",
        "requested_procs",
        "status",
        "user_id",
        "group_id",
        "app_id",
        "queue",
        "partition",
        "preceding_job",
    }
)


def _number(token: str, name: str) -> float | int | None:
    value = float(token)
    if value == -1:
        # -1 is "unknown" in every field (a submit time is never -1 in a sane log).
        return None
    if name in _INT_FIELDS:
        return int(value)
    return value


def parse_line(line: str, *, where: str = "<string>") -> SwfJob | None:
    """Parse one line; ``None`` for blank lines and ``;`` comments."""
    text = line.strip()
    if not text or text.startswith(";"):
        return None
    tokens = text.split()
    if len(tokens) < len(FIELDS):
        raise SwfError(
            f"{where}: expected at least {len(FIELDS)} whitespace-separated fields, found {len(tokens)}; "
            "is this a Standard Workload Format file?"
        )
    values: dict[str, object] = {}
    for name, token in zip(FIELDS, tokens, strict=False):
        try:
            values[name] = _number(token, name)
        except ValueError:
            raise SwfError(f"{where}: field {name!r} is {token!r}, expected a number") from None
    if values["job_id"] is None or values["submit_time"] is None:
        raise SwfError(f"{where}: job id and submit time must be known (not -1)")
    return SwfJob(**values, extra=tuple(tokens[len(FIELDS) :]))  # type: ignore[arg-type]


def _parse_header(line: str, header: dict[str, list[str]]) -> None:
    body = line.strip()[1:].strip()
    key, sep, value = body.partition(":")
    if sep and key and " " not in key.strip():
        header.setdefault(key.strip(), []).append(value.strip())


def iter_swf(
    stream: Iterable[str], *, where: str = "<stream>", header: dict | None = None
) -> Iterator[SwfJob]:
    """Yield jobs from an iterable of lines; header lines go into ``header`` if given."""
    for lineno, line in enumerate(stream, 1):
        if line.lstrip().startswith(";"):
            if header is not None:
                _parse_header(line, header)
            continue
        job = parse_line(line, where=f"{where}:{lineno}")
        if job is not None:
            yield job


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a plain or gzip-compressed text file (detected by its magic bytes, not its name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_swf(path: str | os.PathLike[str]) -> SwfTrace:
    """Read a whole trace (``.swf`` or ``.swf.gz``, with or without header)."""
    trace = SwfTrace(path=os.fspath(path))
    try:
        f = open_text(path)
    except FileNotFoundError:
        raise SwfError(f"{path}: no such trace file; give the path of a .swf or .swf.gz file") from None
    with f:
        try:
            trace.jobs.extend(iter_swf(f, where=os.fspath(path), header=trace.header))
        except (EOFError, gzip.BadGzipFile, OSError) as e:
            raise SwfError(
                f"{path}: cannot read the compressed trace ({e}); is the download complete?"
            ) from e
    return trace


def usable(job: SwfJob, *, require_request: bool = True) -> bool:
    """Whether a job counts in a prediction replay: known run time > 0 and, if ``require_request``,
    a known requested time > 0. Every status counts (completed, failed, cancelled): a walltime must fit
    the runs that fail too. This is the selection that reproduces the baselines of the data README."""
    if job.run_time is None or job.run_time <= 0:
        return False
    return not require_request or (job.requested_time is not None and job.requested_time > 0)


def to_finished_jobs(trace: SwfTrace, *, require_request: bool = True) -> list[FinishedJob]:
    """The :func:`usable` jobs of ``trace`` as :class:`.predict.FinishedJob` (ids, users, apps, queues as
    strings; ``job_id`` made unique by a ``#n`` suffix if the log repeats one)."""
    from .predict import FinishedJob, JobRequest

    out: list[FinishedJob] = []
    seen: set[str] = set()
    for j in trace.jobs:
        if not usable(j, require_request=require_request):
            continue
        jid = str(j.job_id)
        k = 1
        while jid in seen:
            k += 1
            jid = f"{j.job_id}#{k}"
        seen.add(jid)
        procs = j.requested_procs or j.allocated_procs
        req = JobRequest(
            user=str(j.user_id) if j.user_id is not None else "unknown",
            submit_time=j.submit_time,
            requested_time=j.requested_time if j.requested_time and j.requested_time > 0 else None,
            requested_procs=procs if procs and procs > 0 else None,
            requested_memory=j.requested_memory if j.requested_memory and j.requested_memory > 0 else None,
            app=str(j.app_id) if j.app_id is not None else None,
            queue=str(j.queue) if j.queue is not None else None,
            job_id=jid,
        )
        out.append(FinishedJob(req, float(j.run_time), j.end_time))  # type: ignore[arg-type]
    return out
