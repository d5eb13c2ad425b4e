"""A service's logs: one relayed logs request per task container (:mod:`orchestrator.relay`), cut into lines,
merged by Docker's timestamps, or interleaved as they arrive when following.

Bounds: each source is one relay Call (its queue holds the agent's send window, and the agent waits for
credit), the merge holds one line per source, and the interleaving queue :data:`QUEUE` lines. A silent node
ends its own source only: when following, each source is read by a task of its own; when merging, a source
whose node says nothing is ended by the relay's timeouts (10 s to the first answer, 60 s between messages)
with an error line, and the others go on. Closing the stream (the client went away) cancels every request.
"""
from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from dockyard.wire_rr import Chunk, LogsRequest
from orchestrator.core.service_logs import Lines, Source, stamp
from orchestrator.relay import Relay, RelayError

QUEUE = 256  # lines waiting for the client when following


@dataclass
class Item:
    """What a source yields: a line, an error, or its end."""
    index: int
    kind: Literal["line", "error", "end"]
    stream: str = "stdout"
    data: str = ""
    key: str = ""  # the line's time (core.service_logs.stamp), the source's last one for an unstamped piece
    code: str | None = None
    truncated: bool = False


async def source_items(relay: Relay, cluster: str, index: int, src: Source, req: LogsRequest,
                       strip: bool) -> AsyncGenerator[Item, None]:
    """One task container's log lines. ``req`` asks for timestamps (the merge orders by them);
    ``strip``: drop them from the lines (the user did not ask for them)."""
    try:
        call = await relay.open(cluster, src.node_id, req)
    except RelayError as e:
        yield Item(index, "error", data=str(e), code="Unavailable")
        yield Item(index, "end")
        return
    cut = {"stdout": Lines(), "stderr": Lines()}
    last = ""

    def line(stream: str, text: str) -> Item:
        nonlocal last
        got = stamp(text)
        if got is not None:
            last = got[0]
            if strip:
                text = got[1]
        return Item(index, "line", stream, text, last)

    try:
        async with aclosing(call.messages()) as gen:
            async for msg in gen:
                if isinstance(msg, Chunk):
                    for text in cut[msg.stream].feed(msg.data):
                        yield line(msg.stream, text)
                    continue
                for stream, lines in cut.items():
                    for text in lines.flush():
                        yield line(stream, text)
                if msg.code and not (src.stopped and msg.code == "TaskNotOnNode"):  # cleaned up: nothing to say
                    yield Item(index, "error", data=msg.error or msg.code, code=msg.code)
                yield Item(index, "end", truncated=msg.truncated)
                return
    except RelayError as e:
        yield Item(index, "error", data=str(e), code="Timeout")
    yield Item(index, "end")


async def merged(sources: Sequence[AsyncIterator[Item]]) -> AsyncGenerator[Item, None]:
    """The sources' lines in time order (each source is in order already), their errors and ends as met."""
    side: list[Item] = []

    async def head(i: int) -> Item | None:
        while True:
            try:
                item = await sources[i].__anext__()
            except StopAsyncIteration:
                return None
            if item.kind == "line":
                return item
            side.append(item)

    heap: list[tuple[str, int, int, Item]] = []
    n = 0
    for i, item in enumerate(await asyncio.gather(*(head(i) for i in range(len(sources))))):
        if item is not None:
            heap.append((item.key, i, n, item))
            n += 1
    heapq.heapify(heap)
    while heap:
        while side:
            yield side.pop(0)
        _, i, _, item = heapq.heappop(heap)
        yield item
        nxt = await head(i)
        if nxt is not None:
            heapq.heappush(heap, (nxt.key, i, n, nxt))
            n += 1
    while side:
        yield side.pop(0)


async def interleaved(sources: Sequence[AsyncIterator[Item]], maxsize: int = QUEUE) -> AsyncGenerator[Item, None]:
    """The sources' items as they arrive (following): each source is read by a task of its own, so a
    silent one holds up nobody; a slow client fills the queue and the agents wait for credit."""
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize)

    async def pump(i: int, src: AsyncIterator[Item]) -> None:
        try:
            async for item in src:
                await queue.put(item)
        except Exception as e:  # noqa: BLE001 - one source's failure ends that source only
            await queue.put(Item(i, "error", data=f"{type(e).__name__}: {e}", code="EngineError"))
        await queue.put(None)

    loop = asyncio.get_running_loop()
    pumps = [loop.create_task(pump(i, s)) for i, s in enumerate(sources)]
    try:
        left = len(pumps)
        while left:
            item = await queue.get()
            if item is None:
                left -= 1
            else:
                yield item
    finally:
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def close_all(sources: Sequence[AsyncIterator[Item]]) -> None:
    """Close every source's generator (cancels their requests)."""
    for s in sources:
        aclose = getattr(s, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - closing is best effort; the agents' idle timers are the backstop
                pass
