"""Per-submission resource overrides: the walltime and memory one run's steps ask the scheduler for.

A submission may replace, per step, the template's walltime and memory request with the user's own
values (``resources``) or with the advice of the decision it follows (``accept_advice``, see
:func:`jupyter_heroes.decision.store.advice_for`). Precedence, key by key: the user's value, else
the advice's, else the template's. The result is stored on the instance
(``WorkflowInstance.resource_overrides``), only for the steps and keys that differ in origin from the
template::

    {"solve": {"walltime_s": 1320, "memory_mb": 768, "source": "advice",
               "sources": {"walltime_s": "advice", "memory_mb": "advice"},
               "basis": "upper quantile of similar runs (...)"}}

``source`` is ``user``, ``advice`` or ``user+advice`` (the user set one key, the advice the other);
``sources`` says which for each key. The overrides are applied in one place,
:func:`effective_template`: the engine renders every job from that template (``sbatch --time`` and
``--mem``, the local scheduler's limit) and prices the budget reservation's upper bound with it, so
a shorter walltime reserves less.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import DomainError
from .templates import Resources, Template, TemplateError, parse_walltime

#: what a submission's ``resources`` may set per step
USER_KEYS = ("walltime", "memory_mb")
MAX_MEMORY_MB = 64 * 1024 * 1024  # as in templates
MAX_WALLTIME_S = 2**31 - 1
ALLOWED = (
    '\'resources\' maps a step of the template to {"walltime": seconds or "[D-]HH:MM:SS", '
    '"memory_mb": a positive integer (MB per node)}'
)


class ResourceError(DomainError):
    """A submission's ``resources`` (or the advice it accepts) cannot be applied: answered 400 with
    ``reason`` (``invalid_resources``, ``resources_beyond_limits``, ``advice_without_decision``,
    ``no_advice``)."""

    status = 400
    reason = "invalid_resources"


def parse_resources(template: Template, raw: Any) -> dict[str, dict[str, int]]:
    """The user's ``resources`` as ``{step: {"walltime_s"?: int, "memory_mb"?: int}}``; a
    :class:`ResourceError` naming the step and key, and what is allowed, for anything else."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ResourceError(f"resources: expected an object; {ALLOWED}")
    steps = [s.name for s in template.steps]
    out: dict[str, dict[str, int]] = {}
    for step, values in raw.items():
        where = f"resources.{step}"
        if step not in steps:
            raise ResourceError(
                f"{where}: template {template.name} has no step {step!r}; its steps are {', '.join(steps)}"
            )
        if not isinstance(values, Mapping) or not values:
            raise ResourceError(f"{where}: expected an object with walltime and/or memory_mb; {ALLOWED}")
        extra = sorted(set(values) - set(USER_KEYS))
        if extra:
            raise ResourceError(
                f"{where}: unknown key(s) {extra}; only walltime and memory_mb can be set per submission "
                "(other resources come from the template)"
            )
        got: dict[str, int] = {}
        if "walltime" in values:
            v = values["walltime"]
            if isinstance(v, bool) or not isinstance(v, int | str):
                raise ResourceError(f'{where}.walltime: {v!r} is not seconds or "[D-]HH:MM:SS"')
            try:
                seconds = parse_walltime(v, f"{where}")
            except TemplateError as e:
                raise ResourceError(f'{e}; for example "01:30:00" or 5400') from None
            if seconds > MAX_WALLTIME_S:
                raise ResourceError(f"{where}.walltime: at most {MAX_WALLTIME_S} seconds")
            got["walltime_s"] = seconds
        if "memory_mb" in values:
            v = values["memory_mb"]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_MEMORY_MB:
                raise ResourceError(
                    f"{where}.memory_mb: expected a whole number of MB per node between 1 and "
                    f"{MAX_MEMORY_MB}, got {v!r}"
                )
            got["memory_mb"] = v
        out[step] = got
    return out


def advice_resources(template: Template, advice: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The decision's advice for the template's steps: ``{step: {"walltime_s", "memory_mb", "basis"}}``
    (positive integers only; a step the advice does not cover keeps the template's values)."""
    out: dict[str, dict[str, Any]] = {}
    for s in template.steps:
        a = advice.get(s.name)
        if not isinstance(a, Mapping):
            continue
        got: dict[str, Any] = {}
        for key in ("walltime_s", "memory_mb"):
            v = a.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and v >= 1:
                got[key] = int(v)
        if got:
            basis = [str(a[k]) for k in ("basis", "memory_basis") if a.get(k)]
            if basis:
                got["basis"] = "; memory: ".join(basis)[:500]
            out[s.name] = got
    return out


def merge(
    template: Template,
    user: Mapping[str, Mapping[str, int]] | None = None,
    advice: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]] | None:
    """The overrides to store (see the module docstring): per step and key, the user's value, else
    the advice's; None when neither sets anything."""
    user, advice = user or {}, advice or {}
    out: dict[str, dict[str, Any]] = {}
    for s in template.order():
        u, a = user.get(s.name, {}), advice.get(s.name, {})
        entry: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for key in ("walltime_s", "memory_mb"):
            if key in u:
                entry[key], sources[key] = int(u[key]), "user"
            elif key in a:
                entry[key], sources[key] = int(a[key]), "advice"
        if not entry:
            continue
        kinds = set(sources.values())
        entry["source"] = kinds.pop() if len(kinds) == 1 else "user+advice"
        entry["sources"] = sources
        if "advice" in sources.values() and a.get("basis"):
            entry["basis"] = a["basis"]
        out[s.name] = entry
    return out or None


def effective_template(template: Template, overrides: Mapping[str, Any] | None) -> Template:
    """*template* with each overridden step's walltime and memory replaced (the one place overrides
    are applied: jobs are rendered and reservations priced from this)."""
    if not overrides:
        return template
    steps = []
    for s in template.steps:
        o = overrides.get(s.name)
        if isinstance(o, Mapping):
            r: Resources = s.resources
            r = dataclasses.replace(
                r,
                walltime_s=int(o.get("walltime_s") or r.walltime_s),
                memory_mb=int(o.get("memory_mb") or r.memory_mb),
            )
            s = dataclasses.replace(s, resources=r)
        steps.append(s)
    return dataclasses.replace(template, steps=tuple(steps))


def _hms(seconds: int) -> str:
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return (f"{d}-" if d else "") + f"{h:02d}:{m:02d}:{sec:02d}"


def check_limits(
    template: Template,
    overrides: Mapping[str, Any] | None,
    *,
    where: str,
    max_walltime_s: int | None,
    mem_per_node_mb: int | None,
) -> None:
    """Refuse (400 ``resources_beyond_limits``) an overridden walltime or memory beyond the limits
    of the queue submitted to (*where*, ``cluster/queue``), naming every step, the value and the
    limit, in the words of the decision's feasibility check (:func:`.candidates.check_feasible`)."""
    if not overrides:
        return
    reasons = []
    for s in template.order():
        o = overrides.get(s.name) or {}
        p = f"step '{s.name}'"
        w = o.get("walltime_s")
        if w is not None and max_walltime_s and w > max_walltime_s:
            reasons.append(f"{p} asks for {_hms(w)} of walltime; {where} allows {_hms(max_walltime_s)}")
        m = o.get("memory_mb")
        if m is not None and mem_per_node_mb and m > mem_per_node_mb:
            reasons.append(f"{p} needs {m} MB per node; {where} has {mem_per_node_mb} MB")
    if reasons:
        raise ResourceError(
            "; ".join(reasons) + ": ask for less in 'resources', or submit to a queue with higher limits",
            "resources_beyond_limits",
        )


def resources_view(template: Template, overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per step (in order) the walltime and memory a run asks for and where each comes from
    (``template``, ``user`` or ``advice``): what the instance view shows."""
    out: dict[str, dict[str, Any]] = {}
    for s in template.order():
        o = (overrides or {}).get(s.name) or {}
        sources = o.get("sources") or {}
        r = s.resources
        wall = int(o.get("walltime_s") or r.walltime_s)
        mem = int(o.get("memory_mb") or r.memory_mb)
        view: dict[str, Any] = {
            "walltime_s": wall,
            "walltime": _hms(wall),
            "memory_mb": mem,
            "source": o.get("source", "template"),
            "walltime_source": sources.get("walltime_s", "template"),
            "memory_source": sources.get("memory_mb", "template"),
            "template_walltime_s": r.walltime_s,
            "template_memory_mb": r.memory_mb,
        }
        if o.get("basis"):
            view["basis"] = o["basis"]
        out[s.name] = view
    return out
