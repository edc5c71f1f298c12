"""``heroes templates|decide|submit|status|wait|cancel|logs|me``: workflows from a shell, through
:class:`~jupyter_heroes.client.HeroesClient`.

::

    export HEROES_SERVICE_URL=https://hub.example.org/services/heroes/
    export JUPYTERHUB_API_TOKEN=...            # from the hub's Token page
    heroes templates
    heroes decide monte-carlo-pi samples=100000 --strategy cheapest
    heroes submit monte-carlo-pi samples=100000 --cluster galileo --decision ID --accept-advice --wait
    heroes status
    heroes wait 3f2a...
    heroes logs 3f2a... --step estimate --err
    heroes cancel 3f2a...

In a JupyterHub server's terminal both variables are already set. ``--json`` prints what the service
answered, for scripts. Exit status: 0 on success (``submit --wait``: the workflow completed), 1 when the
service refused or the workflow failed or was cancelled, 2 for a mistake on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .client import FINAL_STATES, HeroesClient, HeroesError, resources_from_flags, split_budget, typed_params


def _client(args: argparse.Namespace) -> HeroesClient:
    return HeroesClient(args.url, args.token, args.org, timeout=args.timeout_request)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the client's errors into one line on stderr and exit status 1."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except HeroesError as e:
            print(f"heroes {args.command}: {e.message}", file=sys.stderr)
            return 2 if e.reason == "usage" else 1

    return wrapper


def _parse_params(words: list[str], template: str, command: str = "submit") -> dict[str, str]:
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            example = f"heroes {command} {template} samples=100000" + (
                " --cluster NAME" if command == "submit" else ""
            )
            raise HeroesError(
                f"expected a parameter as key=value, got {word!r}; for example: {example}", "usage"
            )
        if key in out:
            raise HeroesError(f"parameter {key!r} is given twice; give each parameter once", "usage")
        out[key] = value
    return out


# --- commands ------------------------------------------------------------------------------------
@_run
def _templates(args: argparse.Namespace) -> int:
    templates = _client(args).templates()
    if args.json:
        _print_json(templates)
        return 0
    rows = []
    for t in templates:
        params = ", ".join(
            f"{n}:{d.get('type', '?')}" + (f"={d['default']}" if "default" in d else "")
            for n, d in (t.get("parameters") or {}).items()
        )
        rows.append((t["name"], t["version"], params, t.get("description", "")))
    print(
        _table(rows, ("NAME", "VERSION", "PARAMETERS", "DESCRIPTION")) if rows else "no templates you may run"
    )
    return 0


def _hours(seconds: Any) -> str:
    if seconds is None or seconds != seconds:  # NaN
        return "-"
    s = int(round(float(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _num(value: Any, digits: int) -> str:
    if value is None or value != value:  # None or NaN: unknown
        return "-"
    return f"{float(value):.{digits}f}"


@_run
def _decide(args: argparse.Namespace) -> int:
    client = _client(args)
    raw = _parse_params(args.params, args.template, "decide")
    params = typed_params(client.template(args.template), raw)
    budget, currency = split_budget(args.budget)
    df = client.decide(
        args.template,
        params,
        strategy=args.strategy,
        deadline=args.deadline,
        budget=budget,
        budget_currency=currency,
    )
    # unknown values are NaN in the DataFrame: null in JSON, as the service sent them
    rows = [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        for r in df.to_dict(orient="records")
    ]
    if args.json:
        _print_json({**df.attrs, "candidates": rows})
        return 0
    table = [
        (
            "-" if r.get("rank") is None or r.get("rank") != r.get("rank") else int(r["rank"]),
            r.get("cluster", ""),
            r.get("queue", ""),
            r.get("status", ""),
            str(r.get("expected_end") or "-")[:16].replace("T", " "),
            _hours(r.get("runtime_s")),
            "-" if r.get("cost") in (None, "") else f"{r['cost']} {r.get('currency', '')}".strip(),
            _num(r.get("energy_kwh"), 3),
            _num(r.get("co2e_kg"), 3),
        )
        for r in rows
    ]
    print(
        _table(
            table, ("RANK", "CLUSTER", "QUEUE", "STATUS", "END (UTC)", "RUNTIME", "COST", "KWH", "CO2E KG")
        )
    )
    rec = df.attrs.get("recommendation") or {}
    if rec:
        print(f"recommended: {rec.get('cluster')} / {rec.get('queue')}: {rec.get('why', '')}")
        print(
            f"decision {df.attrs.get('decision')}: submit with heroes submit {args.template} ... "
            f"--cluster {rec.get('cluster')} --queue {rec.get('queue')} --decision {df.attrs.get('decision')}"
            " [--accept-advice]"
        )
    else:
        print(df.attrs.get("message") or "no candidate is left")
    for note in df.attrs.get("notes") or []:
        print(f"note: {note}")
    return 0


@_run
def _submit(args: argparse.Namespace) -> int:
    client = _client(args)
    raw = _parse_params(args.params, args.template)
    resources = resources_from_flags(args.walltime, args.memory)
    if args.accept_advice and not args.decision:
        raise HeroesError(
            "--accept-advice takes the advice of a comparison: add --decision ID (the id "
            "heroes decide prints), or leave --accept-advice out",
            "usage",
        )
    params = typed_params(client.template(args.template, args.version), raw)
    inst = client.submit(
        args.template,
        params,
        cluster=args.cluster,
        queue=args.queue,
        project=args.project,
        version=args.version,
        decision=args.decision,
        resources=resources or None,
        accept_advice=args.accept_advice,
    )
    if not args.wait:
        if args.json:
            _print_json(inst)
        else:
            print(f"{inst['id']} {inst['state']}")
        return 0
    if not args.json:
        print(f"{inst['id']} {inst['state']}", flush=True)
    final = _follow(client, inst["id"], args.wait_timeout, quiet=args.json)
    if args.json:
        _print_json(final)
    return 0 if final["state"] == "completed" else 1


def _follow(client: HeroesClient, instance_id: str, timeout: float, *, quiet: bool) -> dict[str, Any]:
    """Print each step's state changes until the workflow is final; the final instance."""
    seen: dict[str, tuple[str, str]] = {}

    def show(step: str, state: str, reason: str) -> None:
        if seen.get(step) != (state, reason) and not quiet:
            print(f"  {step}: {state}{f' ({reason})' if reason else ''}", flush=True)
        seen[step] = (state, reason)

    done = threading.Event()

    def watch() -> None:
        try:
            for ev in client.events(instance_id, timeout=min(timeout, 3600.0)):
                if ev["type"] == "snapshot":
                    for j in ev["data"].get("jobs", []):
                        show(j["step"], j["state"], j.get("reason") or "")
                elif ev["type"] == "job":
                    show(ev["step"], ev["state"], ev.get("reason") or "")
                if ev["type"] in ("instance", "snapshot") and ev.get("state") in FINAL_STATES:
                    break
        except HeroesError:
            pass  # wait() below still sees the end
        finally:
            done.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    result = client.wait(instance_id, timeout)
    done.wait(5)
    for j in result.get("jobs", []):
        show(j["step"], j["state"], j.get("reason") or "")
    if not quiet:
        print(f"{instance_id} {result['state']}")
    return result


@_run
def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.id:
        inst = client.instance(args.id)
        if args.json:
            _print_json(inst)
            return 0
        print(
            f"{inst['id']} {inst['template']} v{inst['template_version']} on {inst['cluster']}: {inst['state']}"
        )
        rows = [
            (
                j["step"],
                j["state"],
                j.get("job_id") or "-",
                "" if j.get("exit_code") is None else j["exit_code"],
                j.get("reason") or "",
            )
            for j in inst.get("jobs", [])
        ]
        print(_table(rows, ("STEP", "STATE", "JOB", "EXIT", "REASON")))
        outputs = [o for j in inst.get("jobs", []) for o in (j.get("accounting") or {}).get("outputs", [])]
        if outputs:
            print("outputs:\n" + "\n".join(f"  {o}" for o in outputs))
        return 0
    items = client.instances(args.state, args.limit)
    if args.json:
        _print_json(items)
        return 0
    rows = [(i["id"], i["template"], i["cluster"], i["state"], i["created"]) for i in items]
    print(_table(rows, ("ID", "TEMPLATE", "CLUSTER", "STATE", "CREATED")) if rows else "no workflows")
    return 0


@_run
def _wait(args: argparse.Namespace) -> int:
    final = _follow(_client(args), args.id, args.timeout, quiet=args.json)
    if args.json:
        _print_json(final)
    return 0 if final["state"] == "completed" else 1


def _names(items: Any) -> str:
    """``[{"name": ..., "source": ...}, ...]`` (or plain names) as ``a, b``."""
    return ", ".join(str(i.get("name") if isinstance(i, dict) else i) for i in items or [])


@_run
def _me(args: argparse.Namespace) -> int:
    me = _client(args).me()
    if args.json:
        _print_json(me)
        return 0
    print(me.get("name") or me.get("user") or "?")
    orgs = me.get("organizations") or []
    rows = [(o.get("name", ""), _names(o.get("roles")), _names(o.get("projects"))) for o in orgs]
    print(_table(rows, ("ORGANIZATION", "ROLES", "PROJECTS")) if rows else "no organization")
    return 0


@_run
def _cancel(args: argparse.Namespace) -> int:
    inst = _client(args).cancel(args.id)
    if args.json:
        _print_json(inst)
    else:
        print(f"{inst['id']} {inst['state']} (cancel requested)")
    return 0


@_run
def _logs(args: argparse.Namespace) -> int:
    answer = _client(args).logs(args.id, args.step, stream="err" if args.err else "out", task=args.task)
    if args.json:
        _print_json(answer)
    else:
        sys.stdout.write(answer.get("text", ""))
    return 0


# --- parsers -------------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--url",
        default=None,
        help="the HEROES service, e.g. https://hub.example.org/services/heroes/ (default: "
        "$HEROES_SERVICE_URL, else derived from JupyterHub's variables)",
    )
    g.add_argument(
        "--token",
        default=None,
        help="a JupyterHub API token (default: $HEROES_API_TOKEN or $JUPYTERHUB_API_TOKEN; prefer the "
        "variables: a command line is visible to other users of the machine)",
    )
    g.add_argument(
        "--org",
        default=None,
        help="the organization to act in (default: $HEROES_ORGANIZATION, or your only one)",
    )
    g.add_argument(
        "--timeout-request",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to wait for one answer of the service (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    return p


def _add_templates(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "templates",
        parents=[_common()],
        help="list the workflow templates you may run",
        description="List the workflow templates you may run, with their parameters.",
    )
    p.set_defaults(func=_templates)


def _add_decide(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decide",
        parents=[_common()],
        help="compare where a workflow can run",
        description="Compare every cluster and queue TEMPLATE with parameters key=value can run on: "
        "expected end, runtime, cost, energy and CO2e, ranked, with the recommendation and the decision "
        "id to submit with (--json: the whole answer).",
    )
    p.add_argument("template", help="the template's name (heroes templates lists them)")
    p.add_argument("params", nargs="*", metavar="key=value", help="parameters of the template")
    p.add_argument(
        "--strategy", default=None, help="fastest, cheapest, lowest-energy, lowest-carbon or weighted"
    )
    p.add_argument("--deadline", default=None, help="leave out candidates ending after this ISO 8601 time")
    p.add_argument("--budget", default=None, help="leave out candidates costing more, e.g. '5 EUR'")
    p.set_defaults(func=_decide)


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        parents=[_common()],
        help="submit a workflow",
        description="Submit TEMPLATE with parameters key=value (converted to the types the template "
        "declares; the service validates them) to a cluster. Prints the workflow's id and state.",
    )
    p.add_argument("template", help="the template's name (heroes templates lists them)")
    p.add_argument("params", nargs="*", metavar="key=value", help="parameters of the template")
    p.add_argument("--cluster", required=True, help="the cluster to run on")
    p.add_argument("--queue", default=None, help="the cluster's queue (default: its default queue)")
    p.add_argument("--project", default=None, help="the project the run is charged to")
    p.add_argument("--version", type=int, default=None, help="a template version (default: the newest)")
    p.add_argument(
        "--decision",
        default=None,
        metavar="ID",
        help="the comparison this run follows (recorded with it; the budget reserves its predicted cost)",
    )
    p.add_argument(
        "--accept-advice",
        action="store_true",
        help="with --decision: ask for the walltime and memory it advised for this cluster and queue",
    )
    p.add_argument(
        "--walltime",
        action="append",
        default=[],
        metavar="STEP=HH:MM:SS",
        help="a step's walltime instead of the template's (repeat per step; wins over the advice)",
    )
    p.add_argument(
        "--memory",
        action="append",
        default=[],
        metavar="STEP=MB",
        help="a step's memory per node in MB instead of the template's (repeat per step)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the workflow until it ends, printing each step's state; exit 0 only if it completed",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="with --wait: give up after this many seconds (default: %(default)s)",
    )
    p.set_defaults(func=_submit)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        parents=[_common()],
        help="your workflows, or one of them",
        description="Without ID: your workflows, newest first. With ID: its steps, states, reasons and outputs.",
    )
    p.add_argument("id", nargs="?", default=None, help="a workflow id")
    p.add_argument(
        "--state",
        default="all",
        choices=["live", "final", "all"],
        help="which workflows to list (default: all)",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
    p.set_defaults(func=_status)


def _add_cancel(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cancel",
        parents=[_common()],
        help="cancel a workflow",
        description="Cancel every live step of a workflow.",
    )
    p.add_argument("id", help="a workflow id")
    p.set_defaults(func=_cancel)


def _add_wait(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wait",
        parents=[_common()],
        help="follow a workflow until it ends",
        description="Print each step's state changes until the workflow ends; exit 0 only if it completed.",
    )
    p.add_argument("id", help="a workflow id")
    p.add_argument(
        "--timeout",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="give up after this many seconds (default: %(default)s)",
    )
    p.set_defaults(func=_wait)


def _add_me(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "me",
        parents=[_common()],
        help="who you are to the service",
        description="Your name, and your organizations with your roles and projects in each.",
    )
    p.set_defaults(func=_me)


def _add_logs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        parents=[_common()],
        help="the end of a step's output",
        description="Print the end of a step's standard output (or error with --err).",
    )
    p.add_argument("id", help="a workflow id")
    p.add_argument("--step", default=None, help="the step (default: the first)")
    p.add_argument("--err", action="store_true", help="standard error instead of standard output")
    p.add_argument("--task", type=int, default=0, help="the task of a job array (default: 0)")
    p.set_defaults(func=_logs)


#: subcommand registrars for :data:`jupyter_heroes.cli.COMMANDS`
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_templates,
    _add_decide,
    _add_submit,
    _add_status,
    _add_wait,
    _add_cancel,
    _add_logs,
    _add_me,
]
