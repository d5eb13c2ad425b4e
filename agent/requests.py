"""The agent's side of request/response (logs, exec): serve requests on the node's ``requests`` topic.

:mod:`dockyard.wire_rr` is the contract. Each request runs in a task of its own with a bounded
send window: the agent publishes at most ``window`` chunks beyond the requester's last
acknowledgement and ends the request (``RequesterGone``) when it hears nothing of it for
``IDLE_SECONDS``, so a slow or gone requester costs one waiting task, never the agent's loops. The
decisions (which container, how to cut data into chunks, whether a response topic is ours) are the
pure functions at the top; :class:`RequestServer` is the shell; :class:`DockerEngine` reads logs
and runs exec through aiodocker.
"""
from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from agent.runtime import ActualContainer
from dockyard.wire_rr import (
    CHUNK_BYTES,
    IDLE_SECONDS,
    MAX_OPEN,
    REQUEST,
    Cancel,
    Chunk,
    Credit,
    End,
    ErrorCode,
    ExecRequest,
    LogsRequest,
    responses_prefix,
)


# ---- pure ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refused:
    code: ErrorCode
    error: str


def pick_container(actual: Sequence[ActualContainer], node_id: str, task_id: str,
                   name: str | None) -> ActualContainer | Refused:
    """The container of ``task_id`` named ``name`` (None: the task's only one) on this node."""
    cs = sorted((c for c in actual if c.node == node_id and c.task_id == task_id), key=lambda c: c.container_name)
    if not cs:
        return Refused("TaskNotOnNode", f"task {task_id} has no containers on node {node_id} "
                                        "(never started here, or its containers were cleaned up)")
    names = [c.container_name for c in cs]
    if name is None:
        if len(cs) > 1:
            return Refused("ContainerRequired", f"task {task_id} has {len(cs)} containers: {', '.join(names)}; "
                                                "name one with --container")
        return cs[0]
    for c in cs:
        if c.container_name == name:
            return c
    return Refused("ContainerNotFound", f"task {task_id} has no container {name!r} (it has: {', '.join(names)})")


def split_text(text: str, limit: int = CHUNK_BYTES) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` UTF-8 bytes, never inside a character."""
    out: list[str] = []
    data = text.encode()
    while len(data) > limit:
        cut = limit
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte: back to the character's start
            cut -= 1
        out.append(data[:cut].decode())
        data = data[cut:]
    if data or not out:
        out.append(data.decode())
    return [p for p in out if p]


def clip(text: str, room: int) -> tuple[str, bool]:
    """(``text`` cut to at most ``room`` UTF-8 bytes, whether it was cut)."""
    data = text.encode()
    if len(data) <= room:
        return text, False
    return data[:max(0, room)].decode(errors="ignore"), True


def response_topic_ok(topic: str | None, cluster: str, node_id: str) -> bool:
    """Answer only under the node's own ``responses/`` (what its broker role may write)."""
    prefix = responses_prefix(cluster, node_id)
    if not topic:
        return False
    return topic.startswith(prefix) and len(topic) > len(prefix) and "+" not in topic and "#" not in topic


# ---- the engine seam -------------------------------------------------------------------------
class Engine(Protocol):
    def logs(self, container_id: str, req: LogsRequest) -> AsyncIterator[str]: ...

    def exec(self, container_id: str, command: list[str]) -> ExecRun: ...


class ExecRun(Protocol):
    def output(self) -> AsyncIterator[tuple[str, str]]: ...  # (stream, text)

    async def exit_code(self) -> int | None: ...


class EngineFailure(Exception):
    def __init__(self, code: ErrorCode, error: str) -> None:
        super().__init__(error)
        self.code, self.error = code, error


# ---- the shell -------------------------------------------------------------------------------
Publish = Callable[[str, bytes, bytes], Awaitable[None]]  # (topic, payload, correlation data)


class _Open:
    """One request being served: its send window."""

    def __init__(self, topic: str, corr: bytes, window: int) -> None:
        self.topic, self.corr, self.window = topic, corr, window
        self.seq = 0  # the next chunk's seq
        self.acked = -1
        self.heard = time.monotonic()
        self.credit = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.gone = False  # set by the watchdog: the requester went silent


class RequestServer:
    """Serves :mod:`dockyard.wire_rr` requests for one node. ``containers()``: the last container list."""

    def __init__(self, cluster: str, node_id: str, engine: Engine, publish: Publish,
                 containers: Callable[[], Sequence[ActualContainer]], log: Any, idle_seconds: float = IDLE_SECONDS) -> None:
        self.cluster, self.node_id, self.engine, self.publish = cluster, node_id, engine, publish
        self.containers, self.log, self.idle_seconds = containers, log, idle_seconds
        self.open: dict[bytes, _Open] = {}

    def handle(self, payload: bytes, response_topic: str | None, corr: bytes | None) -> None:
        """A message on the requests topic (never blocks: requests run in tasks of their own)."""
        if not corr:
            self.log.warning("ignoring a request without correlation data")
            return
        try:
            req = REQUEST.validate_json(payload)
        except ValidationError as e:
            req = None
            why = str(e).splitlines()[0]
        cur = self.open.get(corr)
        if isinstance(req, Credit | Cancel) or (req is None and cur is not None):
            if cur is None:
                return
            cur.heard = time.monotonic()
            if isinstance(req, Credit):
                cur.acked = max(cur.acked, req.ack)
                cur.credit.set()
            elif isinstance(req, Cancel) and cur.task is not None:
                cur.task.cancel()
            return
        if not response_topic_ok(response_topic, self.cluster, self.node_id):
            self.log.warning("ignoring a request whose response topic is not this node's", topic=response_topic)
            return
        assert response_topic is not None
        if cur is not None:
            return  # a duplicate (QoS 1 redelivery)
        op = _Open(response_topic, corr, req.window if isinstance(req, LogsRequest | ExecRequest) else 1)
        if req is None:
            self._spawn(op, self._refuse(op, "BadRequest", f"invalid request: {why}"))
        elif len(self.open) >= MAX_OPEN:
            self._spawn(op, self._refuse(op, "Busy", f"node {self.node_id} serves {MAX_OPEN} requests already; retry"),
                        track=False)
        else:
            assert isinstance(req, LogsRequest | ExecRequest)
            self._spawn(op, self._serve(op, req))

    def _spawn(self, op: _Open, coro: Awaitable[None], track: bool = True) -> None:
        async def run() -> None:
            try:
                await coro
            finally:
                if self.open.get(op.corr) is op:
                    del self.open[op.corr]

        if track:
            self.open[op.corr] = op
        op.task = asyncio.get_running_loop().create_task(run())

    async def close(self) -> None:
        tasks = [op.task for op in self.open.values() if op.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- serving ------------------------------------------------------------------------------
    async def _send(self, op: _Open, msg: Chunk | End) -> None:
        await self.publish(op.topic, msg.model_dump_json(exclude_defaults=False).encode(), op.corr)

    async def _refuse(self, op: _Open, code: ErrorCode, error: str) -> None:
        await self._send(op, End(seq=op.seq, code=code, error=error))

    async def _chunk(self, op: _Open, stream: str, data: str) -> None:
        """Send one chunk once the window allows; RequesterGone after idle_seconds without a word."""
        while op.seq - op.acked > op.window:
            op.credit.clear()
            wait = self.idle_seconds - (time.monotonic() - op.heard)
            if wait <= 0:
                raise EngineFailure("RequesterGone", "no credit from the requester")
            try:
                await asyncio.wait_for(op.credit.wait(), wait)
            except TimeoutError:
                pass
        await self._send(op, Chunk(seq=op.seq, stream=stream, data=data))  # type: ignore[arg-type]
        op.seq += 1

    async def _serve(self, op: _Open, req: LogsRequest | ExecRequest) -> None:
        picked = pick_container(self.containers(), self.node_id, req.taskId, req.container)
        if isinstance(picked, Refused):
            await self._refuse(op, picked.code, picked.error)
            return
        if isinstance(req, ExecRequest) and not picked.running:
            await self._refuse(op, "ContainerNotRunning", f"container {picked.container_name} of task {req.taskId} "
                                                          f"is {picked.state}, not running")
            return
        watchdog = asyncio.get_running_loop().create_task(self._watch(op))
        end = End(seq=0)
        try:
            sent = 0
            if isinstance(req, LogsRequest):
                source = self._tagged(self.engine.logs(picked.id, req))
                run = None
            else:
                run = self.engine.exec(picked.id, req.command)
                source = run.output()
            async with asyncio.timeout(req.timeout if isinstance(req, ExecRequest) else None):
                async for stream, text in source:
                    text, cut = clip(text, req.limitBytes - sent)
                    for piece in split_text(text):
                        await self._chunk(op, stream, piece)
                    sent += len(text.encode())
                    if cut:
                        end.truncated = True
                        break
            if run is not None and not end.truncated:
                end.exitCode = await run.exit_code()
        except TimeoutError:
            end.code, end.error = "Timeout", f"the command ran longer than {req.timeout:g} s (its output was cut there)" \
                if isinstance(req, ExecRequest) else "timed out"
        except EngineFailure as e:
            end.code, end.error = e.code, e.error
        except asyncio.CancelledError:
            if not op.gone:
                raise  # cancelled by the requester, or the agent stops: nothing to tell
            end.code, end.error = "RequesterGone", "no word from the requester"
        except Exception as e:  # noqa: BLE001 - an engine error ends this request only
            end.code, end.error = "EngineError", f"{type(e).__name__}: {e}"
        finally:
            watchdog.cancel()
        if end.code == "RequesterGone":
            self.log.info("request ended: requester gone", taskId=req.taskId, kind=req.kind)
            return
        end.seq = op.seq
        try:
            await self._send(op, end)
        except Exception as e:  # noqa: BLE001
            self.log.warning("request end not sent", error=str(e))

    async def _tagged(self, lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
        async for text in lines:
            yield "stdout", text

    async def _watch(self, op: _Open) -> None:
        """Cancel the request when the requester went silent (a follow with nothing to send sees no credit
        wait, so the window alone would never notice)."""
        while True:
            left = self.idle_seconds - (time.monotonic() - op.heard)
            if left <= 0:
                op.gone = True
                if op.task is not None:
                    op.task.cancel()
                return
            await asyncio.sleep(left)


# ---- Docker ------------------------------------------------------------------------------------
class DockerEngine:
    """Logs and exec through aiodocker (the agent's engine client)."""

    def __init__(self, docker: Any) -> None:
        self.docker = docker

    async def logs(self, container_id: str, req: LogsRequest) -> AsyncIterator[str]:
        import aiodocker
        from aiodocker.multiplexed import multiplexed_result_stream

        params: dict[str, Any] = {"stdout": "1", "stderr": "1", "follow": "1" if req.follow else "0",
                                  "timestamps": "1" if req.timestamps else "0"}
        if req.tail is not None:
            params["tail"] = str(req.tail)
        if req.since is not None:
            params["since"] = f"{req.since:.6f}"
        try:
            info = await self.docker.containers.container(container_id).show()
        except aiodocker.DockerError as e:
            raise EngineFailure("ContainerGone", f"container {container_id[:12]} is gone: {e.message}") from None
        tty = bool(info.get("Config", {}).get("Tty"))
        async with self.docker._query(f"containers/{container_id}/logs", method="GET", params=params,
                                      timeout=self.docker._resolve_long_running_timeout(None)) as resp:
            async for text in multiplexed_result_stream(resp, is_tty=tty):
                yield text

    def exec(self, container_id: str, command: list[str]) -> DockerExec:
        return DockerExec(self.docker, container_id, command)


class DockerExec:
    def __init__(self, docker: Any, container_id: str, command: list[str]) -> None:
        self.docker, self.container_id, self.command = docker, container_id, command
        self._exec: Any = None

    async def output(self) -> AsyncIterator[tuple[str, str]]:
        import aiodocker

        try:
            self._exec = await self.docker.containers.container(self.container_id).exec(
                self.command, stdout=True, stderr=True, stdin=False, tty=False)
        except aiodocker.DockerError as e:
            code: ErrorCode = "ContainerGone" if e.status == 404 else "EngineError"
            raise EngineFailure(code, f"exec failed: {e.message}") from None
        decoders = {1: codecs.getincrementaldecoder("utf-8")("replace"),
                    2: codecs.getincrementaldecoder("utf-8")("replace")}
        async with self._exec.start(detach=False) as stream:
            while (msg := await stream.read_out()) is not None:
                text = decoders.get(msg.stream, decoders[1]).decode(msg.data)
                if text:
                    yield ("stderr" if msg.stream == 2 else "stdout"), text

    async def exit_code(self) -> int | None:
        if self._exec is None:
            return None
        for _ in range(50):  # the exit code lands just after the stream ends
            info = await self._exec.inspect()
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if code is not None else None
            await asyncio.sleep(0.05)
        return None


def serve_requests(agent: Any) -> RequestServer | None:
    """Hook a RequestServer into an :class:`agent.main.Agent` (Docker runtime only; the hollow one has no logs)."""
    if agent.rt.name != "docker":
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    session = agent.session

    async def publish(topic: str, payload: bytes, corr: bytes) -> None:
        client = session.client
        if client is None:
            raise EngineFailure("RequesterGone", "the broker connection is down")
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = corr
        await client.publish(topic, payload, qos=1, properties=props)

    server = RequestServer(agent.cfg.cluster, agent.node_id, DockerEngine(agent.rt.docker), publish,
                           lambda: agent.state.actual, agent.log.bind(component="requests"))
    session.on_request = server.handle
    return server
