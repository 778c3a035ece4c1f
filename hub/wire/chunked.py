"""HTTP/1.1 chunked transfer framing, pure.

Events are framed once and the same bytes are written to every subscriber's transport, bypassing the
per-write overhead of aiohttp's payload writer; several frames concatenated are still a valid body.
"""

from __future__ import annotations

LAST_CHUNK = b"0\r\n\r\n"


def frame(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)
