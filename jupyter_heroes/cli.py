"""The ``heroes`` command.

``heroes demo``        the whole product on this machine with embedded defaults (see :mod:`.demo`)
``heroes upgrade-db``  bring a HEROES database to the current schema (back it up first)
``heroes service``     run the HEROES REST service (normally started by JupyterHub as a managed service)
``heroes templates|decide|submit|status|cancel|logs``  workflows through the service (see :mod:`.cli_workflows`)
``heroes results|data``  a workflow's outputs and your files in the object store (see :mod:`.cli_data`)
``heroes usage``       what your own jobs used and cost (see :mod:`.cli_usage`)

Subcommands are registered in :data:`COMMANDS`; each one is a function taking its parsed arguments
and returning an exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from . import cli_data, cli_usage, cli_workflows
from ._version import __version__


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(Path(args.state_dir).expanduser().resolve(), ip=args.ip, port=args.port)
    return 0  # not reached: run() execs JupyterHub


def _upgrade_db(args: argparse.Namespace) -> int:
    from . import dbutil

    url = args.db_url
    engine = dbutil.make_engine(url)
    try:
        before = dbutil.current_revision(engine)
    finally:
        engine.dispose()
    head = dbutil.head_revision()
    shown = engine.url.render_as_string(hide_password=True)
    if before == head:
        print(f"{shown} is already at schema revision {head}: nothing to do")
        return 0
    dbutil.upgrade(url)
    print(f"{shown}: schema upgraded from {before or 'empty'} to {head}")
    return 0


def _service(args: argparse.Namespace) -> int:
    from .service.app import main as service_main

    service_main(args.service_args)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from .demo import default_state_dir

    p = sub.add_parser(
        "demo",
        help="run JupyterHub with HEROES and demo data on this machine",
        description="Start JupyterHub with the HEROES service, SQLite, a demo organization and one user per "
        "role (passwords printed). State is kept in --state-dir across runs; delete it to start afresh.",
    )
    p.add_argument(
        "--state-dir",
        default=str(default_state_dir()),
        help="where the database, users, homes and logs live (default: %(default)s, or $HEROES_DEMO_DIR)",
    )
    p.add_argument("--ip", default="127.0.0.1", help="address the hub listens on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port the hub listens on (default: %(default)s)")
    p.set_defaults(func=_demo)


def _add_upgrade_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upgrade-db",
        help="migrate a HEROES database to the current schema",
        description="Apply the alembic migrations shipped with jupyter_heroes. Back the database up first.",
    )
    p.add_argument(
        "--db-url",
        required=True,
        help="SQLAlchemy URL, e.g. sqlite:///heroes.sqlite or postgresql+psycopg://user:pw@host/db",
    )
    p.set_defaults(func=_upgrade_db)


def _add_service(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "service",
        help="run the HEROES REST service (JupyterHub starts it for you as a managed service)",
        description="Run the HEROES service; remaining arguments go to it (heroes service --help-all).",
        add_help=False,
    )
    p.set_defaults(func=_service, passthrough=True)  # every argument goes to the service


#: subcommand registrars, in the order ``heroes --help`` lists them
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_upgrade_db,
    _add_service,
    *cli_workflows.COMMANDS,  # templates, submit, status, cancel, logs
    *cli_data.COMMANDS,  # results, data
    *cli_usage.COMMANDS,  # usage
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heroes", description="Jupyter HEROES: an HPC marketplace on JupyterHub"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.service_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # an operator's command: one clear line, not a traceback
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(e, (SQLAlchemyError, OSError, ValueError)):
            print(f"heroes {args.command}: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
