"""Fencing that cannot be poisoned: what to do when a node shows a desired version we did not publish (pure).

The agent applies a desired document only if its (epoch, generation) is newer than the last it applied, so a
document with a higher epoch than ours (forged, or from a store restored from an older backup, or a fresh store)
fences this orchestrator out for good unless it notices and re-asserts. It notices through two signals:

* a node's status reports an ``(observedEpoch, observedGeneration)`` above anything it can have published to the
  node (``(epoch, node generation)``);
* a ``desired`` document on a node's topic that another client published (the bus subscribes without its own
  messages), or a retained one that is newer than ours.

Re-asserting = raise the epoch above the one seen (in the store, where epochs are made), republish the node's
document, alert. Bounded: an epoch more than ``window`` above ours is not followed (an alert asks the operator to
start with a larger ``--epoch-window``), so a status sent with one stolen node credential cannot push the epoch to
absurd values; and at most one re-assertion per node per ``cooldown`` seconds, so two orchestrators wrongly active
at once do not race their epochs upwards. Only a node with tasks of ours is taken back: a fresh store takes its
nodes back as soon as it places tasks there, and two orchestrators that share a broker (tests, a second install)
do not fight over nodes one of them has nothing for. No I/O, no clock: the controller passes ``now`` and applies the verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EPOCH_WINDOW = 10_000  # how far above our epoch a seen epoch is still followed without an operator's flag
COOLDOWN_SECONDS = 1.0

Version = tuple[int, int]  # (epoch, generation)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok``: nothing to do. ``republish``: the node's retained document is not ours (but older): publish ours
    again, same epoch. ``reassert``: raise our epoch to ``epoch`` and republish. ``refuse``: the seen epoch is
    beyond the window (alert only). ``later``: a re-assertion is due but the node's cooldown runs until ``at``."""

    action: Literal["ok", "republish", "reassert", "refuse", "later"]
    epoch: int = 0
    at: float = 0.0
    reason: str = ""


OK = Verdict("ok")


def newest_ours(epoch: int, node_generation: int) -> Version:
    """The highest version this orchestrator can have published to a node."""
    return (epoch, node_generation)


def judge(seen: Version, ours: Version, foreign: bool, now: float, last_reassert_at: float | None,
          window: int = EPOCH_WINDOW, cooldown: float = COOLDOWN_SECONDS, has_tasks: bool = True) -> Verdict:
    """The verdict on a version ``seen`` for a node to which we published at most ``ours``.

    ``foreign``: the version comes from a desired document another client published (not our own, not a retained
    one from before this session); any such document must be overwritten even if older than ours, since an agent
    that restarts applies whatever is retained. ``has_tasks``: the node has active tasks of ours (else there is
    nothing to take back)."""
    if seen <= ours:
        return Verdict("republish", reason="a desired document not published by this orchestrator") if foreign else OK
    if not has_tasks:
        return OK
    epoch = ours[0]
    if seen[0] - epoch > window:
        return Verdict("refuse", reason=f"epoch {seen[0]} is more than {window} above ours ({epoch}); start the "
                                        "orchestrator with a larger --epoch-window to take the node back")
    if last_reassert_at is not None and now < last_reassert_at + cooldown:
        return Verdict("later", at=last_reassert_at + cooldown)
    return Verdict("reassert", epoch=max(seen[0], epoch) + 1,
                   reason=f"the node shows version {seen[0]}.{seen[1]}, newer than ours ({ours[0]}.{ours[1]})")
