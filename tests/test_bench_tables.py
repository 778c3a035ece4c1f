"""bench/load.py's tables: the one-row-per-scenario summary, and `--write` touching only the figures of
BENCHMARKS.md (its definitions and history are written by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import Result, replace_between, summary, table

ROOT = Path(__file__).parent.parent


def run(server: str, scenario: str, **figures: float) -> Result:
    return Result(server, scenario, dict(figures))


def test_summary_gives_each_scenario_one_row_with_the_hubs_ratios_and_a_dash_where_no_run_succeeded():
    results = [
        run("hub", "fanout", deliveries_per_s=300, p99_ms=80.0, lost=0, duplicated=0, out_of_order=0),
        run("hub", "fanout", deliveries_per_s=500, p99_ms=70.0, lost=0, duplicated=0, out_of_order=0),
        run("ceiling", "fanout", deliveries_per_s=200, p99_ms=50.0, lost=0, duplicated=0, out_of_order=0),
        run("baseline", "fanout", deliveries_per_s=4, p99_ms=900.0, lost=7, duplicated=0, out_of_order=0),
        run("hub", "idle", kib_per_connection=4.0),
        run("ceiling", "idle", kib_per_connection=10.0),
    ]
    lines = summary(results, ["fanout", "idle"], ["hub", "ceiling", "baseline"]).splitlines()
    assert lines[0] == (
        "| scenario | hub | ceiling | baseline | hub / ceiling | hub / baseline"
        " | p99 ms: hub, ceiling, baseline | hub lost, dup, ooo |"
    )
    assert lines[2] == "| fanout | 400 | 200 | 4 | **2.00x** | **100.00x** | 75.0, 50.0, 900.0 | 0, 0, 0 |"
    assert lines[3] == "| idle (KiB/connection) | 4.00 | 10.00 | - | **0.40x** | - |  |  |"


def test_write_replaces_only_what_lies_between_its_markers():
    text = "intro\n<!-- bench:table:start -->\nold\nfigures\n<!-- bench:table:end -->\nhistory\n"
    assert replace_between(text, "table", "new\n") == (
        "intro\n<!-- bench:table:start -->\nnew\n<!-- bench:table:end -->\nhistory\n"
    )
    with pytest.raises(SystemExit):
        replace_between("no markers", "table", "new")


def test_benchmarks_md_has_both_sections_the_benchmark_writes():
    text = (ROOT / "BENCHMARKS.md").read_text()
    for marker in ("table", "details"):
        assert replace_between(text, marker, "x") != text


def test_nchan_is_a_reference_with_a_ratio_of_its_own_in_the_summary_and_the_table():
    results = [
        run("hub", "notify", deliveries_per_s=9000, p99_ms=4.0, lost=0, duplicated=0, out_of_order=0),
        run("nchan", "notify", deliveries_per_s=30000, p99_ms=2.0, lost=0, duplicated=0, out_of_order=0),
        run("hub", "idle", kib_per_connection=4.0),
        run("nchan", "idle", kib_per_connection=2.0),
    ]
    lines = summary(results, ["notify", "idle"], ["hub", "nchan"]).splitlines()
    assert lines[0] == "| scenario | hub | nchan | hub / nchan | p99 ms: hub, nchan | hub lost, dup, ooo |"
    assert lines[2] == "| notify | 9,000 | 30,000 | **0.30x** | 4.0, 2.0 | 0, 0, 0 |"
    assert lines[3] == "| idle (KiB/connection) | 4.00 | 2.00 | **2.00x** |  |  |"
    assert "hub / nchan: **0.30x** (deliveries_per_s)" in table(results, ["notify"], ["hub", "nchan"])
