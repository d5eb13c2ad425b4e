"""The cyclic garbage collector's policy for both daemons, in one place.

Both hold many long-lived objects (records, reports, documents) and allocate more with every
message; almost all of it is freed by reference counting (records form no cycles). CPython's
default thresholds (700, 10, 10) scan every object that survives a young collection again in
each collection of the middle generation, and the churn of tasks that live seconds to minutes
sets off full collections of the whole heap: a third of the orchestrator's CPU in
bench/scale.py, the event loop blocked ~140 ms each time. So:

- what start-up built (modules, the loaded state) is frozen: never scanned again;
- the young generation is collected every 10,000 net allocations, as before;
- the middle one on a timer (``collect_middle``, every 60 s) instead of after 10 young
  collections: an object that survives its young collection is scanned once more within a
  minute, not again and again while a burst of placements runs (bench/core_cpu.py: 0.45 ->
  0.18 s of GC per 10k placements); cyclic garbage that outlived its young collection waits
  at most that long;
- the old one after 10 of those (CPython's rule: and only once the long-lived heap grew by a
  quarter).
docs/benchmarks.md has the figures."""
from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

# The middle generation's count threshold is only a backstop for a process that never runs
# collect_middle (1,000 young collections: 10 M net allocations).
THRESHOLDS = (10_000, 1_000, 10)
MIDDLE_SECONDS = 60.0


def tune(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Freeze the heap as it is now and set the collection thresholds (call once start-up is done)."""
    gc.freeze()
    gc.set_threshold(*thresholds)


async def collect_middle(interval: float = MIDDLE_SECONDS) -> None:
    """Collect the young and middle generations every ``interval`` seconds (a task for the
    daemon's lifetime; cancel it to stop)."""
    while True:
        await asyncio.sleep(interval)
        gc.collect(1)


def timer(record: Callable[[int, float], None] | None = None,
          clock: Callable[[], float] = time.process_time) -> dict[int, float]:
    """Seconds spent in collections, by generation, from now on (a gc callback): the returned
    dict, and ``record(generation, seconds)`` after each collection when given (a metric)."""
    spent = {0: 0.0, 1: 0.0, 2: 0.0}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock()
        else:
            took = clock() - started[0]
            spent[info["generation"]] += took
            if record is not None:
                record(info["generation"], took)

    gc.callbacks.append(callback)
    return spent
