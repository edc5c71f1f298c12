"""Where a workflow could run: candidate queues, their hard constraints, and their queue wait.

A :class:`CandidateQueue` is one queue (partition) of one cluster enrolled by the organization, with
what the decision needs to know about its site. It is built from the ORM rows by
:func:`candidates_from_orm` (clusters of other organizations are never considered; disabled clusters
are skipped) or directly with :func:`make_candidate`. What the ORM has no column for lives in the
cluster's ``site`` JSON (documented in ``docs/user/decision.md``)::

    kind: hpc | cloud                 # default hpc
    pue: 1.2                          # power usage effectiveness (default 1.58, the industry average)
    grid_zone: FR                     # Electricity Maps zone id (or grid_intensity_g_per_kwh: 56)
    relative_speed: 1.0               # runtime on this cluster = predicted runtime / relative_speed
    typical_wait_s: 600               # queue wait assumed when there is no live estimate
    timezone: Europe/Paris            # how the scheduler prints times (default UTC)
    licences: [ansys]                 # application licences available there
    data_locations: [s3:eu-west-1]    # where data is local (no transfer charged)
    container_runtimes: [apptainer]   # besides the cluster's container_runtime column
    power: {idle_w: 90, max_w: 350, cores: 64, gpu_w: 300}      # see energy.PowerModel
    offer: {currency: EUR, core_hour: "0.012"}                  # see cost.Offer
    cloud: {provider: aws, instance_type: hpc6a.48xlarge, region: eu-north-1}
    queues: {long: {offer: {...}, relative_speed: 0.8}}         # per-queue overrides

:func:`check_feasible` lists *every* hard constraint a candidate breaks for a template (nodes, cores per
node, memory per node, GPUs, walltime limit, architecture, container runtime, licences, data locality),
so an excluded candidate is always shown with its reasons.

Queue wait: a :class:`WaitEstimator` gives a :class:`WaitEstimate` per candidate.
:class:`SbatchTestOnlyEstimator` asks Slurm through any runner with the transports' ``run(argv)``
(``sbatch --test-only`` for the expected start, ``squeue`` for the pending jobs);
:func:`parse_sbatch_test_only` reads its answer. :class:`TypicalWaitEstimator` uses ``typical_wait_s``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..workflows.overrides import limit_reasons
from ..workflows.templates import Resources, Template
from .carbon import CarbonError, Intensity, check_pue
from .cost import CloudPrice, Offer, PriceCatalog, default_catalog
from .energy import PowerModel

DEFAULT_PUE = 1.58  # Uptime Institute Global Data Center Survey 2023, industry average
KINDS = ("hpc", "cloud")
SITE_KEYS = frozenset(
    {
        "kind",
        "pue",
        "grid_zone",
        "grid_intensity_g_per_kwh",
        "grid_intensity_source",
        "relative_speed",
        "typical_wait_s",
        "timezone",
        "licences",
        "data_locations",
        "container_runtimes",
        "power",
        "offer",
        "cloud",
        "queues",
        "description",
    }
)
QUEUE_KEYS = frozenset({"offer", "power", "relative_speed", "typical_wait_s", "licences", "pue"})


class CandidateError(ValueError):
    """A cluster's site configuration is invalid; the message names the cluster and the field."""

    reason = "invalid-site-config"


@dataclass(frozen=True)
class CandidateQueue:
    """One queue of one cluster, with what the decision needs about its site."""

    cluster: str
    queue: str
    cluster_id: int | None = None
    kind: str = "hpc"
    max_nodes: int | None = None
    cpus_per_node: int | None = None
    mem_per_node_mb: int | None = None
    gpus_per_node: int = 0
    max_walltime_s: int | None = None
    arch: str = "x86_64"
    container_runtimes: frozenset[str] = frozenset()
    licences: frozenset[str] = frozenset()
    data_locations: frozenset[str] = frozenset()
    offer: Offer | None = None
    power: PowerModel = field(default_factory=PowerModel.generic)
    pue: float = DEFAULT_PUE
    pue_declared: bool = False
    grid_zone: str | None = None
    grid_intensity: Intensity | None = None
    relative_speed: float = 1.0
    typical_wait_s: float = 0.0
    timezone: str = "UTC"
    cloud: CloudPrice | None = None

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.queue}"

    def tz(self) -> tzinfo:
        return timezone.utc if self.timezone == "UTC" else ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Exclusion:
    """A candidate that cannot be used, with every reason. ``kind`` is ``infeasible`` (breaks a hard
    constraint), ``misconfigured`` (its site config is invalid), ``not-allowed`` (policy),
    ``refused`` (the scheduler would not accept the job), ``over-deadline`` or ``over-budget``."""

    cluster: str
    queue: str
    reasons: tuple[str, ...]
    kind: str = "infeasible"

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.queue}"


def _pos(v: Any, where: str, *, zero: bool = False) -> float:
    ok = (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and (v >= 0 if zero else v > 0)
    )
    if not ok:
        raise CandidateError(
            f"{where}: expected a {'non-negative' if zero else 'positive'} number, got {v!r}"
        )
    return float(v)


def _strings(v: Any, where: str) -> frozenset[str]:
    if v is None:
        return frozenset()
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x for x in v):
        raise CandidateError(f"{where}: expected a list of names")
    return frozenset(v)


def make_candidate(
    cluster: str,
    queue: str,
    *,
    cluster_id: int | None = None,
    max_nodes: int | None = None,
    cpus_per_node: int | None = None,
    mem_per_node_mb: int | None = None,
    gpus_per_node: int = 0,
    max_walltime_s: int | None = None,
    arch: str = "x86_64",
    container_runtime: str = "",
    site: Mapping[str, Any] | None = None,
    catalog: PriceCatalog | None = None,
) -> CandidateQueue:
    """A :class:`CandidateQueue` from a queue's limits and its cluster's ``site`` JSON (validated;
    :class:`CandidateError` names the field). A cloud site's ``cloud.instance_type`` fills the
    per-node limits the queue leaves unset and, without ``offer``, the price from the catalog."""
    site = dict(site or {})
    where = f"cluster {cluster!r} site"
    extra = sorted(set(site) - SITE_KEYS)
    if extra:
        raise CandidateError(f"{where}: unknown field(s) {extra}; known: {sorted(SITE_KEYS)}")
    qover = (site.get("queues") or {}).get(queue, {})
    if not isinstance(qover, Mapping) or set(qover) - QUEUE_KEYS:
        raise CandidateError(f"{where}.queues.{queue}: a mapping of overrides among {sorted(QUEUE_KEYS)}")
    merged = {**site, **qover}
    kind = merged.get("kind", "hpc")
    if kind not in KINDS:
        raise CandidateError(f"{where}.kind: one of {list(KINDS)}, got {kind!r}")
    cloud = None
    if merged.get("cloud") is not None:
        c = merged["cloud"]
        if not isinstance(c, Mapping) or not c.get("provider") or not c.get("instance_type"):
            raise CandidateError(
                f"{where}.cloud: expected {{provider: aws, instance_type: ..., region: ...}}"
            )
        try:
            cloud = (catalog or default_catalog()).lookup(c["provider"], c["instance_type"], c.get("region"))
        except ValueError as e:
            raise CandidateError(f"{where}.cloud: {e}") from None
        cpus_per_node = cpus_per_node or cloud.vcpus
        mem_per_node_mb = mem_per_node_mb or int(cloud.memory_gib * 1024)
        gpus_per_node = gpus_per_node or cloud.gpus
    try:
        offer = None
        if merged.get("offer") is not None:
            owhere = f"{where}.queues.{queue}" if "offer" in qover else where
            offer = Offer.from_dict(merged["offer"], f"{owhere}.offer")
        elif cloud is not None:
            offer = cloud.offer()
        pwhere = f"{where}.queues.{queue}" if "power" in qover else where
        power = (
            PowerModel.from_dict(merged["power"], f"{pwhere}.power")
            if merged.get("power")
            else PowerModel.generic()
        )
        pue_declared = merged.get("pue") is not None
        pue = check_pue(merged["pue"], f"{where}.pue") if pue_declared else DEFAULT_PUE
    except (ValueError, CarbonError) as e:
        raise CandidateError(str(e)) from None
    intensity = None
    if merged.get("grid_intensity_g_per_kwh") is not None:
        g = _pos(merged["grid_intensity_g_per_kwh"], f"{where}.grid_intensity_g_per_kwh", zero=True)
        src = str(merged.get("grid_intensity_source") or f"declared by cluster {cluster}")
        intensity = Intensity(str(merged.get("grid_zone") or cluster), g, "declared", src, None)
    zone = merged.get("grid_zone")
    if zone is not None and (not isinstance(zone, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,32}", zone)):
        raise CandidateError(
            f"{where}.grid_zone: an Electricity Maps zone id such as FR or SE-SE3, got {zone!r}"
        )
    tzname = merged.get("timezone", "UTC")
    try:
        if tzname != "UTC":
            ZoneInfo(str(tzname))
    except (ZoneInfoNotFoundError, ValueError):
        raise CandidateError(
            f"{where}.timezone: {tzname!r} is not a time zone name such as Europe/Paris"
        ) from None
    runtimes = _strings(merged.get("container_runtimes"), f"{where}.container_runtimes")
    if container_runtime:
        runtimes |= {container_runtime}
    return CandidateQueue(
        cluster=cluster,
        queue=queue,
        cluster_id=cluster_id,
        kind=kind,
        max_nodes=max_nodes,
        cpus_per_node=cpus_per_node,
        mem_per_node_mb=mem_per_node_mb,
        gpus_per_node=gpus_per_node or 0,
        max_walltime_s=max_walltime_s,
        arch=arch or "x86_64",
        container_runtimes=runtimes,
        licences=_strings(merged.get("licences"), f"{where}.licences"),
        data_locations=_strings(merged.get("data_locations"), f"{where}.data_locations"),
        offer=offer,
        power=power,
        pue=pue,
        pue_declared=pue_declared,
        grid_zone=zone,
        grid_intensity=intensity,
        relative_speed=_pos(merged.get("relative_speed", 1.0), f"{where}.relative_speed"),
        typical_wait_s=_pos(merged.get("typical_wait_s", 0), f"{where}.typical_wait_s", zero=True),
        timezone=str(tzname),
        cloud=cloud,
    )


def validate_site(site: Mapping[str, Any], cluster: str = "cluster") -> None:
    """Check a cluster's ``site`` JSON (and each per-queue override) when it is enrolled or updated;
    raises :class:`CandidateError` naming the field, so a bad price never reaches a decision."""
    if not isinstance(site, Mapping):
        raise CandidateError(f"cluster {cluster!r} site: expected a mapping")
    queues = site.get("queues") or {}
    if not isinstance(queues, Mapping):
        raise CandidateError(f"cluster {cluster!r} site.queues: a mapping of queue name to overrides")
    for q in ["", *queues]:
        make_candidate(cluster, q, site=site)


def candidates_from_orm(
    clusters: Iterable[Any], org_id: int, *, catalog: PriceCatalog | None = None
) -> tuple[list[CandidateQueue], list[Exclusion]]:
    """Candidates from :class:`~jupyter_heroes.orm.Cluster` rows (with their ``queues``).

    Only enabled clusters of *org_id* are considered; a queue whose site configuration is invalid is
    returned as a ``misconfigured`` :class:`Exclusion` carrying the error, so one bad cluster never
    hides the others.
    """
    out: list[CandidateQueue] = []
    bad: list[Exclusion] = []
    for c in clusters:
        if c.org_id != org_id or not c.enabled:
            continue
        for q in c.queues:
            try:
                out.append(
                    make_candidate(
                        c.name,
                        q.name,
                        cluster_id=c.id,
                        max_nodes=q.max_nodes,
                        cpus_per_node=q.cpus_per_node,
                        mem_per_node_mb=q.mem_per_node_mb,
                        gpus_per_node=q.gpus_per_node or 0,
                        max_walltime_s=q.max_walltime_s,
                        arch=q.arch,
                        container_runtime=c.container_runtime or "",
                        site=c.site or {},
                        catalog=catalog,
                    )
                )
            except CandidateError as e:
                bad.append(Exclusion(c.name, q.name, (str(e),), "misconfigured"))
    return out, bad


# --- hard constraints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """What a run needs beyond the steps' resources (the template format has no field for these yet).

    ``data_location`` names where the inputs are (``s3:eu-west-1``, a site name); with
    ``data_locality="require"`` only candidates listing it in ``site.data_locations`` are feasible,
    with ``"prefer"`` the others are charged the transfer of ``input_gb``. ``output_gb`` kept
    ``storage_months`` is charged as storage.
    """

    arch: str | None = None
    licences: tuple[str, ...] = ()
    data_location: str | None = None
    data_locality: str = "prefer"
    input_gb: float = 0.0
    output_gb: float = 0.0
    storage_months: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Requirements:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"requirements: unknown field(s) {extra}; known: {sorted(known)}")
        if d.get("data_locality", "prefer") not in ("prefer", "require"):
            raise ValueError("requirements.data_locality: 'prefer' or 'require'")
        for k in ("input_gb", "output_gb", "storage_months"):
            _pos(d.get(k, 0.0), f"requirements.{k}", zero=True)
        lic = d.get("licences", ())
        if isinstance(lic, str) or not all(isinstance(x, str) for x in lic):
            raise ValueError("requirements.licences: a list of licence names")
        return cls(**{**d, "licences": tuple(lic)})

    def data_is_local(self, c: CandidateQueue) -> bool:
        return self.data_location is None or self.data_location in c.data_locations


def check_feasible(c: CandidateQueue, template: Template, req: Requirements | None = None) -> list[str]:
    """Every hard constraint *c* breaks for *template* (empty when it can run the whole workflow):
    the queue's limits (:func:`..workflows.overrides.limit_reasons`, the check a submission makes
    too), container runtime, architecture, licences and data locality."""
    req = req or Requirements()
    reasons = [reason for reason, _ in limit_reasons(template, c, c.key)]
    for step in template.steps:
        if step.container and not c.container_runtimes:
            reasons.append(
                f"step '{step.name}' runs in a container ({step.container}); {c.cluster} has no container runtime"
            )
    if req.arch and req.arch != c.arch:
        reasons.append(f"needs the {req.arch} architecture; {c.key} is {c.arch}")
    missing = [lic for lic in req.licences if lic not in c.licences]
    if missing:
        reasons.append(f"needs licence(s) {', '.join(missing)}, not available on {c.cluster}")
    if req.data_locality == "require" and not req.data_is_local(c):
        reasons.append(f"the data must stay at {req.data_location}; {c.cluster} is not there")
    return reasons


def split_feasible(
    candidates: Iterable[CandidateQueue], template: Template, req: Requirements | None = None
) -> tuple[list[CandidateQueue], list[Exclusion]]:
    ok: list[CandidateQueue] = []
    excluded: list[Exclusion] = []
    for c in candidates:
        reasons = check_feasible(c, template, req)
        if reasons:
            excluded.append(Exclusion(c.cluster, c.queue, tuple(reasons), "infeasible"))
        else:
            ok.append(c)
    return ok, excluded


# --- queue wait ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitEstimate:
    """When a job submitted now would start on a candidate. ``refused`` is the scheduler's reason when
    it would not accept the job at all (the candidate is then excluded)."""

    start: datetime
    source: str
    pending_jobs: int | None = None
    refused: str | None = None


class WaitEstimateError(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WaitEstimator(Protocol):
    async def estimate(
        self, candidate: CandidateQueue, resources: Resources, now: datetime
    ) -> WaitEstimate: ...


class CommandRunner(Protocol):
    """What :class:`SbatchTestOnlyEstimator` needs of a transport: ``run(argv)`` returning an object
    with ``rc``, ``stdout`` and ``stderr`` (:class:`jupyter_heroes.clusters.transport.Transport`)."""

    async def run(self, argv: Sequence[str], *, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class SbatchTestOnly:
    job_id: int
    start: datetime
    processors: int
    nodes: str
    partition: str


TEST_ONLY_RE = re.compile(
    r"Job\s+(?P<job>\d+)\s+to start at\s+(?P<start>\S+)\s+using\s+(?P<procs>\d+)\s+processors?"
    r"\s+on nodes?\s+(?P<nodes>\S+)\s+in partition\s+(?P<partition>\S+)"
)
SBATCH_ERROR_RE = re.compile(r"sbatch: error: (?P<msg>.+)")
#: sbatch errors that say nothing about the job (the controller is down or slow): try again later
TRANSIENT_RE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|connect failure|Zero Bytes", re.I
)


def parse_sbatch_test_only(text: str, tz: tzinfo = timezone.utc) -> SbatchTestOnly:
    """Read ``sbatch --test-only`` output such as ``sbatch: Job 123 to start at 2026-11-21T22:00:00
    using 1 processors on nodes localhost in partition debug``. The time is the scheduler's local
    time (*tz*); the result's ``start`` is timezone-aware. An ``sbatch: error:`` line or anything
    else raises :class:`WaitEstimateError` carrying Slurm's words."""
    m = TEST_ONLY_RE.search(text or "")
    if not m:
        errors = [e.group("msg").strip() for e in SBATCH_ERROR_RE.finditer(text or "")]
        if errors:
            raise WaitEstimateError("; ".join(errors))
        raise WaitEstimateError(f"unexpected sbatch --test-only output: {(text or '').strip()[:200]!r}")
    try:
        start = datetime.fromisoformat(m.group("start"))
    except ValueError:
        raise WaitEstimateError(
            f"sbatch --test-only start time {m.group('start')!r} is not YYYY-MM-DDTHH:MM:SS "
            "(is SLURM_TIME_FORMAT set on the cluster?)"
        ) from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=tz)
    return SbatchTestOnly(
        int(m.group("job")), start, int(m.group("procs")), m.group("nodes"), m.group("partition")
    )


def sbatch_test_only_argv(c: CandidateQueue, r: Resources) -> list[str]:
    """The argv asking Slurm when a job of *r* would start in *c*'s partition (nothing is submitted)."""
    argv = [
        "env",
        "SLURM_TIME_FORMAT=standard",
        "sbatch",
        "--test-only",
        f"--partition={c.queue}",
        f"--nodes={r.nodes}",
        f"--ntasks={r.tasks}",
        f"--cpus-per-task={r.cpus_per_task}",
        f"--mem={r.memory_mb}M",
        f"--time={max(1, math.ceil(r.walltime_s / 60))}",
    ]
    if r.gpus:
        argv.append(f"--gpus={r.gpus}")
    return [*argv, "--wrap=true"]


def squeue_pending_argv(c: CandidateQueue) -> list[str]:
    return ["squeue", "--noheader", f"--partition={c.queue}", "--states=PENDING", "--format=%i"]


class SbatchTestOnlyEstimator:
    """Live wait estimates from Slurm through each cluster's runner (its transport).

    *runners* maps a cluster name to a :class:`CommandRunner`. A refusal by ``sbatch`` becomes a
    ``refused`` estimate (the decision excludes the candidate with Slurm's reason); a transport
    failure raises :class:`WaitEstimateError` with ``transient`` set, and :func:`estimate_waits` then
    falls back to the site's typical wait.
    """

    def __init__(
        self, runners: Mapping[str, CommandRunner], *, count_pending: bool = True, timeout: float = 30
    ) -> None:
        self.runners = runners
        self.count_pending = count_pending
        self.timeout = timeout

    async def estimate(self, candidate: CandidateQueue, resources: Resources, now: datetime) -> WaitEstimate:
        runner = self.runners.get(candidate.cluster)
        if runner is None:
            raise WaitEstimateError(f"no transport for cluster {candidate.cluster}", transient=True)
        try:
            res = await runner.run(sbatch_test_only_argv(candidate, resources), timeout=self.timeout)
        except Exception as e:  # a transport error: the estimate is unavailable, not the candidate
            raise WaitEstimateError(f"{candidate.cluster}: {e}", transient=True) from e
        text = f"{res.stdout}\n{res.stderr}"
        try:
            t = parse_sbatch_test_only(text, candidate.tz())
        except WaitEstimateError as e:
            if res.rc != 0 and "error" in text and not TRANSIENT_RE.search(text):
                return WaitEstimate(now, "sbatch --test-only", refused=f"Slurm refuses the job: {e}")
            raise WaitEstimateError(f"{candidate.cluster}: {e}", transient=True) from None
        pending = None
        if self.count_pending:
            try:
                q = await runner.run(squeue_pending_argv(candidate), timeout=self.timeout)
                if q.rc == 0:
                    pending = sum(1 for line in q.stdout.splitlines() if line.strip())
            except Exception:  # the pending count is optional information
                pending = None
        return WaitEstimate(max(t.start, now), "sbatch --test-only", pending_jobs=pending)


class TypicalWaitEstimator:
    """The site's declared ``typical_wait_s`` (0 when not declared): the fallback estimate."""

    async def estimate(self, candidate: CandidateQueue, resources: Resources, now: datetime) -> WaitEstimate:
        return typical_wait(candidate, now)


def typical_wait(candidate: CandidateQueue, now: datetime) -> WaitEstimate:
    src = "typical wait (site config)" if candidate.typical_wait_s else "no wait estimate (assumed 0)"
    return WaitEstimate(now + timedelta(seconds=candidate.typical_wait_s), src)


async def estimate_waits(
    estimator: WaitEstimator,
    candidates: Sequence[CandidateQueue],
    resources: Resources,
    now: datetime,
    *,
    concurrency: int = 8,
) -> dict[str, WaitEstimate]:
    """Wait estimates for all *candidates*, *concurrency* at a time; a candidate whose estimate fails
    gets its typical wait, with the failure in ``source``."""
    sem = asyncio.Semaphore(concurrency)

    async def one(c: CandidateQueue) -> tuple[str, WaitEstimate]:
        async with sem:
            try:
                return c.key, await estimator.estimate(c, resources, now)
            except WaitEstimateError as e:
                w = typical_wait(c, now)
                return c.key, WaitEstimate(w.start, f"{w.source}; live estimate failed: {e}")

    return dict(await asyncio.gather(*(one(c) for c in candidates)))
