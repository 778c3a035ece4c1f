"""The container, proven for real: `deploy/check.py` builds the image from the unchanged Dockerfile
(with stand-in base images made from Debian's packages where the machine has none), runs it, and brings
both compose files up (see its docstring for every check). It spends its time waiting on Docker, not on
the cores, while the other pytest-xdist worker goes on with the suite."""

from __future__ import annotations

import json
import subprocess

import pytest

CHECK_TIMEOUT = 900


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_the_image_and_both_compose_files_run_and_lose_nothing(container_check: subprocess.Popen[str]):
    output, _ = container_check.communicate(timeout=CHECK_TIMEOUT)
    lines = output.strip().splitlines()
    assert lines, "deploy/check.py printed nothing"
    summary = json.loads(lines[-1])
    assert container_check.returncode == 0, summary.get("failed", output[-3000:])
    assert summary["ok"] is True
    assert summary["uid"] != 0
    # Its own layers over the base: the hub and its runtime dependencies, nothing to build or test with
    # (the check looks for compilers and test packages inside, too).
    assert summary["image_over_base_mb"] < 150, summary
    assert summary["start_s"] < 10, summary
    assert summary["stop_s"] < 15, summary
    print(json.dumps(summary))
