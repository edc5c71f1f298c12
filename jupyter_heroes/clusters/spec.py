"""What to run: :class:`JobSpec`, validated before anything reaches a cluster.

A scheduler renders a spec into a batch script (:meth:`~.scheduler.Scheduler.render_script`). The
rules that keep user data out of the shell are enforced here, once, for every scheduler:

- numbers are numbers (``bool`` is refused) within sane bounds; names that end up in ``#SBATCH``
  directives (partition, account, QOS, array spec) match strict patterns;
- the command is an argv list, rendered with :func:`shlex.quote` per argument, so ``$(...)``,
  backticks, ``;``, quotes, newlines and ``../`` arrive in the program's ``argv`` literally;
- environment variable names match ``^[A-Z_][A-Z0-9_]*$``; values are quoted;
- paths (workdir, stdout, stderr) are passed to the scheduler as command-line arguments, never in
  directives; they hold no control characters and no ``..`` component.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
JOB_ID_RE = re.compile(r"^[0-9]{1,12}(_[0-9]{1,9})?$")
ARRAY_RE = re.compile(
    r"^[0-9]{1,7}(-[0-9]{1,7}(:[0-9]{1,7})?)?(,[0-9]{1,7}(-[0-9]{1,7}(:[0-9]{1,7})?)?)*(%[0-9]{1,5})?$"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_WALLTIME_S = 366 * 86400
#: set by every scheduler for every job; a spec may not override them
RESERVED_ENV = frozenset({"HEROES_JOB_ID", "HEROES_JOB_NAME", "HEROES_ARRAY_JOB_ID", "HEROES_ARRAY_TASK_ID"})


class JobSpecError(ValueError):
    """A job specification was refused; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def validate_job_id(job_id: str) -> str:
    """Scheduler job ids are ``123`` or an array task ``123_4``."""
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise JobSpecError(
            "job_id", f"{job_id!r} is not a job id (digits, or digits_digits for an array task)"
        )
    return job_id


def parse_array(spec: str) -> tuple[list[int], int | None]:
    """``"0-9:2,20%4"`` -> ([0, 2, 4, 6, 8, 20], 4)."""
    if not ARRAY_RE.match(spec):
        raise JobSpecError(
            "array", f"{spec!r} is not an array spec like '0-9', '1,3,5', '0-99:10' or '0-9%2'"
        )
    limit = None
    if "%" in spec:
        spec, lim = spec.split("%")
        limit = int(lim)
    out: list[int] = []
    for part in spec.split(","):
        step = 1
        if ":" in part:
            part, s = part.split(":")
            step = int(s)
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a or step < 1:
            raise JobSpecError("array", f"range {part!r} is empty")
        out.extend(range(a, b + 1, step))
        if len(out) > 10000:
            raise JobSpecError("array", "more than 10000 array tasks")
    return sorted(set(out)), limit


def _check_int(name: str, value: Any, lo: int, hi: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobSpecError(name, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise JobSpecError(name, f"must be between {lo} and {hi}, got {value}")


def _check_text(name: str, value: Any, max_len: int = 4096, allow_newline: bool = False) -> None:
    if not isinstance(value, str):
        raise JobSpecError(name, f"must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise JobSpecError(name, "must not contain NUL bytes")
    if not allow_newline and _CONTROL_RE.search(value):
        raise JobSpecError(name, "must not contain control characters (newlines, tabs, ...)")
    if len(value) > max_len:
        raise JobSpecError(name, f"is longer than {max_len} characters")


def _check_path(name: str, value: str) -> None:
    _check_text(name, value, 1024)
    if any(part == ".." for part in value.split("/")):
        raise JobSpecError(name, f"{value!r} must not contain '..' components")


@dataclass
class JobSpec:
    """One batch job. Only ``name`` and ``command`` are required.

    ``stdout``/``stderr`` may use the scheduler's patterns (``%j`` job id, ``%a`` array index); a
    relative path is relative to ``workdir``. ``afterok`` lists job ids that must complete
    successfully first. ``container_image`` runs the command inside that image with the cluster's
    container runtime (apptainer or singularity).
    """

    name: str
    command: list[str]
    workdir: str = ""
    comment: str = ""
    env: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    ntasks: int = 1
    cpus_per_task: int = 1
    mem_mb: int | None = None
    gpus: int = 0
    walltime_s: int | None = None
    array: str = ""
    afterok: list[str] = field(default_factory=list)
    container_image: str = ""

    def validated(self) -> JobSpec:
        """Check every field; return a copy with normalised containers (lists/dicts copied)."""
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise JobSpecError(
                "name",
                f"{self.name!r} is not a job name: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        _check_text("comment", self.comment, 255)
        if isinstance(self.command, str) or not isinstance(self.command, list | tuple) or not self.command:
            raise JobSpecError("command", "must be a non-empty list of arguments (argv), not a command line")
        for i, a in enumerate(self.command):
            _check_text(f"command[{i}]", a, 131072, allow_newline=True)
        if not isinstance(self.env, dict):
            raise JobSpecError("env", "must be a mapping of NAME -> value")
        for k, v in self.env.items():
            if not isinstance(k, str) or not ENV_NAME_RE.match(k):
                raise JobSpecError("env", f"variable name {k!r} must match ^[A-Z_][A-Z0-9_]*$")
            if k in RESERVED_ENV:
                raise JobSpecError("env", f"{k} is reserved: the scheduler sets it for every job")
            _check_text(f"env[{k}]", v, 131072, allow_newline=True)
        for name in ("workdir", "stdout", "stderr"):
            value = getattr(self, name)
            if value:
                _check_path(name, value)
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value and (not isinstance(value, str) or not IDENT_RE.match(value)):
                raise JobSpecError(
                    name, f"{value!r} is not a valid {name} name (letters, digits, '.', '_', '-')"
                )
        _check_int("nodes", self.nodes, 1, 100000)
        _check_int("ntasks", self.ntasks, 1, 10000000)
        _check_int("cpus_per_task", self.cpus_per_task, 1, 100000)
        _check_int("mem_mb", self.mem_mb, 1, 1 << 30, optional=True)
        _check_int("gpus", self.gpus, 0, 1024)
        _check_int("walltime_s", self.walltime_s, 1, MAX_WALLTIME_S, optional=True)
        if self.array:
            if not isinstance(self.array, str):
                raise JobSpecError("array", "must be a string like '0-9'")
            parse_array(self.array)
        if isinstance(self.afterok, str) or not isinstance(self.afterok, list | tuple):
            raise JobSpecError("afterok", "must be a list of job ids")
        for j in self.afterok:
            validate_job_id(j)
        if self.container_image:
            _check_text("container_image", self.container_image, 1024)
            if self.container_image.startswith("-"):
                raise JobSpecError("container_image", "must not start with '-'")
        return replace(self, command=list(self.command), env=dict(self.env), afterok=list(self.afterok))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise JobSpecError(sorted(unknown)[0], "unknown job field")
        return cls(**d).validated()
