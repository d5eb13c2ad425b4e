"""Limits on what a client may send, enforced before anything is parsed.

* :class:`BodyLimit`: an ASGI middleware refusing a request body over ``MAX_BODY_BYTES`` with 413,
  from its Content-Length before a byte is read, or (chunked, no length) as soon as the bytes read
  pass the limit; nothing over the limit is ever held in memory (the rest of a refused body, up to
  ``DRAIN_BYTES``, is read and dropped, so the client can read its 413). It covers every route on the
  listener: the dockyard API and the ECS endpoint (``POST /``).
* ``MAX_DOCUMENTS``: documents per apply/delete (checked by the request model, before any
  document is read), ``MAX_DESIRED_COUNT``: a service's tasks (ECS's default quota of tasks per
  service; a typo of 10**6 would otherwise have the reconcile loop create a million tasks).
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_DOCUMENTS = 1000
MAX_DESIRED_COUNT = 5000
DRAIN_BYTES = 64 * 1024 * 1024  # read and dropped after a refusal, so the client gets its 413 (see _discard)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _refusal(status: int, error: str, hint: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": error, "field": "body", "hint": hint}).encode()


def too_large(max_bytes: int) -> tuple[int, bytes]:
    return _refusal(413, f"request body over {max_bytes} bytes",
                    "split the manifests into several applies")


def check_length(header: bytes | None, max_bytes: int) -> tuple[int, bytes] | None:
    """The refusal a Content-Length header earns, None if it is acceptable (or absent)."""
    if header is None:
        return None
    text = header.decode("latin-1").strip()
    if not text.isdigit():
        return _refusal(400, f"invalid Content-Length {text[:40]!r}", "send the body's length in bytes")
    return too_large(max_bytes) if int(text) > max_bytes else None


class BodyLimit:
    """ASGI middleware: HTTP request bodies of at most ``max_bytes`` reach the app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        refusal = check_length(headers.get(b"content-length"), self.max_bytes)
        unread = refusal is not None  # refused from its headers: the whole body is still coming
        if refusal is None and b"content-length" not in headers and scope.get("method") not in ("GET", "HEAD"):
            # No length given (chunked): read the body here, at most max_bytes of it, and replay it.
            messages: list[Message] = []
            size = 0
            while True:
                msg = await receive()
                messages.append(msg)
                if msg["type"] != "http.request":
                    break
                size += len(msg.get("body", b""))
                if size > self.max_bytes:
                    refusal = too_large(self.max_bytes)
                    unread = bool(msg.get("more_body", False))
                    break
                if not msg.get("more_body", False):
                    break
            if refusal is None:
                receive = _replay(messages, receive)
        if refusal is not None:
            status, body = refusal
            if unread:
                await _discard(receive, DRAIN_BYTES)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


async def _discard(receive: Receive, limit: int) -> None:
    """Read (and drop) what the client is still sending, at most ``limit`` bytes: a server that closes with
    unread bytes in its socket makes the kernel reset the connection, and a client still sending its body
    (httpx, requests) then loses the 413 it was answered. Beyond ``limit`` the reset is the client's lot."""
    read = 0
    while read <= limit:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        read += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def again() -> Message:
        return pending.pop(0) if pending else await receive()
    return again
