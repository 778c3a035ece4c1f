"""Idempotency keys as the brokers keep them: scoped to their publisher, bound to their request. Pure.

A key is the publisher's own name for one publish. Two publishers that pick the same key name two
records, so no one can answer (and suppress) another's publish by guessing its key; and a key sent again
with another request is refused (422) rather than answered with the first request's ids, which would
tell the publisher that an event it never sent was published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from hub.wire.event import Draft


@dataclass(frozen=True, slots=True)
class Idempotency:
    name: str  # the record's name: a digest of publisher and key, fixed length whatever the client sent
    fingerprint: str  # a digest of the request's events, topics and options


def scoped(publisher: str, key: str, drafts: Sequence[Draft]) -> Idempotency:
    name = hashlib.blake2b(f"{publisher}\0{key}".encode(), digest_size=16).hexdigest()
    fingerprint = hashlib.blake2b(digest_size=16)
    for draft in drafts:
        # Draft.body() holds everything a publish asks for (topics, data, event, retry, retain); the
        # length keeps [a, b] apart from [ab].
        body = draft.body()
        fingerprint.update(len(body).to_bytes(8, "big"))
        fingerprint.update(body)
    return Idempotency(name, fingerprint.hexdigest())
