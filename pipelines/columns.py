"""Feature selectors resolved against the data's columns: the spec a run actually uses.

``features.numeric: {prefix: f}`` (or ``{pattern: ...}``, ``{all_except: [...]}``, and the same
for ``categorical``) names no columns until the data is known. When a run starts (and for
``rayline validate --data``) the columns of the first file of ``data.source`` (or of
``data.sources.train``) are read (components.columns) and every selector becomes the list of
the columns it picks, in the data's order. The result is validated again as a whole spec, so
rules, guardrails and ``log1p`` are checked against the real feature names, and it is what
every stage, the run's spec.yaml and the bundle's schema hold.
"""

from __future__ import annotations

from typing import Any

from components import columns as data_columns
from components.readers import SourceError
from pipelines import translate
from pipelines.errors import PipelineError
from pipelines.spec import CategoricalSelector, PipelineSpec, SpecError, spec_from_dict

SHOWN = 20  # columns named in an error message before "... and N more"


def discover(spec: PipelineSpec) -> tuple[str, list[str]]:
    """(where the columns come from, the columns): the one source, or the train source."""
    sources = translate.sources(spec)
    name = "train" if "train" in sources else "all"
    src = sources[name]
    field = "data.source" if name == "all" else f"data.sources.{name}"
    try:
        where, cols = data_columns.source_columns(
            src.uri, src.format, src.params, translate.read_options(src)
        )
    except (SourceError, ValueError) as e:
        raise PipelineError(f"cannot read the columns of {field} ({src.uri}): {e}") from None
    return f"{field} ({where})", cols


def _short(cols: list[str]) -> str:
    more = f" ... and {len(cols) - SHOWN} more" if len(cols) > SHOWN else ""
    return f"{cols[:SHOWN]}{more}"


def resolve(spec: PipelineSpec, cols: list[str], where: str) -> PipelineSpec:
    """``spec`` with every feature selector replaced by the columns of ``cols`` it picks.

    A selector never picks a column with a role (label, its source column, group, timestamp,
    keys) nor one the other feature list holds; ``all_except`` is resolved last so it takes
    what the other list leaves. A selector that picks nothing, or an ``all_except`` naming a
    column the data lacks, is a SpecError naming the selector and ``where``."""
    f = spec.features
    selectors = f.selectors()
    if not selectors:
        return spec
    roles = set(spec.data.role_columns())
    picked: dict[str, list[str]] = {}
    for name in sorted(selectors, key=lambda n: selectors[n].all_except is not None):
        sel = selectors[name]
        field = f"features.{name} {sel.describe()}"
        unknown = [c for c in sel.all_except or () if c not in cols]
        if unknown:
            raise SpecError(f"{field}: {unknown} are not columns of {where}: {_short(cols)}")
        taken = set(f.names()) | {c for got in picked.values() for c in got}
        picked[name] = sel.select(cols, roles | taken)
        if not picked[name]:
            raise SpecError(
                f"{field} matches no column of {where} (columns with a role, {sorted(roles)}, "
                f"and the other features are never picked): {_short(cols)}"
            )
    doc: dict[str, Any] = spec.model_dump(mode="json")
    if "numeric" in picked:
        doc["features"]["numeric"] = picked["numeric"]
    if "categorical" in picked:
        sel = selectors["categorical"]
        assert isinstance(sel, CategoricalSelector)
        doc["features"]["categorical"] = [
            feat if isinstance(feat := sel.feature(c), str) else feat.model_dump(mode="json")
            for c in picked["categorical"]
        ]
    return spec_from_dict(doc, source=f"the spec resolved against {where}")


def resolved(spec: PipelineSpec) -> PipelineSpec:
    """The spec with its selectors resolved against the data (itself when it has none)."""
    if spec.features.resolved:
        return spec
    where, cols = discover(spec)
    return resolve(spec, cols, where)


def missing(spec: PipelineSpec, cols: list[str]) -> list[str]:
    """The columns the (resolved) spec needs that ``cols`` lacks."""
    have = set(cols)
    return [c for c in translate.data_schema(spec).required_columns() if c not in have]


def describe(spec: PipelineSpec) -> list[str]:
    """The feature lists of a resolved spec, one line each, for ``rayline validate --data``."""
    numeric = spec.features.numeric_names()
    categorical = [c.name for c in spec.features.categorical_features()]
    return [
        f"  features.numeric ({len(numeric)}): {', '.join(numeric) or '-'}",
        f"  features.categorical ({len(categorical)}): {', '.join(categorical) or '-'}",
    ]
