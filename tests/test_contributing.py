"""CONTRIBUTING.md's module map names every module in hub/, and no module that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _map_block() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split("## Module map", 1)[1]
    return section.split("```text", 1)[1].split("```", 1)[0]


def test_the_module_map_matches_the_package() -> None:
    named = set(re.findall(r"([\w/]*\w+\.py)\b", _map_block()))
    named_names = {Path(n).name for n in named}
    modules = {p for p in (ROOT / "hub").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert {p.name for p in modules} - named_names == set(), "modules missing from the map"
    assert named_names - {p.name for p in modules} == set(), "the map names modules that do not exist"
