"""Slurm through ``slurmrestd`` (REST API v0.0.38, JWT authentication), behind the Scheduler interface.

For clusters that expose slurmrestd instead of (or besides) a login node for ``sbatch``. Jobs go to
``POST /slurm/v0.0.38/job/submit`` with the rendered script and their settings as JSON fields (the
REST API reads no ``#SBATCH`` directive); a poll is ONE ``GET /slurm/v0.0.38/jobs`` for all ids;
cancel is ``DELETE /slurm/v0.0.38/job/{id}``; accounting comes from ``/slurmdb/v0.0.38/job/{id}``.
States and pending reasons use the tables of :mod:`.slurm`.

The JWT comes from configuration: a fixed ``token``, or ``token_command`` (default ``scontrol token
lifespan=3600``) run through the cluster's transport and refreshed ``token_refresh_margin`` seconds
before the ``exp`` claim it carries. The token is sent only in the ``X-SLURM-USER-TOKEN`` header and
never logged or put in an error message.

The controller reports ``exit_code`` as a raw wait status (768 is exit 3, 15 is signal 15); it is
decoded here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from traitlets import Bool, Dict, Float, Integer, List, Unicode

from .scheduler import (
    JobAccounting,
    JobSpec,
    JobState,
    JobStatus,
    QueueRow,
    Scheduler,
    SchedulerError,
    StepAccounting,
    SubmitError,
    _ids,
    _unknown,
    render_body,
)
from .slurm import _TRANSIENT_RE, SLURM_NATIVE_ENV, STATE_MAP, map_state
from .spec import JOB_ID_RE
from .transport import CommandResult, TransportError

_TRANSIENT_HTTP = {502, 503, 504, 599}
NOTHING_FOUND = 9003  # slurmdb's 'Nothing found with query', an error entry of a 200 answer
AUTH_ERROR = 1007  # 'Protocol authentication error'


def decode_wait_status(raw: Any) -> tuple[int | None, int | None]:
    """slurmctld's ``exit_code`` (a raw wait status) -> (exit code, signal): 768 -> (3, None),
    15 -> (None, 15), 0 -> (0, None)."""
    if raw is None or raw == "":
        return None, None
    try:
        status = int(raw)
    except (TypeError, ValueError):
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) payload of a JWT; ``{}`` if it is not one. Used only to read ``exp``/``sun``."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def job_key(job: dict[str, Any]) -> tuple[str, str]:
    """(HEROES id, array parent id or "") of one job record of ``/slurm/.../jobs``."""
    task = job.get("array_task_id")
    parent = job.get("array_job_id") or 0
    if parent and task is not None:
        return f"{parent}_{task}", str(parent)
    return str(job.get("job_id")), ""


def expand_tasks(spec: str) -> list[int]:
    """``"0-3,7"`` (``array_task_string`` of a pending array's record, ``%`` limit dropped) -> indexes."""
    out: list[int] = []
    for part in (spec or "").split("%")[0].split(","):
        part = part.split(":")[0]
        if "-" in part:
            a, b = part.split("-", 1)
            if a.isdigit() and b.isdigit():
                out += range(int(a), int(b) + 1)
        elif part.isdigit():
            out.append(int(part))
    return out


def _errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    errs = data.get("errors") or []
    return [e for e in errs if isinstance(e, dict)]


def _error_text(data: dict[str, Any]) -> str:
    texts = []
    for e in _errors(data):
        t = e.get("description") or e.get("error") or ""
        if e.get("error") and e.get("error") not in t:
            t = f"{t}: {e['error']}" if t else e["error"]
        if t:
            texts.append(str(t))
    return "; ".join(texts)


class SlurmRestScheduler(Scheduler):
    """Slurm through slurmrestd (API v0.0.38) with a JWT. The transport is used only to run
    ``token_command`` and to create working directories."""

    name = "slurmrest"

    url = Unicode(
        "",
        config=True,
        help="""Base URL of slurmrestd, e.g. 'https://slurm.example.org:6820' (no trailing path). Required.""",
    )
    api_version = Unicode(
        "v0.0.38",
        config=True,
        help="OpenAPI plugin version used in the paths (/slurm/<version>/..., /slurmdb/<version>/...).",
    )
    token = Unicode(
        "",
        config=True,
        help="""A fixed JWT for slurmrestd (X-SLURM-USER-TOKEN). When empty, token_command is run. It is
        never logged.""",
    )
    token_command = List(
        Unicode(),
        ["scontrol", "token", "lifespan=3600"],
        config=True,
        help="""Argv run through the cluster's transport to get a JWT when 'token' is empty; its output
        holds 'SLURM_JWT=<token>' (as 'scontrol token' prints) or just the token. It is run again
        token_refresh_margin seconds before the token's 'exp' claim.""",
    )
    user_name = Unicode(
        "",
        config=True,
        help="""X-SLURM-USER-NAME sent with the token. Empty: the token's 'sun' claim (what 'scontrol
        token' puts in it).""",
    )
    token_refresh_margin = Float(
        300.0,
        config=True,
        help="Seconds before a token's expiry at which token_command is run again for a fresh one.",
    )
    token_default_lifespan = Float(
        1800.0,
        config=True,
        help="How long a token without an 'exp' claim is used before token_command is run again (seconds).",
    )
    request_timeout = Float(
        30.0,
        config=True,
        help="Seconds allowed for one HTTP request to slurmrestd.",
    )
    validate_cert = Bool(
        True,
        config=True,
        help="Verify slurmrestd's TLS certificate (https URLs).",
    )
    ca_certs = Unicode(
        "",
        config=True,
        help="PEM file of the certificate authorities that signed slurmrestd's certificate (empty: system ones).",
    )
    environment = Dict(
        {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        config=True,
        help="""Environment given to every job by slurmrestd (the API requires one); the job's own
        variables are exported by its script, like with sbatch.""",
    )
    kill_on_invalid_dependency = Bool(
        True,
        config=True,
        help="Cancel a job when a job it depends on (afterok) fails, instead of leaving it pending forever.",
    )
    find_window_days = Integer(
        30,
        config=True,
        help="How many days back find_by_name searches the accounting (slurmdb) for a job name.",
    )

    def __init__(self, transport: Any, **kwargs: Any) -> None:
        super().__init__(transport, **kwargs)
        self._client: AsyncHTTPClient | None = None
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_cluster(cls, cluster: Any, transport: Any, **kwargs: Any) -> SlurmRestScheduler:
        """As the base, plus ``cluster.site["slurmrestd_url"]`` (when set) as :attr:`url`, so each
        cluster row can name its own slurmrestd; otherwise ``c.SlurmRestScheduler.url`` applies."""
        sched = super().from_cluster(cluster, transport, **kwargs)
        site_url = (getattr(cluster, "site", None) or {}).get("slurmrestd_url")
        if site_url:
            sched.url = str(site_url)
        return sched  # type: ignore[return-value]

    # --- HTTP --------------------------------------------------------------------------------
    def _base(self) -> str:
        if not self.url:
            raise SchedulerError(
                "no slurmrestd URL is configured: set c.SlurmRestScheduler.url", False, "not_configured"
            )
        return self.url.rstrip("/")

    async def _get_token(self, force: bool = False) -> str:
        if self.token:
            return self.token
        async with self._token_lock:
            if not force and self._token and time.time() < self._token_expires - self.token_refresh_margin:
                return self._token
            try:
                r = await self.transport.run(list(self.token_command), timeout=self.request_timeout)
            except TransportError as e:
                raise SchedulerError(f"getting a slurmrestd token failed: {e}", e.transient, e.reason) from e
            tok = ""
            for line in r.stdout.splitlines():
                line = line.strip()
                if line.startswith("SLURM_JWT="):
                    tok = line.split("=", 1)[1].strip()
                elif line and not tok and "=" not in line and " " not in line:
                    tok = line
            if not r.ok or not tok:
                first = (r.stderr or "").strip().splitlines()[:1]
                raise SchedulerError(
                    f"the token command ({self.token_command[0] if self.token_command else 'none'}) gave no token"
                    f" (exit status {r.rc}{': ' + first[0][:300] if first else ''}); check c.SlurmRestScheduler.token_command",
                    False,
                    "auth_failed",
                )
            exp = jwt_claims(tok).get("exp")
            self._token = tok
            self._token_expires = (
                float(exp) if isinstance(exp, int | float) else time.time() + self.token_default_lifespan
            )
            return tok

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One call to slurmrestd: (HTTP status, JSON answer). Raises SchedulerError when it cannot be
        reached (transient) or refuses the token (not transient, reason ``auth_failed``)."""
        url = self._base() + path + (("?" + urlencode(query)) if query else "")
        for attempt in (0, 1):
            token = await self._get_token(force=attempt == 1)
            claims = jwt_claims(token)
            if not claims:
                raise SchedulerError(
                    "the slurmrestd token is not a JWT (three base64url parts); set c.SlurmRestScheduler.token "
                    "to the value of SLURM_JWT printed by 'scontrol token', or use token_command",
                    False,
                    "auth_failed",
                )
            exp = claims.get("exp")
            if isinstance(exp, int | float) and exp < time.time() and self.token:
                raise SchedulerError(
                    "the configured slurmrestd token has expired; get a new one ('scontrol token') or use token_command",
                    False,
                    "auth_failed",
                )
            user = self.user_name or str(claims.get("sun") or "")
            headers = {"X-SLURM-USER-TOKEN": token, "Accept": "application/json"}
            if user:
                headers["X-SLURM-USER-NAME"] = user
            if body is not None:
                headers["Content-Type"] = "application/json"
            req = HTTPRequest(
                url,
                method=method,
                headers=headers,
                body=json.dumps(body) if body is not None else None,
                request_timeout=self.request_timeout,
                connect_timeout=min(10.0, self.request_timeout),
                validate_cert=self.validate_cert,
                ca_certs=self.ca_certs or None,
                allow_nonstandard_methods=True,
            )
            if self._client is None:
                self._client = AsyncHTTPClient(force_instance=True)
            t0 = time.monotonic()
            try:
                resp: HTTPResponse = await self._client.fetch(req, raise_error=False)
            except (OSError, HTTPClientError) as e:
                raise SchedulerError(
                    f"slurmrestd at {self.url} cannot be reached ({type(e).__name__}: {e})",
                    True,
                    "scheduler_unavailable",
                ) from None
            self.log.debug(
                "slurmrest %s %s %.3fs %s", method, path.split("?")[0], time.monotonic() - t0, resp.code
            )
            if resp.code in (401, 403):
                if attempt == 0 and not self.token:
                    continue  # a fresh token from token_command may help once
                raise SchedulerError(
                    f"slurmrestd at {self.url} refused the token (HTTP {resp.code}); check "
                    "c.SlurmRestScheduler.token / token_command and user_name",
                    False,
                    "auth_failed",
                )
            if resp.code == 599 or resp.error is not None and resp.code not in range(400, 600):
                raise SchedulerError(
                    f"slurmrestd at {self.url} cannot be reached ({resp.error})",
                    True,
                    "scheduler_unavailable",
                )
            try:
                data = json.loads(resp.body or b"{}")
            except json.JSONDecodeError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            if resp.code in _TRANSIENT_HTTP:
                raise SchedulerError(
                    f"slurmrestd at {self.url} is unavailable (HTTP {resp.code})",
                    True,
                    "scheduler_unavailable",
                )
            return resp.code, data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _raise_auth_if(self, data: dict[str, Any]) -> None:
        """Raise the right SchedulerError for an ambiguous failure, or return.

        slurmrestd passes the token on to slurmctld. A token slurmctld rejects and a slurmctld that
        is down give the same HTTP 500 ('Unspecified error', error_number -1, or 'Zero Bytes were
        transmitted or received'). slurmdbd, which checks the same token independently, tells them
        apart: if it accepts the token, the controller is down (transient); if it refuses it too,
        the token is bad (not transient)."""
        ambiguous = False
        for e in _errors(data):
            text = f"{e.get('error', '')} {e.get('description', '')}".lower()
            number = e.get("error_number", e.get("error_code", e.get("errno")))
            if "authentication" in text or number == 1007:
                raise self._auth_error(data)
            if number == -1 or "zero bytes were transmitted" in text:
                ambiguous = True
        if not ambiguous:
            return
        code, probe = await self.request("GET", f"/slurmdb/{self.api_version}/associations")
        if code == 200 and all(e.get("error_number") == NOTHING_FOUND for e in _errors(probe)):
            raise SchedulerError(
                f"slurmrestd at {self.url} cannot reach slurmctld ({_error_text(data)}); it accepts the token "
                "for accounting, so the controller is probably down or restarting: try again later",
                True,
                "scheduler_unavailable",
            )
        raise self._auth_error(data)

    def _auth_error(self, data: dict[str, Any]) -> SchedulerError:
        return SchedulerError(
            f"slurmrestd at {self.url} could not act with this token ({_error_text(data)}), and slurmdbd "
            "refuses it too: the token is invalid, expired or signed with another key. Check "
            "c.SlurmRestScheduler.token / token_command",
            False,
            "auth_failed",
        )

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- submit ------------------------------------------------------------------------------
    def render_script(self, spec: JobSpec) -> str:
        spec = spec.validated()
        lines = ["#!/bin/sh", "# generated by Jupyter HEROES (submitted through slurmrestd)"]
        lines += render_body(spec, self.container_runtime, SLURM_NATIVE_ENV)
        return "\n".join(lines) + "\n"

    def job_properties(self, spec: JobSpec) -> dict[str, Any]:
        """The ``job`` object of ``POST /job/submit``: the settings sbatch would take as options."""
        spec = spec.validated()
        job: dict[str, Any] = {
            "name": spec.name,
            "nodes": [spec.nodes, spec.nodes],
            "tasks": spec.ntasks,
            "cpus_per_task": spec.cpus_per_task,
            "environment": dict(self.environment),
            "current_working_directory": spec.workdir or self.scratch_root or "/tmp",
        }
        if spec.mem_mb is not None:
            job["memory_per_node"] = spec.mem_mb
        if spec.gpus:
            job["gres"] = f"gpu:{spec.gpus:d}"
        if spec.walltime_s is not None:
            job["time_limit"] = max(1, -(-spec.walltime_s // 60))
        for key, value in (("partition", spec.partition), ("account", spec.account), ("qos", spec.qos),
                           ("array", spec.array), ("comment", spec.comment),
                           ("standard_output", spec.stdout), ("standard_error", spec.stderr)):  # fmt: skip
            if value:
                job[key] = value
        if spec.afterok:
            job["dependency"] = "afterok:" + ":".join(spec.afterok)
            if self.kill_on_invalid_dependency:
                job["kill_on_invalid_dependency"] = True
        return job

    async def submit(self, spec: JobSpec) -> str:
        spec = spec.validated()
        body = {"job": self.job_properties(spec), "script": self.render_script(spec)}
        if spec.workdir:
            try:
                await self._makedirs_once(spec.workdir)
            except TransportError as e:
                raise SubmitError(
                    f"could not create the workdir of {spec.name}: {e}", e.transient, e.reason
                ) from e
        try:
            code, data = await self.request("POST", f"/slurm/{self.api_version}/job/submit", body)
        except SchedulerError as e:
            raise SubmitError(
                f"submitting {spec.name} failed: {e}",
                e.transient,
                e.reason,
                maybe_submitted=e.reason == "scheduler_unavailable" and "HTTP" not in str(e),
            ) from e
        job_id = str(data.get("job_id", ""))
        if code != 200 or _errors(data) or not JOB_ID_RE.match(job_id):
            try:
                await self._raise_auth_if(data)
            except SchedulerError as e:
                raise SubmitError(str(e), False, "auth_failed") from None
            text = _error_text(data) or f"HTTP {code}"
            transient = bool(_TRANSIENT_RE.search(text))  # the same messages as sbatch's
            raise SubmitError(
                f"slurmrestd refused job {spec.name}: {text}",
                transient,
                "scheduler_unavailable" if transient else "submit_refused",
            )
        self.log.info("submitted %s as job %s on slurmrestd %s", spec.name, job_id, self.url)
        return job_id

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, ids: Any) -> None:
        for job_id in _ids(ids):
            code, data = await self.request("DELETE", f"/slurm/{self.api_version}/job/{quote(job_id)}")
            if code == 200 and not _errors(data):
                continue
            numbers = {e.get("error_number") for e in _errors(data)}
            if numbers & {2017, 2021}:  # invalid job id / already completing or completed
                continue
            await self._raise_auth_if(data)
            raise SchedulerError(
                f"cancelling job {job_id} failed: {_error_text(data) or f'HTTP {code}'}", False
            )

    # --- poll --------------------------------------------------------------------------------
    async def _jobs(self) -> list[dict[str, Any]]:
        code, data = await self.request("GET", f"/slurm/{self.api_version}/jobs")
        if code != 200 or _errors(data):
            await self._raise_auth_if(data)
            raise SchedulerError(
                f"listing jobs through slurmrestd failed: {_error_text(data) or f'HTTP {code}'}",
                True,
                "scheduler_unavailable",
            )
        return [j for j in data.get("jobs") or [] if isinstance(j, dict)]

    @staticmethod
    def rows_from_jobs(jobs: list[dict[str, Any]]) -> list[QueueRow]:
        """QueueRows from ``/slurm/.../jobs`` records (a pending array's record gives one row per task)."""
        rows = []
        for j in jobs:
            native = str(j.get("job_state") or "")
            rc, sig = decode_wait_status(j.get("exit_code"))
            status = map_state(native, str(j.get("state_reason") or ""), rc, sig)
            if STATE_MAP.get(native) not in (JobState.COMPLETED, JobState.FAILED) and not status.state.final:
                status = JobStatus(
                    status.state, status.reason, native_state=native, reason_code=status.reason_code
                )
            key, parent = job_key(j)
            tasks = expand_tasks(str(j.get("array_task_string") or ""))
            if j.get("array_job_id") and j.get("array_task_id") is None and tasks:
                rows += [QueueRow(f"{j['array_job_id']}_{t}", status, str(j["array_job_id"])) for t in tasks]
            else:
                rows.append(QueueRow(key, status, parent))
        return rows

    async def poll(self, ids: Any) -> dict[str, JobStatus]:
        """States of *ids* from ONE ``GET /jobs`` (the controller keeps finished jobs for MinJobAge);
        ids it no longer knows are looked up in slurmdb, one request each."""
        from .scheduler import select

        ids = _ids(ids)
        if not ids:
            return {}
        try:
            known = select(ids, self.rows_from_jobs(await self._jobs()))
        except SchedulerError as e:
            return {i: _unknown(e) for i in ids}
        out = dict(known)
        for i in ids:
            if i in out:
                continue
            try:
                acct = await self._db_job(i)
            except SchedulerError as e:
                out[i] = _unknown(e)
                continue
            a = acct.get(i)
            if a is None:
                out[i] = JobStatus(
                    JobState.UNKNOWN,
                    "the scheduler knows no job with this id (neither queued nor in its accounting)",
                )
            else:
                out[i] = JobStatus(a.state, a.reason, exit_code=a.exit_code, signal=a.signal,
                                   native_state=a.native_state)  # fmt: skip
        return out

    # --- accounting --------------------------------------------------------------------------
    @staticmethod
    def accounting_from_db(jobs: list[dict[str, Any]]) -> dict[str, JobAccounting]:
        """JobAccounting from ``/slurmdb/.../job(s)`` records."""
        out: dict[str, JobAccounting] = {}
        for j in jobs:
            arr = j.get("array") or {}
            task = arr.get("task_id")
            key = (
                f"{arr.get('job_id')}_{task}"
                if arr.get("job_id") and task is not None
                else str(j.get("job_id"))
            )
            state = j.get("state") or {}
            native = str(state.get("current") or "")
            ex = j.get("exit_code") or {}
            rc = ex.get("return_code") if isinstance(ex.get("return_code"), int) else None
            sig = None
            if ex.get("status") == "SIGNALED":
                sig = ((ex.get("signal") or {}).get("signal_id")) or None
                rc = None
            st = map_state(native, str(state.get("reason") or ""), rc, sig)
            t = j.get("time") or {}
            alloc = {x.get("type"): x.get("count") for x in (j.get("tres") or {}).get("allocated") or []}
            steps = []
            max_rss = None
            energy = 0
            for s in j.get("steps") or []:
                sx = s.get("exit_code") or {}
                srss = None
                for x in ((s.get("tres") or {}).get("requested") or {}).get("max") or []:
                    if x.get("type") == "mem" and isinstance(x.get("count"), int):
                        srss = x["count"]
                se = ((s.get("statistics") or {}).get("energy") or {}).get("consumed") or None
                snative = str(s.get("state") or "")
                steps.append(StepAccounting(
                    step_id=str((s.get("step") or {}).get("id") or ""), state=STATE_MAP.get(snative, JobState.UNKNOWN),
                    native_state=snative, exit_code=sx.get("return_code") if isinstance(sx.get("return_code"), int) else None,
                    signal=None, elapsed_s=(s.get("time") or {}).get("elapsed"), max_rss_bytes=srss,
                    consumed_energy_j=se,
                ))  # fmt: skip
                if srss is not None and (max_rss is None or srss > max_rss):
                    max_rss = srss
                energy += se or 0
            out[key] = JobAccounting(
                job_id=key, state=st.state, native_state=native, name=j.get("name") or "", exit_code=rc, signal=sig,
                reason=st.reason, elapsed_s=t.get("elapsed"), alloc_cpus=alloc.get("cpu"), nnodes=j.get("allocation_nodes"),
                max_rss_bytes=max_rss, consumed_energy_j=energy or None, submit=_ts(t.get("submission")),
                start=_ts(t.get("start")), end=_ts(t.get("end")), partition=j.get("partition") or "",
                node_list=j.get("nodes") or "", steps=steps,
            )  # fmt: skip
        return out

    async def _db_job(self, job_id: str) -> dict[str, JobAccounting]:
        code, data = await self.request("GET", f"/slurmdb/{self.api_version}/job/{quote(job_id)}")
        if code == 404 and not data.get("jobs"):
            raise SchedulerError(
                "slurmrestd has no accounting (slurmdb) endpoints: it runs without slurmdbd",
                False,
                "accounting_unavailable",
            )
        errors = [e for e in _errors(data) if e.get("error_number") != NOTHING_FOUND]
        if any(e.get("error_number") == AUTH_ERROR for e in errors):
            raise self._auth_error(data)
        if code != 200 or errors:
            await self._raise_auth_if(data)
            if any(e.get("error_number") == 2017 for e in errors) or not errors:
                return {}
            raise SchedulerError(
                f"reading accounting through slurmrestd failed: {_error_text(data) or f'HTTP {code}'}",
                True,
                "accounting_unavailable",
            )
        return self.accounting_from_db([j for j in data.get("jobs") or [] if isinstance(j, dict)])

    async def accounting(self, ids: Any) -> dict[str, JobAccounting]:
        """From slurmdb (one request per id); the controller's exit code (a decoded wait status) wins
        while it still knows the job, since slurmdb v0.0.38 of Slurm 22.05 records 0 for batch exits."""
        ids = _ids(ids)
        out: dict[str, JobAccounting] = {}
        for i in ids:
            out.update(await self._db_job(i))
        try:
            live = {r.job_id: r.status for r in self.rows_from_jobs(await self._jobs())}
        except SchedulerError:
            live = {}
        for key, a in out.items():
            st = live.get(key)
            if st is not None and st.state.final and st.state is a.state:
                a.exit_code, a.signal, a.reason = st.exit_code, st.signal, st.reason
        wanted = set(ids)
        return {k: v for k, v in out.items() if k in wanted or k.split("_")[0] in wanted}

    # --- recovery ----------------------------------------------------------------------------
    async def find_by_name(self, name: str) -> list[str]:
        JobSpec(name=name, command=["true"]).validated()
        self._base()
        found: set[str] = set()
        user = self.user_name or str(jwt_claims(await self._get_token()).get("sun") or "")
        for j in await self._jobs():
            if j.get("name") == name and (not user or j.get("user_name") == user):
                found.add(str(j.get("array_job_id") or j.get("job_id")))
        start = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - self.find_window_days * 86400)
        )
        code, data = await self.request(
            "GET", f"/slurmdb/{self.api_version}/jobs", query={"job_name": name, "start_time": start}
        )
        errors = [e for e in _errors(data) if e.get("error_number") != NOTHING_FOUND]
        if any(e.get("error_number") == AUTH_ERROR for e in errors):
            raise self._auth_error(data)
        if code == 200 and not errors:
            for j in data.get("jobs") or []:
                if j.get("name") == name and (not user or j.get("user") == user):
                    found.add(str((j.get("array") or {}).get("job_id") or j.get("job_id")))
        elif code != 404:
            await self._raise_auth_if(data)
        return sorted(found, key=lambda i: [int(x) for x in i.split("_")])

    # unused CLI hooks of the base class (this backend speaks HTTP)
    def queue_argv(self, ids: list[str]) -> list[str]:  # pragma: no cover
        raise NotImplementedError("SlurmRestScheduler polls over HTTP")

    def parse_queue(self, result: CommandResult) -> list[QueueRow]:  # pragma: no cover
        raise NotImplementedError("SlurmRestScheduler polls over HTTP")


def _ts(value: Any) -> Any:
    from datetime import datetime, timezone

    if isinstance(value, int) and value > 0:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return None
