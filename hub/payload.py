"""An event's data, bounded before anything stores it: its depth and its size as subscribers get it. Pure.

Whatever passes here is known to encode in every form the hub writes it (SSE, NDJSON, a history array,
a broker envelope), each of which wraps it in at most a few levels more: nothing a publisher sends can
make an encode fail after the event was stored.
"""

from __future__ import annotations

import orjson

from hub.errors import BadRequest, PayloadTooLarge
from hub.sse import data_text

# Arrays and objects nested in one another, an empty one included. orjson parses 1,024 levels but
# encodes only ORJSON_MAX_DEPTH: data parsed deeper than that was stored, and then could not be sent.
MAX_DATA_DEPTH = 64
ORJSON_MAX_DEPTH = 254
_PAD = ORJSON_MAX_DEPTH - MAX_DATA_DEPTH


def check_data(data: object, max_bytes: int, where: str = "", what: str = "data") -> int:
    """Raise a 4xx unless `data` nests at most MAX_DATA_DEPTH levels and is at most `max_bytes` as
    written (a string as UTF-8, any other value as compact JSON); returns that size."""
    try:
        text = data_text(data)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except orjson.JSONEncodeError as exc:
        if "ecursion" in str(exc):  # past ORJSON_MAX_DEPTH: deeper than the bound anyway
            raise _too_deep(where, what) from None
        # An integer past 64 bits, say: orjson parses none, but whatever the source, nothing could send it.
        raise BadRequest("invalid_data", f"{where}{what} cannot be encoded as JSON: {exc}") from None
    except UnicodeEncodeError:  # a lone surrogate, as above
        raise BadRequest("invalid_data", f"{where}{what} is not valid UTF-8") from None
    if size > max_bytes:
        raise PayloadTooLarge("data_too_large", f"{where}{what} is {size} bytes; the limit is {max_bytes}")
    # A value of fewer brackets than the bound cannot nest deeper (brackets in strings only add).
    if not isinstance(data, str) and text.count("[") + text.count("{") > MAX_DATA_DEPTH:
        padded = data
        for _ in range(_PAD):
            padded = [padded]
        try:
            # Encoded in C under _PAD more levels: it fails exactly when `data` nests deeper than the
            # bound, at the cost of one encode (a walk in Python took 15-45x as long).
            orjson.dumps(padded)
        except orjson.JSONEncodeError:
            raise _too_deep(where, what) from None
    return size


def _too_deep(where: str, what: str) -> BadRequest:
    return BadRequest(
        "data_too_deep", f"{where}{what} nests arrays and objects more than {MAX_DATA_DEPTH} levels deep"
    )
