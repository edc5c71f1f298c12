"""Parsers for Slurm's text formats (``sacct --parsable2``, ``squeue``/``sinfo`` fields).

Pure functions, tested against real ``sacct`` output (``tests/clusters/data``). Quirks handled:

- elapsed and time limits as ``[D-]HH:MM:SS``, ``MM:SS``, ``MM:SS.mmm``, ``UNLIMITED``/``INVALID``;
- sizes with ``K``/``M``/``G``/``T``/``P`` suffixes (powers of 1024, as Slurm's ``convert_num_unit``),
  empty, ``0`` or a literal ``""`` when a site's sacct wrapper quotes empty fields;
- ``ExitCode`` as ``rc:signal``; ``State`` as ``CANCELLED by <uid>``;
- job steps (``123.batch``, ``123.extern``, ``123.0``) and array tasks (``123_4``, ``123_4.batch``);
- ``ConsumedEnergy`` empty on job lines and ``0`` on steps when the cluster does not measure energy.
"""

from __future__ import annotations

import re
from datetime import datetime

_ELAPSED_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)(?:n|c)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_JOBID_RE = re.compile(r"^(?P<job>(?P<base>\d+)(?:_(?P<task>\d+|\[[^\]]*\]))?(?:\+\d+)?)(?:\.(?P<step>.+))?$")


def _clean(value: str | None) -> str:
    v = (value or "").strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        v = v[1:-1].strip()
    return v


def parse_elapsed(value: str | None) -> float | None:
    """``"1-02:03:04"`` -> 93784.0; ``"05:06"`` -> 306.0; ``UNLIMITED``/empty -> None."""
    v = _clean(value)
    if not v or v.upper() in ("UNLIMITED", "INFINITE", "INVALID", "PARTITION_LIMIT", "NONE", "N/A"):
        return None
    m = _ELAPSED_RE.match(v)
    if not m:
        # sinfo prints a bare number of minutes for some limits
        if v.isdigit():
            return float(v) * 60
        raise ValueError(f"not a Slurm duration: {v!r}")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def parse_size(value: str | None, default_unit: str = "") -> int | None:
    """``"171096K"`` -> 175202304 bytes; ``"1.5G"``; empty or ``""`` -> None. *default_unit* applies
    to bare numbers (sinfo's memory is in MiB: ``default_unit="M"``)."""
    v = _clean(value).rstrip("+")
    if not v:
        return None
    m = _SIZE_RE.match(v)
    if not m:
        raise ValueError(f"not a Slurm size: {v!r}")
    number, unit = m.groups()
    return int(round(float(number) * _UNITS[(unit or default_unit).upper()]))


def parse_energy(raw: str | None, converted: str | None = None) -> float | None:
    """Joules from ``ConsumedEnergyRaw`` (preferred) or ``ConsumedEnergy`` (with Slurm's 1024-based
    suffixes). Empty means the cluster does not measure energy: None."""
    r = _clean(raw)
    if r:
        try:
            return float(r)
        except ValueError:
            pass
    c = _clean(converted)
    if not c:
        return None
    size = parse_size(c)
    return float(size) if size is not None else None


def parse_exit(value: str | None) -> tuple[int | None, int | None]:
    """``"3:0"`` -> (3, 0); ``"0:15"`` -> (0, 15); empty -> (None, None)."""
    v = _clean(value)
    if not v:
        return None, None
    rc, _, sig = v.partition(":")
    try:
        return int(rc), int(sig or 0)
    except ValueError:
        return None, None


def parse_state(value: str | None) -> tuple[str, str]:
    """``"CANCELLED by 1001"`` -> ("CANCELLED", "1001"); ``"COMPLETED"`` -> ("COMPLETED", "");
    a truncated ``"CANCELLED+"`` -> ("CANCELLED", "")."""
    v = _clean(value)
    parts = v.split()
    if not parts:
        return "", ""
    state = parts[0].rstrip("+").upper()
    by = parts[2] if len(parts) >= 3 and parts[1] == "by" else ""
    return state, by


def parse_time(value: str | None) -> datetime | None:
    v = _clean(value)
    if not v or v in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        return None


def parse_int(value: str | None) -> int | None:
    v = _clean(value).rstrip("+")
    try:
        return int(v) if v else None
    except ValueError:
        return None


def split_job_id(value: str) -> tuple[str, str, str]:
    """``"123_4.batch"`` -> ("123_4", "123", "batch"): the job (or array task) id, the base job id
    and the step name (empty for the allocation line)."""
    m = _JOBID_RE.match(_clean(value))
    if not m:
        return _clean(value), "", ""
    return m.group("job"), m.group("base"), m.group("step") or ""


def parse_parsable(text: str, fields: list[str] | None = None) -> list[dict[str, str]]:
    """Rows of ``--parsable2`` output as dicts. With *fields* None the first line is the header
    (``sacct -P`` without ``--noheader``). The last field may contain ``|`` (put free text last)."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if fields is None:
        if not lines:
            return []
        fields = [f.strip() for f in lines[0].split("|")]
        lines = lines[1:]
    n = len(fields)
    rows = []
    for ln in lines:
        parts = ln.split("|", n - 1)
        if len(parts) < n:
            parts += [""] * (n - len(parts))
        rows.append(dict(zip(fields, parts, strict=True)))
    return rows
