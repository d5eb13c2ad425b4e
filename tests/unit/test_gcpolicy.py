"""dockyard.gcpolicy: the GC timer reports each collection; collect_middle collects the middle
generation on its timer (tune() itself is left to the daemons: it changes the process's GC)."""
from __future__ import annotations

import asyncio
import gc

from dockyard import gcpolicy


def test_timer_records_each_collection_by_generation():
    seen: list[tuple[int, float]] = []
    spent = gcpolicy.timer(lambda generation, seconds: seen.append((generation, seconds)))
    try:
        gc.collect(1)
        gc.collect(2)
        assert [g for g, _ in seen[-2:]] == [1, 2] and all(s >= 0 for _, s in seen)
        assert spent[1] >= 0 and spent[2] >= 0
    finally:
        gc.callbacks.pop()


async def test_collect_middle_collects_generation_one_on_its_timer():
    collected: list[int] = []

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["generation"])

    gc.callbacks.append(cb)
    task = asyncio.create_task(gcpolicy.collect_middle(0.01))
    try:
        async with asyncio.timeout(5):
            while collected.count(1) < 2:
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        gc.callbacks.remove(cb)
    assert collected.count(1) >= 2
