"""Read EAR (Energy Aware Runtime, BSC) job signatures: ``eacct -c`` CSV and the EAR HEROES plugin CSV.

Both are ``;``-separated with a header line. ``eacct -c`` writes one row per job step and node with 89
columns (CPU build) or more (GPU builds add ``GPU<n>_POWER_W`` and seven more columns per GPU). The
HEROES report plugin (``$HEROES_LOGS_PATH/heroes_app_logs/heroes.<rank>.csv``, D3.6 section 4.1.7)
prefixes the same columns with ``HEROES_INSTANCE_WORKFLOW_ID``, ``HEROES_TEMPLATE_WORKFLOW_ID``,
``HEROES_USER_ID``, ``HEROES_ORGANIZATION_NAME``, ``HEROES_ORGANIZATION_ID`` (an unset one is written
``NO_WRF_ID``, ``NO_HER_ID``, ``NO_USR_ID``, ``NO_PRJ_ID``, ``NO_ORG_ID``; read here as ``None``),
``MAX_POWER_W`` and the seconds spent in each phase EAR detected (``COMP_BOUND``, ``MPI_BOUND``, ...).

Neither has an energy column: a row's energy is ``DC_NODE_POWER_W x TIME_SEC`` joules (one node).
Columns are found by name, so other builds with extra columns read too. A malformed file raises
:class:`EarError` naming the line and the column; nothing is half-read.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import pandas as pd

from .energy import J_PER_KWH, MEASURED, Energy, MeasuredPower

REQUIRED = ("JOBID", "STEPID", "NODENAME", "TIME_SEC", "DC_NODE_POWER_W")
HEROES_IDS = (
    "HEROES_INSTANCE_WORKFLOW_ID",
    "HEROES_TEMPLATE_WORKFLOW_ID",
    "HEROES_USER_ID",
    "HEROES_ORGANIZATION_NAME",
    "HEROES_ORGANIZATION_ID",
)
UNSET = frozenset({"NO_WRF_ID", "NO_HER_ID", "NO_USR_ID", "NO_PRJ_ID", "NO_ORG_ID"})
PHASES = (
    "COMP_BOUND",
    "MPI_BOUND",
    "IO_BOUND",
    "CPU_BUSY_WAITING",
    "CPU_GPU_COMP",
    "CPU_BOUND",
    "MEM_BOUND",
    "MIX_COMP",
)
OPTIONAL_NUMBERS = {
    "CPU_UTIL": "cpu_util",
    "CPI": "cpi",
    "MEM_GBS": "mem_gbs",
    "AVG_CPUFREQ_KHZ": "avg_cpufreq_khz",
    "DRAM_POWER_W": "dram_power_w",
    "PCK_POWER_W": "pck_power_w",
    "CPU_GFLOPS": "cpu_gflops",
    "MAX_POWER_W": "max_power_w",
}
FORMAT_EACCT = "eacct"
FORMAT_HEROES = "heroes-plugin"


class EarError(ValueError):
    """An EAR CSV is malformed; the message names the source, the line and the column."""

    reason = "invalid-ear-csv"


@dataclass(frozen=True)
class EarRecord:
    """One row: a job step's signature on one node."""

    job_id: str
    step_id: str
    node: str
    time_s: float
    dc_node_power_w: float
    app_id: str = ""
    nprocs: int | None = None
    gpu_power_w: float = 0.0
    cpu_util: float | None = None
    cpi: float | None = None
    mem_gbs: float | None = None
    avg_cpufreq_khz: float | None = None
    dram_power_w: float | None = None
    pck_power_w: float | None = None
    cpu_gflops: float | None = None
    max_power_w: float | None = None
    instance_id: str | None = None
    template_id: str | None = None
    user_id: str | None = None
    organization_name: str | None = None
    organization_id: str | None = None
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        """Energy of this node over the step: DC node power x time."""
        return self.dc_node_power_w * self.time_s

    def energy(self) -> Energy:
        return Energy(self.energy_j, MEASURED, "EAR DC_NODE_POWER_W x TIME_SEC")


def _number(value: str, where: str, column: str, *, required: bool) -> float | None:
    v = value.strip()
    if not v:
        if required:
            raise EarError(f"{where}, column {column}: empty; a number is required")
        return None
    try:
        x = float(v)
    except ValueError:
        raise EarError(f"{where}, column {column}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise EarError(f"{where}, column {column}: {value!r} is not a finite number")
    if x < 0 and (column == "TIME_SEC" or column.endswith("_POWER_W")):
        raise EarError(f"{where}, column {column}: {value!r} is negative")
    return x


def _id(value: str) -> str | None:
    v = value.strip()
    return None if not v or v in UNSET else v


def _split(line: str) -> list[str]:
    return line.rstrip("\r\n").split(";")


def read_ear_csv(source: str | os.PathLike[str] | IO[str], *, name: str | None = None) -> list[EarRecord]:
    """Parse an ``eacct -c`` or HEROES plugin CSV (a path, an open text file, or the text itself when
    it contains a newline) into :class:`EarRecord` rows."""
    if isinstance(source, str) and "\n" in source:
        f: IO[str] = io.StringIO(source)
        label = name or "EAR CSV"
    elif isinstance(source, str | os.PathLike):
        label = name or os.fspath(source)
        try:
            with open(source, encoding="utf-8", newline="") as fh:
                return _parse(fh, label)
        except OSError as e:
            raise EarError(f"{label}: cannot read ({e.strerror})") from None
    else:
        f = source
        label = name or getattr(source, "name", "EAR CSV")
    return _parse(f, label)


def _parse(f: Iterable[str], label: str) -> list[EarRecord]:
    it = iter(f)
    header_line = next(it, "")
    if not header_line.strip():
        raise EarError(f"{label}, line 1: empty, expected the EAR CSV header line")
    header = [h.strip() for h in _split(header_line)]
    if header and header[-1] == "":
        header.pop()  # tolerate a trailing ';'
    if "LOOPID" in header:
        raise EarError(
            f"{label}, line 1: this is an EAR loop (per-iteration) file; pass the application file "
            "(eacct -c output or heroes.<rank>.csv)"
        )
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise EarError(
            f"{label}, line 1: not an EAR CSV header: column(s) {missing} missing "
            "(expected the eacct -c or HEROES plugin layout, ';'-separated)"
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise EarError(f"{label}, line 1: duplicate column(s) {dup}")
    col = {h: i for i, h in enumerate(header)}
    gpu_cols = [h for h in header if h.startswith("GPU") and h.endswith("_POWER_W")]
    phases = [p for p in PHASES if p in col]
    heroes = [h for h in HEROES_IDS if h in col]
    n = len(header)
    out: list[EarRecord] = []
    for lineno, line in enumerate(it, start=2):
        if not line.strip():
            continue
        vals = _split(line)
        if len(vals) == n + 1 and vals[-1] == "":
            vals.pop()
        where = f"{label}, line {lineno}"
        if len(vals) != n:
            raise EarError(f"{where}: {len(vals)} fields, the header has {n}")

        def num(c: str, required: bool = False, _v: list[str] = vals, _w: str = where) -> float | None:
            return _number(_v[col[c]], _w, c, required=required) if c in col else None

        nprocs = num("JOB_NPROCS")
        ids = {h: _id(vals[col[h]]) for h in heroes}
        for c in ("JOBID", "STEPID", "NODENAME"):
            if not vals[col[c]].strip():
                raise EarError(f"{where}, column {c}: empty")
        out.append(
            EarRecord(
                job_id=vals[col["JOBID"]].strip(),
                step_id=vals[col["STEPID"]].strip(),
                node=vals[col["NODENAME"]].strip(),
                time_s=num("TIME_SEC", True),  # type: ignore[arg-type]
                dc_node_power_w=num("DC_NODE_POWER_W", True),  # type: ignore[arg-type]
                app_id=vals[col["APPID"]].strip() if "APPID" in col else "",
                nprocs=int(nprocs) if nprocs is not None else None,
                gpu_power_w=sum(num(c) or 0.0 for c in gpu_cols),
                **{attr: num(c) for c, attr in OPTIONAL_NUMBERS.items()},
                instance_id=ids.get("HEROES_INSTANCE_WORKFLOW_ID"),
                template_id=ids.get("HEROES_TEMPLATE_WORKFLOW_ID"),
                user_id=ids.get("HEROES_USER_ID"),
                organization_name=ids.get("HEROES_ORGANIZATION_NAME"),
                organization_id=ids.get("HEROES_ORGANIZATION_ID"),
                phases={p: num(p) or 0.0 for p in phases},
            )
        )
    return out


def detect_format(header_line: str) -> str:
    """``heroes-plugin`` or ``eacct`` from a header line."""
    first = _split(header_line)[0].strip()
    return FORMAT_HEROES if first == HEROES_IDS[0] else FORMAT_EACCT


def summarize(records: Iterable[EarRecord]) -> pd.DataFrame:
    """One row per job step: nodes, elapsed (the longest node), energy (J and kWh, summed over
    nodes), mean node power, and the HEROES ids when present. Energy basis is ``measured``."""
    rows = [
        {
            "job_id": r.job_id,
            "step_id": r.step_id,
            "app_id": r.app_id,
            "node": r.node,
            "time_s": r.time_s,
            "energy_j": r.energy_j,
            "instance_id": r.instance_id,
            "template_id": r.template_id,
        }
        for r in records
    ]
    cols = ["job_id", "step_id", "app_id", "nodes", "time_s", "energy_j", "energy_kwh", "node_power_w"]
    if not rows:
        return pd.DataFrame(columns=[*cols, "instance_id", "template_id", "basis"])
    df = pd.DataFrame(rows)
    g = df.groupby(["job_id", "step_id"], sort=True, dropna=False)
    out = g.agg(
        app_id=("app_id", "first"),
        nodes=("node", "nunique"),
        time_s=("time_s", "max"),
        node_seconds=("time_s", "sum"),
        energy_j=("energy_j", "sum"),
        instance_id=("instance_id", "first"),
        template_id=("template_id", "first"),
    ).reset_index()
    out["energy_kwh"] = out["energy_j"] / J_PER_KWH
    out["node_power_w"] = out["energy_j"] / out["node_seconds"].where(out["node_seconds"] > 0)
    out["basis"] = MEASURED
    return out[[*cols, "instance_id", "template_id", "basis"]]


def measured_power(records: Iterable[EarRecord], source: str = "EAR") -> MeasuredPower | None:
    """Time-weighted mean DC power of one node over all *records* (``sum energy / sum node-seconds``),
    counting each job step as one run; ``None`` when there is nothing to average."""
    energy = seconds = 0.0
    runs: set[tuple[str, str]] = set()
    for r in records:
        energy += r.energy_j
        seconds += r.time_s
        runs.add((r.job_id, r.step_id))
    if seconds <= 0:
        return None
    return MeasuredPower(energy / seconds, len(runs), source)
