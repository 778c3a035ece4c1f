"""Flush pacing: when the outboxes that have something to write are written.

A quiet hub writes each event at once. A busy one pauses between flush rounds, so that what arrives
meanwhile goes out in one write per subscriber instead of one per event; the pause grows with the
round's length, with how much of the core the process is denied (starved), and when each delivery has
become a write of its own (backlogged); a starved hub also holds its broker's reading for most of the
pause. A round writes its outboxes a slice at a time so the loop still reads its sockets in between.
This module decides when to write, never what: the engine fills `dirty`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hub.engine.outbox import Outbox

# Under load, a flush waits as long as the last one took (within these bounds, seconds) after it
# ended: a quiet hub writes each event at once; a busy one gives about half its time to what arrives,
# which then goes out in one write per subscriber. The bound keeps the added latency to milliseconds.
FLUSH_GAP_MIN = 0.001
FLUSH_GAP_MAX = 0.005
# A hub that waits for its core during a round (another process on it, a CPU quota, a hypervisor) is
# starved: the core is saturated, and every write (a syscall through the TCP stack, some 10 µs) costs
# time nobody has. Above STARVED_NOISE, the starved share of its rounds stretches the pause, up to
# STARVED_GAP_MAX when it gets none of the core: fewer, larger writes. Two hubs on one core deliver
# 1.3x to 1.6x as much this way (`python -m bench load --scenarios redis`, medians of 4: 12 gave less,
# 48 no more); a hub with a core of its own keeps the pause above.
STARVED_NOISE = 0.1
STARVED_STRETCH = 24.0
STARVED_GAP_MAX = 0.25
STARVED_SMOOTHING = 0.25  # weight of the last round in the running starved share
STARVED_MEMORY = 1.0  # seconds without a flush round after which the starved share starts again from 0
# A starved hub on Redis also stops reading its events during the pause, and reads on at this share of
# it: what came meanwhile is read in one go, just before the flush that writes it, instead of waking the
# process (and taking the core from the other) once per event. Two hubs on one core: 1.56M against
# 1.30M deliveries/s (`redis`, medians of 6 interleaved runs; 9 of 10 pairs higher).
READ_ON_AT = 0.9
# A backlogged hub: its loop ran all the while between two rounds (requests waiting), and its writes
# carried about one frame each, as when each event goes to other subscribers (`topics`): a syscall per
# delivery. It pauses up to BACKLOG_GAP_MAX instead, so that a subscriber's next events share a write:
# `topics` 1.12x deliveries (medians of 4 interleaved runs). `latency` is unchanged (a hub with time to
# spare idles between rounds), and so is `fanout`, whose writes carry many frames each already.
BACKLOG_BUSY = 0.9  # share of the time between two rounds the hub ran
BACKLOG_FRAMES = 2.0  # frames per write below which writing is mostly one syscall per delivery
BACKLOG_GAP_MAX = 0.02
# Outboxes written per callback: between two slices the loop reads its sockets, so a publish waiting
# on Redis, or a request, is not held up for a whole flush (thousands of writes: milliseconds).
FLUSH_SLICE = 128


def flush_gap(round_seconds: float, starved: float, backlogged: bool = False) -> float:
    """The pause after a flush round that took `round_seconds`, a share `starved` of which the hub spent
    waiting for its core rather than running; longer bounds for a `backlogged` hub (`is_backlogged`)."""
    excess = max(0.0, starved - STARVED_NOISE) / (1 - STARVED_NOISE)
    gap = round_seconds * (1 + STARVED_STRETCH * excess)
    base = BACKLOG_GAP_MAX if backlogged else FLUSH_GAP_MAX
    bound = base + (STARVED_GAP_MAX - base) * excess
    return min(max(gap, FLUSH_GAP_MIN), bound)


def is_backlogged(busy: float, frames: int, writes: int, starved: float = 0.0) -> bool:
    """Whether a round that wrote `frames` in `writes`, after a share `busy` of the time since the last
    round was spent running, came from a saturated hub whose deliveries each cost a write. A hub that
    waits for its core a share `starved` of the time runs at most the rest of it, however much it has
    to do."""
    return busy >= BACKLOG_BUSY * (1 - starved) and frames < BACKLOG_FRAMES * writes


class FlushPacer:
    """Writes the outboxes in `dirty` in paced rounds.

    The engine appends an outbox to `dirty` when it gives an idle one something to write, then calls
    `schedule` unless `handle` shows a round is due already. `write` writes one outbox and returns how
    many frames it had; `hold_reading` pauses (True) and resumes the broker's reading."""

    def __init__(self, write: Callable[[Outbox], int], hold_reading: Callable[[bool], None]) -> None:
        self.dirty: list[Outbox] = []
        self.handle: asyncio.Handle | None = None  # the next round's (or slice's) callback, if due
        # The loop, once known: asyncio.get_running_loop() costs a getpid() syscall on Python 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.flushed_at = 0.0  # loop time the last round ended
        self._write = write
        self._hold_reading = hold_reading
        self._flushing: list[Outbox] | None = None  # the round under way: its outboxes...
        self._flush_next = 0  # ...the next slice's start...
        self._flush_clocks = (0.0, 0.0)  # ...and the wall and CPU clocks at its start (was it starved?)
        self._starved = 0.0  # running share of flush rounds spent waiting for the core
        self._round_end = (0.0, 0.0)  # wall and CPU clocks at the end of the last round
        self._busy = 0.0  # share of the time between the last round and this one the hub ran
        self._round_frames = 0  # frames this round has written so far
        self._gap = FLUSH_GAP_MIN
        self._read_on: asyncio.TimerHandle | None = None  # set while the broker's reading is held

    @property
    def pause(self) -> float:
        """Seconds the next round waits after the last one ended, if events are waiting."""
        return self._gap

    @property
    def starved(self) -> float:
        """The running share of flush rounds this process spent waiting for its core, from 0 to 1:
        well above 0, it needs more CPU than it gets. 0 once it has had nothing to write for a while."""
        if self._flushing is None and self._quiet(self.loop.time()):
            return 0.0
        return self._starved

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _quiet(self, now: float) -> bool:
        return now - self.flushed_at > STARVED_MEMORY

    def stop(self) -> None:
        """Let the broker read again if it was held; the broker closes next."""
        if self._read_on is not None:
            self._read_on.cancel()
            self._read_again()

    def schedule(self) -> None:
        if self.handle is None and self.dirty:
            loop = self.loop
            if loop.time() - self.flushed_at < self._gap:
                # Flushing back to back: the hub is busy, and one write per subscriber per event is
                # most of its work. Let the events of the next moment gather into the same writes.
                self.handle = loop.call_at(self.flushed_at + self._gap, self._flush)
            else:
                self.handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the dirty outboxes, a slice at a time. An outbox that gets more before its slice comes
        round takes it in the same write; one written already waits for the next round, which comes
        after the usual pause, with whatever else arrives by then."""
        self.handle = None
        loop = self.loop
        flushing = self._flushing
        if flushing is None:
            flushing, self.dirty = self.dirty, []
            self._flushing, self._flush_next = flushing, 0
            self._flush_clocks = wall0, cpu0 = (time.perf_counter(), time.thread_time())
            between = wall0 - self._round_end[0]
            self._busy = (cpu0 - self._round_end[1]) / between if between > 0 else 0.0
            self._round_frames = 0
            if self._quiet(loop.time()):
                self._starved = 0.0  # a hub that had time to idle was not short of CPU then
        start = self._flush_next
        end = start + FLUSH_SLICE
        frames = 0
        write = self._write
        for i in range(start, min(end, len(flushing))):
            frames += write(flushing[i])
        self._round_frames += frames
        if end < len(flushing):
            self._flush_next = end
            self.handle = loop.call_soon(self._flush)
            return
        self._flushing = None
        self.flushed_at = loop.time()
        self._end_round(loop, len(flushing))
        self.schedule()

    def _end_round(self, loop: asyncio.AbstractEventLoop, writes: int) -> None:
        """Set the pause after the round that just ended, and hold the broker's reading if starved."""
        # Between its slices a round always has a callback ready, so the loop never sleeps: the wall
        # time the thread did not run is time spent waiting for the core.
        wall0, cpu0 = self._flush_clocks
        self._round_end = wall1, cpu1 = (time.perf_counter(), time.thread_time())
        wall = wall1 - wall0
        if wall > 0:
            starved = max(0.0, 1 - (cpu1 - cpu0) / wall)
            self._starved += STARVED_SMOOTHING * (starved - self._starved)
        backlogged = is_backlogged(self._busy, self._round_frames, writes, self._starved)
        self._gap = flush_gap(wall, self._starved, backlogged)
        if self._starved > STARVED_NOISE and self._read_on is None:
            self._hold_reading(True)
            self._read_on = loop.call_at(self.flushed_at + self._gap * READ_ON_AT, self._read_again)

    def _read_again(self) -> None:
        self._read_on = None
        self._hold_reading(False)
