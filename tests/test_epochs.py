"""Epoch tags: what sets one broker's ids apart from those it handed out before losing its data."""

from __future__ import annotations

import os

from hub.wire.event import EPOCH_ALPHABET, new_epoch


def test_an_epoch_is_six_characters_of_the_alphabet_and_fresh_each_time():
    epochs = [new_epoch() for _ in range(20_000)]
    assert all(len(e) == 6 and set(e) <= set(EPOCH_ALPHABET) for e in epochs)
    # 30 bits: 20,000 draws hold about 0.19 repeated pairs on average (C(20000, 2) / 2**30), two or
    # more in 1.5% of runs (this test's CI flake when it allowed one); more than five in 1 of 20
    # million. 24 bits would give about 12, 20 bits about 190.
    assert len(set(epochs)) >= len(epochs) - 5
    # every character position takes every value: no bits stuck
    for i in range(6):
        assert {e[i] for e in epochs} == set(EPOCH_ALPHABET)


def test_a_forked_process_does_not_propose_its_parents_epochs():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, " ".join(new_epoch() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    mine = {new_epoch() for _ in range(5)}
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(theirs) == 5
    assert not mine & theirs
