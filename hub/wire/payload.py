"""An event's data, bounded before anything stores it: its depth and its size as subscribers get it. Pure.

Whatever passes here is known to encode in every form the hub writes it (SSE, NDJSON, a history array,
a broker envelope), each of which wraps it in at most a few levels more: nothing a publisher sends can
make an encode fail after the event was stored.

This is on every publish's path: a value is encoded once here, and the envelope embeds those bytes
(`Draft.encoded`); a string is measured without being encoded at all.
"""

from __future__ import annotations

import orjson

from hub.errors import BadRequest, PayloadTooLarge

# Arrays and objects nested in one another, an empty one included. orjson parses 1,024 levels but
# encodes only ORJSON_MAX_DEPTH: data parsed deeper than that was stored, and then could not be sent.
MAX_DATA_DEPTH = 64
ORJSON_MAX_DEPTH = 254
_PAD = ORJSON_MAX_DEPTH - MAX_DATA_DEPTH
# A value of at most _WALK values nests at most _WALK + 1 levels: within the bound, and known from a
# short walk. A larger one is encoded padded (see `_encode_padded`), which costs a fixed ~1.7 us more
# than a plain encode: less than walking on in Python, and much less than a second encode.
_WALK = 32
assert _WALK + 1 <= MAX_DATA_DEPTH
_NESTED = frozenset({list, dict})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def check_data(data: object, max_bytes: int, where: str = "", what: str = "data") -> int:
    """Raise a 4xx unless `data` nests at most MAX_DATA_DEPTH levels and is at most `max_bytes` as
    written (a string as UTF-8, any other value as compact JSON); returns that size."""
    encoded = encode_data(data, max_bytes, where, what)
    if encoded is not None:
        return len(encoded)
    assert isinstance(data, str)
    return _text_size(data, where, what)


def encode_data(data: object, max_bytes: int, where: str = "", what: str = "data") -> bytes | None:
    """`check_data`, returning the compact JSON of `data` it encoded to check it; None for a string."""
    kind = type(data)
    if isinstance(data, str):
        size = _text_size(data, where, what)
        encoded = None
    elif kind in _SCALARS or (kind in _NESTED and _small(data)):  # type: ignore[arg-type]
        encoded = _encode(data, where, what)
        size = len(encoded)
    else:
        encoded = _encode_padded(data)
        if encoded is None:  # refused as a plain encode finds it: size first, as for any value
            encoded = _encode(data, where, what)
            _check_size(len(encoded), max_bytes, where, what)
            raise _too_deep(where, what)
        size = len(encoded)
    _check_size(size, max_bytes, where, what)
    return encoded


def _text_size(text: str, where: str, what: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no parser makes one, and nothing could send it
        raise BadRequest("invalid_data", f"{where}{what} is not valid UTF-8") from None


def _check_size(size: int, max_bytes: int, where: str, what: str) -> None:
    if size > max_bytes:
        raise PayloadTooLarge("data_too_large", f"{where}{what} is {size} bytes; the limit is {max_bytes}")


def _small(data: list[object] | dict[object, object]) -> bool:
    """Whether `data` holds at most _WALK values, each a JSON scalar, array or object (a tuple or a
    subclass is left to the padded encode, which judges any value exactly)."""
    stack = [data]
    budget = _WALK
    while stack:
        node = stack.pop()
        budget -= len(node)
        if budget < 0:
            return False
        for child in node.values() if type(node) is dict else node:
            if type(child) not in _SCALARS:
                if type(child) not in _NESTED:
                    return False
                stack.append(child)  # type: ignore[arg-type]
    return True


def _encode(data: object, where: str, what: str) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        if "ecursion" in str(exc):  # past ORJSON_MAX_DEPTH: deeper than the bound anyway
            raise _too_deep(where, what) from None
        # An integer past 64 bits, a lone surrogate: orjson parses none, but whatever the source,
        # nothing could send it.
        raise BadRequest("invalid_data", f"{where}{what} cannot be encoded as JSON: {exc}") from None


# Chains of _PAD arrays, each holding the next, the innermost a slot for the value: a pool, so that
# no chain is built per call (190 lists: longer than the encode of a small value) nor shared by two.
_Chain = tuple[list[object], list[object]]
_CHAINS: list[_Chain] = []


def _new_chain() -> _Chain:
    slot: list[object] = [None]
    outer = slot
    for _ in range(_PAD - 1):
        outer = [outer]
    return outer, slot


def _encode_padded(data: object) -> bytes | None:
    """The compact JSON of `data`, encoded in C under _PAD more levels: None exactly when `data` nests
    deeper than the bound (or cannot be encoded at all), at the cost of one encode (a walk in Python
    took 15-45x as long)."""
    outer, slot = chain = _CHAINS.pop() if _CHAINS else _new_chain()
    slot[0] = data
    try:
        padded = orjson.dumps(outer)
    except orjson.JSONEncodeError:
        return None
    finally:
        slot[0] = None
        _CHAINS.append(chain)
    return padded[_PAD:-_PAD]


def _too_deep(where: str, what: str) -> BadRequest:
    return BadRequest(
        "data_too_deep", f"{where}{what} nests arrays and objects more than {MAX_DATA_DEPTH} levels deep"
    )
