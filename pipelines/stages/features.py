"""Stage 2: fit the feature transform on the training split (statistics per block, merged)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components import drift
from components.bundle import Storage
from components.features import FeatureTransform
from pipelines import resume, translate
from pipelines.stages.common import RunContext
from pipelines.stages.prepare import Prepared


@dataclass(frozen=True)
class Features:
    transform: FeatureTransform
    key: str  # the reuse key: later stages' keys chain through it
    # the training split's feature profiles (components.drift), carried into the bundle
    profiles: tuple[drift.FeatureProfile, ...] = ()

    def profile_json(self) -> bytes:
        """The bundle's ``profile.json``."""
        return json.dumps([p.to_dict() for p in self.profiles], indent=1).encode()

    @property
    def summary(self) -> dict[str, Any]:
        t = self.transform
        return {
            "numeric": len(t.numeric),
            "categorical": {c.name: c.cardinality for c in t.categorical},
            "rows_fitted": t.rows_fitted,
        } | ({"sparse": {p.name: p.dim for p in t.sparse}} if t.sparse else {})


def input_key(ctx: RunContext, prepared_key: str) -> str:
    """The prepared data's key chained with the features section."""
    return resume.key(prepared_key, ctx.spec.features.model_dump(mode="json"))


def note(ctx: RunContext, transform: FeatureTransform) -> None:
    t = transform
    sparse = ", ".join(f"{p.name}: {p.dim:,} columns" for p in t.sparse)
    ctx.out(
        f"    {len(t.feature_names):,} features ({len(t.numeric)} numeric, "
        f"{len(t.categorical)} categorical" + (f", sparse {sparse})" if sparse else ")")
    )


def fit(ctx: RunContext, prepared: Prepared, key: str) -> Features:
    """Fit on the training split only (Ray Data: per-block statistics merged on the driver)."""
    from components.steps.prepare import fit_features_and_profiles

    transform, profiles = fit_features_and_profiles(
        prepared.train, translate.feature_config(ctx.spec)
    )
    note(ctx, transform)
    return Features(transform, key, tuple(profiles))


def reusable(ctx: RunContext, key: str) -> resume.Reusable[Features]:
    """The transform as features.json under ``prepared/features/``."""
    store = Storage(ctx.paths.features)

    def save(f: Features) -> dict[str, Any]:
        store.write_text("features.json", f.transform.to_json())
        store.write_text(drift.PROFILE_JSON, f.profile_json().decode())
        return {}

    def load(doc: dict[str, Any]) -> Features:
        transform = FeatureTransform.from_json(store.read_text("features.json"))
        note(ctx, transform)
        try:
            docs = json.loads(store.read_text(drift.PROFILE_JSON))
        except FileNotFoundError:  # written before profiles existed: the bundle has none
            docs = []
        return Features(transform, key, tuple(drift.FeatureProfile.from_dict(d) for d in docs))

    return resume.Reusable(("features",), ctx.paths.features, key, save, load)
