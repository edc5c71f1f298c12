"""A process's memory as Linux reports it, for the memory checks of tests and benchmarks.

``VmHWM`` (the peak RSS) can be reset to the current RSS by writing 5 to ``/proc/<pid>/clear_refs``
(Linux >= 4.0), so a check measures the peak of its own operation only, not whatever ran before.
"""

from __future__ import annotations

from pathlib import Path


def status_kib(field: str, pid: int | str = "self") -> int:
    """A field of ``/proc/<pid>/status`` in KiB (``VmRSS``, ``VmHWM``, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def reset_peak_rss(pid: int | str = "self") -> int:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; return that RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kib("VmRSS", pid) * 1024


def peak_rss(pid: int | str = "self") -> int:
    """The process's peak RSS (``VmHWM``) in bytes."""
    return status_kib("VmHWM", pid) * 1024


def rss(pid: int | str = "self") -> int:
    """The process's current RSS (``VmRSS``) in bytes."""
    return status_kib("VmRSS", pid) * 1024
