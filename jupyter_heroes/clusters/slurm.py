"""Slurm: ``sbatch``/``squeue``/``sacct``/``scancel``/``sinfo`` through any transport.

The batch script holds ``#SBATCH`` directives built only from validated numbers and names, then the
job's environment (``export NAME=<quoted value>``) and the command (one :func:`shlex.quote` per
argument). Everything else (job name, comment, workdir, output paths, dependencies) is an argument
of ``sbatch`` itself, which the transport passes as an argv. Since ``sbatch`` stops reading
directives at the first command line of the script, a value that contains a newline followed by
``#SBATCH`` stays inert text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from traitlets import Bool, Integer

from . import sacct
from .scheduler import (
    CheckItem,
    JobAccounting,
    JobSpec,
    JobState,
    JobStatus,
    QueueRow,
    Scheduler,
    SchedulerError,
    StepAccounting,
    first_line,
    render_body,
)
from .spec import JOB_ID_RE
from .transport import CommandResult

#: Slurm job state (``squeue %T``, ``sacct State``) -> JobState
STATE_MAP: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "CONFIGURING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED,
    "POWER_UP_NODE": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "SUSPENDED": JobState.HELD,
    "STOPPED": JobState.HELD,
    "RUNNING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "COMPLETING": JobState.COMPLETING,
    "STAGE_OUT": JobState.COMPLETING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
}

#: what a state means for the user when it needs saying
STATE_REASONS: dict[str, str] = {
    "CONFIGURING": "its nodes are being prepared",
    "REQUEUED": "it was requeued and waits to run again",
    "REQUEUE_HOLD": "it was requeued and is held; an administrator or the owner must release it",
    "RESV_DEL_HOLD": "its reservation was deleted; it is held",
    "SUSPENDED": "it was suspended by the cluster; it resumes when the cluster releases it",
    "STOPPED": "it was stopped (SIGSTOP)",
    "FAILED": "its command exited with a non-zero status",
    "SPECIAL_EXIT": "it ended with a special exit status and is held for requeue",
    "PREEMPTED": "it was preempted by a higher-priority job; resubmitting may help",
    "REVOKED": "it was revoked (it runs on another cluster of the federation)",
    "TIMEOUT": "it ran past its time limit; ask for a longer walltime",
    "DEADLINE": "it could not finish before its deadline",
    "NODE_FAIL": "a node allocated to it failed; resubmitting may help",
    "BOOT_FAIL": "its nodes failed to boot; resubmitting may help",
    "OUT_OF_MEMORY": "it used more memory than it asked for; ask for more memory (mem_mb)",
}

#: pending/held reasons (``squeue %r``) in words
REASONS: dict[str, str] = {
    "None": "",
    "Resources": "waiting for resources (nodes, CPUs, memory or GPUs) to become free",
    "Priority": "waiting behind higher-priority jobs in its partition",
    "Dependency": "waiting for the jobs it depends on to finish",
    "DependencyNeverSatisfied": "will never start: a job it depends on did not complete successfully; cancel it",
    "BeginTime": "waiting for its earliest start time",
    "JobHeldUser": "held by its owner; release it to let it start",
    "JobHeldAdmin": "held by a cluster administrator",
    "launch failed requeued held": "its launch failed and it was requeued and held; ask the cluster administrators",
    "JobArrayTaskLimit": "the array's limit of tasks running at once is reached; more start as tasks finish",
    "ReqNodeNotAvail": "a node it needs is unavailable (down, drained or reserved)",
    "NodeDown": "a node it needs is down",
    "PartitionDown": "its partition is down; it starts when the cluster administrators bring it up",
    "PartitionInactive": "its partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows (or needed nodes are down)",
    "PartitionTimeLimit": "its walltime exceeds the partition's limit: it will not start; resubmit with a shorter walltime",
    "PartitionConfig": "it asks for resources its partition does not have",
    "BadConstraints": "its constraints cannot be satisfied by any node",
    "Licenses": "waiting for a software license",
    "Reservation": "waiting for its advance reservation to begin",
    "InvalidAccount": "its account is invalid on this cluster",
    "InvalidQOS": "its quality of service (QOS) is invalid on this cluster",
    "QOSJobLimit": "its QOS has reached its maximum number of jobs",
    "QOSResourceLimit": "its QOS has reached a resource limit",
    "QOSTimeLimit": "its QOS has reached its time limit",
    "QOSMaxJobsPerUserLimit": "the service account already runs as many jobs as its QOS allows; it starts when one ends",
    "QOSMaxSubmitJobPerUserLimit": "the service account has as many jobs queued as its QOS allows",
    "QOSMaxCpuPerUserLimit": "the service account already uses as many CPUs as its QOS allows",
    "QOSMaxNodePerUserLimit": "the service account already uses as many nodes as its QOS allows",
    "QOSMaxWallDurationPerJobLimit": "its walltime exceeds what its QOS allows: it will not start; resubmit with a shorter walltime",
    "QOSGrpCpuLimit": "its QOS group has reached its CPU limit",
    "QOSGrpNodeLimit": "its QOS group has reached its node limit",
    "QOSGrpJobsLimit": "its QOS group has reached its job limit",
    "AssociationJobLimit": "its account has reached its maximum number of jobs",
    "AssociationResourceLimit": "its account has reached a resource limit",
    "AssociationTimeLimit": "its account has reached its time limit",
    "AssocMaxJobsLimit": "its account already runs as many jobs as allowed",
    "AssocGrpCPUMinutesLimit": "its account's CPU-minutes allocation on the cluster is used up",
    "AssocGrpBillingMinutes": "its account's compute budget on the cluster is used up",
    "Cleaning": "it is being requeued and still cleaning up its previous run",
    "Prolog": "its prolog is running",
    "FrontEndDown": "no front-end node is available to run it",
    "SystemFailure": "a failure of Slurm, a file system or the network",
    "TimeLimit": "it ran out of time",
    "NonZeroExitCode": "its command exited with a non-zero status",
    "OutOfMemory": "it used more memory than it asked for",
    "WaitingForScheduling": "waiting for the scheduler to consider it",
    "InactiveLimit": "it reached the cluster's inactivity limit",
}
_HELD_REASONS = {"JobHeldUser", "JobHeldAdmin", "launch failed requeued held", "DependencyNeverSatisfied"}
_TRANSIENT_RE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|temporarily unavailable|try again|"
    r"Connection refused|Problem talking to the database|Transaction limit|Zero Bytes were transmitted",
    re.IGNORECASE,
)

#: the platform's names for Slurm's job variables, the same on every scheduler (see localsched)
SLURM_NATIVE_ENV = {
    "HEROES_JOB_ID": "SLURM_JOB_ID",
    "HEROES_JOB_NAME": "SLURM_JOB_NAME",
    "HEROES_ARRAY_JOB_ID": "SLURM_ARRAY_JOB_ID",
    "HEROES_ARRAY_TASK_ID": "SLURM_ARRAY_TASK_ID",
}


def reason_words(code: str) -> str:
    code = (code or "").strip().strip("()")
    if code in ("", "None", "(null)"):
        return ""
    return REASONS.get(code, f"pending: {code}")


def map_state(
    native: str, reason_code: str = "", exit_code: int | None = None, signal: int | None = None, by: str = ""
) -> JobStatus:
    """Slurm state (+ reason code, exit code) -> JobStatus with a reason in words."""
    state = STATE_MAP.get(native, JobState.UNKNOWN)
    code = (reason_code or "").strip().strip("()")
    if code in ("None", "(null)"):
        code = ""
    if state is JobState.QUEUED and code in _HELD_REASONS:
        state = JobState.HELD
    if state is JobState.UNKNOWN:
        reason = f"Slurm reports an unrecognised state {native!r}"
    elif native == "CANCELLED" and code.startswith("Dependency"):
        reason = "cancelled: a job it depends on did not complete successfully"
    elif native == "CANCELLED":
        reason = (f"cancelled by user id {by}" if by else "cancelled") + (
            f" ({reason_words(code)})" if code and reason_words(code) else ""
        )
    elif native == "FAILED" and exit_code:
        reason = f"its command exited with status {exit_code}"
    elif native == "FAILED" and signal:
        reason = f"its command was killed by signal {signal}"
    elif state in (JobState.QUEUED, JobState.HELD) and code:
        reason = reason_words(code)
    else:
        reason = STATE_REASONS.get(native, "")
    return JobStatus(state, reason, exit_code=exit_code, signal=signal, native_state=native, reason_code=code)


def format_walltime(seconds: int) -> str:
    """Seconds -> ``D-HH:MM:SS`` for ``--time``."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}"


@dataclass
class Partition:
    """One partition as ``sinfo`` shows it (summed over its node groups)."""

    name: str
    available: bool
    default: bool
    nodes: int
    cpus_per_node: int | None
    mem_per_node_mb: int | None
    max_walltime_s: int | None


class SlurmScheduler(Scheduler):
    """Slurm through its command-line tools."""

    name = "slurm"
    script_suffix = ".sbatch"

    kill_on_invalid_dependency = Bool(
        True,
        config=True,
        help="""Submit with --kill-on-invalid-dep=yes: when a job this one depends on (afterok) fails, Slurm
        cancels this one (state 'cancelled', reason DependencyNeverSatisfied) instead of leaving it
        pending forever.""",
    )
    find_window_days = Integer(
        30,
        config=True,
        help="How many days back find_by_name searches the accounting (sacct) for a job name.",
    )

    # --- rendering ---------------------------------------------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
        d = [
            f"--nodes={spec.nodes:d}",
            f"--ntasks={spec.ntasks:d}",
            f"--cpus-per-task={spec.cpus_per_task:d}",
        ]
        if spec.mem_mb is not None:
            d.append(f"--mem={spec.mem_mb:d}M")
        if spec.gpus:
            d.append(f"--gres=gpu:{spec.gpus:d}")
        if spec.walltime_s is not None:
            d.append(f"--time={format_walltime(spec.walltime_s)}")
        # names below were checked against strict patterns by JobSpec.validated()
        if spec.partition:
            d.append(f"--partition={spec.partition}")
        if spec.account:
            d.append(f"--account={spec.account}")
        if spec.qos:
            d.append(f"--qos={spec.qos}")
        if spec.array:
            d.append(f"--array={spec.array}")
        return d

    def render_script(self, spec: JobSpec) -> str:
        spec = spec.validated()
        lines = ["#!/bin/sh"]
        lines += [f"#SBATCH {d}" for d in self.directives(spec)]
        lines.append("# generated by Jupyter HEROES; sbatch reads no directive below this line")
        lines += render_body(spec, self.container_runtime, SLURM_NATIVE_ENV)
        return "\n".join(lines) + "\n"

    def submit_argv(self, spec: JobSpec, script_path: str) -> list[str]:
        argv = ["sbatch", "--parsable", f"--job-name={spec.name}"]
        if spec.comment:
            argv.append(f"--comment={spec.comment}")
        if spec.workdir:
            argv.append(f"--chdir={spec.workdir}")
        if spec.stdout:
            argv.append(f"--output={spec.stdout}")
        if spec.stderr:
            argv.append(f"--error={spec.stderr}")
        if spec.afterok:
            argv.append("--dependency=afterok:" + ":".join(spec.afterok))
            if self.kill_on_invalid_dependency:
                argv.append("--kill-on-invalid-dep=yes")
        argv.append(script_path)
        return argv

    def parse_submit(self, result: CommandResult) -> str:
        job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip() if result.stdout.strip() else ""
        if not JOB_ID_RE.match(job_id):
            raise SchedulerError(
                f"sbatch answered without a job id: {first_line(result.stdout)!r}", False, "submit_unparsed"
            )
        return job_id

    def merge(self, queued: JobStatus | None, history: JobStatus | None) -> JobStatus:
        status = super().merge(queued, history)
        if status is history and queued is not None and queued.reason_code.startswith("Dependency"):
            # sacct often records "None" or "Dependency" for a job killed because a dependency failed
            status = replace(status, reason=queued.reason, reason_code=queued.reason_code)
        return status

    def is_transient(self, stderr: str) -> bool:
        return bool(_TRANSIENT_RE.search(stderr or ""))

    # --- cancel ------------------------------------------------------------------------------
    def cancel_argv(self, ids: list[str]) -> list[str]:
        return ["scancel", *ids]

    def hold_argv(self, ids: list[str], release: bool = False) -> list[str] | None:
        return ["scontrol", "release" if release else "hold", ",".join(ids)]

    def check_cancel(self, ids: list[str], result: CommandResult) -> None:
        bad = [
            ln
            for ln in result.stderr.splitlines()
            if "error" in ln.lower()
            and not re.search(r"already completing or completed|Invalid job id", ln, re.IGNORECASE)
        ]
        if bad or (not result.ok and not result.stderr.strip()):
            raise SchedulerError(
                f"scancel failed: {bad[0] if bad else f'exit status {result.rc}'}",
                self.is_transient(result.stderr),
            )

    # --- poll --------------------------------------------------------------------------------
    def queue_argv(self, ids: list[str]) -> list[str]:
        return [
            "squeue",
            "--noheader",
            "--array",
            "--states=all",
            f"--jobs={','.join(ids)}",
            "--format=%i|%F|%T|%r",
        ]

    def parse_queue(self, result: CommandResult) -> list[QueueRow]:
        if not result.ok:
            if re.search(r"Invalid job id", result.stderr, re.IGNORECASE):
                return []  # none of the ids is in the controller's memory any more
            raise SchedulerError(
                f"squeue failed: {first_line(result.stderr) or f'exit status {result.rc}'}",
                True,
                "scheduler_unavailable",
            )
        rows = []
        for ln in result.stdout.splitlines():
            parts = ln.strip().split("|")
            if len(parts) < 4:
                continue
            job_id, array_id, native, reason = parts[0], parts[1], parts[2], "|".join(parts[3:])
            rows.append(
                QueueRow(job_id, map_state(native.strip(), reason), array_id if "_" in job_id else "")
            )
        return rows

    def history_argv(self, ids: list[str]) -> list[str]:
        return [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            f"--jobs={','.join(ids)}",
            "--format=JobID,State,ExitCode,Reason",
        ]

    def parse_history(self, result: CommandResult) -> list[QueueRow]:
        if not result.ok:
            raise SchedulerError(
                f"sacct failed: {first_line(result.stderr) or f'exit status {result.rc}'}",
                True,
                "accounting_unavailable",
            )
        rows = []
        for r in sacct.parse_parsable(result.stdout, ["JobID", "State", "ExitCode", "Reason"]):
            job, base, step = sacct.split_job_id(r["JobID"])
            if step:
                continue
            native, by = sacct.parse_state(r["State"])
            rc, sig = sacct.parse_exit(r["ExitCode"])
            rows.append(
                QueueRow(job, map_state(native, r["Reason"], rc, sig, by), base if job != base else "")
            )
        return rows

    # --- accounting --------------------------------------------------------------------------
    ACCOUNTING_FIELDS = [
        "JobID", "State", "ExitCode", "Elapsed", "AllocCPUS", "NNodes", "MaxRSS", "ConsumedEnergyRaw",
        "Submit", "Start", "End", "Partition", "Reason", "NodeList", "JobName",
    ]  # fmt: skip

    def accounting_argv(self, ids: list[str]) -> list[str]:
        return [
            "sacct",
            "--noheader",
            "--parsable2",
            f"--jobs={','.join(ids)}",
            "--format=" + ",".join(self.ACCOUNTING_FIELDS),
        ]

    def parse_accounting(self, result: CommandResult) -> dict[str, JobAccounting]:
        return accounting_from_rows(sacct.parse_parsable(result.stdout, self.ACCOUNTING_FIELDS))

    # --- recovery ----------------------------------------------------------------------------
    def find_argvs(self, name: str) -> list[list[str]]:
        return [
            ["squeue", "--noheader", "--me", "--states=all", f"--name={name}", "--format=%F"],
            ["sacct", "--noheader", "--parsable2", "--allocations", f"--name={name}",
             f"--starttime=now-{self.find_window_days:d}days", "--format=JobID"],
        ]  # fmt: skip

    def parse_find(self, result: CommandResult) -> set[str]:
        if not result.ok:
            raise SchedulerError(
                f"looking up jobs by name failed: {first_line(result.stderr)}",
                self.is_transient(result.stderr),
                "lookup_failed",
            )
        found = set()
        for ln in result.stdout.splitlines():
            _, base, _ = sacct.split_job_id(ln.strip())
            if base:
                found.add(base)
        return found

    # --- partitions and compliance -----------------------------------------------------------
    async def partitions(self) -> list[Partition]:
        r = await self.transport.run(
            ["sinfo", "--noheader", "--format=%P|%a|%D|%c|%m|%l"], timeout=self.poll_timeout
        )
        if not r.ok:
            raise SchedulerError(
                f"sinfo failed: {first_line(r.stderr)}", self.is_transient(r.stderr), "scheduler_unavailable"
            )
        parts: dict[str, Partition] = {}
        for ln in r.stdout.splitlines():
            f = ln.strip().split("|")
            if len(f) < 6:
                continue
            name = f[0].rstrip("*")
            mem = sacct.parse_size(f[4], default_unit="M")
            limit = sacct.parse_elapsed(f[5])
            p = parts.get(name)
            if p is None:
                parts[name] = Partition(name, f[1] == "up", f[0].endswith("*"), int(f[2] or 0), sacct.parse_int(f[3]),
                                        mem // 2**20 if mem else None, int(limit) if limit else None)  # fmt: skip
            else:
                p.nodes += int(f[2] or 0)
        return list(parts.values())

    async def check(self) -> list[CheckItem]:
        items: list[CheckItem] = []

        async def run(argv: list[str]) -> CommandResult | None:
            try:
                return await self.transport.run(argv, timeout=self.poll_timeout)
            except Exception as e:
                items.append(CheckItem(f"{argv[0]} reachable", "fail", str(e)))
                return None

        r = await run(["printf", "%s", "a'b $c"])
        if r is None:
            return items
        items.append(
            CheckItem("POSIX login shell", "ok" if r.stdout == "a'b $c" else "fail",
                      "commands are quoted for a POSIX shell" if r.stdout == "a'b $c" else
                      "the service account's login shell does not parse POSIX quoting; give it bash or sh")
        )  # fmt: skip
        version = ""
        for cmd in ("sbatch", "squeue", "sacct", "scancel", "sinfo"):
            r = await run([cmd, "--version"])
            if r is None:
                continue
            if r.ok:
                version = version or r.stdout.strip()
                items.append(CheckItem(f"{cmd} present", "ok", r.stdout.strip()))
            else:
                items.append(
                    CheckItem(f"{cmd} present", "fail", first_line(r.stderr) or f"exit status {r.rc}")
                )
        m = re.search(r"(\d+)\.(\d+)", version)
        if m:
            ok = (int(m.group(1)), int(m.group(2))) >= (20, 11)
            items.append(
                CheckItem(
                    "Slurm version",
                    "ok" if ok else "warn",
                    version + ("" if ok else "; HEROES is tested with 20.11 and later"),
                )
            )
        else:
            items.append(CheckItem("Slurm version", "fail", "could not read the Slurm version"))
        try:
            parts = await self.partitions()
            up = [p.name for p in parts if p.available]
            items.append(
                CheckItem(
                    "partitions visible",
                    "ok" if up else "fail",
                    ", ".join(p.name + ("" if p.available else " (down)") for p in parts) or "none",
                )
            )
        except Exception as e:
            items.append(CheckItem("partitions visible", "fail", str(e)))
        r = await run(["sacct", "--noheader", "--allocations", "--starttime=now-1hours", "--format=JobID"])
        if r is not None:
            items.append(CheckItem("accounting (sacct)", "ok" if r.ok else "fail",
                                   "sacct answers" if r.ok else f"{first_line(r.stderr)}; HEROES needs Slurm accounting for exit codes and energy"))  # fmt: skip
        runtime = ""
        for cmd in ("apptainer", "singularity"):
            r = await run([cmd, "--version"])
            if r is not None and r.ok:
                runtime = r.stdout.strip()
                break
        items.append(CheckItem("container runtime", "ok" if runtime else "warn",
                               runtime or "neither apptainer nor singularity is installed on the login node; container images cannot be used"))  # fmt: skip
        items.append(await self.check_job_runs())
        return items


def accounting_from_rows(rows: list[dict[str, Any]]) -> dict[str, JobAccounting]:
    """Group sacct rows (job lines and their steps) into JobAccounting per job or array task."""
    out: dict[str, JobAccounting] = {}
    steps: list[tuple[str, dict[str, Any]]] = []
    for r in rows:
        job, _base, step = sacct.split_job_id(r.get("JobID", ""))
        if step:
            steps.append((job, r))
            continue
        native, by = sacct.parse_state(r.get("State"))
        rc, sig = sacct.parse_exit(r.get("ExitCode"))
        st = map_state(native, r.get("Reason", ""), rc, sig, by)
        elapsed = sacct.parse_elapsed(r.get("Elapsed"))
        out[job] = JobAccounting(
            job_id=job, state=st.state, native_state=native, name=sacct._clean(r.get("JobName")), exit_code=rc, signal=sig,
            reason=st.reason, elapsed_s=elapsed, alloc_cpus=sacct.parse_int(r.get("AllocCPUS")),
            nnodes=sacct.parse_int(r.get("NNodes")), max_rss_bytes=sacct.parse_size(r.get("MaxRSS")),
            consumed_energy_j=sacct.parse_energy(r.get("ConsumedEnergyRaw"), r.get("ConsumedEnergy")),
            submit=sacct.parse_time(r.get("Submit")), start=sacct.parse_time(r.get("Start")), end=sacct.parse_time(r.get("End")),
            partition=sacct._clean(r.get("Partition")), node_list=sacct._clean(r.get("NodeList")),
        )  # fmt: skip
    for job, r in steps:
        acct = out.get(job)
        if acct is None:
            continue
        native, _by = sacct.parse_state(r.get("State"))
        rc, sig = sacct.parse_exit(r.get("ExitCode"))
        s = StepAccounting(
            step_id=sacct.split_job_id(r["JobID"])[2], state=STATE_MAP.get(native, JobState.UNKNOWN), native_state=native,
            exit_code=rc, signal=sig, elapsed_s=sacct.parse_elapsed(r.get("Elapsed")), max_rss_bytes=sacct.parse_size(r.get("MaxRSS")),
            consumed_energy_j=sacct.parse_energy(r.get("ConsumedEnergyRaw"), r.get("ConsumedEnergy")),
        )  # fmt: skip
        acct.steps.append(s)
        if s.max_rss_bytes is not None and (
            acct.max_rss_bytes is None or s.max_rss_bytes > acct.max_rss_bytes
        ):
            acct.max_rss_bytes = s.max_rss_bytes
    for acct in out.values():
        # Slurm prints 0 (or nothing) where nothing measures energy: that is "not measured", not 0 J.
        # The job line is often empty while its steps have the figures: sum them.
        for s in acct.steps:
            s.consumed_energy_j = s.consumed_energy_j or None
        acct.consumed_energy_j = acct.consumed_energy_j or None
        if acct.consumed_energy_j is None and any(s.consumed_energy_j for s in acct.steps):
            acct.consumed_energy_j = sum(
                s.consumed_energy_j or 0 for s in acct.steps if s.step_id != "extern"
            )
    return out
