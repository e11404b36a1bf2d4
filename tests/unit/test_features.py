"""Feature transforms: fitted on train only, JSON round trip, OOV and hashing, mergeable fitting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.features import (
    CategoricalConfig,
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    partial_stats,
)

CONFIG = FeatureConfig(
    numeric=("a", "b"),
    categorical=(
        CategoricalConfig("c", min_frequency=2),
        CategoricalConfig("h", encoding="hash", hash_buckets=64),
    ),
    impute="median",
    standardize=True,
)


def data(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(5, 2, n)
    a[::10] = np.nan
    return pd.DataFrame(
        {
            "a": a,
            "b": rng.exponential(1, n),
            "c": rng.choice(["x", "y", "z", "rare"], n, p=[0.5, 0.3, 0.1995, 0.0005]).astype(
                object
            ),
            "h": [f"id{v}" for v in rng.integers(0, 10_000, n)],
        }
    )


def test_fit_in_parts_equals_fit_at_once() -> None:
    df = data()
    whole = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    parts = fit_transform(
        [partial_stats(df.iloc[i : i + 250], CONFIG) for i in range(0, 1000, 250)], CONFIG
    )
    assert whole.numeric[0].median == parts.numeric[0].median == float(np.nanmedian(df["a"]))
    np.testing.assert_allclose(whole.numeric[1].mean, parts.numeric[1].mean)
    np.testing.assert_allclose(whole.numeric[1].std, df["b"].std(ddof=0))
    assert whole.categorical[0].vocabulary == parts.categorical[0].vocabulary


def test_vocabulary_min_frequency_and_oov() -> None:
    t = fit_transform([partial_stats(data(), CONFIG)], CONFIG)
    vocab = t.categorical[0].vocabulary
    assert vocab[:3] == ("x", "y", "z")  # most frequent first
    codes = t.codes(t.categorical[0], pd.Series(["x", "never-seen", None, "z"]))
    assert codes.tolist() == [1, 0, 0, 3]


def test_hashing_is_stable_and_in_range() -> None:
    t = fit_transform([partial_stats(data(), CONFIG)], CONFIG)
    p = t.categorical[1]
    a = t.codes(p, pd.Series(["id1", "id2", "id1", None]))
    assert a[0] == a[2] and a[3] == 0 and a[:3].min() >= 1 and a.max() <= 64
    # Pinned values: a change in the hash function would silently move every bucket.
    b = FeatureTransform.from_json(t.to_json()).codes(p, pd.Series(["id1", "id2"]))
    assert b.tolist() == a[:2].tolist()


def test_transform_imputes_standardises_and_round_trips_json() -> None:
    df = data()
    t = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    x = t.transform(df)
    assert x.shape == (1000, 4) and x.dtype == np.float32
    assert not np.isnan(x[:, 0]).any()
    med = t.numeric[0]
    np.testing.assert_allclose(x[0, 0], (med.median - med.mean) / med.std, rtol=1e-6)
    again = FeatureTransform.from_json(t.to_json())
    np.testing.assert_array_equal(again.transform(df), x)
    assert t.feature_types == ["q", "q", "c", "c"]


def test_missing_feature_column_is_named() -> None:
    t = fit_transform([partial_stats(data(), CONFIG)], CONFIG)
    try:
        t.transform(data().drop(columns=["b"]))
    except KeyError as e:
        assert "'b'" in str(e)
    else:
        raise AssertionError("expected KeyError")


def test_categorical_ids_code_the_same_whatever_their_parsed_type() -> None:
    """An id read as 3 (int), 3.0 (float, e.g. a CSV column with nulls) or "3" is one category."""
    df = pd.DataFrame(
        {"a": [1.0, 2.0, 3.0], "b": [0.0, 0.0, 0.0], "c": ["3", "3", "x"], "h": ["3", "3", "3"]}
    )
    t = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    for values in (pd.Series([3, 3]), pd.Series([3.0, None]), pd.Series(["3", 3.0], dtype=object)):
        assert (
            t.codes(t.categorical[0], values)[0]
            == t.codes(t.categorical[0], pd.Series(["3"]))[0]
            == 1
        )
        assert (
            t.codes(t.categorical[1], values)[0] == t.codes(t.categorical[1], pd.Series(["3"]))[0]
        )


def test_ranking_dmatrix_accepts_64_bit_group_keys() -> None:
    """Group keys beyond 2**32 (hashed string ids) must not reach XGBoost's 32-bit qids."""
    from components import xgboost_model

    cfg = FeatureConfig(numeric=("a",), categorical=())
    df = pd.DataFrame(
        {
            "a": np.arange(6.0),
            "label": [1, 0, 2, 0, 1, 0],
            "_group": [7 * 2**40, 7 * 2**40, 3, 3, 2**62, 2**62],
        }
    )
    t = fit_transform([partial_stats(df, cfg)], cfg)
    d = xgboost_model.dmatrix(df, t, "ranking", "label")
    assert d.num_row() == 6
    assert list(d.get_uint_info("group_ptr")) == [0, 2, 4, 6]


def test_small_and_large_inputs_get_the_same_codes() -> None:
    """Serving-sized frames take a dict lookup, large ones pandas' indexer: same codes."""
    df = data(2000)
    t = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    values = pd.Series(["x", "rare", None, "never", "z", 3.0] * 100, dtype=object)
    big = t.codes(t.categorical[0], values)
    small = np.concatenate(
        [t.codes(t.categorical[0], values.iloc[i : i + 100]) for i in range(0, 600, 100)]
    )
    np.testing.assert_array_equal(big, small)


def test_log1p_columns_are_logged_before_statistics_and_at_transform() -> None:
    frame = pd.DataFrame({"a": [0.0, 9.0, 99.0, np.nan, -9.0], "b": [1.0, 2.0, 3.0, 4.0, 5.0]})
    config = FeatureConfig(numeric=("a", "b"), categorical=(), standardize=True, log1p=("a",))
    t = fit_transform([partial_stats(frame, config)], config)
    logged = np.array([0.0, np.log(10.0), np.log(100.0), -np.log(10.0)])
    a = t.numeric[0]
    assert a.log1p and not t.numeric[1].log1p
    assert a.mean == pytest.approx(logged.mean()) and a.median == pytest.approx(np.median(logged))
    x = t.transform(frame)
    expected = (np.array([0.0, np.log(10), np.log(100), a.median, -np.log(10)]) - a.mean) / a.std
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-5)
    assert frame["a"].iloc[1] == 9.0  # the caller's frame is untouched
    again = FeatureTransform.from_json(t.to_json())
    np.testing.assert_array_equal(again.transform(frame), x)


def test_request_columns_transform_like_a_dataframe() -> None:
    """Serving passes column arrays built from request rows (no DataFrame): same matrix."""
    from components.features import categorical_strings, strings_of

    df = data(2000)
    t = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    mixed = ["x", "rare", None, "never", 3.0, 3.5, 7, True, float("nan"), float("inf"), -2.0]
    values = np.empty(len(mixed), dtype=object)
    values[:] = mixed
    expected = categorical_strings(pd.Series(values, dtype=object))
    assert strings_of(values).tolist() == expected.tolist()
    rows = data(50, seed=3).astype(object).where(data(50, seed=3).notna(), None)
    rows.loc[0:10, "c"] = values
    rows.loc[0:10, "h"] = values
    columns = {}
    for c in ("a", "b"):
        columns[c] = np.asarray(rows[c].tolist(), dtype=np.float64)
    for c in ("c", "h"):
        col = np.empty(len(rows), dtype=object)
        col[:] = rows[c].tolist()
        columns[c] = col
    np.testing.assert_array_equal(t.transform(columns), t.transform(rows))
    with pytest.raises(KeyError, match=r"missing feature column\(s\) \['h'\]"):
        t.transform({k: v for k, v in columns.items() if k != "h"})


def _rule(counts: dict[str, int], min_frequency: int, max_size: int) -> tuple[str, ...]:
    """The vocabulary rule written out plainly: frequent enough, most frequent first (ties by
    value), cut, then coded in sorted order."""
    kept = sorted(
        ((v, n) for v, n in counts.items() if n >= min_frequency), key=lambda vn: (-vn[1], vn[0])
    )
    return tuple(sorted(v for v, _ in kept[:max_size]))


def test_vocabulary_cut_follows_the_rule_and_can_run_per_partition() -> None:
    from components.features import COLUMN, COUNT, VALUE, cut_vocabularies, vocabularies_of

    rng = np.random.default_rng(7)
    config = FeatureConfig(
        numeric=(),
        categorical=(
            CategoricalConfig("u", min_frequency=3, max_vocab_size=40),
            CategoricalConfig("skip", encoding="hash", hash_buckets=8),
            CategoricalConfig("v", min_frequency=1, max_vocab_size=7),
        ),
    )
    counts = {
        "u": {f"u{i}": int(n) for i, n in enumerate(rng.integers(1, 8, 500))},  # many ties
        "v": {str(i): int(n) for i, n in enumerate(rng.integers(1, 4, 60))},  # "10" < "2"
    }
    long = pd.concat(
        [
            pd.DataFrame({COLUMN: j, VALUE: list(counts[name]), COUNT: list(counts[name].values())})
            for j, name in ((0, "u"), (2, "v"))
        ],
        ignore_index=True,
    )
    whole = vocabularies_of(cut_vocabularies(long, config), config)
    assert whole == {"u": _rule(counts["u"], 3, 40), "v": _rule(counts["v"], 1, 7)}
    # cut per partition of the values (what each shuffle partition does), then again on the union
    part = rng.integers(0, 5, len(long))
    union = pd.concat([cut_vocabularies(long[part == p], config) for p in range(5)])
    assert vocabularies_of(cut_vocabularies(union, config), config) == whole


def test_given_vocabularies_replace_counting() -> None:
    df = data()
    counted = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    parts = [partial_stats(df.iloc[i : i + 300], CONFIG, vocabularies=False) for i in (0, 300, 600)]
    given = fit_transform(
        [*parts, partial_stats(df.iloc[900:], CONFIG, vocabularies=False)],
        CONFIG,
        vocabularies={"c": ("z", "x", "y")},
    )
    assert given.categorical == counted.categorical  # sorted on the way in
    for a, b in zip(given.numeric, counted.numeric, strict=True):
        assert a.median == b.median  # 1,000 values: the sketches are exact
        assert a.mean == pytest.approx(b.mean, rel=1e-14) and a.std == pytest.approx(b.std)
    with pytest.raises(ValueError, match="categorical feature 'c': no value counts"):
        fit_transform(parts, CONFIG)


def test_numeric_statistics_stay_small_and_close_on_large_columns() -> None:
    import json

    rng = np.random.default_rng(8)
    n = 200_000
    a = 1e6 + rng.lognormal(0, 1, n)
    a[::7] = np.nan
    df = pd.DataFrame({"a": a})
    config = FeatureConfig(numeric=("a",), categorical=())
    parts = [partial_stats(df.iloc[i : i + 20_000], config) for i in range(0, n, 20_000)]
    assert max(len(json.dumps(p)) for p in parts) < 100_000  # not 20,000 values a block
    p = fit_transform(parts, config).numeric[0]
    ok = np.sort(a[np.isfinite(a)])
    assert p.mean == pytest.approx(ok.mean(), rel=1e-14)
    assert p.std == pytest.approx(ok.std(), rel=1e-9)
    rank = np.searchsorted(ok, p.median, side="right") / ok.size
    assert abs(rank - 0.5) <= 2e-3
