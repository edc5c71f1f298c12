"""``%heroes`` magics: the HEROES service from IPython, through :class:`~jupyter_heroes.client.HeroesClient`.

Load with ``%load_ext jupyter_heroes``, then::

    %heroes templates                                   # DataFrame of the templates you may run
    %heroes decide monte-carlo-pi samples=100000 --strategy cheapest   # where it can run (DataFrame)
    run = %heroes submit monte-carlo-pi samples=100000 --cluster local  # a live InstanceHandle
    %heroes submit heat-pipeline --cluster hpc --decision ID --accept-advice   # the advised walltime/memory
    %heroes submit heat-pipeline --cluster hpc --walltime simulate=00:20:00 --memory simulate=512
    %heroes status                                      # DataFrame of your workflows
    %heroes status ID                                   # one workflow, live
    %heroes wait ID                                     # block until it is done
    %heroes logs ID --step estimate --err               # the end of a step's stderr
    %heroes cancel ID
    %heroes results ID                                  # its outputs into ./ID/ (list of paths)
    %heroes data ls results/                            # your bucket (DataFrame)
    %heroes data put local.csv inputs/local.csv         # upload; get KEY [DEST]; rm KEY ...; buckets
    %heroes data browse results/                        # the data browser widget
    %heroes budget                                      # budgets, or your own usage
    %heroes me                                          # who you are, in which organizations

    %%heroes submit --template run-python --cluster local
    print("the cell body is the job's script")

``key=value`` parameters are converted to the types the template declares (integers, numbers,
booleans) so that a wrong value is refused by the service naming the parameter. ``--org`` chooses the
organization for one command. Every failure is a ``UsageError`` whose message says what to do.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split
from IPython.utils.text import dedent

from .client import (
    HeroesClient,
    HeroesError,
    key_name,
    resources_from_flags,
    split_budget,
    typed_params,
    upload_key,
)
from .widgets.handle import InstanceHandle

if TYPE_CHECKING:
    import pandas as pd

SCRIPT_PARAM = "script"
SUBMIT_EXAMPLE = "%heroes submit monte-carlo-pi samples=100000 --cluster local"


class LogText(str):
    """A log's text that IPython shows as it is (not as a quoted string)."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self) if self else "(empty)")


def parse_key_values(words: list[str], example: str = SUBMIT_EXAMPLE) -> dict[str, str]:
    """``["a=1", "b=x y"]`` -> ``{"a": "1", "b": "x y"}``; a UsageError for anything else."""
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"expected a parameter as key=value, got {word!r}; for example: {example}")
        if key in out:
            raise UsageError(f"parameter {key!r} is given twice; give each parameter once")
        out[key] = value
    return out


def step_resources(walltimes: list[str], memories: list[str]) -> dict[str, dict[str, Any]]:
    """``--walltime STEP=HH:MM:SS`` and ``--memory STEP=MB`` as the submission's ``resources``
    (see :func:`jupyter_heroes.client.resources_from_flags`); a UsageError for anything else."""
    try:
        return resources_from_flags(walltimes, memories)
    except HeroesError as e:
        raise UsageError(e.message) from None


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    return argument("--org", default=None, help="the organization to act in (when you belong to several)")(
        func
    )


@magics_class
class HeroesMagics(Magics):
    """The ``%heroes`` line magic and ``%%heroes submit`` cell magic (see the module docstring).
    ``client``: the :class:`HeroesClient` used (created from the environment on first use; assign
    another to point the magics elsewhere)."""

    def __init__(self, shell: Any = None, client: HeroesClient | None = None) -> None:
        super().__init__(shell)
        self._client = client

    @property
    def client(self) -> HeroesClient:
        if self._client is None:
            try:
                self._client = HeroesClient()
            except HeroesError as e:
                raise UsageError(e.message) from None
        return self._client

    @client.setter
    def client(self, value: HeroesClient) -> None:
        self._client = value

    def _client_for(self, args: argparse.Namespace) -> HeroesClient:
        org = getattr(args, "org", None)
        return self.client.with_organization(org) if org else self.client

    # --- the magic ----------------------------------------------------------------------------------
    @line_cell_magic
    def heroes(self, line: str, cell: str | None = None) -> Any:
        """HEROES workflows from IPython: %heroes SUBCOMMAND ... (%heroes help lists them)."""
        sub, _, rest = line.strip().partition(" ")
        if sub in ("", "help", "-h", "--help"):
            print(self.help_text(rest.strip() or None))
            return None
        if sub not in self.SUBCOMMANDS:
            raise UsageError(
                f"unknown subcommand {sub!r} of %heroes; use one of: {', '.join(self.SUBCOMMANDS)} "
                "(%heroes help)"
            )
        if cell is not None and sub != "submit":
            raise UsageError(
                f"%%heroes {sub} is not a cell magic; only %%heroes submit takes a cell (the job's script). "
                f"Use %heroes {sub} on one line"
            )
        method = getattr(self, self.SUBCOMMANDS[sub])
        words = rest.split()
        if "-h" in words or "--help" in words:
            print(method.parser.format_help())
            return None
        args = method.parser.parse_intermixed_args(arg_split(rest, posix=True))
        try:
            return method(args, cell)
        except HeroesError as e:
            raise UsageError(e.message) from None

    SUBCOMMANDS = {
        "templates": "_templates",
        "decide": "_decide",
        "submit": "_submit",
        "status": "_status",
        "wait": "_wait",
        "cancel": "_cancel",
        "logs": "_logs",
        "results": "_results",
        "data": "_data",
        "budget": "_budget",
        "me": "_me",
    }

    def help_text(self, sub: str | None = None) -> str:
        if sub and sub in self.SUBCOMMANDS:
            return getattr(self, self.SUBCOMMANDS[sub]).parser.format_help()
        lines = [dedent(__doc__ or "").strip(), "", "Subcommands (%heroes SUBCOMMAND -h for details):"]
        for name, attr in self.SUBCOMMANDS.items():
            doc = (getattr(self, attr).parser.description or "").strip().splitlines()
            lines.append(f"  {name:10} {doc[0] if doc else ''}")
        return "\n".join(lines)

    # --- subcommands -----------------------------------------------------------------------------
    @magic_arguments("heroes templates")
    @_common
    def _templates(self, args: argparse.Namespace, cell: str | None = None) -> pd.DataFrame:
        """The workflow templates you may run (a DataFrame)."""
        import pandas as pd

        rows = []
        for t in self._client_for(args).templates():
            params = []
            for name, d in (t.get("parameters") or {}).items():
                default = f"={d['default']}" if "default" in d else ""
                params.append(f"{name}:{d.get('type', '?')}{default}{' (locked)' if d.get('locked') else ''}")
            rows.append(
                {
                    "name": t["name"],
                    "version": t["version"],
                    "description": t.get("description", ""),
                    "parameters": ", ".join(params),
                    "steps": ", ".join(s.get("name", "") for s in t.get("steps", [])),
                    "accepts_script": _accepts_script(t),
                }
            )
        cols = ["name", "version", "description", "parameters", "steps", "accepts_script"]
        return pd.DataFrame(rows, columns=cols)

    def _typed(self, client: HeroesClient, template: str, words: list[str], example: str) -> dict[str, Any]:
        raw = parse_key_values(words, example)
        return typed_params(client.template(template, cached=True), raw)

    @magic_arguments("heroes decide")
    @argument("template", help="the template's name")
    @argument("params", nargs="*", help="parameters as key=value")
    @argument("--strategy", default=None, help="fastest, cheapest, lowest-energy, lowest-carbon or weighted")
    @argument("--deadline", default=None, help="exclude candidates ending after this ISO 8601 time")
    @argument("--budget", default=None, help="exclude candidates costing more, e.g. '5 EUR'")
    @_common
    def _decide(self, args: argparse.Namespace, cell: str | None = None) -> pd.DataFrame:
        """Compare where a template can run: time, cost, energy, carbon (a DataFrame, ranked)."""
        client = self._client_for(args)
        try:
            available = client.has_endpoint(client.DECIDE_PATH, "post")
        except HeroesError as e:
            raise UsageError(e.message) from None
        if not available:
            raise UsageError(
                "this HEROES service has no decision endpoint (POST /organization/decision/decide) yet, so "
                "%heroes decide cannot compare clusters; choose one yourself with %heroes submit ... "
                "--cluster NAME, or ask your administrator to upgrade the service"
            )
        params = self._typed(client, args.template, args.params, f"%heroes decide {args.template} key=value")
        budget, currency = split_budget(args.budget)
        return client.decide(
            args.template,
            params,
            strategy=args.strategy,
            deadline=args.deadline,
            budget=budget,
            budget_currency=currency,
        )

    @magic_arguments("heroes submit")
    @argument("words", nargs="*", help="TEMPLATE then parameters as key=value (or --template TEMPLATE)")
    @argument("--template", default=None, help="the template's name (needed by %%%%heroes submit)")
    @argument("--cluster", default=None, help="the cluster to run on (required)")
    @argument("--queue", default=None, help="the cluster's queue (default: the cluster's default)")
    @argument("--project", default=None, help="the project the run is charged to")
    @argument("--version", type=int, default=None, help="a template version (default: the newest)")
    @argument(
        "--decision",
        default=None,
        help="the id of the %%%%heroes decide answer this follows (df.attrs['decision']): recorded with it",
    )
    @argument(
        "--accept-advice",
        action="store_true",
        help="ask for the walltime and memory the decision (--decision) advised for this cluster and queue",
    )
    @argument(
        "--walltime",
        action="append",
        default=[],
        metavar="STEP=HH:MM:SS",
        help="a step's walltime instead of the template's (seconds or [D-]HH:MM:SS); repeat per step",
    )
    @argument(
        "--memory",
        action="append",
        default=[],
        metavar="STEP=MB",
        help="a step's memory in MB per node instead of the template's; repeat per step",
    )
    @_common
    def _submit(self, args: argparse.Namespace, cell: str | None = None) -> InstanceHandle:
        """Submit a workflow; returns a live handle (.state, .wait(), .logs(), .cancel(), .outputs)."""
        words = list(args.words)
        template = args.template
        if template is None:
            if not words:
                raise UsageError(f"name the template to submit, for example: {SUBMIT_EXAMPLE}")
            template = words.pop(0)
        if not args.cluster:
            raise UsageError(
                f"say where to run it with --cluster NAME, for example: {SUBMIT_EXAMPLE} "
                "(%heroes decide compares the candidates)"
            )
        client = self._client_for(args)
        tpl = client.template(template, args.version, cached=True)
        raw = parse_key_values(words, f"%heroes submit {template} key=value --cluster {args.cluster}")
        params = typed_params(tpl, raw)
        if cell is not None:
            if not _accepts_script(tpl):
                raise UsageError(
                    f"template {template} does not accept a script: it declares no string parameter "
                    f"'{SCRIPT_PARAM}'. Use %heroes submit {template} key=value ... on one line, or a template "
                    f"with a '{SCRIPT_PARAM}' parameter"
                )
            if SCRIPT_PARAM in params:
                raise UsageError(
                    f"the cell body is the '{SCRIPT_PARAM}' parameter; do not also give {SCRIPT_PARAM}=..."
                )
            params[SCRIPT_PARAM] = cell
        if args.accept_advice and not args.decision:
            raise UsageError(
                "--accept-advice applies the advice of a decision: add --decision ID (the id in "
                "df.attrs['decision'] of %heroes decide's answer), or leave --accept-advice out"
            )
        inst = client.submit(
            template,
            params,
            cluster=args.cluster,
            queue=args.queue,
            project=args.project,
            version=args.version,
            decision=args.decision,
            resources=step_resources(args.walltime, args.memory) or None,
            accept_advice=bool(args.accept_advice),
        )
        return InstanceHandle(client, inst)

    @magic_arguments("heroes status")
    @argument("id", nargs="?", default=None, help="a workflow id (default: list your workflows)")
    @argument("--state", default="all", choices=["live", "final", "all"], help="which workflows to list")
    @argument("--limit", type=int, default=50, help="at most this many workflows")
    @_common
    def _status(self, args: argparse.Namespace, cell: str | None = None) -> Any:
        """Your workflows (a DataFrame), or one of them (a live handle)."""
        client = self._client_for(args)
        if args.id:
            return InstanceHandle(client, client.instance(args.id))
        import pandas as pd

        rows = [
            {
                "id": i["id"],
                "template": i["template"],
                "version": i["template_version"],
                "cluster": i["cluster"],
                "state": i["state"],
                "steps": ", ".join(f"{j['step']}={j['state']}" for j in i.get("jobs", [])),
                "created": i["created"],
                "updated": i["updated"],
            }
            for i in client.instances(args.state, args.limit)
        ]
        cols = ["id", "template", "version", "cluster", "state", "steps", "created", "updated"]
        return pd.DataFrame(rows, columns=cols)

    @magic_arguments("heroes wait")
    @argument("id", help="a workflow id")
    @argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    @_common
    def _wait(self, args: argparse.Namespace, cell: str | None = None) -> InstanceHandle:
        """Block until a workflow is completed, failed or cancelled; returns its handle."""
        client = self._client_for(args)
        return InstanceHandle(client, client.wait(args.id, args.timeout))

    @magic_arguments("heroes cancel")
    @argument("id", help="a workflow id")
    @_common
    def _cancel(self, args: argparse.Namespace, cell: str | None = None) -> InstanceHandle:
        """Cancel every live step of a workflow."""
        client = self._client_for(args)
        return InstanceHandle(client, client.cancel(args.id))

    @magic_arguments("heroes logs")
    @argument("id", help="a workflow id")
    @argument("--step", default=None, help="the step (default: the first)")
    @argument("--err", action="store_true", help="standard error instead of standard output")
    @argument("--task", type=int, default=0, help="the array task (job arrays)")
    @_common
    def _logs(self, args: argparse.Namespace, cell: str | None = None) -> LogText:
        """The end of a step's standard output (or error)."""
        answer = self._client_for(args).logs(
            args.id, args.step, stream="err" if args.err else "out", task=args.task
        )
        return LogText(answer.get("text", ""))

    @magic_arguments("heroes results")
    @argument("id", help="a workflow id")
    @argument("dest", nargs="?", default=None, help="the directory to copy into (default: ./ID)")
    @_common
    def _results(self, args: argparse.Namespace, cell: str | None = None) -> list[Path]:
        """Copy every output of a workflow into DEST (default ./ID), keeping their paths; files already
        there with the same content are kept. Returns the local paths."""
        answer = self._client_for(args).download_results(args.id, args.dest)
        return sorted(Path(p) for p in answer["downloaded"] + answer["kept"])

    @magic_arguments("heroes data")
    @argument("action", choices=["ls", "get", "put", "rm", "buckets", "browse"], help="what to do")
    @argument(
        "paths",
        nargs="*",
        help="ls [PREFIX] | get KEY [DEST] | put LOCAL [KEY] | rm KEY ... | browse [PREFIX]",
    )
    @argument("--bucket", default=None, help="a bucket from '%%%%heroes data buckets' (default: your own)")
    @argument("-r", "--recursive", action="store_true", help="ls: every key under the prefix")
    @_common
    def _data(self, args: argparse.Namespace, cell: str | None = None) -> Any:
        """Your files in the organization's object store: ls, get, put, rm, buckets."""
        from pathlib import Path

        import pandas as pd

        client = self._client_for(args)
        paths = list(args.paths)
        if args.action == "browse":
            if len(paths) > 1:
                raise UsageError("%heroes data browse takes one folder, e.g. %heroes data browse results/")
            from .widgets.data import DataBrowser

            browser = DataBrowser(client, args.bucket)
            if paths:
                browser.open_folder(paths[0])
            return browser
        if args.action == "buckets":
            return pd.DataFrame(client.buckets(), columns=["name", "kind", "owner", "mine", "created"])
        if args.action == "ls":
            if len(paths) > 1:
                raise UsageError("%heroes data ls takes one prefix, e.g. %heroes data ls results/")
            listing = client.ls(paths[0] if paths else "", args.bucket, recursive=args.recursive)
            rows = [
                {"key": f, "size": None, "last_modified": None, "is_folder": True} for f in listing["folders"]
            ] + [
                {
                    "key": o["key"],
                    "size": o.get("size"),
                    "last_modified": o.get("last_modified"),
                    "is_folder": bool(o.get("is_folder")),
                }
                for o in listing["objects"]
            ]
            return pd.DataFrame(rows, columns=["key", "size", "last_modified", "is_folder"])
        if args.action == "get":
            if not 1 <= len(paths) <= 2:
                raise UsageError(
                    "%heroes data get KEY [DEST], e.g. %heroes data get results/ID/result.json ."
                )
            key = paths[0]
            dest = Path(paths[1]) if len(paths) == 2 else Path(key_name(key))
            return client.download(key, dest, args.bucket)
        if args.action == "put":
            if not 1 <= len(paths) <= 2:
                raise UsageError(
                    "%heroes data put LOCAL [KEY], e.g. %heroes data put data.csv inputs/data.csv"
                )
            local = paths[0]
            return client.upload(upload_key(local, paths[1] if len(paths) == 2 else None), local, args.bucket)
        if not paths:
            raise UsageError("%heroes data rm KEY [KEY ...], e.g. %heroes data rm inputs/old.csv")
        return client.delete(paths, args.bucket)

    @magic_arguments("heroes budget")
    @argument("--period", default="month", choices=["day", "month", "year"], help="usage per period")
    @_common
    def _budget(self, args: argparse.Namespace, cell: str | None = None) -> pd.DataFrame:
        """The organization's budgets (billing admins), else your own usage and cost per period."""
        import pandas as pd

        client = self._client_for(args)
        try:
            return pd.DataFrame(client.budgets())
        except HeroesError as e:
            if e.status not in (403,):
                raise
        rows = client.usage(by="period", period=args.period)
        flat = []
        for r in rows:
            row = {k: v for k, v in r.items() if not isinstance(v, dict)}
            for money in ("cost", "licence", "total"):
                for currency, amount in (r.get(money) or {}).items():
                    row[f"{money}_{currency}"] = amount
            flat.append(row)
        return pd.DataFrame(flat)

    @magic_arguments("heroes me")
    @_common
    def _me(self, args: argparse.Namespace, cell: str | None = None) -> dict[str, Any]:
        """Who you are to the service: organizations, roles, projects, scopes."""
        return self._client_for(args).me()


def _accepts_script(template: dict[str, Any]) -> bool:
    decl = (template.get("parameters") or {}).get(SCRIPT_PARAM)
    return isinstance(decl, dict) and decl.get("type") == "string" and not decl.get("locked")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_heroes``: register the ``%heroes`` magics."""
    ipython.register_magics(HeroesMagics(ipython))
