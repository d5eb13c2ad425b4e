"""orchestrator.limits.BodyLimit reads what is left of a refused body (so a client still sending it gets the 413
instead of a reset connection) and never waits for more after the body's last part."""
from __future__ import annotations

import asyncio

from orchestrator.limits import MAX_BODY_BYTES, BodyLimit


async def _app(scope, receive, send):  # noqa: ANN001
    raise AssertionError("a refused request must not reach the app")


def run(messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """(status answered, messages left unread); a receive past the given ones would block: a hang fails it."""
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # as a server does after the last part: it waits for a disconnect
        raise AssertionError("unreachable")

    sent: list[dict] = []

    async def send(m: dict) -> None:
        sent.append(m)

    async def go() -> None:
        await asyncio.wait_for(BodyLimit(_app)({"type": "http", "method": "POST", "headers": headers}, receive, send), 5)
    asyncio.run(go())
    return sent[0]["status"], len(pending)


def test_a_body_refused_by_its_length_is_read_to_its_end_before_the_413():
    part = {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}
    last = {"type": "http.request", "body": b"", "more_body": False}
    assert run([part] * 12 + [last], [(b"content-length", str(12 << 20).encode())]) == (413, 0)


def test_a_chunked_body_over_the_limit_is_drained_and_one_ending_at_the_limit_is_not_waited_on():
    part = {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}
    last = {"type": "http.request", "body": b"", "more_body": False}
    assert run([part] * 12 + [last], []) == (413, 0)
    whole = {"type": "http.request", "body": b"x" * (MAX_BODY_BYTES + 1), "more_body": False}
    assert run([whole], []) == (413, 0)  # nothing more to read: no wait for a part that never comes
