"""Users' notebook servers as Slurm jobs, configured from the environment (batchspawner 1.3.0).

Use it from ``jupyterhub_config.py`` (next to it) with::

    load_subconfig("slurmspawner.py")

or call :func:`jupyter_heroes.spawners.use_slurm_spawner` directly (it takes the same settings as
keyword arguments and documents each). The hub host must be a Slurm submit host and every hub user a
Unix account of the same name there and on the compute nodes; see ``docs/admin/slurm-spawner.md``.

=================================  ==================================================================
HEROES_SLURM_PARTITION             ``--partition`` (default: Slurm's default partition)
HEROES_SLURM_ACCOUNT               ``--account`` charged for the servers (default: the user's default)
HEROES_SLURM_QOS                   ``--qos`` (default none)
HEROES_SLURM_RUNTIME               ``--time`` wall-clock limit of a server (default ``8:00:00``)
HEROES_SLURM_MEMORY                ``--mem`` per server, e.g. ``4G`` (default: the partition's)
HEROES_SLURM_CPUS                  ``--cpus-per-task`` (default: the partition's)
HEROES_SLURM_GRES                  ``--gres``, e.g. ``gpu:1`` (default none)
HEROES_SLURM_RESERVATION           ``--reservation`` (default none)
HEROES_SLURM_OPTIONS               more ``#SBATCH`` options on one line, e.g. ``--constraint=skylake``
HEROES_SLURM_EXEC_PREFIX           runs sbatch/squeue/scancel as the user (default
                                   ``sudo -E -u {username}``; ``runuser -m -u {username} --`` as root)
HEROES_SLURM_SINGLEUSER_CMD        server command on the node (default ``jupyterhub-singleuser``)
HEROES_SLURM_BATCHSPAWNER_CMD      batchspawner's wrapper on the node (default ``batchspawner-singleuser``)
HEROES_SLURM_PROLOGUE              shell lines run in the job first, e.g. ``module load python``
HEROES_SLURM_HOMEDIR               job directory and log location, ``{username}`` replaced
                                   (default: the user's home)
HEROES_SLURM_START_TIMEOUT         seconds a server may wait in the queue and start (default 300)
HEROES_SLURM_USER_OPTIONS          comma-separated script variables users may choose per start,
                                   e.g. ``partition,runtime`` (default none)
=================================  ==================================================================
"""

import os

from jupyter_heroes.spawners import use_slurm_spawner

c = get_config()  # noqa: F821


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


_cpus = _env("HEROES_SLURM_CPUS")
use_slurm_spawner(
    c,
    partition=_env("HEROES_SLURM_PARTITION"),
    account=_env("HEROES_SLURM_ACCOUNT"),
    qos=_env("HEROES_SLURM_QOS"),
    runtime=_env("HEROES_SLURM_RUNTIME", "8:00:00"),
    memory=_env("HEROES_SLURM_MEMORY"),
    nprocs=int(_cpus) if _cpus else None,
    gres=_env("HEROES_SLURM_GRES"),
    reservation=_env("HEROES_SLURM_RESERVATION"),
    options=_env("HEROES_SLURM_OPTIONS"),
    exec_prefix=_env("HEROES_SLURM_EXEC_PREFIX", "sudo -E -u {username}"),
    singleuser_cmd=_env("HEROES_SLURM_SINGLEUSER_CMD", "jupyterhub-singleuser"),
    batchspawner_cmd=_env("HEROES_SLURM_BATCHSPAWNER_CMD", "batchspawner-singleuser"),
    prologue=os.environ.get("HEROES_SLURM_PROLOGUE", ""),
    homedir=_env("HEROES_SLURM_HOMEDIR"),
    start_timeout=int(_env("HEROES_SLURM_START_TIMEOUT", "300")),
    user_options=[v.strip() for v in _env("HEROES_SLURM_USER_OPTIONS").split(",") if v.strip()],
)
