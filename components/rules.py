"""A small, safe condition language for rule models and guardrails.

Conditions and values are parsed into an AST and evaluated column-wise over a frame with numpy;
nothing is ever passed to ``eval`` or ``exec``. The language:

* literals: numbers (``3``, ``-0.5``, ``1e3``), strings (``'us'`` or ``"us"``), ``true``, ``false``
* features by name (``age``, or ```odd name``` in backquotes); numeric features are numbers,
  categorical features are strings (the same text the feature transform sees: ``3.0`` -> ``"3"``)
* arithmetic on numbers: ``+ - * / %`` and unary ``-``
* comparisons: ``== != < <= > >=`` (strings: ``==`` and ``!=`` only)
* membership: ``x in [1, 2]``, ``country not in ['us', 'ca']`` (a list of literals of x's type)
* nulls: ``x is null``, ``x is not null``
* logic: ``and``, ``or``, ``not``, parentheses

Null semantics, the same in every evaluation: a null operand (a missing value, or NaN from
arithmetic such as ``0 / 0``) makes every comparison, ``in`` and ``not in`` false; ``not`` turns
false into true; arithmetic with a null gives null. Test for nulls with ``is null``.

Every error (a parse error, an unknown feature, incompatible types, an expression nested too
deeply: see ``MAX_NESTING`` and ``MAX_DEPTH``) is a ``RuleError`` naming the character position
and the reason; callers add where the text came from (the spec field).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Kind = Literal["number", "string", "bool"]
FeatureKinds = Mapping[str, Literal["number", "string"]]
MAX_LENGTH = 4000  # characters in one expression
# Parsing, checking and evaluating recurse once per level, so both are bounded well below
# Python's recursion limit: nesting of parentheses, ``not`` and unary ``-``, and the depth of
# the whole tree (a chain such as ``a + b + c`` is one level per operator).
MAX_NESTING = 32
MAX_DEPTH = 200

COMPARE = ("==", "!=", "<=", ">=", "<", ">")
ARITH = ("+", "-", "*", "/", "%")
KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}


class RuleError(ValueError):
    """An expression that does not parse or does not type-check; names the position and reason."""

    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(f"at character {pos + 1}: {reason}")
        self.pos = pos
        self.reason = reason


# -- AST ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Literal_:
    pos: int
    value: float | str | bool


@dataclass(frozen=True)
class Column:
    pos: int
    name: str


@dataclass(frozen=True)
class Negate:
    pos: int
    operand: Node


@dataclass(frozen=True)
class Arith:
    pos: int
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    pos: int
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class InList:
    pos: int
    operand: Node
    values: tuple[float | str, ...]
    negate: bool


@dataclass(frozen=True)
class IsNull:
    pos: int
    operand: Node
    negate: bool


@dataclass(frozen=True)
class Not:
    pos: int
    operand: Node


@dataclass(frozen=True)
class Logic:
    pos: int
    op: str  # "and" | "or"
    items: tuple[Node, ...]


Node = Literal_ | Column | Negate | Arith | Compare | InList | IsNull | Not | Logic


# -- tokens ------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # number | string | name | keyword | op | end
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise RuleError(i, f"unexpected character {text[i]!r}")
        kind = m.lastgroup or ""
        if kind == "string":
            raw = m.group()[1:-1]
            out.append(_Tok("string", re.sub(r"\\(.)", r"\1", raw), i))
        elif kind == "quoted":
            out.append(_Tok("name", m.group()[1:-1], i))
        elif kind == "name":
            word = m.group()
            out.append(_Tok("keyword" if word.lower() in KEYWORDS else "name", word, i))
        elif kind != "space":
            out.append(_Tok(kind, m.group(), i))
        i = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    """Recursive descent, lowest precedence first: or, and, not, comparison, +-, */%, unary."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.nesting = 0

    def _enter(self, pos: int) -> None:
        """One more level of parentheses, ``not`` or unary ``-`` (each recurses)."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise RuleError(
                pos, f"nested more than {MAX_NESTING} levels deep (parentheses, not, unary '-')"
            )

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _is(self, *words: str) -> bool:
        t = self.tok
        if t.kind == "keyword":
            return t.text.lower() in words
        return t.kind == "op" and t.text in words

    def _take(self) -> _Tok:
        t = self.tok
        self.i += 1
        return t

    def _expect(self, text: str) -> _Tok:
        if not self._is(text):
            raise RuleError(self.tok.pos, f"expected {text!r}, found {self._shown()}")
        return self._take()

    def _shown(self) -> str:
        return "the end" if self.tok.kind == "end" else repr(self.tok.text)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise RuleError(0, "empty expression")
        node = self._or()
        if self.tok.kind != "end":
            raise RuleError(self.tok.pos, f"unexpected {self._shown()} after a complete expression")
        return node

    def _or(self) -> Node:
        first = self._and()
        items = [first]
        while self._is("or"):
            self._take()
            items.append(self._and())
        return first if len(items) == 1 else Logic(first.pos, "or", tuple(items))

    def _and(self) -> Node:
        first = self._not()
        items = [first]
        while self._is("and"):
            self._take()
            items.append(self._not())
        return first if len(items) == 1 else Logic(first.pos, "and", tuple(items))

    def _not(self) -> Node:
        if self._is("not"):
            pos = self._take().pos
            self._enter(pos)
            node = Not(pos, self._not())
            self.nesting -= 1
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        left = self._sum()
        if self._is(*COMPARE):
            op = self._take()
            return Compare(op.pos, op.text, left, self._sum())
        if self._is("in"):
            pos = self._take().pos
            return InList(pos, left, self._list(), negate=False)
        if self._is("not"):
            pos = self._take().pos
            self._expect("in")
            return InList(pos, left, self._list(), negate=True)
        if self._is("is"):
            pos = self._take().pos
            negate = False
            if self._is("not"):
                self._take()
                negate = True
            self._expect("null")
            return IsNull(pos, left, negate)
        return left

    def _list(self) -> tuple[float | str, ...]:
        self._expect("[")
        values: list[float | str] = []
        while True:
            sign = 1.0
            if self._is("-"):
                self._take()
                sign = -1.0
            t = self._take()
            if t.kind == "number":
                values.append(sign * float(t.text))
            elif t.kind == "string" and sign > 0:
                values.append(t.text)
            else:
                raise RuleError(t.pos, "a list holds only number or string literals")
            if self._is("]"):
                self._take()
                return tuple(values)
            self._expect(",")

    def _sum(self) -> Node:
        node = self._product()
        while self._is("+", "-"):
            op = self._take()
            node = Arith(op.pos, op.text, node, self._product())
        return node

    def _product(self) -> Node:
        node = self._unary()
        while self._is("*", "/", "%"):
            op = self._take()
            node = Arith(op.pos, op.text, node, self._unary())
        return node

    def _unary(self) -> Node:
        if self._is("-"):
            pos = self._take().pos
            self._enter(pos)
            operand = self._unary()
            self.nesting -= 1
            if isinstance(operand, Literal_) and isinstance(operand.value, float):
                return Literal_(pos, -operand.value)
            return Negate(pos, operand)
        return self._atom()

    def _atom(self) -> Node:
        t = self.tok
        if self._is("("):
            self._enter(self._take().pos)
            node = self._or()
            self._expect(")")
            self.nesting -= 1
            return node
        self._take()
        if t.kind == "number":
            value = float(t.text)
            if not np.isfinite(value):
                raise RuleError(t.pos, f"the number {t.text} is out of range")
            return Literal_(t.pos, value)
        if t.kind == "string":
            return Literal_(t.pos, t.text)
        if t.kind == "keyword" and t.text.lower() in ("true", "false"):
            return Literal_(t.pos, t.text.lower() == "true")
        if t.kind == "name":
            return Column(t.pos, t.text)
        if t.kind == "end":
            raise RuleError(t.pos, "the expression ends where a value was expected")
        raise RuleError(t.pos, f"expected a value, found {t.text!r}")


def parse(text: str) -> Node:
    """Parse an expression into its AST (syntax only; see ``check`` for names and types)."""
    if not isinstance(text, str):
        raise RuleError(0, f"an expression is a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise RuleError(MAX_LENGTH, f"longer than {MAX_LENGTH} characters")
    node = _Parser(text).parse()
    _check_depth(node)
    return node


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Literal_ | Column):
        return ()
    if isinstance(node, Negate | Not | InList | IsNull):
        return (node.operand,)
    if isinstance(node, Arith | Compare):
        return (node.left, node.right)
    return node.items


def _check_depth(root: Node) -> None:
    """RuleError at the first node deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RuleError(
                node.pos,
                f"the expression is more than {MAX_DEPTH} levels deep (each operator of a "
                "chain such as a + b + c is a level); group terms in parentheses or split it",
            )
        stack.extend((child, depth + 1) for child in _children(node))


# -- types -------------------------------------------------------------------------------------
def _kind_of(value: float | str | bool) -> Kind:
    if isinstance(value, bool):
        return "bool"
    return "string" if isinstance(value, str) else "number"


def _what(kind: Kind) -> str:
    return {"number": "a number", "string": "a string (categorical)", "bool": "a condition"}[kind]


def check(node: Node, features: FeatureKinds) -> Kind:
    """The type of ``node``; raises RuleError for unknown features and incompatible types."""
    if isinstance(node, Literal_):
        return _kind_of(node.value)
    if isinstance(node, Column):
        if node.name not in features:
            known = ", ".join(sorted(features)) or "none"
            raise RuleError(node.pos, f"unknown feature {node.name!r} (features: {known})")
        return features[node.name]
    if isinstance(node, Negate):
        _need(node.operand, features, "number", "unary '-'")
        return "number"
    if isinstance(node, Arith):
        _need(node.left, features, "number", f"arithmetic '{node.op}'")
        _need(node.right, features, "number", f"arithmetic '{node.op}'")
        return "number"
    if isinstance(node, Compare):
        left, right = check(node.left, features), check(node.right, features)
        if left != right:
            raise RuleError(
                node.pos,
                f"'{node.op}' compares {_what(left)} with {_what(right)}"
                + (
                    " (categorical values are strings: quote them, e.g. '3')"
                    if left == "string" and right == "number"
                    else ""
                ),
            )
        if left == "bool":
            raise RuleError(node.pos, f"'{node.op}' compares two conditions; use and/or/not")
        if left == "string" and node.op not in ("==", "!="):
            raise RuleError(node.pos, f"'{node.op}' is not defined for strings; use == or !=")
        return "bool"
    if isinstance(node, InList):
        kind = check(node.operand, features)
        if kind == "bool":
            raise RuleError(node.pos, "'in' needs a number or a string on its left")
        for v in node.values:
            if _kind_of(v) != kind:
                raise RuleError(
                    node.pos, f"'in' list value {v!r} is not {_what(kind)} like its left side"
                )
        return "bool"
    if isinstance(node, IsNull):
        if check(node.operand, features) == "bool":
            raise RuleError(node.pos, "'is null' needs a number or a string on its left")
        return "bool"
    if isinstance(node, Not):
        _need(node.operand, features, "bool", "'not'")
        return "bool"
    for item in node.items:
        _need(item, features, "bool", f"'{node.op}'")
    return "bool"


def _need(node: Node, features: FeatureKinds, kind: Kind, what: str) -> None:
    got = check(node, features)
    if got != kind:
        raise RuleError(node.pos, f"{what} needs {_what(kind)}, got {_what(got)}")


def columns(node: Node) -> set[str]:
    """The feature names an expression reads."""
    if isinstance(node, Column):
        return {node.name}
    if isinstance(node, Literal_):
        return set()
    if isinstance(node, Negate | Not | InList | IsNull):
        return columns(node.operand)
    if isinstance(node, Arith | Compare):
        return columns(node.left) | columns(node.right)
    return set().union(*(columns(i) for i in node.items))


def finite(value: float) -> bool:
    """``value`` is a finite number (an int beyond the float range is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def compile_expression(text: str | float, features: FeatureKinds, want: Kind) -> Node:
    """Parse and type-check ``text`` (a number stands for itself), which must be of kind ``want``."""
    if isinstance(text, bool):
        raise RuleError(0, f"expected {_what(want)}, got {text}")
    if isinstance(text, int | float):
        if not finite(text):
            raise RuleError(0, f"expected a finite number, got {text}")
        node: Node = Literal_(0, float(text))
    else:
        node = parse(text)
    got = check(node, features)
    if got != want:
        raise RuleError(node.pos, f"expected {_what(want)}, got {_what(got)}")
    return node


# -- vectorized evaluation ---------------------------------------------------------------------
class Frame:
    """Feature columns of a frame, converted once for every expression that reads them:
    numbers as float64 (NaN for null), categoricals as strings (None for null)."""

    def __init__(
        self, frame: pd.DataFrame | Mapping[str, np.ndarray], features: FeatureKinds
    ) -> None:
        from components.features import num_rows

        self.frame = frame
        self.features = features
        self.n = num_rows(frame)
        self._cache: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        got = self._cache.get(name)
        if got is None:
            from components.features import as_series, categorical_strings

            values = self.frame[name]
            if self.features[name] == "number" and getattr(values, "dtype", None) == np.float64:
                got = np.asarray(values)  # already numbers (serving's column arrays, NaN = null)
                self._cache[name] = got
                return got
            raw = as_series(values)
            if self.features[name] == "number":
                got = pd.to_numeric(raw, errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
            else:
                got = categorical_strings(raw)
            self._cache[name] = got
        return got


def _null(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return pd.isna(values)
    if values.dtype == bool:
        return np.zeros(len(values), dtype=bool)
    return np.isnan(values)


def evaluate(node: Node, frame: Frame) -> np.ndarray:
    """Evaluate a checked expression on every row: float64, object (strings) or bool."""
    n = frame.n
    if isinstance(node, Literal_):
        v = node.value
        if isinstance(v, bool):
            return np.full(n, v, dtype=bool)
        if isinstance(v, str):
            return np.full(n, v, dtype=object)
        return np.full(n, v, dtype=np.float64)
    if isinstance(node, Column):
        return frame.column(node.name)
    if isinstance(node, Negate):
        return -evaluate(node.operand, frame)
    if isinstance(node, Arith):
        a, b = evaluate(node.left, frame), evaluate(node.right, frame)
        with np.errstate(all="ignore"):
            if node.op == "+":
                return a + b
            if node.op == "-":
                return a - b
            if node.op == "*":
                return a * b
            if node.op == "/":
                return a / b
            return np.mod(a, b)
    if isinstance(node, Compare):
        a, b = evaluate(node.left, frame), evaluate(node.right, frame)
        known = ~(_null(a) | _null(b))
        out = np.zeros(n, dtype=bool)
        if a.dtype == object:  # strings: equality only (checked)
            eq = np.fromiter(
                (x == y for x, y in zip(a[known], b[known], strict=True)), bool, int(known.sum())
            )
            out[known] = eq if node.op == "==" else ~eq
            return out
        x, y = a[known], b[known]
        out[known] = {
            "==": np.equal,
            "!=": np.not_equal,
            "<": np.less,
            "<=": np.less_equal,
            ">": np.greater,
            ">=": np.greater_equal,
        }[node.op](x, y)
        return out
    if isinstance(node, InList):
        a = evaluate(node.operand, frame)
        known = ~_null(a)
        hit = np.zeros(n, dtype=bool)
        if len(node.values):
            hit[known] = pd.Index(list(dict.fromkeys(node.values))).get_indexer(a[known]) >= 0
        return hit if not node.negate else known & ~hit
    if isinstance(node, IsNull):
        null = _null(evaluate(node.operand, frame))
        return ~null if node.negate else null
    if isinstance(node, Not):
        return ~evaluate(node.operand, frame)
    out = evaluate(node.items[0], frame).copy()  # one array at a time, however many items
    for item in node.items[1:]:
        if node.op == "and":
            out &= evaluate(item, frame)
        else:
            out |= evaluate(item, frame)
    return out


def feature_kinds(numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, Any]:
    """The kinds of a spec's or a bundle's features, for ``check`` and ``Frame``."""
    kinds: dict[str, Any] = {n: "number" for n in numeric}
    kinds.update({c: "string" for c in categorical})
    return kinds
