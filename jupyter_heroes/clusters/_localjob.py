"""The local scheduler's helper, run as a program by :class:`~.localsched.LocalScheduler` through
its transport (``python -I _localjob.py <command> <root> ...``). Standard library only, so it starts
fast and needs no package import.

Commands (all arguments are argv items; JSON goes in one item)::

    submit  ROOT META_JSON       allocate an id, start a detached supervisor, print the id
    status  ROOT ID...           one JSON object per line: id, array_job_id, state, exit code, times
    cancel  ROOT ID...           ask supervisors to stop jobs (SIGTERM, then SIGKILL after 5 s)
    find    ROOT NAME            ids of jobs with that name
    supervise ROOT ID            (internal) wait for dependencies, run the script(s), record results

Layout under ROOT: ``next_id`` (counter, locked with flock), ``jobs/<id>/meta.json`` (what to run),
``jobs/<id>/state.json`` (written atomically), ``jobs/<id>/cancel`` (a request). An array job's
tasks are ``jobs/<id>_<index>/``. States use Slurm's words (PENDING, RUNNING, COMPLETED, FAILED,
CANCELLED, TIMEOUT, NODE_FAIL) so the same vocabulary serves both schedulers.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}
KILL_GRACE = 5.0
TICK = 0.05
SAFE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ")


def _now() -> float:
    return time.time()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie we may reap?
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _jobs(root: Path) -> Path:
    return root / "jobs"


def _next_id(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "next_id", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        n = int(text) if text.isdigit() else 1
        f.seek(0)
        f.truncate()
        f.write(str(n + 1))
        return n


def _expand(pattern: str, meta: dict[str, Any], job_id: str, task: int | None) -> str:
    base = meta["id"]
    out = pattern.replace("%%", "\x00")
    out = (
        out.replace("%j", job_id)
        .replace("%A", base)
        .replace("%a", "" if task is None else str(task))
        .replace("%x", meta["name"])
    )
    out = out.replace("\x00", "%")
    return out if out.startswith("/") else os.path.join(meta.get("workdir") or os.getcwd(), out)


# --- submit ------------------------------------------------------------------------------------
def submit(root: Path, meta_json: str) -> str:
    meta = json.loads(meta_json)
    job_id = str(_next_id(root))
    meta["id"] = job_id
    meta["submit"] = _now()
    d = _jobs(root) / job_id
    d.mkdir(parents=True)
    tasks = meta.get("tasks") or []
    for t in tasks:
        td = _jobs(root) / f"{job_id}_{t}"
        td.mkdir()
        _write_json(
            td / "meta.json", {**meta, "id": f"{job_id}_{t}", "array_job_id": job_id, "task": t, "tasks": []}
        )
        _write_json(
            td / "state.json", {"state": "PENDING", "reason": "Dependency" if meta.get("afterok") else "None"}
        )
    _write_json(d / "meta.json", meta)
    _write_json(
        d / "state.json", {"state": "PENDING", "reason": "Dependency" if meta.get("afterok") else "None"}
    )
    log = open(d / "supervisor.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), "supervise", str(root), job_id],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
    )  # fmt: skip
    log.close()
    meta["supervisor_pid"] = proc.pid
    _write_json(d / "meta.json", meta)
    for t in tasks:
        td = _jobs(root) / f"{job_id}_{t}"
        tm = _read_json(td / "meta.json")
        tm["supervisor_pid"] = proc.pid
        _write_json(td / "meta.json", tm)
    return job_id


# --- status ------------------------------------------------------------------------------------
def _row(root: Path, job_id: str) -> dict[str, Any] | None:
    d = _jobs(root) / job_id
    meta = _read_json(d / "meta.json")
    if not meta:
        return None
    st = _read_json(d / "state.json") or {"state": "PENDING"}
    if st.get("state") not in FINAL and not _alive(int(meta.get("supervisor_pid") or 0)):
        # give a just-submitted job a moment: its pid is recorded right after the spawn
        if meta.get("supervisor_pid") or _now() - float(meta.get("submit") or 0) > 5:
            st = _read_json(d / "state.json") or st  # it may have finished just now
            if st.get("state") not in FINAL:
                st = {**st, "state": "NODE_FAIL", "reason": "SupervisorLost"}
    return {
        "id": job_id, "array_job_id": meta.get("array_job_id", ""), "name": meta.get("name", ""),
        "state": st.get("state", "PENDING"), "reason": st.get("reason", ""), "exit_code": st.get("exit_code"),
        "signal": st.get("signal"), "submit": meta.get("submit"), "start": st.get("start"), "end": st.get("end"),
        "max_rss_kb": st.get("max_rss_kb"), "cpus": int(meta.get("ntasks") or 1) * int(meta.get("cpus_per_task") or 1),
    }  # fmt: skip


def status(root: Path, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in ids:
        meta = _read_json(_jobs(root) / i / "meta.json")
        tasks = meta.get("tasks") or []
        for job_id in [f"{i}_{t}" for t in tasks] or [i]:
            row = _row(root, job_id)
            if row is not None:
                out.append(row)
    return out


def _aggregate_state(root: Path, job_id: str) -> str:
    rows = status(root, [job_id])
    states = [r["state"] for r in rows]
    if not states:
        return "UNKNOWN"
    if not all(s in FINAL for s in states):
        return "RUNNING"
    return "COMPLETED" if all(s == "COMPLETED" for s in states) else "FAILED"


# --- cancel ------------------------------------------------------------------------------------
def cancel(root: Path, ids: list[str]) -> None:
    for i in ids:
        d = _jobs(root) / i
        if (d / "meta.json").exists():
            (d / "cancel").touch()


# --- find --------------------------------------------------------------------------------------
def find(root: Path, name: str) -> list[str]:
    found = []
    jobs = _jobs(root)
    if jobs.is_dir():
        for d in jobs.iterdir():
            if "_" in d.name:
                continue
            if _read_json(d / "meta.json").get("name") == name:
                found.append(d.name)
    return sorted(found, key=int)


# --- supervise ---------------------------------------------------------------------------------
class _Task:
    def __init__(self, root: Path, job_id: str, meta: dict[str, Any], task: int | None) -> None:
        self.root, self.job_id, self.meta, self.task = root, job_id, meta, task
        self.dir = _jobs(root) / job_id
        self.proc: subprocess.Popen[bytes] | None = None
        self.start = 0.0
        self.kill_at = 0.0
        self.timed_out = False
        self.cancelled = False

    def set(self, **state: Any) -> None:
        cur = _read_json(self.dir / "state.json")
        cur.update(state)
        _write_json(self.dir / "state.json", cur)

    def launch(self) -> None:
        m = self.meta
        env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
        env.update(m.get("env") or {})
        ids = {"JOB_ID": self.job_id, "JOB_NAME": m["name"]}
        if self.task is not None:
            ids.update(ARRAY_TASK_ID=str(self.task), ARRAY_JOB_ID=m["id"])
        for k, v in ids.items():
            env[f"HEROES_{k}"] = env[f"SLURM_{k}"] = v
        out = _expand(m.get("stdout") or "%x-%j.out", m, self.job_id, self.task)
        err = _expand(m["stderr"], m, self.job_id, self.task) if m.get("stderr") else None
        fout = open(out, "ab")
        ferr = open(err, "ab") if err else None
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", m["script"]], cwd=m.get("workdir") or None, env=env, stdin=subprocess.DEVNULL,
                stdout=fout, stderr=ferr or subprocess.STDOUT, start_new_session=True, close_fds=True,
            )  # fmt: skip
        finally:
            fout.close()
            if ferr:
                ferr.close()
        self.start = _now()
        self.set(state="RUNNING", reason="None", start=self.start, pid=self.proc.pid)

    def kill(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def check(self) -> bool:
        """Reap if finished (recording the result); enforce walltime and cancel. True when done."""
        assert self.proc is not None
        pid, wstatus, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            now = _now()
            walltime = self.meta.get("walltime_s")
            if not self.kill_at and walltime and now - self.start > walltime:
                self.timed_out = True
                self.kill(signal.SIGTERM)
                self.kill_at = now + KILL_GRACE
            elif not self.kill_at and (
                (self.dir / "cancel").exists() or (_jobs(self.root) / self.meta["id"] / "cancel").exists()
            ):
                self.cancelled = True
                self.kill(signal.SIGTERM)
                self.kill_at = now + KILL_GRACE
            elif self.kill_at and now > self.kill_at:
                self.kill(signal.SIGKILL)
            return False
        code = os.waitstatus_to_exitcode(wstatus)
        self.proc.returncode = code
        rc, sig = (code, 0) if code >= 0 else (0, -code)
        if self.timed_out:
            state, reason = "TIMEOUT", "TimeLimit"
        elif self.cancelled:
            state, reason = "CANCELLED", "None"
        elif code == 0:
            state, reason = "COMPLETED", "None"
        else:
            state, reason = "FAILED", "NonZeroExitCode"
        self.set(state=state, reason=reason, exit_code=rc, signal=sig, end=_now(), max_rss_kb=usage.ru_maxrss)
        return True


def supervise(root: Path, job_id: str) -> None:
    d = _jobs(root) / job_id
    meta = _read_json(d / "meta.json")
    tasks = meta.get("tasks") or []
    units = [_Task(root, f"{job_id}_{t}", {**meta, "id": job_id}, t) for t in tasks] or [
        _Task(root, job_id, meta, None)
    ]

    def finish_all(state: str, reason: str) -> None:
        for u in units:
            if _read_json(u.dir / "state.json").get("state") not in FINAL:
                u.set(state=state, reason=reason, end=_now())

    # dependencies (afterok)
    deps = list(meta.get("afterok") or [])
    while deps:
        if (d / "cancel").exists():
            return finish_all("CANCELLED", "None")
        states = [_aggregate_state(root, x) for x in deps]
        if any(s in FINAL and s != "COMPLETED" or s == "UNKNOWN" for s in states):
            return finish_all("CANCELLED", "DependencyNeverSatisfied")
        if all(s == "COMPLETED" for s in states):
            break
        time.sleep(0.1)
    limit = int(meta.get("array_limit") or 0) or len(units)
    waiting = list(units)
    running: list[_Task] = []
    while waiting or running:
        if (d / "cancel").exists():
            for u in waiting:
                u.set(state="CANCELLED", reason="None", end=_now())
            waiting = []
        while waiting and len(running) < limit:
            u = waiting.pop(0)
            if (u.dir / "cancel").exists():
                u.set(state="CANCELLED", reason="None", end=_now())
                continue
            try:
                u.launch()
            except OSError as e:
                u.set(
                    state="FAILED", reason=f"launch failed: {e.strerror}", exit_code=1, signal=0, end=_now()
                )
                continue
            running.append(u)
        running = [u for u in running if not u.check()]
        time.sleep(TICK)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, root = argv[0], Path(argv[1])
    if cmd == "submit":
        print(submit(root, argv[2]))
    elif cmd == "status":
        for row in status(root, argv[2:]):
            print(json.dumps(row))
    elif cmd == "cancel":
        cancel(root, argv[2:])
    elif cmd == "find":
        print("\n".join(find(root, argv[2])))
    elif cmd == "supervise":
        supervise(root, argv[2])
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
