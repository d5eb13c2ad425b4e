"""Leader election among the orchestrators sharing a PostgreSQL store (docs/high-availability.md).

One lease row (orchestrator.store_pg): taken in a transaction that also bumps the epoch, renewed in
transactions timed by the database's ``now()``. The renewals run in a thread with a connection of its own, so a
long reconcile pass does not let the lease lapse; SIGSTOP stops that thread too, which is the point.

:meth:`Lease.holds` is what the leader checks before it publishes a desired document: true only while the last
successful renewal, counted from before it was sent, is younger than the lease (monotonic clock, which runs on
while the process is stopped), so a resumed ex-leader publishes nothing even before it learns it lost. Its writes
are refused by the database (the epoch check in every write transaction), whatever its clock says.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

from dockyard import log as dlog
from orchestrator.store_errors import StoreUnavailable
from orchestrator.store_pg import PgStore

LEASE_SECONDS = 3.0


def holder_id(api_url: str) -> str:
    """A lease holder: unique per process, with the API URL standbys forward writes to."""
    return f"{uuid.uuid4().hex[:12]} {api_url}"


def holder_url(holder: str) -> str | None:
    _, _, url = holder.partition(" ")
    return url or None


class Lease:
    def __init__(self, store: PgStore, api_url: str, lease_seconds: float = LEASE_SECONDS,
                 clock=time.monotonic) -> None:
        self.store, self.lease_seconds, self.clock = store, lease_seconds, clock
        self.holder = holder_id(api_url)
        self.renew_every = lease_seconds / 6
        self.valid_until = float("-inf")
        self.lost = asyncio.Event()  # set (in the loop) once another orchestrator holds the lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = dlog.get("leader")

    async def campaign(self, stop: asyncio.Event) -> int | None:
        """Wait until this orchestrator leads (the new epoch) or ``stop`` (None)."""
        shown = None
        while not stop.is_set():
            t0 = self.clock()
            try:
                epoch = await asyncio.to_thread(self.store.lead, self.holder, self.lease_seconds)
            except StoreUnavailable as exc:
                epoch = None
                self.log.warning("standby: the store is unavailable", error=str(exc))
            if epoch is not None:
                self.valid_until = t0 + self.lease_seconds
                self._start_renewals(asyncio.get_running_loop(), epoch)
                return epoch
            lease = await asyncio.to_thread(self._lease)
            current = lease[0] if lease else None
            if current != shown:
                shown = current
                self.log.info("standby: another orchestrator leads", leader=holder_url(current or ""))
            # Try again at the lease's expiry (by the database's clock) if it comes before the next poll.
            wait = self.renew_every if lease is None else min(self.renew_every, max(0.02, lease[2] + 0.02))
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
        return None

    def _lease(self) -> tuple[str, int, float] | None:
        try:
            return self.store.lease()
        except StoreUnavailable:
            return None

    def _current(self) -> str | None:
        lease = self._lease()
        return lease[0] if lease else None

    def holds(self) -> bool:
        return not self.lost.is_set() and self.clock() < self.valid_until

    def leader_url(self) -> str | None:
        """The current leader's API URL, as the lease row says."""
        return holder_url(self._current() or "")

    def _start_renewals(self, loop: asyncio.AbstractEventLoop, epoch: int) -> None:
        renewer = PgStore(self.store.url)
        renewer.epoch, renewer.holder = epoch, self.holder

        def run() -> None:
            try:
                while not self._stop.wait(self.renew_every):
                    t0 = self.clock()
                    try:
                        ok = renewer.renew(self.lease_seconds)
                    except StoreUnavailable as exc:
                        self.log.warning("the lease could not be renewed; retrying", error=str(exc))
                        continue
                    if ok:
                        self.valid_until = t0 + self.lease_seconds
                    else:
                        self.log.error("lost the lease: another orchestrator leads now", epoch=epoch)
                        loop.call_soon_threadsafe(self.lost.set)
                        return
            finally:
                renewer.close()
        self._thread = threading.Thread(target=run, name="lease", daemon=True)
        self._thread.start()

    def close(self, release: bool = True) -> None:
        """Stop renewing; ``release``: give the lease up at once (a clean stop hands over without waiting)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if release and not self.lost.is_set():
            try:
                self.store.release()
            except StoreUnavailable:
                pass
