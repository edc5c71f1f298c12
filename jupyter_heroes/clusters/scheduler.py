"""The scheduler base: submit, poll, cancel, account for and recover batch jobs through a Transport.

Like psij's batch executor, the base implements each operation once and leaves narrow hooks to each
scheduler (:class:`~.slurm.SlurmScheduler`, :class:`~.localsched.LocalScheduler`): render a script,
build an argv, parse an output. The core never branches on a scheduler's name.

Polling is batched: :meth:`Scheduler.poll` runs ONE queue command for all the ids it is given (for
Slurm one ``squeue``), then ONE history command (one ``sacct``) for the ids that left the queue or
finished in it, to get their exit codes. If the scheduler cannot be asked, every id is ``unknown``,
never finished: a controller restart must not fail running workflows.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import posixpath
import re
import secrets
import shlex
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

from .spec import JobSpec, JobSpecError, validate_job_id
from .transport import CommandResult, Transport, TransportError

__all__ = [
    "CheckItem",
    "JobAccounting",
    "JobSpec",
    "JobSpecError",
    "JobState",
    "JobStatus",
    "QueueRow",
    "Scheduler",
    "SchedulerError",
    "StepAccounting",
    "SubmitError",
]


class JobState(str, enum.Enum):
    """A job's state, the same for every scheduler. ``final`` states never change again."""

    NEW = "new"
    QUEUED = "queued"
    HELD = "held"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    OUT_OF_MEMORY = "out_of_memory"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self in _FINAL

    @property
    def succeeded(self) -> bool:
        return self is JobState.COMPLETED


_FINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
    }
)
# when array tasks disagree, the parent shows the most telling one
_FAILURE_ORDER = [
    JobState.FAILED,
    JobState.OUT_OF_MEMORY,
    JobState.TIMEOUT,
    JobState.NODE_FAIL,
    JobState.CANCELLED,
]
_ACTIVE_ORDER = [
    JobState.RUNNING,
    JobState.COMPLETING,
    JobState.QUEUED,
    JobState.HELD,
    JobState.NEW,
    JobState.UNKNOWN,
]


class SchedulerError(Exception):
    """A scheduler command failed. ``message`` for the user, ``reason`` short code, ``transient``
    whether retrying later can help (psij's SubmitException has the same flag)."""

    def __init__(self, message: str, transient: bool, reason: str = "scheduler_error") -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.reason = reason

    def __str__(self) -> str:
        return self.message


class SubmitError(SchedulerError):
    """Submission failed. ``maybe_submitted`` is True when the submit command was sent but its answer
    was lost: call :meth:`Scheduler.find_by_name` before submitting again."""

    def __init__(
        self, message: str, transient: bool, reason: str = "submit_failed", maybe_submitted: bool = False
    ) -> None:
        super().__init__(message, transient, reason)
        self.maybe_submitted = maybe_submitted


@dataclass
class JobStatus:
    """What :meth:`Scheduler.poll` says about one job. ``reason`` is a sentence for users;
    ``reason_code`` the scheduler's own code (``Priority``, ``Dependency``...); ``exit_code`` and
    ``signal`` come from the scheduler's accounting once the job is final (``None`` before)."""

    state: JobState
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None
    native_state: str = ""
    reason_code: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d


@dataclass
class QueueRow:
    """One line of a queue or history listing, before selection: ``array_job_id`` is the parent id of
    an array task (``"123"`` for ``"123_4"``) or empty."""

    job_id: str
    status: JobStatus
    array_job_id: str = ""


@dataclass
class StepAccounting:
    step_id: str
    state: JobState
    native_state: str = ""
    exit_code: int | None = None
    signal: int | None = None
    elapsed_s: float | None = None
    max_rss_bytes: int | None = None
    consumed_energy_j: float | None = None


@dataclass
class JobAccounting:
    """Resource use of one finished (or running) job, from the scheduler's accounting (sacct).
    ``max_rss_bytes`` is the largest over the job's steps; ``consumed_energy_j`` is None when the
    cluster does not measure energy. Times are the cluster's local time, as the scheduler prints them."""

    job_id: str
    state: JobState
    native_state: str = ""
    name: str = ""
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    elapsed_s: float | None = None
    alloc_cpus: int | None = None
    nnodes: int | None = None
    max_rss_bytes: int | None = None
    consumed_energy_j: float | None = None
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    partition: str = ""
    node_list: str = ""
    steps: list[StepAccounting] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for ``Job.accounting``)."""

        def conv(v: Any) -> Any:
            if isinstance(v, JobState):
                return v.value
            if isinstance(v, datetime):
                return v.isoformat()
            if isinstance(v, list):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v

        return conv(asdict(self))


@dataclass
class CheckItem:
    """One line of a cluster compliance check: ``status`` is ``ok``, ``warn`` or ``fail``."""

    name: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def aggregate(statuses: list[JobStatus]) -> JobStatus:
    """The status of an array job from those of its tasks."""
    if not statuses:
        return JobStatus(JobState.UNKNOWN, "no task of this array job was found")
    states = [s.state for s in statuses]
    n = len(states)
    if not all(s.final for s in states):
        for st in _ACTIVE_ORDER:
            if st in states:
                done = sum(1 for s in states if s.final)
                first = next(s for s in statuses if s.state is st)
                reason = f"{done} of {n} tasks finished" + (f"; {first.reason}" if first.reason else "")
                return JobStatus(st, reason, native_state=first.native_state, reason_code=first.reason_code)
    if all(s is JobState.COMPLETED for s in states):
        return JobStatus(
            JobState.COMPLETED, f"all {n} tasks completed", exit_code=0, signal=0, native_state="COMPLETED"
        )
    for st in _FAILURE_ORDER:
        bad = [s for s in statuses if s.state is st]
        if bad:
            failed = sum(1 for s in states if s is not JobState.COMPLETED)
            return JobStatus(
                st,
                f"{failed} of {n} tasks did not complete; first: {bad[0].reason}".rstrip(": "),
                exit_code=bad[0].exit_code,
                signal=bad[0].signal,
                native_state=bad[0].native_state,
                reason_code=bad[0].reason_code,
            )
    return JobStatus(JobState.UNKNOWN, "array tasks are in unexpected states")  # pragma: no cover


def select(ids: list[str], rows: list[QueueRow]) -> dict[str, JobStatus]:
    """Pick the rows answering *ids*: an exact id, or for an array parent the aggregate of its tasks."""
    exact = {r.job_id: r.status for r in rows}
    tasks: dict[str, list[JobStatus]] = {}
    for r in rows:
        if r.array_job_id and r.array_job_id != r.job_id:
            tasks.setdefault(r.array_job_id, []).append(r.status)
    out = {}
    for i in ids:
        if i in tasks:
            out[i] = aggregate(tasks[i] + ([exact[i]] if i in exact else []))
        elif i in exact:
            out[i] = exact[i]
    return out


class Scheduler(LoggingConfigurable):
    """Base class; subclasses implement the hooks below. Use one instance per cluster, over that
    cluster's transport (which holds the pooled connection)."""

    #: entry point name (``jupyter_heroes.schedulers``)
    name = "base"
    #: suffix of rendered scripts
    script_suffix = ".sh"

    submit_timeout = Float(
        60.0,
        config=True,
        help="""Seconds allowed for uploading a batch script and running the submit command. A submit
        whose answer is lost raises SubmitError(maybe_submitted=True): call find_by_name before
        resubmitting.""",
    )
    poll_timeout = Float(
        30.0,
        config=True,
        help="""Seconds allowed for one queue or history command of a poll. When it passes, the jobs of
        that poll are reported as 'unknown' (not failed) and the next poll tries again.""",
    )
    script_dir = Unicode(
        ".heroes",
        config=True,
        help="""Directory, relative to the job's workdir (or absolute), where rendered batch scripts are
        uploaded (created with mode 0700).""",
    )

    @default("log")
    def _log_default(self) -> logging.Logger:
        return logging.getLogger("jupyter_heroes.clusters")

    def __init__(
        self, transport: Transport, *, scratch_root: str = "", container_runtime: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if container_runtime not in ("", "apptainer", "singularity"):
            raise ValueError(
                f"container_runtime must be 'apptainer', 'singularity' or empty, not {container_runtime!r}"
            )
        self.transport = transport
        self.scratch_root = scratch_root
        self.container_runtime = container_runtime
        self._made_dirs: set[str] = set()

    @classmethod
    def from_cluster(cls, cluster: Any, transport: Transport, **kwargs: Any) -> Scheduler:
        """Build from a :class:`jupyter_heroes.orm.Cluster` row and its transport."""
        return cls(
            transport,
            scratch_root=cluster.scratch_root or "",
            container_runtime=cluster.container_runtime or "",
            **kwargs,
        )

    # --- hooks for subclasses ----------------------------------------------------------------
    def render_script(self, spec: JobSpec) -> str:
        raise NotImplementedError

    def submit_argv(self, spec: JobSpec, script_path: str) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, result: CommandResult) -> str:
        raise NotImplementedError

    def cancel_argv(self, ids: list[str]) -> list[str]:
        raise NotImplementedError

    def hold_argv(self, ids: list[str], release: bool = False) -> list[str] | None:
        """The command that holds pending jobs (or releases them), or None if the scheduler cannot:
        then :meth:`hold` answers False and the platform leaves the jobs queued."""
        return None

    def check_cancel(self, ids: list[str], result: CommandResult) -> None:
        """Raise SchedulerError if a cancel failed for a reason other than 'already finished'."""
        if not result.ok:
            raise SchedulerError(
                f"cancelling jobs failed: {first_line(result.stderr)}", self.is_transient(result.stderr)
            )

    def queue_argv(self, ids: list[str]) -> list[str]:
        raise NotImplementedError

    def parse_queue(self, result: CommandResult) -> list[QueueRow]:
        """Rows for the jobs still known to the queue; raise SchedulerError if the queue could not be read."""
        raise NotImplementedError

    def history_argv(self, ids: list[str]) -> list[str] | None:
        """The command that reports jobs which left the queue (None: the queue command covers them)."""
        return None

    def parse_history(self, result: CommandResult) -> list[QueueRow]:
        raise NotImplementedError

    def accounting_argv(self, ids: list[str]) -> list[str]:
        raise NotImplementedError

    def parse_accounting(self, result: CommandResult) -> dict[str, JobAccounting]:
        raise NotImplementedError

    def find_argvs(self, name: str) -> list[list[str]]:
        raise NotImplementedError

    def parse_find(self, result: CommandResult) -> set[str]:
        raise NotImplementedError

    def merge(self, queued: JobStatus | None, history: JobStatus | None) -> JobStatus:
        """One status from what the queue said (``queued``, final) and what the history said. The
        queue is authoritative on the state while it knows the job (accounting may lag behind it);
        the history adds exit codes when it agrees. A job the queue already calls completed while the
        history lags has exit status 0: completed means every process exited 0."""
        if history is None or (queued is not None and history.state is not queued.state):
            assert queued is not None
            if queued.state is JobState.COMPLETED and queued.exit_code is None:
                return replace(queued, exit_code=0, signal=0)
            return queued
        return history

    def is_transient(self, stderr: str) -> bool:
        """Whether a failed command's error output means 'try again later'."""
        return False

    async def check(self) -> list[CheckItem]:
        """Item-by-item compliance check of the cluster (subclasses add their own items)."""
        return [await self.check_job_runs()]

    # --- operations --------------------------------------------------------------------------
    def script_path(self, spec: JobSpec) -> str:
        base = posixpath.join(spec.workdir or ".", self.script_dir)
        return posixpath.join(base, f"{spec.name}-{secrets.token_hex(4)}{self.script_suffix}")

    async def _makedirs_once(self, path: str) -> None:
        if path in self._made_dirs:
            return
        await self.transport.makedirs(path, mode=0o700)
        if len(self._made_dirs) > 4096:
            self._made_dirs.clear()
        self._made_dirs.add(path)

    async def submit(self, spec: JobSpec) -> str:
        """Upload the rendered script and submit it; return the scheduler's job id."""
        spec = spec.validated()
        script = self.render_script(spec)
        path = self.script_path(spec)
        deadline = time.monotonic() + self.submit_timeout
        try:
            if spec.workdir:
                await self._makedirs_once(spec.workdir)
            await self._makedirs_once(posixpath.dirname(path))
            await self.transport.write_bytes(path, script.encode(), mode=0o700)
        except TransportError as e:
            raise SubmitError(
                f"could not upload the batch script for {spec.name}: {e}", e.transient, e.reason
            ) from e
        argv = self.submit_argv(spec, path)
        try:
            result = await self.transport.run(argv, timeout=max(1.0, deadline - time.monotonic()))
        except TransportError as e:
            raise SubmitError(
                f"submitting {spec.name} failed: {e}",
                e.transient,
                e.reason,
                maybe_submitted=e.reason in ("connection_lost", "timeout"),
            ) from e
        if not result.ok:
            transient = self.is_transient(result.stderr)
            raise SubmitError(
                f"{argv[0]} refused job {spec.name}: {first_line(result.stderr) or first_line(result.stdout) or f'exit status {result.rc}'}",
                transient,
                "scheduler_unavailable" if transient else "submit_refused",
            )
        job_id = self.parse_submit(result)
        self.log.info("submitted %s as job %s on %s", spec.name, job_id, self.transport.describe())
        return job_id

    async def cancel(self, ids: Iterable[str]) -> None:
        """Cancel jobs; jobs that already finished are not an error."""
        ids = _ids(ids)
        if not ids:
            return
        try:
            result = await self.transport.run(self.cancel_argv(ids), timeout=self.poll_timeout)
        except TransportError as e:
            raise SchedulerError(f"cancelling jobs failed: {e}", e.transient, e.reason) from e
        self.check_cancel(ids, result)

    async def hold(self, ids: Iterable[str], release: bool = False) -> bool:
        """Hold pending jobs so they do not start (running ones are not affected), or release them.
        False when this scheduler cannot hold jobs (see :meth:`hold_argv`)."""
        ids = _ids(ids)
        argv = self.hold_argv(ids, release) if ids else None
        if argv is None:
            return False
        what = "releasing" if release else "holding"
        try:
            result = await self.transport.run(argv, timeout=self.poll_timeout)
        except TransportError as e:
            raise SchedulerError(f"{what} jobs failed: {e}", e.transient, e.reason) from e
        bad = [
            ln
            for ln in result.stderr.splitlines()
            if "error" in ln.lower()
            and not re.search(r"already completing or completed|Invalid job id|not pending", ln, re.I)
        ]
        if bad or (not result.ok and not result.stderr.strip()):
            raise SchedulerError(
                f"{what} jobs failed: {bad[0] if bad else f'exit status {result.rc}'}",
                self.is_transient(result.stderr),
            )
        return True

    async def release(self, ids: Iterable[str]) -> bool:
        """Release jobs held by :meth:`hold`."""
        return await self.hold(ids, release=True)

    async def poll(self, ids: Iterable[str]) -> dict[str, JobStatus]:
        """States of *ids* in one queue command plus at most one history command."""
        ids = _ids(ids)
        if not ids:
            return {}
        try:
            result = await self.transport.run(self.queue_argv(ids), timeout=self.poll_timeout)
            queue = select(ids, self.parse_queue(result))
        except (TransportError, SchedulerError) as e:
            return {i: _unknown(e) for i in ids}
        out = {i: s for i, s in queue.items() if not s.state.final}
        rest = [i for i in ids if i not in out]
        if rest:
            argv = self.history_argv(rest)
            history: dict[str, JobStatus] = {}
            error: Exception | None = None
            if argv is not None:
                try:
                    history = select(
                        rest, self.parse_history(await self.transport.run(argv, timeout=self.poll_timeout))
                    )
                except (TransportError, SchedulerError) as e:
                    error = e
            for i in rest:
                if i in history or i in queue:
                    out[i] = self.merge(queue.get(i), history.get(i))
                elif error is not None:
                    out[i] = _unknown(error)
                else:
                    out[i] = JobStatus(
                        JobState.UNKNOWN,
                        "the scheduler knows no job with this id (neither queued nor in its accounting)",
                    )
        return out

    async def accounting(self, ids: Iterable[str]) -> dict[str, JobAccounting]:
        """Resource use of *ids*, keyed by job id (an array job's id gives one entry per task,
        ``"123_0"``...); ids unknown to the accounting are left out. Raises SchedulerError if the
        accounting is unavailable."""
        ids = _ids(ids)
        if not ids:
            return {}
        try:
            result = await self.transport.run(self.accounting_argv(ids), timeout=self.poll_timeout)
        except TransportError as e:
            raise SchedulerError(f"reading accounting failed: {e}", e.transient, e.reason) from e
        if not result.ok:
            raise SchedulerError(
                f"{self.accounting_argv(ids)[0]} failed: {first_line(result.stderr)}",
                self.is_transient(result.stderr),
                "accounting_unavailable",
            )
        acct = self.parse_accounting(result)
        wanted = set(ids)
        return {k: v for k, v in acct.items() if k in wanted or k.split("_")[0] in wanted}

    async def find_by_name(self, name: str) -> list[str]:
        """Ids of jobs named *name* (queued or finished): after a crash between submit and the
        database commit, this finds the job whose id was never recorded."""
        JobSpec(name=name, command=["true"]).validated()
        found: set[str] = set()
        for argv in self.find_argvs(name):
            try:
                result = await self.transport.run(argv, timeout=self.poll_timeout)
            except TransportError as e:
                raise SchedulerError(
                    f"looking up jobs named {name} failed: {e}", e.transient, e.reason
                ) from e
            found |= self.parse_find(result)
        return sorted(found, key=lambda i: [int(x) for x in i.split("_")])

    async def wait(self, ids: Iterable[str], timeout: float, interval: float = 0.5) -> dict[str, JobStatus]:
        """Poll until every job is final or *timeout* seconds pass (then the last statuses)."""
        ids = _ids(ids)
        deadline = time.monotonic() + timeout
        while True:
            st = await self.poll(ids)
            if all(s.state.final for s in st.values()) or time.monotonic() > deadline:
                return st
            await asyncio.sleep(interval)

    async def check_job_runs(self, partition: str = "", timeout: float = 120.0) -> CheckItem:
        """Run a tiny job that writes a token into the scratch directory from a compute node, then
        read it back over the transport."""
        name = "scratch writable from a compute node"
        if not self.scratch_root:
            return CheckItem(
                name, "fail", "no scratch directory is configured for this cluster (scratch_root)"
            )
        token = secrets.token_hex(8)
        workdir = posixpath.join(self.scratch_root, ".heroes-check")
        out = posixpath.join(workdir, f"check-{token}.out")
        spec = JobSpec(
            name=f"heroes-check-{token}",
            command=["printf", "%s", token],
            workdir=workdir,
            stdout=out,
            partition=partition,
            walltime_s=60,
        )
        try:
            job_id = await self.submit(spec)
        except (SubmitError, JobSpecError) as e:
            return CheckItem(name, "fail", f"submitting a test job failed: {e}")
        st = (await self.wait([job_id], timeout)).get(job_id)
        if st is None or not st.state.final:
            await self.cancel([job_id])
            return CheckItem(
                name,
                "fail",
                f"the test job {job_id} did not finish within {timeout:.0f} s ({st.reason if st else 'no status'})",
            )
        try:
            content = (await self.transport.read_bytes(out)).decode(errors="replace")
        except TransportError as e:
            return CheckItem(
                name,
                "fail",
                f"test job {job_id} ended {st.state.value} but its output {out} could not be read: {e}",
            )
        if content != token:
            return CheckItem(
                name,
                "fail",
                f"test job {job_id} ended {st.state.value}; its output did not hold the expected token",
            )
        return CheckItem(name, "ok", f"test job {job_id} wrote {out}")


def render_body(
    spec: JobSpec, container_runtime: str = "", native_env: dict[str, str] | None = None
) -> list[str]:
    """The script lines after the directives: the platform's names for the scheduler's own variables
    (*native_env*: ``HEROES_JOB_ID`` -> ``SLURM_JOB_ID``; fixed text, no user data), quoted exports,
    then the quoted command."""
    lines = [f'export {k}="${{{v}:-}}"' for k, v in (native_env or {}).items()]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in spec.env.items()]
    argv = list(spec.command)
    if spec.container_image:
        if not container_runtime:
            raise JobSpecError(
                "container_image",
                "this cluster has no container runtime (apptainer or singularity) configured",
            )
        argv = [container_runtime, "exec", spec.container_image, *argv]
    lines.append(" ".join(shlex.quote(a) for a in argv))
    return lines


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


def _ids(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        ids = [ids]
    out: list[str] = []
    seen = set()
    for i in ids:
        validate_job_id(i)
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _unknown(error: Exception) -> JobStatus:
    return JobStatus(
        JobState.UNKNOWN, f"the scheduler could not be asked: {error}", reason_code="poll_failed"
    )
