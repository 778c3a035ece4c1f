"""The aiohttp code the hub relies on beyond the public API is the code it was tested with.

A new aiohttp fails here, naming each changed function and the hub module that relies on it, until the
change is read, the fingerprints recorded (`python -m tests.support.aiohttp_internals`) and the pin in
pyproject.toml widened."""

from __future__ import annotations

import tomllib
from pathlib import Path

import aiohttp
from aiohttp.web_protocol import RequestHandler
from packaging.requirements import Requirement

from tests.support.aiohttp_internals import KNOWN, RELIED_ON, SLOTS, fingerprints

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _pin() -> Requirement:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    [line] = [d for d in project["dependencies"] if Requirement(d).name == "aiohttp"]
    return Requirement(line)


def test_the_installed_aiohttp_is_one_the_hub_was_checked_against() -> None:
    assert aiohttp.__version__ in KNOWN, (
        f"aiohttp {aiohttp.__version__} is not in tests/support/aiohttp_internals.py KNOWN: read the "
        "functions RELIED_ON names, then record its fingerprints"
    )


def test_the_code_the_hub_relies_on_is_unchanged() -> None:
    known = KNOWN.get(aiohttp.__version__) or KNOWN[max(KNOWN)]
    changed = {
        name: RELIED_ON[(module, qualname)]
        for name, digest in fingerprints().items()
        if known.get(name) != digest
        for module, _, qualname in [name.partition(":")]
    }
    assert not changed, f"aiohttp {aiohttp.__version__} changed what the hub relies on: {changed}"


def test_the_pin_admits_exactly_the_checked_versions() -> None:
    pin = _pin()
    assert pin.specifier.contains(aiohttp.__version__)
    assert all(pin.specifier.contains(v) for v in KNOWN)
    # the next patch and minor releases are outside the pin until checked here
    major, minor, patch = (int(p) for p in max(KNOWN, key=lambda v: tuple(map(int, v.split(".")))).split("."))
    assert not pin.specifier.contains(f"{major}.{minor}.{patch + 1}")
    assert not pin.specifier.contains(f"{major}.{minor + 1}.0")


def test_the_request_handler_still_has_the_slots_the_hub_reads() -> None:
    slots = {name for cls in RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    assert set(SLOTS) <= slots


def test_a_changed_function_is_caught() -> None:
    # the check itself must be able to fail: a fingerprint of different source differs
    known = dict(KNOWN[max(KNOWN)])
    name = next(iter(known))
    known[name] = "0" * 16
    assert {n for n, d in fingerprints().items() if known.get(n) != d} == {name}
