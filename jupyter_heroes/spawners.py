"""Users' notebook servers as Slurm jobs: batchspawner's ``SlurmSpawner``, pinned and patched for JupyterHub 5/6.

::

    from jupyter_heroes.spawners import use_slurm_spawner
    use_slurm_spawner(c, partition="interactive", runtime="8:00:00", memory="4G")

The hub host must be a Slurm submit host (``sbatch``, ``squeue``, ``scancel`` work there, munge key
shared with the cluster) and every hub user must have a Unix account of the same name known to the
hub host and the compute nodes. The hub (normally root) submits the job *as that user* through
:attr:`HeroesSlurmSpawner.exec_prefix` (``sudo -E -u {username}`` by default); the batch script runs
``batchspawner-singleuser jupyterhub-singleuser``, which must be installed on the compute nodes and on
the user's ``PATH`` there (or give absolute paths with *singleuser_cmd* / *batchspawner_cmd*). The
single-user server picks a free port on its node and reports it to the hub at
``/hub/api/batchspawner``; the hub then reaches it at ``<node>:<port>``, so compute nodes must accept
connections from the hub (and the proxy) on unprivileged ports, and reach the hub's API.

What is patched here, relative to batchspawner 1.3.0 (see ``docs/admin/slurm-spawner.md``):

* the ``/hub/api/batchspawner`` handler is registered by importing ``batchspawner`` (it appends itself
  to ``jupyterhub.apihandlers.default_handlers``); :func:`ensure_api_handler` makes sure that happened
  before the hub builds its handlers, whatever order the config imports things in;
* batchspawner's debug log line with the job's environment (which holds the server's API token) is
  dropped;
* ``req_homedir`` (the job's directory and log location) is configurable, with ``{username}``;
* the batch script passes ``req_account`` and ``req_qos`` (1.3.0's template ignores them);
* user options (``POST .../server`` body) may set only :attr:`allowed_user_options` variables of
  the batch script, with plain values (1.3.0 lets them replace any variable, ``cmd`` included);
* a failed ``sbatch`` gives the user a message saying what failed instead of a bare ``RuntimeError``
  carrying sbatch's stderr, and the job id must be a number.
"""

from __future__ import annotations

import logging
import pwd
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

#: the batchspawner release these patches are written and tested against
BATCHSPAWNER_VERSION = "1.3.0"
API_PATH = r"/api/batchspawner"
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:,=+-]*")


def ensure_api_handler() -> None:
    """Register batchspawner's ``POST /hub/api/batchspawner`` (the single-user server reports its port there).

    Importing ``batchspawner`` appends the handler to ``jupyterhub.apihandlers.default_handlers``;
    JupyterHub (5 and 6) reads that list once, in ``JupyterHub.init_handlers``, after the config file
    ran. Idempotent.
    """
    import batchspawner.api  # side effect: the handler is appended
    from jupyterhub import apihandlers

    if not any(h[0] == API_PATH for h in apihandlers.default_handlers):
        apihandlers.default_handlers.append((API_PATH, batchspawner.api.BatchSpawnerAPIHandler))


BATCH_SCRIPT = """#!/bin/bash
#SBATCH --output={{homedir}}/jupyterhub_slurmspawner_%j.log
#SBATCH --job-name=spawner-jupyterhub
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --get-user-env=L
{% if partition  %}#SBATCH --partition={{partition}}
{% endif %}{% if account    %}#SBATCH --account={{account}}
{% endif %}{% if qos        %}#SBATCH --qos={{qos}}
{% endif %}{% if runtime    %}#SBATCH --time={{runtime}}
{% endif %}{% if memory     %}#SBATCH --mem={{memory}}
{% endif %}{% if gres       %}#SBATCH --gres={{gres}}
{% endif %}{% if nprocs     %}#SBATCH --cpus-per-task={{nprocs}}
{% endif %}{% if reservation%}#SBATCH --reservation={{reservation}}
{% endif %}{% if options    %}#SBATCH {{options}}
{% endif %}
set -euo pipefail

trap 'echo SIGTERM received' TERM
{{prologue}}
{% if srun %}{{srun}} {% endif %}{{cmd}}
echo "jupyterhub-singleuser ended gracefully"
{{epilogue}}
"""


class _DropEnvLog(logging.Filter):
    """batchspawner 1.3.0 logs the job's whole environment at debug level, the server's API token included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Spawner submitting environment")


def _hide_env_log(log: Any) -> None:
    target = getattr(log, "logger", log)  # a LoggerAdapter or a Logger
    if isinstance(target, logging.Logger) and not any(isinstance(f, _DropEnvLog) for f in target.filters):
        target.addFilter(_DropEnvLog())


def _spawner_class() -> type:
    from batchspawner import SlurmSpawner
    from tornado import web
    from traitlets import List, Unicode, default

    class HeroesSlurmSpawner(SlurmSpawner):  # type: ignore[misc,valid-type]
        """batchspawner's ``SlurmSpawner`` with clearer errors (see :mod:`jupyter_heroes.spawners`)."""

        batch_script = Unicode(
            BATCH_SCRIPT,
            help="Jinja2 template of the batch script; the ``req_*`` options fill it "
            "(``{{partition}}``, ``{{account}}``, ``{{qos}}``, ...) and ``{{cmd}}`` is the server command. "
            "batchspawner 1.3.0's own template ignores ``req_account`` and ``req_qos``; this one passes them.",
        ).tag(config=True)

        # batchspawner 1.3.0's req_homedir is not configurable (no config tag): make it so
        req_homedir = Unicode(
            help="The job's working directory and where its log ``jupyterhub_slurmspawner_<jobid>.log`` "
            "goes; ``{username}`` is replaced. Default: the user's home directory from ``getpwnam`` on the hub.",
        ).tag(config=True)

        @default("req_homedir")
        def _default_homedir(self) -> str:
            return pwd.getpwnam(self.user.name).pw_dir

        allowed_user_options = List(
            Unicode(),
            default_value=[],
            help="Names of batch-script variables a user may choose when starting a server "
            '(``POST /hub/api/users/<name>/server`` with ``{"partition": "gpu"}``, or an options form), '
            "e.g. ``['partition', 'runtime']``. Values must match ``[A-Za-z0-9_.:,=+-]*``. batchspawner 1.3.0 "
            "lets user options replace *any* variable of the script (``cmd``, ``prologue`` ...); here anything "
            "not listed is refused. Default: none.",
        ).tag(config=True)

        def check_user_options(self, user_options: Any) -> dict[str, str]:
            """The user's choices as script variables; ``ValueError`` naming the offending option."""
            checked: dict[str, str] = {}
            for key, value in (user_options or {}).items():
                if key not in self.allowed_user_options:
                    allowed = ", ".join(self.allowed_user_options) or "none"
                    raise ValueError(
                        f"The server option {key!r} cannot be chosen here (allowed: {allowed}); "
                        "start the server without it or ask the hub administrator."
                    )
                if not isinstance(value, str | int) or not _SAFE_VALUE.fullmatch(str(value)):
                    raise ValueError(
                        f"The server option {key!r} has an invalid value: use letters, digits and . _ : , = + -"
                    )
                checked[key] = str(value)
            return checked

        @default("apply_user_options")
        def _default_apply_user_options(self) -> Any:
            # JupyterHub >= 5.3 calls this before starting: a refused option is a 400 with our message
            def apply(spawner: Any, user_options: Any) -> None:
                try:
                    spawner.check_user_options(user_options)
                except ValueError as e:
                    raise web.HTTPError(400, str(e)) from None

            return apply

        async def _get_batch_script(self, **subvars: Any) -> str:
            # batchspawner merged self.user_options over subvars unchecked: rebuild, then apply allowed ones
            clean = self.get_req_subvars()
            clean["cmd"] = subvars["cmd"]
            clean.update(self.check_user_options(self.user_options))
            return await super()._get_batch_script(**clean)

        def get_req_subvars(self) -> dict[str, Any]:
            subvars = super().get_req_subvars()
            subvars["homedir"] = str(subvars.get("homedir") or "").replace("{username}", self.user.name)
            return subvars

        async def submit_batch_script(self) -> str:
            _hide_env_log(self.log)
            try:
                job_id = await super().submit_batch_script()
            except RuntimeError as e:
                self.log.error("sbatch failed for %s: %s", self.user.name, e)
                raise RuntimeError(
                    "Submitting your notebook server to Slurm failed: "
                    f"{str(e).strip()[:300] or 'sbatch exited with an error'}. "
                    "Ask the hub administrator to check the partition, account and limits "
                    "(c.SlurmSpawner.req_*)."
                ) from None
            if not job_id or not str(job_id).isdigit():
                raise RuntimeError(
                    "Submitting your notebook server to Slurm returned no job id; "
                    "the hub administrator finds sbatch's output in the hub log."
                )
            return str(job_id)

    return HeroesSlurmSpawner


_CLASS: type | None = None


def heroes_slurm_spawner() -> type:
    """The :class:`HeroesSlurmSpawner` class (created on first use, so importing this module needs no batchspawner)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _spawner_class()
    return _CLASS


def __getattr__(name: str) -> Any:
    # ``c.JupyterHub.spawner_class = "jupyter_heroes.spawners.HeroesSlurmSpawner"`` imports it lazily
    if name == "HeroesSlurmSpawner":
        return heroes_slurm_spawner()
    raise AttributeError(name)


def use_slurm_spawner(
    c: Any,
    *,
    partition: str = "",
    account: str = "",
    qos: str = "",
    runtime: str = "8:00:00",
    memory: str = "",
    nprocs: int | None = None,
    gres: str = "",
    reservation: str = "",
    options: str = "",
    exec_prefix: str = "sudo -E -u {username}",
    singleuser_cmd: str | Iterable[str] = "jupyterhub-singleuser",
    batchspawner_cmd: str = "batchspawner-singleuser",
    args: Iterable[str] = (),
    prologue: str = "",
    epilogue: str = "",
    srun: str = "srun",
    homedir: str = "",
    keep_env: Iterable[str] = (),
    environment: Mapping[str, str] | None = None,
    start_timeout: int = 300,
    http_timeout: int = 120,
    poll_interval: float = 1.0,
    user_options: Iterable[str] = (),
) -> type:
    """Make the hub in config *c* spawn users' servers as Slurm jobs; returns the spawner class.

    Job resources (each empty/None: Slurm's default for the partition):

    *partition*: ``--partition``. *account*: ``--account`` (charged for the job). *qos*: ``--qos``.
    *runtime*: ``--time`` wall-clock limit (``HH:MM:SS`` or ``D-HH:MM:SS``; default 8 h: the server is
    killed by Slurm after it). *memory*: ``--mem`` per node (``4G``). *nprocs*: ``--cpus-per-task``.
    *gres*: ``--gres`` (``gpu:1``). *reservation*: ``--reservation``. *options*: more ``#SBATCH``
    options on one line (``--constraint=skylake``).

    How the job is submitted and run:

    *exec_prefix*: put before ``sbatch``/``squeue``/``scancel`` so they run as the user (``{username}``
    is replaced); default ``sudo -E -u {username}`` (needs a sudoers rule letting the hub's account
    run those three commands as users, keeping the environment); ``runuser -m -u {username} --``
    works without sudo when the hub runs as root; ``""`` submits as the hub's own account (then every
    server runs as that account: only for a single-account site or a test bed).
    *singleuser_cmd*: the server command on the compute node (a string or argv list; absolute path if
    it is not on the user's ``PATH`` there). *batchspawner_cmd*: batchspawner's wrapper that reports
    the port (absolute path likewise). *args*: more server options (``--allow-root`` when servers run
    as root). *prologue* / *epilogue*: shell lines run in the job before / after the server
    (``module load python``, ``source /opt/venv/bin/activate``). *srun*: prefix for the server command
    (a job step; ``""`` runs it in the batch shell). *homedir*: the job's working directory and where
    its log ``jupyterhub_slurmspawner_<jobid>.log`` goes (default: the user's home from
    ``getpwnam``). *keep_env*: more hub-side environment variables exported into the job.
    *environment*: variables set for the server (merged into ``c.Spawner.environment``).

    Timing: *start_timeout* (s) a job may stay queued plus start before the hub gives up and cancels
    it; *http_timeout* (s) from "job running" to the server answering; *poll_interval* (s) between
    ``squeue`` calls while it starts.

    *user_options*: names of script variables users may choose per start (``["partition", "runtime"]``),
    from the REST API body or an options form; default none.
    """
    ensure_api_handler()
    cls = heroes_slurm_spawner()
    c.JupyterHub.spawner_class = cls
    s = c.SlurmSpawner  # HeroesSlurmSpawner inherits SlurmSpawner's config section
    s.req_partition = partition
    s.req_account = account
    s.req_qos = qos
    s.req_runtime = runtime
    s.req_memory = memory
    s.req_nprocs = "" if nprocs is None else str(int(nprocs))
    s.req_gres = gres
    s.req_reservation = reservation
    s.req_options = options
    s.req_prologue = prologue
    s.req_epilogue = epilogue
    s.req_srun = srun
    if homedir:
        s.req_homedir = homedir
    keep = [k for k in keep_env if k]
    if keep:
        s.req_keepvars_extra = ",".join(keep)
    s.exec_prefix = exec_prefix
    s.batchspawner_singleuser_cmd = batchspawner_cmd
    s.cmd = shlex.split(singleuser_cmd) if isinstance(singleuser_cmd, str) else list(singleuser_cmd)
    extra_args = list(args)
    if extra_args:
        s.args = extra_args
    s.start_timeout = int(start_timeout)
    s.http_timeout = int(http_timeout)
    s.startup_poll_interval = float(poll_interval)
    s.allowed_user_options = list(user_options)
    if environment:
        env = dict(c.Spawner.environment) if "environment" in c.Spawner else {}
        env.update(environment)
        c.Spawner.environment = env
    return cls
