"""Hostile manifests (hypothesis): wrong types, huge numbers, unicode, deep nesting, duplicate keys, YAML
anchor/alias bombs, binary, through the client's reader (orchestrator.manifest_files), the server's
``parse_document`` and ``Ops.apply``, and `dockyard apply` against the real app: a clean error (a
ManifestError, DocErrors that each name a field or say what the document is, a 400, exit 1) and never a
traceback; an apply that fails changes nothing."""
from __future__ import annotations

import json
import time

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_commands import invoke

from orchestrator.controller import Controller
from orchestrator.manifest_files import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES, ManifestError, parse_text
from orchestrator.manifests import KINDS, DocError, parse_document
from orchestrator.ops import Ops, UserError
from orchestrator.state import State

FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

TASKDEF = {"family": "web", "cpu": "256", "memory": "512", "networkMode": "bridge",
           "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64, "essential": True,
                                     "portMappings": [{"containerPort": 80, "hostPort": 0}],
                                     "environment": [{"name": "A", "value": "1"}]}]}
SERVICE = {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "web", "labels": {"a": "b"}},
           "spec": {"taskDefinition": "web", "desiredCount": 2,
                    "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 50},
                    "placementConstraints": [{"type": "memberOf", "expression": "attribute:zone in [a]"}]}}
BASES = [TASKDEF, SERVICE, {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "w"},
                            "spec": {k: v for k, v in TASKDEF.items() if k != "family"}},
         {"apiVersion": "dockyard/v1", "kind": "Secret", "metadata": {"name": "s"}, "spec": {"secretString": "x"}},
         {"serviceName": "web", "taskDefinition": "web", "desiredCount": 1}]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**300),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["", "web", "web:1", "0", "-1", "1e999", "ACTIVE", "FARGATE", "memberOf",
                                     "\u202e\u0000\ud7ff", "💥" * 10, "a" * 300]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                      max_leaves=12)


def paths(v, prefix=()):  # noqa: ANN001, ANN201
    """Every path into a document (dict keys and list indexes)."""
    yield prefix
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        yield from paths(x, (*prefix, k))


@st.composite
def documents(draw):  # noqa: ANN001, ANN201
    """A valid document with a few of its values (or keys) replaced by anything, or anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    doc = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(doc))))
        if not where:
            continue
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[where[-1]] = draw(values)
        else:
            parent[draw(st.text(max_size=8))] = draw(values)
    if draw(st.integers(0, 4)) == 0:
        doc["kind"] = draw(st.sampled_from([*KINDS, "Node", 7, None]))
    return doc


def bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@st.composite
def texts(draw):  # noqa: ANN001, ANN201
    """YAML text of a drawn document, then mangled: lines duplicated (repeated keys) or cut, an alias bomb or
    a self-referring alias, deep nesting, stray bytes."""
    text = yaml.safe_dump(draw(documents()), allow_unicode=draw(st.booleans()))
    lines = text.splitlines()
    op = draw(st.integers(0, 7))
    if op == 0 and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif op == 1 and lines:
        lines = lines[:draw(st.integers(0, len(lines)))]
    elif op == 2:
        lines = bomb(draw(st.integers(2, 9))).splitlines() + lines
    elif op == 3:
        lines = ["x: &x [*x]"] + lines
    elif op == 4:
        n = draw(st.integers(MAX_DEPTH - 2, MAX_DEPTH + 500))
        lines.append("deep: " + "[" * n + "]" * n)
    elif op == 5:
        lines.append(draw(st.text(max_size=20)))
    out = "\n".join(lines) + "\n"
    if op == 6:
        at = draw(st.integers(0, len(out)))
        out = out[:at] + draw(st.binary(max_size=8)).decode("latin-1") + out[at:]
    return out


def check_doc_errors(errors: list[DocError]) -> None:
    for e in errors:
        assert isinstance(e, DocError) and e.message and e.source
        json.dumps(e.as_dict())


def test_alias_bombs_and_self_reference_are_refused_before_they_are_built():
    t0 = time.perf_counter()
    with pytest.raises(ManifestError, match=f"over {MAX_VALUES} values once its aliases are expanded"):
        parse_text(bomb(), "bomb.yaml")  # 9**9 values if built; the reader used to hang in its JSON check
    assert time.perf_counter() - t0 < 2
    with pytest.raises(ManifestError, match="refers to a value that contains it"):
        parse_text("a: &a {b: [*a]}\n", "loop.yaml")  # a RecursionError traceback before
    # Aliases that only repeat a value (a merge key, a shared list) are fine.
    docs = parse_text("base: &b {image: busybox, memory: 64}\nfamily: w\ncontainerDefinitions:\n"
                      "- <<: *b\n  name: a\n- <<: *b\n  name: b\n", "ok.yaml")
    assert [c["name"] for c in docs[0].document["containerDefinitions"]] == ["a", "b"]


@pytest.mark.parametrize("text, json_only, match", [
    ("a: " + "9" * 5000 + "\n", False, "exceeds the limit"),  # ValueError traceback before
    ('{"a": ' + "9" * 5000 + "}", True, "exceeds the limit"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", True, f"deeper than {MAX_DEPTH}"),  # RecursionError before
    ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", False, f"deeper than {MAX_DEPTH}"),
    ("a: 1\n" + "b: " + "x" * MAX_FILE_BYTES + "\n", False, "larger than 10 MB"),
    ("a: \x00\n", False, "control characters"),
])
def test_documents_python_cannot_hold_are_clean_errors(text, json_only, match):
    with pytest.raises(ManifestError, match=match) as exc:
        parse_text(text, "f.json" if json_only else "f.yaml", json_only=json_only)
    assert "\n" not in str(exc.value) and "sys.set_int_max_str_digits" not in str(exc.value)


@FAST
@given(texts())
def test_any_yaml_text_is_read_or_refused_with_a_manifest_error(text):
    try:
        docs = parse_text(text, "f.yaml")
    except ManifestError as e:
        assert str(e).startswith("f.yaml") and "\n" not in str(e)
        return
    for d in docs:
        json.dumps(d.payload())  # what the client sends
        check_doc_errors(parse_document(d.source, d.document, "default")[1])


@FAST
@given(st.lists(documents(), min_size=1, max_size=4))
def test_an_apply_of_hostile_documents_is_all_or_nothing(docs):
    state = State()

    async def publish(_doc):  # noqa: ANN001
        return None
    ops = Ops(state, Controller(state, epoch=1, publish=publish))
    ops.apply([{"source": "base#1", "document": TASKDEF}], "default")
    before = snapshot(state)
    try:
        results = ops.apply([{"source": f"f#{i}", "document": d} for i, d in enumerate(docs)], "default")
    except UserError as e:
        assert e.status in (400, 404, 409) and (e.errors or e.field or e.message)
        check_doc_errors(e.errors)
        assert snapshot(state) == before  # nothing half-applied
        return
    assert len(results) == len(docs)


def snapshot(state: State) -> str:
    return json.dumps([sorted(state.clusters), {f: sorted(r) for f, r in state.taskdefs.items()},
                       sorted(map(list, state.services)), sorted(map(list, state.target_groups)),
                       sorted(map(list, state.load_balancers)), len(state.tasks),
                       [s.spec.model_dump_json() for s in state.services.values()]], default=str)


@pytest.mark.parametrize("name, text", [
    ("bomb.yaml", bomb()), ("loop.yaml", "a: &a [*a]\n"), ("big.json", '{"a": ' + "9" * 5000 + "}"),
    ("deep.json", "[" * 100_000), ("bin.yaml", "\x00\x01\x02"), ("wrong.yaml", yaml.safe_dump(
        {**TASKDEF, "containerDefinitions": [{"name": 3, "image": ["x"], "memory": 10**40}]})),
])
def test_dockyard_apply_of_a_hostile_file_exits_1_with_one_line(tmp_path, name, text):
    from test_api_fuzz import AUTH, TC

    def forward(request: httpx.Request) -> httpx.Response:
        r = TC.request(request.method, request.url.path, params=dict(request.url.params), content=request.content,
                       headers={**AUTH, "Content-Type": "application/json"})
        return httpx.Response(r.status_code, content=r.content, headers={"content-type": "application/json"})
    (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    res = invoke("apply", "-f", str(tmp_path / name), transport=httpx.MockTransport(forward))
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert name in res.output or "spec" in res.output or "containerDefinitions" in res.output, res.output
