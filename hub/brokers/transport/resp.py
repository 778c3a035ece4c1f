"""RESP command encoding for the raw connections. Pure."""

from __future__ import annotations

import hiredis


def pack(*args: bytes | str | int) -> bytes:
    """One command as RESP: an array of bulk strings (hiredis' encoder: the publish path packs every
    event's script call, and a Python loop over the arguments cost twice as much)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub takes a 1-tuple
    return packed
