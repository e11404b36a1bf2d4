"""The condition language: parsing, type checks with positions, and vectorized evaluation checked
row by row against an independent reference on random frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import rules
from components.rules import Frame, RuleError

KINDS: dict[str, Any] = {"age": "number", "score": "number", "country": "string", "tier": "string"}


def _eval(text: str, frame: pd.DataFrame, kinds: dict[str, Any] = KINDS) -> np.ndarray:
    node = rules.parse(text)
    rules.check(node, kinds)
    return rules.evaluate(node, Frame(frame, kinds))


FRAME = pd.DataFrame(
    {
        "age": [17.0, 30.0, np.nan, 45.0, 0.0],
        "score": [0.5, -1.0, 2.0, np.nan, 0.0],
        "country": ["us", "ca", None, "de", "us"],
        "tier": [1, 2, 3, None, 2],  # a categorical read as ints: compared as "1", "2", ...
    }
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("age >= 18", [False, True, False, True, False]),
        ("age >= 18 and country == 'us'", [False, False, False, False, False]),
        ("age < 18 or country in ['de', 'ca']", [True, True, False, True, True]),
        ("not age >= 18", [True, False, True, False, True]),  # null: comparison false, not -> true
        ("country not in ['us']", [False, True, False, True, False]),  # null: false both ways
        ("country is null", [False, False, True, False, False]),
        ("score is not null and score * 2 + 1 > 1", [True, False, True, False, False]),
        ("age / score > 10", [True, False, False, False, False]),  # 0/0 is null, 30/-1 < 10
        ("age % 10 == 5", [False, False, False, True, False]),
        ("-age < -20", [False, True, False, True, False]),
        ("tier == '2'", [False, True, False, False, True]),
        ("tier in ['1', '3']", [True, False, True, False, False]),
        ("(age > 20 or score > 1) and not country == 'de'", [False, True, True, False, False]),
        ("true and age > 40", [False, False, False, True, False]),
        ("`age` != 30", [True, False, False, True, True]),
        ("age in [17, 45.0, -3]", [True, False, False, True, False]),
    ],
)
def test_conditions_on_a_small_frame(text: str, expected: list[bool]) -> None:
    assert _eval(text, FRAME).tolist() == expected


def test_precedence_and_arithmetic() -> None:
    f = pd.DataFrame({"age": [2.0], "score": [3.0], "country": ["x"], "tier": ["a"]})
    assert _eval("age + score * 2 == 8", f).tolist() == [True]
    assert _eval("(age + score) * 2 == 10", f).tolist() == [True]
    assert _eval("age - score - 1 == -2", f).tolist() == [True]  # left-associative
    # "and" binds tighter than "or"
    assert _eval("age == 2 or age == 5 and score == 0", f).tolist() == [True]
    node = rules.parse("a or b and c > 1")
    assert isinstance(node, rules.Logic) and node.op == "or"


@pytest.mark.parametrize(
    "text, pos, reason",
    [
        ("", 1, "empty expression"),
        ("age > ", 7, "ends where a value was expected"),
        ("age >> 3", 6, "expected a value"),
        ("age > 3 age", 9, "unexpected 'age' after a complete expression"),
        ("(age > 3", 9, "expected ')'"),
        ("age in (1, 2)", 8, "expected '['"),
        ("age in [1, age]", 12, "only number or string literals"),
        ("age is 3", 8, "expected 'null'"),
        ("age > 3 ; drop", 9, "unexpected character ';'"),
        ("__import__('os')", 11, "unexpected '(' after a complete expression"),
        ("os.system('x')", 10, "unexpected '('"),
        ("country == 'us", 12, "unexpected character"),
    ],
)
def test_parse_errors_name_the_position(text: str, pos: int, reason: str) -> None:
    with pytest.raises(RuleError) as e:
        rules.parse(text)
    assert f"at character {pos}:" in str(e.value), str(e.value)
    assert reason in str(e.value)


@pytest.mark.parametrize(
    "text, pos, reason",
    [
        ("agee > 3", 1, "unknown feature 'agee' (features: age, country, score, tier)"),
        ("age > 'x'", 5, "'>' compares a number with a string"),
        ("country == 3", 9, "categorical values are strings: quote them"),
        ("country < 'm'", 9, "'<' is not defined for strings"),
        ("country + 1 > 2", 1, "arithmetic '+' needs a number, got a string"),
        ("age and score > 1", 1, "'and' needs a condition, got a number"),
        ("not age", 5, "'not' needs a condition"),
        ("age in ['a']", 5, "'in' list value 'a' is not a number"),
        ("(age > 1) == (age > 2)", 11, "compares two conditions"),
        ("-country == 'x'", 2, "unary '-' needs a number"),
        ("(age > 1) is null", 11, "'is null' needs a number or a string"),
    ],
)
def test_type_errors_name_the_position(text: str, pos: int, reason: str) -> None:
    with pytest.raises(RuleError) as e:
        rules.check(rules.parse(text), KINDS)
    assert f"at character {pos}:" in str(e.value), str(e.value)
    assert reason in str(e.value), str(e.value)


def test_compile_expression_checks_the_result_kind() -> None:
    assert rules.compile_expression(0.5, KINDS, "number") == rules.Literal_(0, 0.5)
    rules.compile_expression("age * 0.1 + 1", KINDS, "number")
    with pytest.raises(RuleError, match="expected a condition, got a number"):
        rules.compile_expression("age * 2", KINDS, "bool")
    with pytest.raises(RuleError, match="expected a number, got a condition"):
        rules.compile_expression("age > 2", KINDS, "number")
    with pytest.raises(RuleError, match="longer than"):
        rules.parse("age > 1 and " * 400 + "true")
    assert rules.columns(rules.parse("age > 1 and country in ['x'] or -score < 2")) == {
        "age",
        "country",
        "score",
    }


# -- vectorized evaluation against a row-by-row reference on random frames --------------------
NUM = ["n0", "n1", "n2"]
CAT = ["c0", "c1"]
RANDOM_KINDS: dict[str, Any] = {**{n: "number" for n in NUM}, **{c: "string" for c in CAT}}
VALUES = ["a", "b", "c"]


def _random_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for c in NUM:
        v = rng.integers(-3, 4, n).astype(np.float64)  # small integers: exact ties and zeros
        v[rng.random(n) < 0.2] = np.nan
        data[c] = v
    for c in CAT:
        s = rng.choice(np.array(VALUES, dtype=object), n)
        s[rng.random(n) < 0.2] = None
        data[c] = s
    return pd.DataFrame(data)


def _num(rng: np.random.Generator, depth: int) -> tuple[str, Any]:
    """A random numeric expression: (text, tree for the reference)."""
    r = rng.random()
    if depth <= 0 or r < 0.35:
        if rng.random() < 0.6:
            name = str(rng.choice(NUM))
            return name, ("col", name)
        v = float(rng.integers(-3, 4))
        return (f"({v:g})" if v < 0 else f"{v:g}"), ("lit", v)
    if r < 0.45:
        t, tree = _num(rng, depth - 1)
        return f"-({t})", ("neg", tree)
    op = str(rng.choice(["+", "-", "*", "/", "%"]))
    (a, ta), (b, tb) = _num(rng, depth - 1), _num(rng, depth - 1)
    return f"({a} {op} {b})", ("arith", op, ta, tb)


def _cond(rng: np.random.Generator, depth: int) -> tuple[str, Any]:
    """A random condition."""
    r = rng.random()
    if depth <= 0 or r < 0.4:
        kind = rng.integers(0, 5)
        if kind == 0:
            op = str(rng.choice(["==", "!=", "<", "<=", ">", ">="]))
            (a, ta), (b, tb) = _num(rng, 2), _num(rng, 2)
            return f"{a} {op} {b}", ("cmp", op, ta, tb)
        if kind == 1:
            col, v = str(rng.choice(CAT)), str(rng.choice(VALUES))
            op = str(rng.choice(["==", "!="]))
            return f"{col} {op} '{v}'", ("cmp", op, ("col", col), ("lit", v))
        if kind == 2:
            col = str(rng.choice(CAT))
            vals = [str(v) for v in rng.choice(VALUES, rng.integers(1, 3), replace=False)]
            neg = bool(rng.random() < 0.5)
            text = f"{col} {'not in' if neg else 'in'} [{', '.join(repr(v) for v in vals)}]"
            return text, ("in", ("col", col), vals, neg)
        if kind == 3:
            a, ta = _num(rng, 1)
            vals_f = [float(v) for v in rng.integers(-3, 4, 3)]
            neg = bool(rng.random() < 0.5)
            text = f"{a} {'not in' if neg else 'in'} [{', '.join(f'{v:g}' for v in vals_f)}]"
            return text, ("in", ta, vals_f, neg)
        col = str(rng.choice(NUM + CAT))
        neg = bool(rng.random() < 0.5)
        return f"{col} is {'not ' if neg else ''}null", ("isnull", ("col", col), neg)
    if r < 0.55:
        t, tree = _cond(rng, depth - 1)
        return f"not ({t})", ("not", tree)
    op = str(rng.choice(["and", "or"]))
    (a, ta), (b, tb) = _cond(rng, depth - 1), _cond(rng, depth - 1)
    return f"({a}) {op} ({b})", ("logic", op, ta, tb)


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _ref(tree: Any, row: dict[str, Any]) -> Any:
    """Row-by-row reference with the documented null semantics, in plain Python."""
    tag = tree[0]
    if tag == "lit":
        return tree[1]
    if tag == "col":
        return row[tree[1]]
    if tag == "neg":
        v = _ref(tree[1], row)
        return -v if not _is_null(v) else math.nan
    if tag == "arith":  # float64 scalar arithmetic: x/0 is inf, 0/0 and x%0 are NaN (null)
        a, b = np.float64(_ref(tree[2], row)), np.float64(_ref(tree[3], row))
        with np.errstate(all="ignore"):
            ops = {"+": a + b, "-": a - b, "*": a * b, "/": a / b, "%": np.mod(a, b)}
        return float(ops[tree[1]])
    if tag == "cmp":
        a, b = _ref(tree[2], row), _ref(tree[3], row)
        if _is_null(a) or _is_null(b):
            return False
        return {
            "==": a == b,
            "!=": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[tree[1]]
    if tag == "in":
        a = _ref(tree[1], row)
        if _is_null(a):
            return False
        return (a in tree[2]) != tree[3]
    if tag == "isnull":
        return _is_null(_ref(tree[1], row)) != tree[2]
    if tag == "not":
        return not _ref(tree[1], row)
    a, b = _ref(tree[2], row), _ref(tree[3], row)
    return (a and b) if tree[1] == "and" else (a or b)


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_evaluation_matches_a_row_by_row_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = _random_frame(rng, 60)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    records = [
        {k: (math.nan if v is None and k in NUM else v) for k, v in r.items()} for r in records
    ]
    for _ in range(40):
        text, tree = _cond(rng, 3)
        got = _eval(text, frame, RANDOM_KINDS)
        want = [bool(_ref(tree, r)) for r in records]
        assert got.tolist() == want, text
        num_text, num_tree = _num(rng, 3)
        got_num = _eval(num_text, frame, RANDOM_KINDS)
        want_num = np.array([_ref(num_tree, r) for r in records], dtype=np.float64)
        np.testing.assert_array_equal(got_num, want_num, err_msg=num_text)


# --- hardening (issue 14): deep expressions are rule errors with a position, not tracebacks ---


@pytest.mark.parametrize(
    "text, pos, reason",
    [
        # each of these raised RecursionError (a traceback, not a spec error)
        ("(" * 120 + "age > 1" + ")" * 120, 33, "nested more than 32 levels deep"),
        ("not " * 500 + "age > 1", 129, "nested more than 32 levels deep"),
        ("- " * 500 + "age > 1", 65, "nested more than 32 levels deep"),
        (" + ".join(["age"] * 500) + " > 1", 1807, "the expression is more than 200 levels deep"),
        (" * ".join(["age"] * 500) + " > 1", 1807, "the expression is more than 200 levels deep"),
    ],
)
def test_deep_expressions_are_rule_errors_with_a_position(text: str, pos: int, reason: str) -> None:
    with pytest.raises(RuleError) as e:
        rules.compile_expression(text, KINDS, "bool")
    assert e.value.pos + 1 == pos and reason in e.value.reason
    assert str(e.value).startswith(f"at character {pos}: ")


def test_expressions_within_the_limits_still_work() -> None:
    nested = "(" * rules.MAX_NESTING + "age > 1" + ")" * rules.MAX_NESTING
    assert _eval(nested, FRAME).tolist() == [True, True, False, True, False]
    total = " + ".join(["age"] * 150)  # a long linear score: 149 levels
    got = rules.evaluate(rules.compile_expression(total, KINDS, "number"), Frame(FRAME, KINDS))
    np.testing.assert_allclose(got, FRAME["age"].to_numpy() * 150)
    many = " or ".join(f"age == {i}" for i in range(250))  # and/or lists are one level
    assert _eval(many, FRAME).tolist() == [True, True, False, True, True]
    assert _eval(" and ".join(["age >= 0"] * 300), FRAME).tolist() == [
        True,
        True,
        False,
        True,
        True,
    ]


def test_numbers_out_of_range_are_refused() -> None:
    with pytest.raises(RuleError, match="at character 7: the number 1e999 is out of range"):
        rules.compile_expression("age > 1e999", KINDS, "bool")
    for value in (math.nan, math.inf, -math.inf, 10**400):
        with pytest.raises(RuleError, match="expected a finite number"):
            rules.compile_expression(value, KINDS, "number")
