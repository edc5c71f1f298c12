"""Rendered Slurm batch scripts and sbatch argv with hostile parameters.

The body of each rendered script is executed by a real /bin/sh (without Slurm) to prove that every
argument and environment value arrives literally and that nothing is executed on the way.
"""

import json
import shlex
import subprocess
import sys

import pytest

from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.slurm import SlurmScheduler, format_walltime
from jupyter_heroes.clusters.spec import JobSpec, JobSpecError

HOSTILE = [
    "$(touch {pwned})",
    "`touch {pwned}`",
    "a; touch {pwned}",
    "it's",
    'say "hi" \\ back',
    "x\ny\n#SBATCH --partition=evil",
    "../../etc/passwd",
    "*",
    "~",
    "$HOME",
    "-n",
    "",
    "|| touch {pwned} &&",
]
ECHO_ARGV = [
    sys.executable,
    "-c",
    "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('HEROES_X')]))",
]


@pytest.fixture
def sched():
    return SlurmScheduler(LocalTransport(), container_runtime="apptainer")


def directives(script: str) -> list[str]:
    """The #SBATCH lines sbatch would honour: those before the first command line."""
    out = []
    for line in script.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            out.append(line)
        elif line.strip() and not line.startswith("#"):
            break
    return out


def test_directives_from_numbers_and_checked_names_only(sched):
    s = JobSpec(
        name="sim", command=["true"], partition="long", account="proj-1", qos="normal", nodes=2, ntasks=4,
        cpus_per_task=3, mem_mb=2048, gpus=1, walltime_s=90061, array="0-9%2",
    )  # fmt: skip
    script = sched.render_script(s)
    assert script.startswith("#!/bin/sh\n")
    assert directives(script) == [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks=4",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=2048M",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --time=1-01:01:01",
        "#SBATCH --partition=long",
        "#SBATCH --account=proj-1",
        "#SBATCH --qos=normal",
        "#SBATCH --array=0-9%2",
    ]


def test_hostile_arguments_and_env_arrive_literally_through_a_real_shell(sched, tmp_path):
    pwned = tmp_path / "pwned"
    args = [a.format(pwned=pwned) for a in HOSTILE]
    env_value = f"$(touch {pwned}) `touch {pwned}` ' \" \n#SBATCH --partition=evil"
    script = sched.render_script(JobSpec(name="h", command=[*ECHO_ARGV, *args], env={"HEROES_X": env_value}))
    # sbatch would only read our own directives: the newline inside a quoted value is inert
    assert directives(script) == ["#SBATCH --nodes=1", "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1"]
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    cp = subprocess.run(["/bin/sh", str(path)], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    got_args, got_env = json.loads(cp.stdout)
    assert got_args == args
    assert got_env == env_value
    assert not pwned.exists()


def test_container_image_wraps_the_argv(sched, tmp_path):
    script = sched.render_script(
        JobSpec(name="c", command=["echo", "$(id)"], container_image="/images/a b.sif")
    )
    assert script.rstrip().splitlines()[-1] == "apptainer exec '/images/a b.sif' echo '$(id)'"
    with pytest.raises(JobSpecError, match="container_image: this cluster has no container runtime"):
        SlurmScheduler(LocalTransport()).render_script(
            JobSpec(name="c", command=["x"], container_image="a.sif")
        )


def test_sbatch_argv_carries_paths_and_free_text_as_single_arguments(sched):
    s = JobSpec(
        name="n1", command=["true"], comment="$(touch /tmp/p) `id`; 'q'", workdir="/scratch/o/p/u i/step",
        stdout="logs/%x-%j.out", stderr="/scratch/e r.err", afterok=["101", "102_3"],
    )  # fmt: skip
    argv = sched.submit_argv(s.validated(), "/scratch/o/p/u i/step/.heroes/n1-ab.sbatch")
    assert argv == [
        "sbatch", "--parsable", "--job-name=n1", "--comment=$(touch /tmp/p) `id`; 'q'", "--chdir=/scratch/o/p/u i/step",
        "--output=logs/%x-%j.out", "--error=/scratch/e r.err", "--dependency=afterok:101:102_3", "--kill-on-invalid-dep=yes",
        "/scratch/o/p/u i/step/.heroes/n1-ab.sbatch",
    ]  # fmt: skip
    # what the SSH transport sends is the shlex.join of it, which a POSIX shell splits back exactly
    assert shlex.split(shlex.join(argv)) == argv


def test_kill_on_invalid_dependency_can_be_turned_off():
    s = SlurmScheduler(LocalTransport(), kill_on_invalid_dependency=False)
    argv = s.submit_argv(JobSpec(name="n", command=["true"], afterok=["1"]), "x.sbatch")
    assert "--dependency=afterok:1" in argv and "--kill-on-invalid-dep=yes" not in argv


def test_render_refuses_invalid_specs(sched):
    with pytest.raises(JobSpecError, match="^partition: "):
        sched.render_script(JobSpec(name="a", command=["x"], partition="debug\n#SBATCH --uid=0"))


@pytest.mark.parametrize(
    ("seconds", "text"), [(59, "0-00:00:59"), (3600, "0-01:00:00"), (86400 * 3 + 61, "3-00:01:01")]
)
def test_walltime_format(seconds, text):
    assert format_walltime(seconds) == text


def test_slurm_variables_are_exported_under_the_platform_names(sched, tmp_path):
    """Jobs read HEROES_JOB_ID / HEROES_ARRAY_TASK_ID / HEROES_ARRAY_JOB_ID on every scheduler."""
    script = sched.render_script(
        JobSpec(
            name="h",
            array="0-3",
            command=[
                sys.executable,
                "-c",
                "import os; print(os.environ['HEROES_JOB_ID'], os.environ['HEROES_ARRAY_TASK_ID'], os.environ['HEROES_ARRAY_JOB_ID'])",
            ],
        )
    )
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    env = {
        "PATH": "/usr/bin:/bin",
        "SLURM_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_ARRAY_JOB_ID": "75",
    }
    cp = subprocess.run(["/bin/sh", str(path)], capture_output=True, text=True, timeout=30, env=env)
    assert cp.stdout.split() == ["77", "2", "75"], cp.stderr
    # the job's own env wins over nothing: a spec may not override the platform names
    with pytest.raises(JobSpecError, match="reserved"):
        sched.render_script(JobSpec(name="h", command=["true"], env={"HEROES_JOB_ID": "1"}))
