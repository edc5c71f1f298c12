"""``heroes usage``: what your own jobs used and cost, from a shell, through
:class:`~jupyter_heroes.client.HeroesClient` (``GET /organization/usage/me``).

::

    heroes usage                                 # per month
    heroes usage --by template,cluster --period year --currency EUR
    heroes usage --start 2026-01-01 --json

Connection options, ``--json`` and exit statuses are those of the workflow commands
(:mod:`jupyter_heroes.cli_workflows`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .cli_workflows import _client, _common, _print_json, _run, _table


def _money(amounts: Any) -> str:
    """``{"EUR": "41.20", "USD": 3}`` as ``41.20 EUR + 3.00 USD``; ``-`` for nothing."""
    if not isinstance(amounts, dict) or not amounts:
        return "-"
    return " + ".join(f"{float(v):.2f} {c}" for c, v in sorted(amounts.items()))


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


@_run
def _usage(args: argparse.Namespace) -> int:
    rows = _client(args).usage(
        by=args.by, period=args.period, start=args.start, end=args.end, currency=args.currency
    )
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no finished jobs of yours in this organization for these dates")
        return 0
    dims = [d.strip() for d in args.by.split(",") if d.strip()]
    table = [
        (
            *(r.get(d) if r.get(d) is not None else "-" for d in dims),
            r.get("jobs", 0),
            _number(r.get("core_hours"), 2),
            _number(r.get("energy_kwh"), 3),
            _money(r.get("total")),
        )
        for r in rows
    ]
    print(_table(table, (*(d.upper() for d in dims), "JOBS", "CORE-H", "ENERGY-KWH", "COST")))
    return 0


def _add_usage(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "usage",
        parents=[_common()],
        help="what your own jobs used and cost",
        description="Your own finished jobs, grouped: their number, core hours, measured energy and "
        "cost (resources and licences, per currency unless --currency converts them).",
    )
    p.add_argument(
        "--by",
        default="period",
        help="group by one or more of period, project, template, cluster, offer, application, provider, "
        "comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--period", default="month", choices=["day", "month", "year"], help="the periods (default: month)"
    )
    p.add_argument("--start", default=None, help="only jobs finished at or after this ISO 8601 time")
    p.add_argument("--end", default=None, help="only jobs finished before this ISO 8601 time")
    p.add_argument("--currency", default=None, help="convert every amount into this currency, e.g. EUR")
    p.set_defaults(func=_usage)


#: subcommand registrars for :data:`jupyter_heroes.cli.COMMANDS`
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_usage]
