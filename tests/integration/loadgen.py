"""A bounded HTTP load generator for load-balancer tests and benchmarks: steady requests to one URL
from two clients at once (keep-alive, and a new connection per request), at most ``rate`` per
second each, in a thread, until stopped or ``limit`` seconds passed (so it stops by itself)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class Load:
    url: str
    rate: float = 40.0
    limit: float = 180.0
    ok: Counter = field(default_factory=Counter)  # body -> count
    bad: list = field(default_factory=list)  # (time, status or "error", detail)
    first_seen: dict = field(default_factory=dict)  # body -> monotonic time of its first answer
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    async def _client(self, keepalive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keepalive else 0)
        async with httpx.AsyncClient(limits=limits, timeout=10.0) as c:
            t_end = time.monotonic() + self.limit
            while not self.stop.is_set() and time.monotonic() < t_end:
                t0 = time.monotonic()
                self.sent += 1
                try:
                    r = await c.get(self.url, headers={} if keepalive else {"Connection": "close"})
                    if r.status_code == 200:
                        body = r.text.strip()
                        self.ok[body] += 1
                        self.first_seen.setdefault(body, time.monotonic())
                    else:
                        self.bad.append((round(time.time(), 2), r.status_code, r.text[:40]))
                except httpx.HTTPError as e:
                    self.bad.append((round(time.time(), 2), "error", f"{type(e).__name__}: {e}"))
                await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - t0)))

    async def _main(self) -> None:
        await asyncio.gather(self._client(True), self._client(False))

    def __enter__(self) -> Load:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def snapshot(self) -> Counter:
        return Counter(self.ok)

    @property
    def total(self) -> int:
        return sum(self.ok.values()) + len(self.bad)

    @property
    def failed(self) -> list[str]:
        """The failures' kinds (an HTTP status, or the exception's name)."""
        return [str(status) if status != "error" else detail.split(":", 1)[0] for _, status, detail in self.bad]
