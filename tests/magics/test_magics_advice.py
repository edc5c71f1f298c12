"""``%heroes submit --accept-advice / --walltime STEP=... / --memory STEP=...`` and
``HeroesClient.submit(resources=..., accept_advice=...)`` through a real in-process IPython shell,
against the real hub + service (local-backend cluster: real processes)."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError

from jupyter_heroes.client import HeroesClient, HeroesError
from jupyter_heroes.magics import step_resources
from jupyter_heroes.widgets import InstanceHandle

pytestmark = pytest.mark.timeout(240)


def on_hub(test):
    """The real hub + service (SQLite) and S3 server of the magics' world."""
    for mark in (pytest.mark.hub, pytest.mark.s3, pytest.mark.parametrize("hub", ["sqlite"], indirect=True)):
        test = mark(test)
    return test


def run(shell, line: str):
    return shell.run_line_magic("heroes", line)


def test_step_resources_from_the_flags():
    assert step_resources(["estimate=00:12:00", "post=90"], ["estimate=2048"]) == {
        "estimate": {"walltime": "00:12:00", "memory_mb": 2048},
        "post": {"walltime": 90},
    }
    assert step_resources([], []) == {}


@pytest.mark.parametrize(
    ("walltimes", "memories", "message"),
    [
        (
            ["estimate"],
            [],
            r"--walltime takes STEP=VALUE, got 'estimate'; for example --walltime solve=01:30:00",
        ),
        (["=00:10:00"], [], r"--walltime takes STEP=VALUE"),
        (["estimate=0"], [], r"--walltime estimate=0: walltime is a positive number of seconds"),
        ([], ["estimate=lots"], r"--memory estimate=lots: memory is a positive whole number of MB per node"),
        ([], ["estimate=0"], r"memory is a positive whole number"),
        (["a=60", "a=70"], [], r"--walltime is given twice for step 'a'"),
    ],
)
def test_bad_flags_are_usage_errors_with_an_example(walltimes, memories, message):
    with pytest.raises(UsageError, match=message):
        step_resources(walltimes, memories)


@on_hub
def test_submit_accepting_the_advice_with_ones_own_walltime(shell):
    df = run(shell, "decide monte-carlo-pi samples=100000")
    assert isinstance(df, pd.DataFrame) and "advice" in df.columns
    best = df[df["rank"] == 1].iloc[0]
    advice = best["advice"]["estimate"]
    handle = run(
        shell,
        f"submit monte-carlo-pi samples=100000 --cluster {best['cluster']} --decision {df.attrs['decision']} "
        "--accept-advice --walltime estimate=00:12:00",
    )
    assert isinstance(handle, InstanceHandle)
    est = handle.data["resources"]["estimate"]
    assert (est["walltime_s"], est["walltime_source"]) == (720, "user")
    assert (est["memory_mb"], est["memory_source"]) == (advice["memory_mb"], "advice")
    run(shell, f"cancel {handle.id}")


@on_hub
def test_refusals_are_usage_errors_naming_the_fix(shell):
    magics = shell.magics_manager.registry["HeroesMagics"]
    before = len(magics.client.instances())
    with pytest.raises(
        UsageError, match=r"--accept-advice applies the advice of a decision: add --decision ID"
    ):
        run(shell, "submit monte-carlo-pi --cluster local --accept-advice")
    # the service's refusals, passed on
    with pytest.raises(
        UsageError, match=r"template monte-carlo-pi has no step 'nope'; its steps are estimate"
    ):
        run(shell, "submit monte-carlo-pi --cluster local --walltime nope=00:01:00")
    with pytest.raises(UsageError, match=r"resources.estimate.walltime' must match exactly one of"):
        run(shell, "submit monte-carlo-pi --cluster local --walltime estimate=ten-minutes")
    assert len(magics.client.instances()) == before


@on_hub
def test_client_submit_with_resources_and_without_decision(kernel_env):
    client = HeroesClient()
    try:
        with pytest.raises(HeroesError, match=r"pass decision=df.attrs\['decision'\]") as e:
            client.submit("monte-carlo-pi", cluster="local", accept_advice=True)
        assert e.value.reason == "advice_without_decision"
        inst = client.submit(
            "monte-carlo-pi", {"samples": 1000}, cluster="local", resources={"estimate": {"memory_mb": 300}}
        )
        est = inst["resources"]["estimate"]
        assert (est["memory_mb"], est["source"], est["walltime_source"]) == (300, "user", "template")
        assert client.instance(inst["id"])["resources"] == inst["resources"]
        client.cancel(inst["id"])
    finally:
        client.close()
