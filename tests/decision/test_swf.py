"""The SWF reader on real trace excerpts (tests/decision/swf/SOURCES.md): header or not, gzip or plain,
``-1`` unknown fields, extra fields after the 18th, and clear errors on bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from jupyter_heroes.decision.swf import FIELDS, SwfError, parse_line, read_swf, to_finished_jobs, usable

DATA = Path(__file__).parent / "swf"


def test_gzip_trace_with_header():
    t = read_swf(DATA / "kth-sp2-head.swf.gz")
    assert t.name == "kth-sp2-head"
    assert len(t.jobs) == 400
    assert t.header_number("UnixStartTime") == 843480031
    assert t.header_number("TimeZone") == 3600
    assert t.header_value("computer") == "IBM SP2"
    assert len(t.header["Note"]) == 2  # repeated keys keep every value, in order
    j = t.jobs[0]
    # "   15   599850 192180   3477    4     -1    -1    4  53940    -1  1  12  12  -1 -1 -1 -1 -1"
    assert (j.job_id, j.submit_time, j.wait_time, j.run_time) == (15, 599850.0, 192180.0, 3477.0)
    assert (j.allocated_procs, j.requested_procs, j.requested_time, j.status) == (4, 4, 53940.0, 1)
    assert j.avg_cpu_time is None and j.used_memory is None and j.app_id is None and j.queue is None
    assert j.end_time == 599850 + 192180 + 3477
    assert j.extra == ()


def test_plain_trace_with_unknown_fields(tmp_path):
    t = read_swf(DATA / "lanl-cm5-head.swf")
    assert len(t.jobs) == 120
    assert t.header_value("Queue") == "0  interactive"
    j = t.jobs[0]
    # "    1        0      0   3691  128   3436  6676   -1   3600  5904  1   2   2   2 -1 -1 -1 -1"
    assert j.requested_procs is None and j.queue is None and j.submit_time == 0.0
    assert (j.used_memory, j.requested_memory, j.app_id) == (6676.0, 5904.0, 2)
    # Same content gzipped, under a name without .gz: detected by its magic bytes.
    packed = tmp_path / "lanl.swf"
    packed.write_bytes(gzip.compress((DATA / "lanl-cm5-head.swf").read_bytes()))
    assert read_swf(packed).jobs == t.jobs


def test_no_header_and_extra_fields():
    t = read_swf(DATA / "metacentrum-head.swf")
    assert t.header == {}
    assert len(t.jobs) == 40
    j = t.jobs[1]
    assert j.job_id == 1 and j.submit_time == 1356996695 and j.run_time == 1164297
    assert j.requested_memory == 91268055040 and j.queue is None
    assert len(j.extra) == 3
    assert j.extra[1] == "q_2w" and j.extra[2] == "1:ppn=12"
    assert j.extra[0].startswith("{1129,")


def test_unknown_wait_counts_as_zero_for_the_end():
    line = " ".join(["7", "100", "-1", "50"] + ["-1"] * 14)
    j = parse_line(line)
    assert j is not None and j.wait_time is None and j.end_time == 150.0
    assert parse_line("  ") is None and parse_line("; Note: x") is None


def test_bad_lines_name_file_and_line(tmp_path):
    p = tmp_path / "bad.swf"
    p.write_text("; Version: 2.2\n" + " ".join(["1"] * 18) + "\n1 2 3\n")
    with pytest.raises(SwfError, match=r"bad\.swf:3: expected at least 18 .* found 3"):
        read_swf(p)
    p.write_text(" ".join(["1", "x"] + ["1"] * 16) + "\n")
    with pytest.raises(SwfError, match=r"bad\.swf:1: field 'submit_time' is 'x', expected a number"):
        read_swf(p)
    with pytest.raises(SwfError, match="no such trace file"):
        read_swf(tmp_path / "missing.swf")
    p.write_bytes(gzip.compress(b"1 2 3 " * 100)[:30])
    with pytest.raises(SwfError, match="cannot read the compressed trace"):
        read_swf(p)
    assert len(FIELDS) == 18


def test_usable_jobs_and_conversion():
    t = read_swf(DATA / "metacentrum-head.swf")
    jobs = to_finished_jobs(t)
    assert len(jobs) == sum(usable(j) for j in t.jobs) == 40
    f = jobs[1]
    assert f.request.user == "101" and f.request.requested_time == 1209600 and f.run_time == 1164297
    assert f.end == 1356996695 + 71 + 1164297 and f.request.job_id == "1"
    # Jobs without a run time or a request are dropped; repeated ids are made unique.
    base = ["5", "10", "0", "20", "1", "-1", "-1", "1", "60"] + ["-1"] * 2 + ["3"] + ["-1"] * 6
    lines = [base, base, [*base[:3], "0", *base[4:]], [*base[:8], "-1", *base[9:]]]
    from jupyter_heroes.decision.swf import SwfTrace

    t2 = SwfTrace("x.swf", {}, [parse_line(" ".join(x)) for x in lines])  # type: ignore[misc]
    got = to_finished_jobs(t2)
    assert [j.request.job_id for j in got] == ["5", "5#2"]
    assert len(to_finished_jobs(t2, require_request=False)) == 3
