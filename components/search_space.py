"""Search spaces written in a spec, as plain data: parsed, checked and applied without Ray.

A space maps a dotted path inside one model's spec (``params.eta``, ``learning_rate``,
``hidden``) to one distribution, written as a one-key mapping::

    params.eta: {loguniform: [0.01, 0.3]}
    params.max_depth: {randint: [3, 11]}      # integers lo..hi-1 (upper bound excluded)
    params.subsample: {uniform: [0.5, 1.0]}
    hidden: {choice: [[64], [128, 64]]}
    epochs: {grid: [4, 8]}                    # every value, times num_samples

``components/steps/tune.py`` turns them into Ray Tune objects; this module only knows the data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("uniform", "loguniform", "randint", "choice", "grid")
FORBIDDEN_ROOTS = ("name", "kind", "scaling", "search")


@dataclass(frozen=True)
class Dist:
    """One distribution: ``kind`` and its arguments (bounds, or the values to choose from)."""

    kind: str
    args: tuple[Any, ...]

    def extremes(self) -> list[Any]:
        """Values a sample can take at its edges (every value for choice/grid): to validate them."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        lo, hi = self.args
        return [lo, hi - 1] if self.kind == "randint" else [lo, hi]


def parse_dist(path: str, raw: Any) -> Dist:
    """A ``{kind: args}`` mapping -> Dist; ValueError naming ``path`` and what is wrong."""
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(
            f"{path}: write one distribution as {{kind: args}}, kind one of {', '.join(KINDS)}; "
            f"got {raw!r}"
        )
    kind, args = next(iter(raw.items()))
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ValueError(f"{path}: {kind} needs a non-empty list of values")
        return Dist(kind, tuple(args))
    if not (isinstance(args, list) and len(args) == 2):
        raise ValueError(f"{path}: {kind} needs [low, high]")
    lo, hi = args
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
    if not numbers or not all(math.isfinite(v) for v in (lo, hi)):
        raise ValueError(f"{path}: {kind} bounds must be finite numbers, got {args!r}")
    if kind == "randint":
        if not (isinstance(lo, int) and isinstance(hi, int)):
            raise ValueError(f"{path}: randint bounds must be integers, got {args!r}")
        if hi - lo < 1:
            raise ValueError(f"{path}: randint needs high > low (high is excluded), got {args!r}")
    elif not lo < hi:
        raise ValueError(f"{path}: {kind} needs low < high, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ValueError(f"{path}: loguniform needs low > 0, got {lo!r}")
    return Dist(kind, (lo, hi))


def parse_space(raw: Mapping[str, Any]) -> dict[str, Dist]:
    """Every entry of a ``search:`` mapping; paths may not touch name/kind/scaling/search."""
    space = {}
    for path, value in raw.items():
        root = path.split(".", 1)[0]
        if root in FORBIDDEN_ROOTS:
            raise ValueError(f"{path}: {root!r} cannot be searched over")
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"{path!r}: not a dotted path")
        space[path] = parse_dist(path, value)
    return space


def apply(model: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a model spec (as a dict) with each ``dotted.path: value`` of ``config`` set.

    Intermediate mappings are created where missing (``params.eta`` on a model without
    ``params``); a path through something that is not a mapping is an error.
    """
    out = copy.deepcopy(dict(model))
    for path, value in config.items():
        node: dict[str, Any] = out
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{path}: {part!r} is not a mapping in the model spec")
            node = child
        node[parts[-1]] = value
    return out


def has_grid(space: Mapping[str, Dist]) -> bool:
    return any(d.kind == "grid" for d in space.values())
