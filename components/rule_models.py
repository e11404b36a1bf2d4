"""Rules as a model (``kind: rules``) and as guardrails around any model.

Both are written in the spec with the condition language of ``components.rules``, stored in the
bundle as JSON, compiled once per process (``compile_rule_model``, ``compile_guardrails``) and
applied by the Predictor, so evaluation, batch inference and serving give the same results.

What a rule gives depends on the task (its ``rule_outputs`` in components.tasks): ``score``
(binary: P(class 1), a constant in [0, 1]; ranking: any number or numeric expression),
``label`` (multiclass: a class id; binary: 0 or 1, i.e. a score of 0.0 or 1.0), ``value``
(regression: a number or expression).

A rule model scores each row with its first rule whose ``when`` holds, else the ``default``.
Guardrails run in order on the model's output:

* ``override``: set the output where ``when`` holds;
* ``clamp``: limit the score/value to ``[min, max]`` (where ``when`` holds, or everywhere);
* ``boost`` (ranking): add a number or expression to the score where ``when`` holds;
* ``filter`` (ranking): drop the candidate where ``when`` holds. Online it is removed from the
  ranked list; offline it is ranked below every kept candidate of its query (a relevant
  candidate that a filter drops costs NDCG, as it does in production).

A guardrail "fires" on a row when it changes that row (a clamp that changes nothing, an override
to the value already there, do not count as fired for clamp; override/boost/filter fire wherever
their condition holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components import rules
from components.features import Columns
from components.rules import FeatureKinds, Frame, Node, RuleError
from components.tasks import task_info

ACTIONS = ("override", "clamp", "boost", "filter")


class RulesConfigError(ValueError):
    """A rule or guardrail that cannot be used; the message starts with its place in the spec."""


def _output_node(
    task: str, out: Mapping[str, Any], where: str, features: FeatureKinds, num_classes: int | None
) -> Node:
    """The numeric expression for one rule's output (binary labels become 0.0/1.0 scores)."""
    info = task_info(task)
    given = [k for k in ("score", "label", "value") if out.get(k) is not None]
    allowed = info.rule_outputs
    if len(given) != 1 or given[0] not in allowed:
        raise RulesConfigError(
            f"{where}: give exactly one of {' or '.join(allowed)} for task {task}"
            + (f" (got {', '.join(given)})" if given else "")
        )
    field = given[0]
    value = out[field]
    if field == "label":
        ok = num_classes if info.labels == "class" else 2  # else binary
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (ok or 0):
            raise RulesConfigError(
                f"{where}.label: a class id in 0..{(ok or 1) - 1}, got {value!r}"
            )
        return rules.Literal_(0, float(value))
    if info.output == "probability" and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
    ):
        raise RulesConfigError(
            f"{where}.score: a binary score is a probability, a number in [0, 1]; got {value!r}"
        )
    try:
        return rules.compile_expression(value, features, "number")
    except RuleError as e:
        raise RulesConfigError(f"{where}.{field}: {e}") from None


def _condition(text: Any, where: str, features: FeatureKinds) -> Node:
    try:
        return rules.compile_expression(text, features, "bool")
    except RuleError as e:
        raise RulesConfigError(f"{where}.when: {e}") from None


def _as_output(task: str, values: np.ndarray, num_classes: int | None) -> np.ndarray:
    """Rule outputs as the model's output: class ids as one-hot probabilities (``proba``)."""
    if not task_info(task).proba:
        return values
    out = np.zeros((len(values), int(num_classes or 2)))
    out[np.arange(len(values)), values.astype(np.int64)] = 1.0
    return out


@dataclass(frozen=True)
class RuleModel:
    """An ordered list of rules with a default: first match wins."""

    task: str
    names: tuple[str, ...]
    conditions: tuple[Node, ...]
    outputs: tuple[Node, ...]
    default: Node
    features: Mapping[str, Any]
    num_classes: int | None = None

    def predict(self, frame: pd.DataFrame | Columns) -> tuple[np.ndarray, np.ndarray]:
        """The output per row (as Predictor.predict) and the index of the rule that gave it
        (-1: the default)."""
        f = Frame(frame, self.features)
        values = rules.evaluate(self.default, f).astype(np.float64, copy=True)
        which = np.full(f.n, -1, dtype=np.int64)
        undecided = np.ones(f.n, dtype=bool)
        for i, (cond, out) in enumerate(zip(self.conditions, self.outputs, strict=True)):
            hit = undecided & rules.evaluate(cond, f)
            if hit.any():
                values[hit] = rules.evaluate(out, f)[hit]
                which[hit] = i
                undecided &= ~hit
        return _as_output(self.task, values, self.num_classes), which

    def rule_names(self, which: np.ndarray) -> list[str]:
        return [self.names[i] if i >= 0 else "default" for i in which.tolist()]


def compile_rule_model(
    task: str,
    doc: Mapping[str, Any],
    features: FeatureKinds,
    num_classes: int | None = None,
    where: str = "rules",
) -> RuleModel:
    """Compile ``{rules: [{name?, when, <output>}], default: {<output>}}``; RulesConfigError
    names the rule (``<where>.rules.<i>``) and the reason (also for a document of the wrong
    shape, e.g. a hand-edited rules.json)."""
    if not isinstance(doc, Mapping):
        raise RulesConfigError(
            f"{where}: a mapping with rules and default, got {type(doc).__name__}"
        )
    items = doc.get("rules") or []
    if not isinstance(items, list | tuple):
        raise RulesConfigError(f"{where}.rules: a list of rules, got {type(items).__name__}")
    if not items:
        raise RulesConfigError(f"{where}.rules: list at least one rule")
    names, conds, outs = [], [], []
    for i, r in enumerate(items):
        at = f"{where}.rules.{i}"
        if not isinstance(r, Mapping):
            raise RulesConfigError(
                f"{at}: a mapping such as {{when: ..., score: ...}}, got {type(r).__name__}"
            )
        names.append(str(r.get("name") or f"rule_{i}"))
        conds.append(_condition(r.get("when"), at, features))
        outs.append(_output_node(task, r, at, features, num_classes))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RulesConfigError(f"{where}.rules: rule names must be distinct, repeated: {dupes}")
    default_doc = doc.get("default") or {}
    if not isinstance(default_doc, Mapping):
        raise RulesConfigError(
            f"{where}.default: a mapping such as {{score: 0.5}}, got {type(default_doc).__name__}"
        )
    default = _output_node(task, default_doc, f"{where}.default", features, num_classes)
    return RuleModel(
        task, tuple(names), tuple(conds), tuple(outs), default, dict(features), num_classes
    )


@dataclass(frozen=True)
class Guardrail:
    name: str
    action: str
    when: Node | None
    value: Node | None = None  # override, boost
    low: float | None = None  # clamp
    high: float | None = None


@dataclass(frozen=True)
class Applied:
    """A model output after guardrails: the output, which guardrail fired on which row, and
    (ranking) which rows a filter dropped."""

    output: np.ndarray
    fired: np.ndarray  # (n, len(guardrails)) bool
    filtered: np.ndarray  # (n,) bool
    names: tuple[str, ...]

    def fired_names(self) -> list[list[str]]:
        """Per row, the names of the guardrails that fired, in the order they ran."""
        if not self.names:
            return [[] for _ in range(len(self.output))]
        return [[self.names[j] for j in np.flatnonzero(row)] for row in self.fired]


@dataclass(frozen=True)
class Guardrails:
    task: str
    items: tuple[Guardrail, ...]
    features: Mapping[str, Any]
    num_classes: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.items)

    def apply(self, frame: pd.DataFrame | Columns, output: np.ndarray) -> Applied:
        """Run every guardrail in order on ``output`` (Predictor.predict's array); no copy of
        ``output`` is modified."""
        f = Frame(frame, self.features)
        out = np.array(output, dtype=np.float64, copy=True)
        fired = np.zeros((f.n, len(self.items)), dtype=bool)
        filtered = np.zeros(f.n, dtype=bool)
        for j, g in enumerate(self.items):
            cond = rules.evaluate(g.when, f) if g.when is not None else np.ones(f.n, dtype=bool)
            if g.action == "filter":
                fired[:, j] = cond & ~filtered
                filtered |= cond
                continue
            if g.action == "override":
                assert g.value is not None
                value = rules.evaluate(g.value, f)
                out[cond] = _as_output(self.task, value[cond], self.num_classes)
                fired[:, j] = cond
            elif g.action == "boost":
                assert g.value is not None
                add = rules.evaluate(g.value, f)
                out[cond] = out[cond] + add[cond]
                fired[:, j] = cond
            else:  # clamp
                clamped = np.clip(
                    out,
                    -np.inf if g.low is None else g.low,
                    np.inf if g.high is None else g.high,
                )
                changed = cond & (clamped != out)
                out[changed] = clamped[changed]
                fired[:, j] = changed
        return Applied(out, fired, filtered, self.names)


def compile_guardrails(
    task: str,
    items: Sequence[Mapping[str, Any]],
    features: FeatureKinds,
    num_classes: int | None = None,
    where: str = "guardrails",
) -> Guardrails:
    """Compile the spec's ``guardrails:`` list; RulesConfigError names the item and the reason
    (also for a list of the wrong shape, e.g. a hand-edited guardrails.json)."""
    info = task_info(task)
    if not isinstance(items, list | tuple):
        raise RulesConfigError(f"{where}: a list of guardrails, got {type(items).__name__}")
    out: list[Guardrail] = []
    for i, g in enumerate(items):
        at = f"{where}.{i}"
        if not isinstance(g, Mapping):
            raise RulesConfigError(
                f"{at}: a mapping such as {{name: ..., when: ..., clamp: ...}}, "
                f"got {type(g).__name__}"
            )
        name = g.get("name")
        if not isinstance(name, str) or not name:
            raise RulesConfigError(f"{at}.name: every guardrail needs a name")
        actions = [a for a in ACTIONS if g.get(a) not in (None, False)]
        if len(actions) != 1:
            raise RulesConfigError(
                f"{at}: give exactly one of {', '.join(ACTIONS)}"
                + (f" (got {', '.join(actions)})" if actions else "")
            )
        action = actions[0]
        if action in ("boost", "filter") and not info.grouped:
            raise RulesConfigError(f"{at}.{action}: only for task ranking (this is {task})")
        if action == "clamp" and info.proba:
            raise RulesConfigError(f"{at}.clamp: not for multiclass (override the label instead)")
        when = g.get("when")
        if when is None and action != "clamp":
            raise RulesConfigError(f"{at}.when: {action} needs a condition")
        cond = _condition(when, at, features) if when is not None else None
        if action == "override":
            spec = g["override"]
            if not isinstance(spec, Mapping):
                raise RulesConfigError(f"{at}.override: a mapping such as {{score: 0.0}}")
            out.append(
                Guardrail(
                    name,
                    action,
                    cond,
                    _output_node(task, spec, f"{at}.override", features, num_classes),
                )
            )
        elif action == "boost":
            try:
                value = rules.compile_expression(g["boost"], features, "number")
            except RuleError as e:
                raise RulesConfigError(f"{at}.boost: {e}") from None
            out.append(Guardrail(name, action, cond, value))
        elif action == "filter":
            if g["filter"] is not True:
                raise RulesConfigError(f"{at}.filter: write filter: true")
            out.append(Guardrail(name, action, cond))
        else:
            spec = g["clamp"]
            if not isinstance(spec, Mapping) or not ({"min", "max"} & set(spec)):
                raise RulesConfigError(f"{at}.clamp: a mapping with min and/or max")
            low, high = spec.get("min"), spec.get("max")
            for k, v in (("min", low), ("max", high)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise RulesConfigError(f"{at}.clamp.{k}: a number, got {v!r}")
                if v is not None and not rules.finite(v):  # NaN would make every output NaN
                    raise RulesConfigError(f"{at}.clamp.{k}: a finite number, got {v!r}")
            if low is not None and high is not None and low > high:
                raise RulesConfigError(f"{at}.clamp: min {low} is above max {high}")
            if info.output == "probability" and (
                (low or 0) < 0 or (high if high is not None else 1) > 1
            ):
                raise RulesConfigError(f"{at}.clamp: a binary score stays within [0, 1]")
            out.append(
                Guardrail(
                    name,
                    action,
                    cond,
                    low=None if low is None else float(low),
                    high=None if high is None else float(high),
                )
            )
    names = [g.name for g in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RulesConfigError(f"{where}: guardrail names must be distinct, repeated: {dupes}")
    return Guardrails(task, tuple(out), dict(features), num_classes)


def filtered_scores(scores: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    """Scores for offline ranking metrics: each filtered row below every kept row (ties among
    filtered rows count as ties)."""
    if not filtered.any():
        return scores
    kept = scores[~filtered]
    floor = (kept.min() if len(kept) else 0.0) - 1.0
    out = scores.copy()
    out[filtered] = floor
    return out
