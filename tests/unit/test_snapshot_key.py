"""orchestrator.bus.snapshot_key: the positional cut of a snapshot's seq, usage and ts gives
exactly what the regular expressions give (the repeat check compares these keys)."""
from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.wire import ContainerReport, StatusDoc, TaskReport, TaskUsage
from orchestrator.bus import _SEQ_TS, _USAGE, snapshot_key


def by_regex(raw: bytes) -> tuple[bytes, bytes | None]:
    m = _USAGE.search(raw)
    return _SEQ_TS.sub(b"", raw if m is None else raw[:m.start()] + raw[m.end():]), (m.group(1) if m else None)


def doc(tasks: int, usage: bool | None, seq: int = 7, ts: float | None = None, reason: str = "") -> bytes:
    reports = [TaskReport(taskId=f"t{i}", lastStatus="RUNNING", stoppedReason=reason or None,
                          containers=[ContainerReport(name="app", lastStatus="RUNNING", dockerId=f"d{i}")])
               for i in range(tasks)]
    samples = None if usage is None else ([TaskUsage(taskId=f"t{i}", cpu=1.5, memory=100) for i in range(tasks)]
                                          if usage else [])
    return StatusDoc(nodeId="n1", bootId="b1", seq=seq, kind="snapshot", tasks=reports, usage=samples,
                     ts=time.time() if ts is None else ts).model_dump_json().encode()


def test_the_cut_equals_the_expressions_with_and_without_usage():
    for usage in (None, False, True):
        raw = doc(3, usage)
        assert snapshot_key(raw) == by_regex(raw)
    key, samples = snapshot_key(doc(2, True))
    assert samples is not None and samples.startswith(b"[{") and b'"seq"' not in key and b'"ts"' not in key


def test_a_repeat_differs_only_in_seq_ts_and_usage():
    a, b = doc(4, True, seq=1, ts=1.0), doc(4, False, seq=999, ts=2.5e9)
    assert snapshot_key(a)[0] == snapshot_key(b)[0]
    assert snapshot_key(doc(4, None))[0] != snapshot_key(doc(5, None))[0]


def test_strings_that_look_like_members_fall_back_to_the_expressions():
    for reason in ('"seq":5,', ',"usage":[1]', ',"ts":1}', "]"):
        raw = doc(2, True, reason=reason)
        assert snapshot_key(raw) == by_regex(raw)
    odd = b'{"nodeId":"n","bootId":"b","seq":3,"kind":"snapshot","tasks":[],"x":{"seq":4,"y":1},"ts":1.5}'
    assert snapshot_key(odd) == by_regex(odd)  # a second "seq" member: decided by the expressions


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([b'"seq":12,', b'"seq":,', b'"seq":1', b""]),
       st.sampled_from([b',"usage":null', b',"usage":[{"a":1}]', b',"usage":[]]', b',"usage":{}', b""]),
       st.sampled_from([b',"ts":1.5}', b',"ts":x}', b',"ts":1e9}', b"}", b',"ts":1.5}\n']))
def test_any_bytes_give_the_expressions_answer(middle, seq, usage, tail):
    raw = b'{"nodeId":"n",' + seq + b'"kind":"snapshot",' + middle + usage + tail
    assert snapshot_key(raw) == by_regex(raw)
