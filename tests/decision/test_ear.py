"""EAR CSV parsing on rows built in the exact layouts of ``eacct -c`` and the EAR HEROES plugin.

The header files in ``data/`` are copied unchanged from the project's shared data set (reconstructed
from eas4dc/EAR @ 23c1d33; see ``data/SOURCES.md``). No real EAR output is public, so rows are built
here column by column in those layouts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_heroes.decision.ear import EarError, measured_power, read_ear_csv, summarize

DATA = Path(__file__).parent / "data"
CPU = (DATA / "eacct_c_header_cpu_only.txt").read_text().strip()
GPU = (DATA / "eacct_c_header_with_8gpus.txt").read_text().strip()
HEROES = (DATA / "heroes_app_csv_header_cpu_only.txt").read_text().strip()


def row(header: str, **values: object) -> str:
    """A data row in *header*'s layout: every column ``0`` except the ones given (by column name)."""
    cols = header.split(";")
    unknown = set(values) - set(cols)
    assert not unknown, unknown
    return ";".join(str(values.get(c, "0")) for c in cols)


def csv_text(header: str, *rows: str) -> str:
    return "\n".join([header, *rows]) + "\n"


def test_header_layouts_are_the_published_ones():
    assert len(CPU.split(";")) == 89
    assert len(GPU.split(";")) == 153
    assert len(HEROES.split(";")) == 103
    assert HEROES.split(";")[:6] == [
        "HEROES_INSTANCE_WORKFLOW_ID",
        "HEROES_TEMPLATE_WORKFLOW_ID",
        "HEROES_USER_ID",
        "HEROES_ORGANIZATION_NAME",
        "HEROES_ORGANIZATION_ID",
        "MAX_POWER_W",
    ]


def test_eacct_cpu_rows_energy_is_power_times_time_per_node():
    text = csv_text(
        CPU,
        row(
            CPU,
            JOBID=123,
            STEPID=0,
            APPID="heat",
            NODENAME="n01",
            TIME_SEC=100,
            DC_NODE_POWER_W=300.5,
            CPU_UTIL=97.5,
        ),
        row(CPU, JOBID=123, STEPID=0, APPID="heat", NODENAME="n02", TIME_SEC=98, DC_NODE_POWER_W=350),
        row(CPU, JOBID=124, STEPID=0, APPID="heat", NODENAME="n01", TIME_SEC=10, DC_NODE_POWER_W=200),
    )
    recs = read_ear_csv(text)
    assert [r.node for r in recs] == ["n01", "n02", "n01"]
    assert recs[0].energy_j == pytest.approx(30050.0)
    assert recs[0].cpu_util == 97.5
    assert recs[0].energy().basis == "measured"
    assert recs[0].instance_id is None and recs[0].phases == {}

    s = summarize(recs).set_index(["job_id", "step_id"])
    j = s.loc[("123", "0")]
    assert j["nodes"] == 2
    assert j["time_s"] == 100
    assert j["energy_j"] == pytest.approx(30050.0 + 34300.0)
    assert j["energy_kwh"] == pytest.approx((30050.0 + 34300.0) / 3.6e6)
    assert j["node_power_w"] == pytest.approx((30050.0 + 34300.0) / 198)
    assert j["basis"] == "measured"

    mp = measured_power(recs, "EAR eacct")
    assert mp.runs == 2
    assert mp.node_power_w == pytest.approx((30050 + 34300 + 2000) / 208)
    assert "EAR eacct" in mp.describe()


def test_eacct_gpu_build_sums_gpu_power():
    gpus = {f"GPU{i}_POWER_W": 100 + i for i in range(8)}
    text = csv_text(
        GPU, row(GPU, JOBID=7, STEPID=1, NODENAME="g01", TIME_SEC=60, DC_NODE_POWER_W=2500, **gpus)
    )
    (r,) = read_ear_csv(text)
    assert r.gpu_power_w == sum(gpus.values())
    assert r.energy_j == 150000


def test_heroes_plugin_rows_carry_ids_and_phases(tmp_path):
    text = csv_text(
        HEROES,
        row(
            HEROES,
            HEROES_INSTANCE_WORKFLOW_ID="wf-42",
            HEROES_TEMPLATE_WORKFLOW_ID="heat-pipeline",
            HEROES_USER_ID="alice",
            HEROES_ORGANIZATION_NAME="NO_PRJ_ID",
            HEROES_ORGANIZATION_ID="NO_ORG_ID",
            MAX_POWER_W=410,
            COMP_BOUND=50.5,
            MEM_BOUND=20,
            JOBID=9,
            STEPID=0,
            NODENAME="n07",
            TIME_SEC=80,
            DC_NODE_POWER_W=320,
        ),
    )
    path = tmp_path / "heroes.0.csv"
    path.write_text(text)
    (r,) = read_ear_csv(path)
    assert (r.instance_id, r.template_id, r.user_id) == ("wf-42", "heat-pipeline", "alice")
    assert r.organization_name is None and r.organization_id is None  # the plugin's "unset" markers
    assert r.max_power_w == 410
    assert r.phases["COMP_BOUND"] == 50.5 and r.phases["MEM_BOUND"] == 20 and r.phases["IO_BOUND"] == 0
    assert r.energy_j == 25600
    assert summarize([r]).iloc[0]["instance_id"] == "wf-42"


def test_trailing_separator_is_tolerated():
    text = csv_text(CPU + ";", row(CPU, JOBID=1, STEPID=0, NODENAME="n", TIME_SEC=2, DC_NODE_POWER_W=3) + ";")
    assert read_ear_csv(text)[0].energy_j == 6


def test_non_numeric_power_names_line_and_column():
    text = csv_text(
        CPU,
        row(CPU, JOBID=1, STEPID=0, NODENAME="n", TIME_SEC=2, DC_NODE_POWER_W=3),
        row(CPU, JOBID=1, STEPID=0, NODENAME="m", TIME_SEC=2, DC_NODE_POWER_W="abc"),
    )
    with pytest.raises(EarError, match=r"run\.csv, line 3, column DC_NODE_POWER_W: 'abc' is not a number"):
        read_ear_csv(text, name="run.csv")


def test_wrong_field_count_names_the_line():
    good = row(CPU, JOBID=1, STEPID=0, NODENAME="n", TIME_SEC=2, DC_NODE_POWER_W=3)
    short = good.rsplit(";", 1)[0]
    with pytest.raises(EarError, match=r"line 2: 88 fields, the header has 89"):
        read_ear_csv(csv_text(CPU, short))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("TIME_SEC", "-5", "column TIME_SEC: '-5' is negative"),
        ("TIME_SEC", "", "column TIME_SEC: empty"),
        ("DC_NODE_POWER_W", "nan", "column DC_NODE_POWER_W: 'nan' is not a finite number"),
        ("CPU_UTIL", "high", "column CPU_UTIL: 'high' is not a number"),
        ("NODENAME", "", "column NODENAME: empty"),
    ],
)
def test_bad_values_are_refused(column, value, message):
    vals = {"JOBID": 1, "STEPID": 0, "NODENAME": "n", "TIME_SEC": 2, "DC_NODE_POWER_W": 3, column: value}
    with pytest.raises(EarError, match=message):
        read_ear_csv(csv_text(CPU, row(CPU, **vals)))


def test_not_an_ear_header():
    with pytest.raises(
        EarError, match=r"line 1: not an EAR CSV header: column\(s\) \['DC_NODE_POWER_W'\] missing"
    ):
        read_ear_csv(csv_text(CPU.replace("DC_NODE_POWER_W", "POWER"), row(CPU)))
    with pytest.raises(EarError, match="line 1: empty"):
        read_ear_csv("\n\n")
    with pytest.raises(EarError, match="cannot read"):
        read_ear_csv(Path("/nonexistent/heroes.0.csv"))


def test_loop_file_is_refused_with_a_pointer_to_the_right_file():
    header = "HEROES_INSTANCE_WORKFLOW_ID;JOBID;STEPID;NODENAME;TIME_SEC;DC_NODE_POWER_W;LOOPID"
    with pytest.raises(EarError, match="loop"):
        read_ear_csv(csv_text(header, "a;1;0;n;1;1;3"))


def test_empty_input_gives_no_power():
    assert read_ear_csv(CPU + "\n") == []
    assert measured_power([]) is None
    assert summarize([]).empty
