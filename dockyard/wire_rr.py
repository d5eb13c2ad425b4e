"""The wire contract's request/response part (logs, exec): MQTT 5 response topic + correlation data.

Topics (per node, so the node's broker role confines it, see :mod:`dockyard.dynsec`):

* ``dockyard/v1/<cluster>/nodes/<node>/requests``  requester -> agent, QoS 1: a :class:`LogsRequest` or
  :class:`ExecRequest` (MQTT 5 ``ResponseTopic`` and ``CorrelationData`` set), then :class:`Credit` and
  :class:`Cancel` messages with the same correlation data.
* ``dockyard/v1/<cluster>/nodes/<node>/responses/<requester>``  agent -> requester, QoS 1: :class:`Chunk`
  messages, then one :class:`End`, each with the request's correlation data. The agent answers only on
  a response topic under its own ``responses/`` (its role may write nothing else).

Bounds (the broker never carries an unbounded stream): a chunk holds at most :data:`CHUNK_BYTES` of
data; the agent sends at most ``window`` chunks beyond the last one the requester acknowledged (a
:class:`Credit` carries the highest ``seq`` received) and waits for credit otherwise; a response
ends (``truncated``) after ``limitBytes``. The requester sends a Credit at least every
:data:`PING_SECONDS`; an agent that hears nothing of a request for :data:`IDLE_SECONDS` ends it, so
a gone requester never blocks an agent.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from dockyard.wire import Wire, node_topic

REQUESTS = "requests"
RESPONSES = "responses"
CHUNK_BYTES = 16 * 1024  # data per Chunk (UTF-8 bytes, before JSON escaping)
WINDOW = 16  # chunks in flight beyond the last acknowledged one
DEFAULT_LIMIT_BYTES = 8 * 1024 * 1024  # one response's data unless the request asks for less/more
MAX_LIMIT_BYTES = 64 * 1024 * 1024
PING_SECONDS = 5.0  # the requester's credit interval while a request is open
IDLE_SECONDS = 20.0  # an agent ends a request it heard nothing of for this long
MAX_OPEN = 32  # requests one agent serves at once (more: Busy)
MAX_EXEC_SECONDS = 3600.0

# Why a request failed (End.code); the orchestrator's API maps them to HTTP statuses.
ErrorCode = Literal["TaskNotOnNode", "ContainerNotFound", "ContainerRequired", "ContainerNotRunning",
                    "ContainerGone", "Busy", "Timeout", "RequesterGone", "BadRequest", "EngineError"]


def requests_topic(cluster: str, node_id: str) -> str:
    return node_topic(cluster, node_id, REQUESTS)


def responses_prefix(cluster: str, node_id: str) -> str:
    """Every response topic of the node starts with this (its role may publish under it only)."""
    return node_topic(cluster, node_id, RESPONSES) + "/"


def responses_topic(cluster: str, node_id: str, requester: str) -> str:
    return responses_prefix(cluster, node_id) + requester


class _Open(Wire):
    taskId: str = Field(min_length=1, max_length=128)
    container: str | None = Field(default=None, max_length=255)  # None: the task's only container
    window: int = Field(default=WINDOW, ge=1, le=256)
    limitBytes: int = Field(default=DEFAULT_LIMIT_BYTES, ge=1, le=MAX_LIMIT_BYTES)


class LogsRequest(_Open):
    kind: Literal["logs"] = "logs"
    tail: int | None = Field(default=None, ge=0)  # the last N lines; None: all
    since: float | None = None  # epoch seconds
    follow: bool = False
    timestamps: bool = False


class ExecRequest(_Open):
    kind: Literal["exec"] = "exec"
    command: list[str] = Field(min_length=1, max_length=1024)
    timeout: float = Field(default=300.0, gt=0, le=MAX_EXEC_SECONDS)  # the agent kills nothing: it stops reading


class Credit(Wire):
    kind: Literal["credit"] = "credit"
    ack: int = -1  # the highest Chunk.seq received (-1: none yet)


class Cancel(Wire):
    kind: Literal["cancel"] = "cancel"


Request = Annotated[LogsRequest | ExecRequest | Credit | Cancel, Field(discriminator="kind")]
REQUEST = TypeAdapter(Request)


class Chunk(Wire):
    kind: Literal["chunk"] = "chunk"
    seq: int
    stream: Literal["stdout", "stderr"] = "stdout"
    data: str


class End(Wire):
    kind: Literal["end"] = "end"
    seq: int
    exitCode: int | None = None  # exec: the command's exit code
    code: ErrorCode | None = None  # None: success
    error: str | None = None
    truncated: bool = False  # limitBytes reached


Response = Annotated[Chunk | End, Field(discriminator="kind")]
RESPONSE = TypeAdapter(Response)
