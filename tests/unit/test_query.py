"""The memberOf cluster query language (orchestrator.core.query): parsing, evaluation, errors."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.query import BoolOp, Cmp, QueryError, evaluate, parse

ATTRS = {"zone": "a", "disk": "ssd", "ecs.instance-type": "t3.large"}


def ev(text: str, node: str = "i-1", attrs: dict | None = None) -> bool:
    return evaluate(parse(text), node, ATTRS if attrs is None else attrs)


# ---- parse trees ------------------------------------------------------------------------------
def test_parse_equality():
    assert parse("attribute:zone == a") == Cmp("attribute:zone", "==", ("a",))


def test_parse_word_operators_are_aliases():
    assert parse("attribute:zone equals a") == parse("attribute:zone == a")
    assert parse("attribute:zone not_equals a") == parse("attribute:zone != a")
    assert parse("attribute:zone not_in [a]") == parse("attribute:zone !in [a]")
    assert parse("attribute:zone not_exists") == parse("attribute:zone !exists")


def test_parse_in_list():
    assert parse("attribute:zone in [a, b,c]") == Cmp("attribute:zone", "in", ("a", "b", "c"))


def test_and_binds_tighter_than_or():
    e = parse("attribute:a == 1 or attribute:b == 2 and attribute:c == 3")
    assert isinstance(e, BoolOp) and e.op == "or"
    assert isinstance(e.right, BoolOp) and e.right.op == "and"


def test_parentheses_override_precedence():
    e = parse("(attribute:a == 1 or attribute:b == 2) and attribute:c == 3")
    assert isinstance(e, BoolOp) and e.op == "and"
    assert isinstance(e.left, BoolOp) and e.left.op == "or"


def test_symbolic_boolean_operators():
    assert parse("attribute:a == 1 && attribute:b == 2") == parse("attribute:a == 1 and attribute:b == 2")
    assert parse("attribute:a == 1 || attribute:b == 2") == parse("attribute:a == 1 or attribute:b == 2")


# ---- evaluation --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("attribute:zone == a", True),
    ("attribute:zone == b", False),
    ("attribute:zone != b", True),
    ("attribute:zone != a", False),
    ("attribute:zone in [a, b]", True),
    ("attribute:zone in [b, c]", False),
    ("attribute:zone !in [b, c]", True),
    ("attribute:zone !in [a]", False),
    ("attribute:disk exists", True),
    ("attribute:gpu exists", False),
    ("attribute:gpu !exists", True),
    ("attribute:disk !exists", False),
    ("attribute:ecs.instance-type == t3.large", True),
    ("instanceId == i-1", True),
    ("instanceId != i-1", False),
    ("instanceId in [i-2, i-1]", True),
    ("instanceId exists", True),
    ("attribute:zone == a and attribute:disk == ssd", True),
    ("attribute:zone == a and attribute:disk == hdd", False),
    ("attribute:zone == b or attribute:disk == ssd", True),
    ("attribute:zone == b or attribute:disk == hdd", False),
    ("attribute:zone == b and attribute:disk == hdd or instanceId == i-1", True),
    ("attribute:zone == b and (attribute:disk == hdd or instanceId == i-1)", False),
    ("((attribute:zone == a))", True),
    ("attribute:zone == A", False),  # values are case-sensitive
])
def test_evaluate(text, expected):
    assert ev(text) is expected


def test_missing_attribute_is_not_equal_and_not_in():
    assert ev("attribute:gpu == x") is False
    assert ev("attribute:gpu != x") is True
    assert ev("attribute:gpu in [x]") is False
    assert ev("attribute:gpu !in [x]") is True


def test_keywords_are_case_insensitive():
    assert ev("attribute:zone IN [a] AND attribute:disk EXISTS") is True


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,fragment", [
    ("", "empty"),
    ("   ", "empty"),
    ("attribute:zone =~ a", "unknown operator '=~'"),
    ("attribute:zone like a", "unknown operator"),
    ("zone == a", "expected attribute:NAME or instanceId"),
    ("attribute: == a", "expected attribute:NAME"),
    ("attribute:zone in a", "needs a list"),
    ("attribute:zone in [a b]", "missing ']'"),
    ("attribute:zone == a)", "unexpected ')'"),
    ("attribute:zone == a attribute:disk == ssd", "join conditions with 'and' or 'or'"),
    ("attribute:zone == (", "expected a value"),
    ("attribute:zone == a and", "ends too early"),
])
def test_syntax_errors_say_what_is_wrong(text, fragment):
    with pytest.raises(QueryError) as exc:
        parse(text)
    assert fragment in str(exc.value)


def test_unknown_operator_lists_the_valid_ones():
    with pytest.raises(QueryError) as exc:
        parse("attribute:zone ~= a")
    for op in ("==", "!=", "in", "!in", "exists", "!exists"):
        assert op in str(exc.value)


def test_missing_value_is_an_error():
    with pytest.raises(QueryError):
        parse("attribute:zone ==")


def test_unbalanced_open_paren_is_an_error():
    with pytest.raises(QueryError):
        parse("(attribute:zone == a")
    with pytest.raises(QueryError):
        parse("((attribute:zone == a)")


def test_missing_value_message_names_the_operator():
    with pytest.raises(QueryError) as exc:
        parse("attribute:zone ==")
    assert "value" in str(exc.value) and "==" in str(exc.value)


def test_unclosed_paren_message_says_missing_paren():
    with pytest.raises(QueryError) as exc:
        parse("(attribute:zone == a")
    assert "')'" in str(exc.value)


def test_operators_without_spaces():
    assert parse("attribute:zone==a") == parse("attribute:zone == a")


def test_trailing_comma_in_list_is_an_error():
    with pytest.raises(QueryError):
        parse("attribute:zone in [a,]]")


# ---- properties --------------------------------------------------------------------------------
value = st.sampled_from(["a", "b", "c"])
attr = st.sampled_from(["zone", "disk"])


@st.composite
def expr_text(draw, depth=0):
    """A random expression and a python evaluator of it."""
    if depth < 2 and draw(st.booleans()):
        op = draw(st.sampled_from(["and", "or"]))
        lt, lf = draw(expr_text(depth + 1))
        rt, rf = draw(expr_text(depth + 1))
        fn = (lambda a, lf=lf, rf=rf: lf(a) and rf(a)) if op == "and" else (lambda a, lf=lf, rf=rf: lf(a) or rf(a))
        return f"({lt} {op} {rt})", fn
    name = draw(attr)
    kind = draw(st.sampled_from(["==", "!=", "in", "!in", "exists", "!exists"]))
    if kind in ("exists", "!exists"):
        return f"attribute:{name} {kind}", (lambda a, n=name, k=kind: (n in a) == (k == "exists"))
    if kind in ("in", "!in"):
        vals = draw(st.lists(value, min_size=1, max_size=3))
        return (f"attribute:{name} {kind} [{', '.join(vals)}]",
                lambda a, n=name, v=tuple(vals), k=kind: (a.get(n) in v) == (k == "in"))
    v = draw(value)
    return f"attribute:{name} {kind} {v}", lambda a, n=name, v=v, k=kind: (a.get(n) == v) == (k == "==")


@settings(max_examples=200, deadline=None)
@given(expr_text(), st.dictionaries(attr, value))
def test_property_evaluation_matches_a_reference(pair, attrs):
    text, fn = pair
    assert evaluate(parse(text), "i-1", attrs) == fn(attrs)
