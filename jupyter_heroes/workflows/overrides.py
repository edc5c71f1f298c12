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


def check_limits(template: Template, overrides: Mapping[str, Any] | None, *, where: str, queue: Any) -> None:
    """Refuse (400 ``resources_beyond_limits``) a run whose steps ask for more than the queue
    submitted to (*where*, ``cluster/queue``) allows. What is checked is what the scheduler would be
    asked for: the template's values with the overrides applied, so a template that needs more than
    the queue is refused here, not left pending for ever (Slurm's ``PartitionTimeLimit``). Each
    reason names the step, the value, where it comes from and the limit; the fix is in the message."""
    found = limit_reasons(template, queue, where, overrides, say_origin=True)
    if found:
        fix = "submit to a queue with higher limits"
        if any(fixable for _, fixable in found):
            fix = "ask for less walltime or memory in 'resources', or " + fix
        raise ResourceError("; ".join(r for r, _ in found) + ": " + fix, "resources_beyond_limits")


def limit_reasons(
    template: Template,
    queue: Any,
    where: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    say_origin: bool = False,
) -> list[tuple[str, bool]]:
    """Every way a step of *template* (with *overrides* applied) asks for more than *queue* allows,
    as ``(reason, fixable)``; *fixable* when lowering walltime or memory per submission would help.
    *queue* has the limits ``max_nodes``, ``cpus_per_node``, ``mem_per_node_mb``, ``gpus_per_node``
    and ``max_walltime_s`` (None: no limit), as a queue row or the decision's candidate does: this is
    the one check both the decision's feasibility (:func:`..decision.candidates.check_feasible`) and a
    submission use. ``memory_mb`` is per node; ``gpus`` is the step's total, spread over its nodes.
    With *say_origin*, walltime and memory reasons say where the value comes from."""
    found: list[tuple[str, bool]] = []
    for s in template.steps:
        o = (overrides or {}).get(s.name) or {}
        r = s.resources
        p = f"step '{s.name}'"
        limit = getattr(queue, "max_nodes", None)
        if limit is not None and r.nodes > limit:
            found.append((f"{p} needs {r.nodes} nodes; {where} allows at most {limit}", False))
        per_node = -(-r.cores // r.nodes)
        limit = getattr(queue, "cpus_per_node", None)
        if limit is not None and per_node > limit:
            found.append((f"{p} needs {per_node} cores per node; {where} has {limit}", False))
        mem = int(o.get("memory_mb") or r.memory_mb)
        limit = getattr(queue, "mem_per_node_mb", None)
        if limit is not None and mem > limit:
            origin = _origin(o, "memory_mb") if say_origin else ""
            found.append((f"{p} needs {mem} MB per node{origin}; {where} has {limit} MB", True))
        gpus = -(-r.gpus // r.nodes)
        limit = getattr(queue, "gpus_per_node", None) or 0
        if gpus > limit:
            found.append((f"{p} needs {gpus} GPU(s) per node; {where} has {limit}", False))
        wall = int(o.get("walltime_s") or r.walltime_s)
        limit = getattr(queue, "max_walltime_s", None)
        if limit is not None and wall > limit:
            origin = _origin(o, "walltime_s") if say_origin else ""
            found.append(
                (f"{p} asks for {_hms(wall)} of walltime{origin}; {where} allows {_hms(limit)}", True)
            )
    return found


def _origin(override: Mapping[str, Any], key: str) -> str:
    src = (override.get("sources") or {}).get(key) or ("user" if key in override else "")
    return {"user": " (your 'resources')", "advice": " (the decision's advice)"}.get(src, " (the template's)")


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
