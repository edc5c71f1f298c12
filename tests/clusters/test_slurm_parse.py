"""Slurm state/reason mapping and parsers of squeue/sacct/sinfo output (real sacct samples in data/)."""

from pathlib import Path

import pytest

from jupyter_heroes.clusters import sacct
from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.scheduler import CommandResult, JobState, JobStatus, SchedulerError, aggregate
from jupyter_heroes.clusters.slurm import REASONS, STATE_MAP, SlurmScheduler, accounting_from_rows, map_state

DATA = Path(__file__).parent / "data"


@pytest.fixture
def sched():
    return SlurmScheduler(LocalTransport())


def load(name):
    text = (DATA / name).read_text()
    return sacct.parse_parsable("\n".join(ln for ln in text.splitlines() if not ln.startswith("# ")))


# --- states and reasons -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("native", "state"),
    [
        ("PENDING", JobState.QUEUED), ("CONFIGURING", JobState.QUEUED), ("REQUEUED", JobState.QUEUED),
        ("RUNNING", JobState.RUNNING), ("COMPLETING", JobState.COMPLETING), ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED), ("CANCELLED", JobState.CANCELLED), ("TIMEOUT", JobState.TIMEOUT),
        ("NODE_FAIL", JobState.NODE_FAIL), ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY), ("PREEMPTED", JobState.FAILED),
        ("SUSPENDED", JobState.HELD), ("BOOT_FAIL", JobState.NODE_FAIL), ("DEADLINE", JobState.TIMEOUT),
        ("REQUEUE_HOLD", JobState.HELD), ("SPECIAL_EXIT", JobState.FAILED), ("STAGE_OUT", JobState.COMPLETING),
    ],
)  # fmt: skip
def test_state_table(native, state):
    assert map_state(native).state is state


def test_final_flags():
    assert {s for s in JobState if s.final} == {
        JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.NODE_FAIL, JobState.OUT_OF_MEMORY,
    }  # fmt: skip
    assert not JobState.UNKNOWN.final and not JobState.COMPLETING.final
    assert all(JobState(v.value) is v for v in STATE_MAP.values())


def test_unrecognised_state_is_unknown_not_failed():
    st = map_state("SOMETHING_NEW")
    assert st.state is JobState.UNKNOWN and "unrecognised state 'SOMETHING_NEW'" in st.reason


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("Resources", "waiting for resources"),
        ("Priority", "higher-priority jobs"),
        ("Dependency", "jobs it depends on to finish"),
        ("QOSMaxJobsPerUserLimit", "as many jobs as its QOS allows"),
        ("ReqNodeNotAvail", "a node it needs is unavailable"),
        ("PartitionTimeLimit", "resubmit with a shorter walltime"),
    ],
)
def test_pending_reasons_in_words(code, words):
    st = map_state("PENDING", code)
    assert st.state is JobState.QUEUED and words in st.reason and st.reason_code == code


@pytest.mark.parametrize("code", ["JobHeldUser", "JobHeldAdmin", "DependencyNeverSatisfied"])
def test_held_reasons_make_the_job_held(code):
    st = map_state("PENDING", code)
    assert st.state is JobState.HELD and st.reason == REASONS[code]


def test_unknown_reason_is_shown_as_is():
    assert map_state("PENDING", "BurstBufferStageIn").reason == "pending: BurstBufferStageIn"
    assert map_state("RUNNING", "None").reason == "" and map_state("RUNNING", "None").reason_code == ""


def test_final_state_reasons():
    assert map_state("FAILED", "", 3, 0).reason == "its command exited with status 3"
    assert map_state("FAILED", "", 0, 9).reason == "its command was killed by signal 9"
    assert "ask for more memory" in map_state("OUT_OF_MEMORY").reason
    assert "longer walltime" in map_state("TIMEOUT").reason
    assert map_state("CANCELLED", "", 0, 15, by="1001").reason == "cancelled by user id 1001"
    dep = map_state("CANCELLED", "DependencyNeverSatisfied", 0, 0)
    assert dep.state is JobState.CANCELLED and "did not complete successfully" in dep.reason


def test_completed_in_the_queue_while_accounting_lags_means_exit_status_zero(sched):
    """squeue already says COMPLETED while sacct still has the job RUNNING (slurmdbd lags): Slurm's
    COMPLETED means every process exited 0, so the status says so (seen once in CI)."""
    queued = map_state("COMPLETED")
    lagging = map_state("RUNNING")
    st = sched.merge(queued, lagging)
    assert (st.state, st.exit_code, st.signal) == (JobState.COMPLETED, 0, 0)
    failed = sched.merge(map_state("FAILED"), lagging)  # no exit status to be had from squeue
    assert (failed.state, failed.exit_code) == (JobState.FAILED, None)
    agreed = sched.merge(queued, map_state("COMPLETED", "", 0, 0))
    assert (agreed.state, agreed.exit_code) == (JobState.COMPLETED, 0)


# --- squeue --------------------------------------------------------------------------------------
def test_parse_queue_rows_and_array_tasks(sched):
    out = "101|101|RUNNING|None\n102|102|PENDING|Priority\n103_1|103|RUNNING|None\n103_2|103|PENDING|JobArrayTaskLimit\n"
    rows = sched.parse_queue(CommandResult(0, out, ""))
    assert [(r.job_id, r.array_job_id, r.status.state) for r in rows] == [
        ("101", "", JobState.RUNNING), ("102", "", JobState.QUEUED), ("103_1", "103", JobState.RUNNING), ("103_2", "103", JobState.QUEUED),
    ]  # fmt: skip


def test_parse_queue_invalid_id_means_none_queued(sched):
    assert sched.parse_queue(CommandResult(1, "", "slurm_load_jobs error: Invalid job id specified\n")) == []


def test_parse_queue_controller_down_raises_transient(sched):
    with pytest.raises(
        SchedulerError, match="squeue failed: slurm_load_jobs error: Unable to contact slurm controller"
    ) as e:
        sched.parse_queue(
            CommandResult(
                1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
            )
        )
    assert e.value.transient


def test_parse_history_takes_allocation_lines(sched):
    out = "201|COMPLETED|0:0|None\n201.batch|COMPLETED|0:0|\n202|CANCELLED by 1001|0:15|None\n203|FAILED|3:0|NonZeroExitCode\n"
    rows = {r.job_id: r.status for r in sched.parse_history(CommandResult(0, out, ""))}
    assert set(rows) == {"201", "202", "203"}
    assert rows["201"].state is JobState.COMPLETED and rows["201"].exit_code == 0
    assert (
        rows["202"].state is JobState.CANCELLED and rows["202"].signal == 15 and "1001" in rows["202"].reason
    )
    assert rows["203"].state is JobState.FAILED and rows["203"].exit_code == 3


def test_aggregate_array_tasks():
    ok = JobStatus(JobState.COMPLETED, exit_code=0)
    bad = JobStatus(JobState.FAILED, "its command exited with status 2", exit_code=2)
    run = JobStatus(JobState.RUNNING)
    assert aggregate([ok, run]).state is JobState.RUNNING and aggregate([ok, run]).reason.startswith(
        "1 of 2 tasks finished"
    )
    assert aggregate([ok, ok]).state is JobState.COMPLETED
    agg = aggregate([ok, bad, ok])
    assert (
        agg.state is JobState.FAILED
        and agg.exit_code == 2
        and agg.reason.startswith("1 of 3 tasks did not complete")
    )
    assert aggregate([]).state is JobState.UNKNOWN


# --- sacct formats ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00:27", 27), ("18:26:47", 66407), ("1-02:03:04", 93784), ("05:06", 306), ("00:01.500", 1.5), ("12-00:00:00", 1036800),
     ("UNLIMITED", None), ("", None), ('""', None), ("30", 1800)],
)  # fmt: skip
def test_parse_elapsed(text, seconds):
    assert sacct.parse_elapsed(text) == seconds


def test_parse_elapsed_rejects_garbage():
    with pytest.raises(ValueError, match="not a Slurm duration"):
        sacct.parse_elapsed("1:2:3:4")


@pytest.mark.parametrize(
    ("text", "size"),
    [("171096K", 171096 * 1024), ("754K", 754 * 1024), ("1.5G", 1610612736), ("2M", 2 * 1024**2), ("0", 0), ("", None), ('""', None),
     ("4000Mn", 4000 * 1024**2)],
)  # fmt: skip
def test_parse_size(text, size):
    assert sacct.parse_size(text) == size


def test_parse_state_exit_energy_and_ids():
    assert sacct.parse_state("CANCELLED by 1001") == ("CANCELLED", "1001")
    assert sacct.parse_state("CANCELLED+") == ("CANCELLED", "")
    assert sacct.parse_exit("0:125") == (0, 125) and sacct.parse_exit("") == (None, None)
    assert sacct.parse_energy("", "") is None and sacct.parse_energy("5230", "5.11K") == 5230.0
    assert sacct.parse_energy("", "2K") == 2048.0
    assert sacct.split_job_id("13936577_236.batch") == ("13936577_236", "13936577", "batch")
    assert sacct.split_job_id("26534569.0") == ("26534569", "26534569", "0")
    assert sacct.split_job_id("26534608_[64-373]") == ("26534608_[64-373]", "26534608", "")


def test_real_sacct_array_job_with_steps():
    acct = accounting_from_rows(load("sacct-tdhock-job13936577.psv"))
    assert set(acct) == {"13936577_236", "13936577_1", "13936577_25"}
    a = acct["13936577_236"]
    assert a.state is JobState.COMPLETED and a.exit_code == 0 and a.elapsed_s == 27
    assert a.max_rss_bytes == 171096 * 1024  # the largest step (batch), not extern's 754K
    assert [s.step_id for s in a.steps] == ["batch", "extern"]
    assert acct["13936577_1"].elapsed_s == 18 * 3600 + 26 * 60 + 47
    f = acct["13936577_25"]
    assert f.state is JobState.FAILED and f.exit_code == 1 and f.reason == "its command exited with status 1"


def test_real_sacct_quoted_empty_fields_oom_and_pending_ranges():
    acct = accounting_from_rows(load("sacct-tdhock-2019-11-21.psv"))
    assert acct["26534569"].state is JobState.RUNNING and acct["26534569"].max_rss_bytes is None
    assert [s.step_id for s in acct["26534569"].steps] == ["extern", "0"]
    oom = acct["26534608_11"]
    assert oom.state is JobState.OUT_OF_MEMORY and (oom.exit_code, oom.signal) == (0, 125)
    assert oom.max_rss_bytes == 2047992 * 1024 and "more memory" in oom.reason
    assert acct["26534608_[64-373]"].state is JobState.QUEUED
    assert acct["26534608_1"].consumed_energy_j is None  # no energy column: not measured


def test_real_sacct_multitype():
    acct = accounting_from_rows(load("sacct-tdhock-multitype.psv"))
    assert (
        acct["13937810_25"].elapsed_s == 7 * 3600 + 4 * 60 + 42
        and acct["13937810_25"].max_rss_bytes == 394960 * 1024
    )
    assert acct["14022204_[4]"].state is JobState.QUEUED
    d = acct["13937810_25"].to_dict()
    assert d["state"] == "completed" and d["steps"][0]["state"] == "completed"


def test_energy_summed_over_steps_when_the_job_line_is_empty():
    rows = sacct.parse_parsable(
        "301|COMPLETED|0:0|00:01:00|2|1||||||||node1|e\n"
        "301.batch|COMPLETED|0:0|00:01:00|2|1|1024K|1500|||||||batch\n"
        "301.extern|COMPLETED|0:0|00:01:00|2|1|10K|0|||||||extern\n"
        "301.0|COMPLETED|0:0|00:00:50|2|1|2048K|600|||||||step\n",
        SlurmScheduler.ACCOUNTING_FIELDS,
    )
    a = accounting_from_rows(rows)["301"]
    assert a.consumed_energy_j == 2100 and a.max_rss_bytes == 2048 * 1024 and a.alloc_cpus == 2


def test_no_energy_measured_gives_none():
    rows = sacct.parse_parsable(
        "302|COMPLETED|0:0|00:01:00|1|1||||||||node1|e\n302.batch|COMPLETED|0:0|00:01:00|1|1|1024K|0|||||||batch\n",
        SlurmScheduler.ACCOUNTING_FIELDS,
    )
    assert accounting_from_rows(rows)["302"].consumed_energy_j is None


def test_real_testbed_sacct_22_05():
    acct = accounting_from_rows(load("sacct-testbed-22.05.psv"))
    assert set(acct) == {"1", "2", "3", "4", "5_0", "5_1"}
    ok = acct["1"]
    assert (ok.state, ok.exit_code, ok.elapsed_s, ok.alloc_cpus, ok.partition, ok.node_list, ok.name) == (
        JobState.COMPLETED, 0, 12, 1, "debug", "localhost", "ok",
    )  # fmt: skip
    assert ok.max_rss_bytes == 4480 * 1024 and ok.start.isoformat() == "2026-11-21T22:31:54"
    assert ok.consumed_energy_j is None and ok.steps[0].consumed_energy_j is None  # "0" means not measured
    assert (acct["2"].state, acct["2"].exit_code) == (JobState.FAILED, 3)
    cancelled = acct["3"]
    assert cancelled.state is JobState.CANCELLED and cancelled.reason == "cancelled by user id 1001"
    assert (cancelled.steps[0].exit_code, cancelled.steps[0].signal) == (0, 15)
    dep = acct["4"]
    assert (
        dep.state is JobState.CANCELLED
        and dep.reason == "cancelled: a job it depends on did not complete successfully"
    )
    assert dep.start is not None and dep.steps == []
    assert (acct["5_1"].state, acct["5_1"].exit_code, acct["5_1"].name) == (JobState.FAILED, 1, "arr")
