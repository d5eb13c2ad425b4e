"""Leader election on a PostgreSQL store: the lease row, the epoch bumped with it, fenced writes (a real
PostgreSQL 15), and the leader's publish gate (orchestrator.leader)."""
from __future__ import annotations

import asyncio
import time

import pytest
from test_store import records

from orchestrator.leader import Lease, holder_url
from orchestrator.store_pg import Fenced, PgStore


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_leads_the_other_takes_over_after_expiry_and_the_old_one_is_fenced(pg_url):
    a, b = PgStore(pg_url), PgStore(pg_url)
    cluster, _td, _svc, task, _node = records()
    try:
        first = a.lead("a http://a:1", 0.6)
        assert first is not None and b.lead("b http://b:1", 0.6) is None
        assert b.lease()[:2] == ("a http://a:1", first)
        a.write([("cluster", cluster)])  # the leader writes
        assert a.renew(0.6)
        wait_until(lambda: b.lease()[2] < 0)  # a "paused": its lease runs out by the database's clock
        second = b.lead("b http://b:1", 5)
        assert second == first + 1 and b.get_meta("epoch") == str(second)
        with pytest.raises(Fenced, match=f"epoch {first} no longer leads"):
            a.write([("task", task)])
        with pytest.raises(Fenced):
            a.raise_epoch(second + 5)  # cannot re-assert itself back over the new leader
        with pytest.raises(Fenced):
            a.set_meta("x", "y")
        assert not a.renew(5) and a.task(task.taskId) is None
        b.write([("task", task)])
        assert b.task(task.taskId) == task
        assert b.raise_epoch(second + 2) == second + 2 and b.lease()[1] == second + 2  # the leader's re-assert
        b.write([("task", task)])  # still leads at the raised epoch
        assert b.renew(5)  # and renews its lease at it
    finally:
        a.close()
        b.close()


def test_a_live_lease_is_renewed_and_released_on_a_clean_stop(pg_url):
    a, b = PgStore(pg_url), PgStore(pg_url)
    try:
        epoch = a.lead("a", 1.0)
        for _ in range(4):
            time.sleep(0.4)
            assert a.renew(1.0) and b.lead("b", 1.0) is None  # renewed within the lease: never taken
        a.release()
        assert b.lead("b", 1.0) == epoch + 1  # at once, without waiting for the expiry
    finally:
        a.close()
        b.close()


def test_the_lease_gate_closes_when_the_renewals_stop_and_opens_for_nobody_after_a_loss(pg_url):
    async def main() -> None:
        a, b = PgStore(pg_url), PgStore(pg_url)
        la, lb = Lease(a, "http://127.0.0.1:1", lease_seconds=0.6), Lease(b, "http://127.0.0.1:2", lease_seconds=0.6)
        stop = asyncio.Event()
        try:
            assert await la.campaign(stop) is not None and la.holds()
            standby = asyncio.create_task(lb.campaign(stop))
            await asyncio.sleep(1.5)
            assert la.holds() and not standby.done()  # the renewal thread keeps it
            assert lb.leader_url() == "http://127.0.0.1:1"
            la._stop.set()  # the leader's renewals stop (a pause): the gate closes by its own clock...
            await asyncio.wait_for(standby, 10)  # ...and the standby takes over
            assert not la.holds() and lb.holds() and holder_url(b.lease()[0]) == "http://127.0.0.1:2"
        finally:
            stop.set()
            la.close(release=False)
            lb.close()
            a.close()
            b.close()
    asyncio.run(main())


def test_a_renewal_that_finds_another_leader_sets_lost(pg_url):
    async def main() -> None:
        a, b = PgStore(pg_url), PgStore(pg_url)
        la = Lease(a, "http://a:1", lease_seconds=0.6)
        try:
            epoch = await la.campaign(asyncio.Event())
            b.db.execute("UPDATE leader SET holder = 'b', epoch = epoch + 1")  # another took it
            await asyncio.wait_for(la.lost.wait(), 5)
            assert not la.holds() and epoch is not None
        finally:
            la.close()
            a.close()
            b.close()
    asyncio.run(main())
