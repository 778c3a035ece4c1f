"""`python -m bench connections` at a small size: streams over two hub workers and two generator
processes, every one of them receiving the one event published (so the 50,000-stream command cannot rot),
and the open-file arithmetic that decides whether a split can work at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.connections import check_fits, shares, source_from

ROOT = Path(__file__).parent.parent


def test_one_event_published_once_reaches_every_stream_over_two_workers_and_two_generators():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "connections", "--subs", "300", "--workers", "2",
         "--generators", "2", "--timeout", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stderr.split("run 1: ", 1)[1].splitlines()[0])
    assert run["failures"] == []
    assert run["received"] == 300
    assert sum(run["per_worker"]) == 300
    assert all(n > 0 for n in run["per_worker"]), run["per_worker"]  # the kernel gave both workers some
    assert 0 < run["publish_to_first_ms"] <= run["publish_to_last_ms"] < 20_000
    summary = json.loads(done.stdout)
    assert summary["all_received"] is True
    assert summary["subs"] == 300


def test_a_split_fits_when_no_generator_and_no_evenly_loaded_worker_passes_the_open_file_limit():
    assert shares(50_000, 4) == [12_500] * 4
    assert shares(7, 3) == [3, 2, 2]
    assert check_fits(50_000, 4, 4, 20_000) == []
    assert check_fits(50_000, 3, 3, 20_000) == []
    too_few_generators, too_few_workers = check_fits(50_000, 2, 2, 20_000)
    assert "generator would hold 25000" in too_few_generators
    assert "worker would hold 25000" in too_few_workers


def test_each_generator_connects_from_loopback_addresses_of_its_own():
    assert [source_from(g) for g in range(3)] == ["127.64.0.1", "127.64.1.1", "127.64.2.1"]
