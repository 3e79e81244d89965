"""Data drift without labels: bins, profiles, statistics against scipy, the false-alarm budget."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon
from sklearn.linear_model import LogisticRegression

from streaming import datadrift
from streaming.datadrift import (
    OTHER,
    PREDICTION,
    SCORE,
    DriftBudget,
    FeatureReference,
    Reference,
    ReferenceBuilder,
    WindowCounts,
    _rejected,
    _statistics,
    calibration_size,
    compare_window,
    quantile_bins,
)
from streaming.errors import ConfigError
from streaming.training import output_profile, reference_profile

TOL = 1e-12


def numeric_ref(counts: list[float], edges: list[float], **kw: Any) -> FeatureReference:
    return FeatureReference("x", "numeric", [float(c) for c in counts], edges=edges, **kw)


def categorical_ref(counts: list[float], categories: list[str]) -> FeatureReference:
    return FeatureReference("c", "categorical", [float(c) for c in counts], categories=categories)


def stats_of(fref: FeatureReference, ref: list[float], win: list[float]) -> dict[str, float]:
    values = _statistics(np.asarray([ref]), np.asarray([win]), fref)
    return {k: float(v[0]) for k, v in values.items()}


def sample_rows(
    rng: np.random.Generator, n: int, *, shift: float = 0.0, p_a: float = 0.5
) -> list[tuple[dict[str, object], int, float]]:
    """Rows of a numeric ``x`` (normal), a categorical ``c`` and the model's outputs."""
    x = rng.normal(shift, 1.0, n)
    c = rng.choice(["a", "b", "c"], size=n, p=[p_a, (1 - p_a) * 0.6, (1 - p_a) * 0.4])
    z = rng.exponential(1.0, n)
    return [
        (
            {"x": float(x[i]), "c": str(c[i]), "z": float(z[i])},
            int(z[i] > 1.0),
            float(1 / (1 + math.exp(-z[i] + 1.0))),
        )
        for i in range(n)
    ]


def without_z(
    rows: list[tuple[dict[str, object], int, float]],
) -> list[tuple[dict[str, object], int, float | None]]:
    """Only ``x``, ``c`` and the prediction (no score): fewer tests, a faster bootstrap."""
    return [({"x": f["x"], "c": f["c"]}, p, None) for f, p, _ in rows]


def build_ref(rows: list[tuple[dict[str, object], int, float | None]]) -> Reference:
    builder = ReferenceBuilder(len(rows))
    for features, pred, score in rows:
        builder.add(features, prediction=pred, score=score)
    return builder.build()


def window_of(
    ref: Reference, rows: list[tuple[dict[str, object], int, float | None]]
) -> WindowCounts:
    win = WindowCounts.empty(ref)
    for features, pred, score in rows:
        win.add(ref, features, prediction=pred, score=score)
    return win


# --------------------------------------------------------------------------- quantile bins


def test_quantile_bins_ties_are_deduplicated_and_counts_are_exact() -> None:
    values = [0, 0, 0, 1, 1, 2]
    bins = quantile_bins(values, bins=4)
    assert bins == {"edges": [0.0, 1.0, 2.0], "counts": [0, 3, 2, 1]}
    # counts follow bisect_right on the edges (a value on an edge goes to the bin above it)
    fref = numeric_ref([*bins["counts"], 0], bins["edges"])
    assert [fref.bin_of(float(v))[0] for v in values] == [1, 1, 1, 2, 2, 3]


def test_quantile_bins_discrete_and_constant_data() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3, size=1000).tolist()  # 3 distinct values, 20 bins asked
    bins = quantile_bins(values)
    assert bins["edges"] == [0.0, 1.0, 2.0]
    assert len(bins["counts"]) == len(bins["edges"]) + 1
    assert sum(bins["counts"]) == 1000
    assert bins["counts"][1:] == [values.count(0), values.count(1), values.count(2)]
    assert quantile_bins([5.0] * 7) == {"edges": [5.0], "counts": [0, 7]}
    assert quantile_bins([]) == {"edges": [], "counts": [0]}


def test_quantile_bins_continuous_data_are_roughly_equal_frequency() -> None:
    values = np.random.default_rng(1).normal(size=2000).tolist()
    bins = quantile_bins(values, bins=20)
    assert len(bins["edges"]) == 20  # 19 inner quantiles and the maximum
    assert bins["edges"] == sorted(bins["edges"])
    assert bins["edges"][-1] == max(values)
    assert sum(bins["counts"]) == 2000
    assert all(90 <= c <= 110 for c in bins["counts"][1:-1])


# --------------------------------------------------------------------------- bin_of


def test_bin_of_numeric_edges_out_of_range_and_missing() -> None:
    fref = numeric_ref([1, 1, 1, 1, 0], [0.0, 1.0, 2.0], low=-1.0, high=2.0)
    assert fref.missing_bin == 4
    assert fref.bin_of(-0.5) == (0, False)
    assert fref.bin_of(0.0) == (1, False)  # on an edge: the bin above
    assert fref.bin_of(0.999) == (1, False)
    assert fref.bin_of(1) == (2, False)  # ints are numbers
    assert fref.bin_of(2.0) == (3, False)  # the maximum is in range
    assert fref.bin_of(-1.0) == (0, False)  # the minimum is in range
    assert fref.bin_of(-1.5) == (0, True)
    assert fref.bin_of(7.0) == (3, True)
    for missing in (None, math.nan, math.inf, -math.inf, "1.5", "a", True, [1.0]):
        assert fref.bin_of(missing) == (4, False), missing


def test_bin_of_categorical_unseen_and_integral_floats() -> None:
    fref = categorical_ref([5, 3, 2, 1, 0], ["a", "2", "True", OTHER])
    assert fref.bin_of("a") == (0, False)
    assert fref.bin_of("2") == (1, False)
    assert fref.bin_of(2) == (1, False)
    assert fref.bin_of(2.0) == (1, False)  # 2.0 -> "2"
    assert fref.bin_of(2.5) == (3, False)  # "2.5": unseen
    assert fref.bin_of(True) == (2, False)
    assert fref.bin_of("zzz") == (3, False)
    assert fref.bin_of(OTHER) == (3, False)
    assert fref.bin_of(None) == (4, False)


def test_feature_reference_pickle_keeps_the_index() -> None:
    import pickle

    fref = categorical_ref([5, 3, 1, 0], ["a", "b", OTHER])
    copy = pickle.loads(pickle.dumps(fref))
    assert copy.bin_of("b") == (1, False)
    assert copy.bin_of("q") == (2, False)


# --------------------------------------------------------------------------- profiles


def training_frame(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    a = rng.normal(size=n)
    a[rng.uniform(size=n) < 0.1] = np.nan
    b = rng.normal(size=n)
    c = rng.choice(["x", "y", "z"], size=n, p=[0.5, 0.3, 0.2]).astype(object)
    c[rng.uniform(size=n) < 0.05] = None
    y = (b + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return pd.DataFrame({"a": a, "b": b, "c": c}), y


def trained_profile() -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, Any]:
    rng = np.random.default_rng(7)
    frame, y = training_frame(rng, 400)
    hold, y_hold = training_frame(rng, 300)
    model = LogisticRegression().fit(frame[["b"]], y)
    profile = reference_profile(frame, y)
    profile.update(output_profile(model, hold, y_hold))
    # the evaluator reads the profile as stored: JSON
    return json.loads(json.dumps(profile, allow_nan=False)), frame, hold, model


def test_reference_from_training_profile() -> None:
    profile, frame, hold, model = trained_profile()
    ref = Reference.from_profile(profile)
    assert ref.source == "training"
    assert ref.rows == 400
    assert set(ref.features) == {"a", "b", "c", PREDICTION, SCORE}
    a, b, c = ref.features["a"], ref.features["b"], ref.features["c"]
    pred, score = ref.features[PREDICTION], ref.features[SCORE]
    assert (a.kind, b.kind, c.kind, pred.kind, score.kind) == (
        "numeric",
        "numeric",
        "categorical",
        "categorical",
        "numeric",
    )
    # every feature's counts sum to the rows, the missing bin included
    for f in (a, b, c):
        assert sum(f.counts) == pytest.approx(400)
    assert a.counts[a.missing_bin] == int(frame["a"].isna().sum())
    assert b.counts[b.missing_bin] == 0
    assert c.counts[c.missing_bin] == int(frame["c"].isna().sum())
    # numeric: the quantile bins, len(edges) + 2 bins, the exact extremes and std
    present = frame["a"].dropna().to_numpy()
    assert len(a.counts) == len(a.edges) + 2
    assert a.edges == quantile_bins(present.tolist())["edges"]
    assert a.low == pytest.approx(present.min())
    assert a.high == pytest.approx(present.max())
    assert a.scale == pytest.approx(present.std())
    binned = [a.bin_of(float(v))[0] for v in frame["a"]]
    assert np.bincount(binned, minlength=len(a.counts)).tolist() == a.counts
    # categorical: most frequent first, __other__ and missing last
    assert c.categories[-1] == OTHER
    freq = frame["c"].value_counts()
    assert c.categories[:-1] == list(freq.index)
    assert c.counts[:-2] == [float(v) for v in freq.to_numpy()]
    # outputs: over the holdout rows
    preds = model.predict(hold[["b"]])
    assert set(pred.categories) == {"0", "1", OTHER}
    assert pred.counts[pred.categories.index("1")] == int((preds == 1).sum())
    assert sum(pred.counts) == pytest.approx(len(hold))
    assert sum(score.counts) == pytest.approx(len(hold))
    assert score.counts[score.missing_bin] == 0
    assert 0.0 <= score.low < score.high <= 1.0


def test_reference_from_profile_only_and_histogram_fallback() -> None:
    profile, frame, _, _ = trained_profile()
    ref = Reference.from_profile(profile, only=["b"])
    assert set(ref.features) == {"b", PREDICTION, SCORE}
    # an older profile without quantile bins: the equal-width histogram's inner edges
    fp = dict(profile["features"]["a"])
    del fp["bins"]
    old = Reference.from_profile({"rows": 400, "features": {"a": fp}})
    a = old.features["a"]
    assert a.edges == fp["histogram"]["edges"][1:-1]
    assert len(a.counts) == len(a.edges) + 2 == 21
    assert sum(a.counts) == pytest.approx(400)
    binned = [a.bin_of(float(v))[0] for v in frame["a"]]
    assert np.bincount(binned, minlength=len(a.counts)).tolist() == a.counts
    # features without values are left out
    empty = {"rows": 3, "features": {"e": {"kind": "numeric", "count": 0, "min": None}}}
    assert Reference.from_profile(empty).features == {}


def test_categorical_profile_keys_match_bin_of_for_integral_floats() -> None:
    frame = pd.DataFrame({"k": [1, 2, 2, None, 1, 2]})  # float64 because of the missing value
    profile = json.loads(
        json.dumps(reference_profile(frame, [0, 1, 0, 1, 0, 1], categorical=["k"]))
    )
    k = Reference.from_profile(profile).features["k"]
    assert k.bin_of(2.0)[0] != k.categories.index(OTHER)
    assert k.bin_of(2)[0] == k.bin_of(2.0)[0] == k.categories.index(k.categories[0])


def test_reference_builder_kinds_missing_and_top_categories() -> None:
    rows = datadrift.TOP_CATEGORIES + 20
    builder = ReferenceBuilder(rows, categorical=["code"])
    for i in range(rows):
        features: dict[str, object] = {"x": float(i), "code": i % 3, "s": f"v{i}"}
        if i % 10 == 0:
            features["x"] = None
        if i == rows - 1:
            features["late"] = 1.0  # a feature first seen on the last row
        assert builder.add(features, prediction=i % 2, score=None) is (i == rows - 1)
    ref = builder.build()
    assert ref.source == "first_predictions"
    assert ref.rows == rows
    assert SCORE not in ref.features  # no scores were given
    x, code, s = ref.features["x"], ref.features["code"], ref.features["s"]
    assert (x.kind, code.kind, s.kind) == ("numeric", "categorical", "categorical")
    assert x.counts[x.missing_bin] == rows // 10
    assert code.categories == ["0", "1", "2", OTHER]
    assert len(s.categories) == datadrift.TOP_CATEGORIES + 1
    assert s.counts[-2] == rows - datadrift.TOP_CATEGORIES  # the rest is __other__
    assert ref.features["late"].counts[-1] == rows - 1
    for f in ref.features.values():
        assert sum(f.counts) == rows


# --------------------------------------------------------------------------- statistics


def test_jensen_shannon_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    fnum = numeric_ref([0] * 9, [float(e) for e in range(7)])
    fcat = categorical_ref([0] * 6, ["a", "b", "c", "d", OTHER])
    for fref in (fnum, fcat):
        for _ in range(20):
            ref = rng.integers(0, 50, size=len(fref.counts)).astype(float)
            win = rng.integers(0, 50, size=len(fref.counts)).astype(float)
            win[rng.integers(len(win))] = 0  # empty bins on one side
            got = stats_of(fref, ref.tolist(), win.tolist())["jensen_shannon"]
            assert got == pytest.approx(jensenshannon(ref, win, base=2), abs=1e-9)
    assert stats_of(fnum, [1, 2, 3, 0, 0, 0, 0, 0, 0], [2, 4, 6, 0, 0, 0, 0, 0, 0])[
        "jensen_shannon"
    ] == pytest.approx(0.0, abs=1e-7)
    disjoint = stats_of(fnum, [5, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 5])
    assert disjoint["jensen_shannon"] == pytest.approx(1.0)


def test_chi2_matches_scipy_contingency() -> None:
    rng = np.random.default_rng(4)
    fref = categorical_ref([0] * 5, ["a", "b", "c", OTHER])
    for _ in range(20):
        ref = rng.integers(1, 80, size=5).astype(float)
        win = rng.integers(1, 40, size=5).astype(float)
        ours = stats_of(fref, ref.tolist(), win.tolist())["chi2"]
        theirs = sps.chi2_contingency(np.vstack([ref, win]), correction=False).statistic
        assert ours == pytest.approx(theirs, rel=1e-9)
    # a bin empty on both sides is left out (scipy refuses zero expected counts)
    ref, win = [10.0, 0.0, 20.0, 5.0, 0.0], [4.0, 0.0, 1.0, 9.0, 3.0]
    table = np.array([[10, 20, 5, 0], [4, 1, 9, 3]], dtype=float)
    theirs = sps.chi2_contingency(table, correction=False).statistic
    assert stats_of(fref, ref, win)["chi2"] == pytest.approx(theirs, rel=1e-9)


def test_ks_and_wasserstein_on_bins() -> None:
    rng = np.random.default_rng(5)
    edges = [0.0, 1.0, 2.5, 3.0, 5.0]
    fref = numeric_ref([0] * 7, edges, low=-1.0, high=6.0, scale=2.0)
    centers = fref.centers()
    assert centers.tolist() == pytest.approx([-0.5, 0.5, 1.75, 2.75, 4.0, 5.5])
    for _ in range(20):
        ref = rng.integers(0, 30, size=7).astype(float)
        win = rng.integers(0, 30, size=7).astype(float)
        ref[0] += 1
        win[1] += 1
        got = stats_of(fref, ref.tolist(), win.tolist())
        # KS: the largest CDF difference over the non-missing bins
        cdf_r = np.cumsum(ref[:-1]) / ref[:-1].sum()
        cdf_w = np.cumsum(win[:-1]) / win[:-1].sum()
        assert got["ks"] == pytest.approx(np.abs(cdf_r - cdf_w).max(), abs=TOL)
        # Wasserstein: scipy's on the bin centers, in reference standard deviations
        w = sps.wasserstein_distance(centers, centers, ref[:-1], win[:-1]) / 2.0
        assert got["wasserstein"] == pytest.approx(w, abs=1e-9)
        # PSI with half a pseudo-count per bin
        p = (ref + 0.5) / (ref.sum() + 0.5 * 7)
        q = (win + 0.5) / (win.sum() + 0.5 * 7)
        assert got["psi"] == pytest.approx(float(((q - p) * np.log(q / p)).sum()), rel=1e-9)
        assert "chi2" not in got


def test_statistics_are_zero_for_identical_distributions_and_finite_for_empty() -> None:
    fref = numeric_ref([0] * 5, [0.0, 1.0, 2.0], low=0.0, high=2.0, scale=1.0)
    same = stats_of(fref, [10, 20, 30, 40, 0], [1, 2, 3, 4, 0])
    assert same["ks"] == pytest.approx(0.0, abs=TOL)
    assert same["wasserstein"] == pytest.approx(0.0, abs=TOL)
    assert same["jensen_shannon"] == pytest.approx(0.0, abs=1e-7)
    # a window with only missing values: no NaN leaks out
    only_missing = stats_of(fref, [10, 20, 30, 40, 0], [0, 0, 0, 0, 5])
    assert all(math.isfinite(v) for v in only_missing.values())


# --------------------------------------------------------------------------- the budget


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "false_alarm_events"),
        ({"false_alarm_events": 10, "window_false_alarm_rate": 0.1}, "window_false_alarm_rate"),
        ({"window_false_alarm_rate": 0.0}, "drift_window_false_alarm_rate"),
        ({"window_false_alarm_rate": 1.0}, "drift_window_false_alarm_rate"),
        ({"false_alarm_events": 0}, "drift_false_alarm_events"),
        ({"false_alarm_events": 10, "alarm_statistics": ("psi", "bogus")}, "bogus"),
        ({"false_alarm_events": 10, "alarm_statistics": ("bogus",)}, "drift_alarm_statistics"),
        ({"false_alarm_events": 10, "alarm_statistics": ()}, "drift_alarm_statistics"),
    ],
)
def test_drift_budget_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DriftBudget(**kwargs)


def test_window_alpha() -> None:
    events = DriftBudget(false_alarm_events=100_000)
    assert events.window_alpha(1000) == pytest.approx(0.01)
    assert events.window_alpha(1000, windows=2) == pytest.approx(0.005)
    assert events.window_alpha(1000, windows=0) == pytest.approx(0.01)
    assert events.window_alpha(10_000_000) == 0.5  # capped
    rate = DriftBudget(window_false_alarm_rate=0.02)
    assert rate.window_alpha(10) == rate.window_alpha(10**6, windows=3) == 0.02


def test_tests_of_applies_statistics_by_kind() -> None:
    budget = DriftBudget(false_alarm_events=10, alarm_statistics=("ks", "chi2", "psi"))
    assert budget.tests_of(numeric_ref([0, 0], [])) == ["ks", "psi"]
    assert budget.tests_of(categorical_ref([0, 0], [OTHER])) == ["chi2", "psi"]


def test_calibration_size_is_at_most_n_and_monotone() -> None:
    sizes = [calibration_size(n) for n in range(1, 200_001)]
    assert all(1 <= s <= n for n, s in enumerate(sizes, start=1))
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    assert [calibration_size(n) for n in (1, 7, 10, 99, 1000, 1234, 2600, 99_999)] == [
        1,
        7,
        10,
        90,
        1000,
        1200,
        2500,
        90_000,
    ]
    # never coarser than the grid: the widest step (1.5 -> 2, 3 -> 4) is a factor 4/3
    assert all(n / s < 4 / 3 for n, s in enumerate(sizes, start=1))


def test_rejected_bonferroni_and_benjamini_hochberg() -> None:
    pvals = [(0.001, "a"), (0.008, "b"), (0.012, "c"), (0.039, "d"), (0.5, "e")]
    # Bonferroni: p <= 0.05 / 5; BH: the largest i with p_(i) <= 0.05 * i / 5 is i = 4
    assert _rejected(pvals, 0.05, "bonferroni") == {"a", "b"}
    assert _rejected(pvals, 0.05, "benjamini_hochberg") == {"a", "b", "c", "d"}
    assert _rejected([], 0.05, "bonferroni") == set()
    # step-up: a later p-value under its line rejects every smaller one
    assert _rejected([(0.02, "a"), (0.021, "b")], 0.04, "benjamini_hochberg") == {"a", "b"}
    assert _rejected([(0.02, "a"), (0.021, "b")], 0.04, "bonferroni") == {"a"}


def test_benjamini_hochberg_rejects_at_least_what_bonferroni_rejects() -> None:
    rng = np.random.default_rng(6)
    for _ in range(500):
        m = int(rng.integers(1, 12))
        names = [f"f{i % 5}" for i in range(m)]  # several tests per feature
        p = rng.uniform(size=m) ** rng.uniform(1, 6)
        pvals = list(zip(p.tolist(), names, strict=True))
        alpha = float(rng.uniform(0.001, 0.2))
        bonf = _rejected(pvals, alpha, "bonferroni")
        bh = _rejected(pvals, alpha, "benjamini_hochberg")
        assert bonf <= bh
        assert bh <= {name for pv, name in pvals if pv <= alpha}


# --------------------------------------------------------------------------- compare_window


def test_compare_window_flags_only_the_shifted_features() -> None:
    rng = np.random.default_rng(10)
    ref = build_ref(sample_rows(rng, 1000))
    budget = DriftBudget(window_false_alarm_rate=0.01)
    shifted = compare_window(ref, window_of(ref, sample_rows(rng, 500, shift=1.0)), budget)
    assert shifted.drifted == ["x"]
    assert shifted.features["x"].drifted
    assert not shifted.features["c"].drifted
    assert shifted.features["x"].p_values["jensen_shannon"] < 0.01 / shifted.tests
    assert shifted.value("drifted_features") == 1.0
    assert shifted.value("ks:x") == shifted.features["x"].statistics["ks"] > 0.2
    recat = compare_window(ref, window_of(ref, sample_rows(rng, 500, p_a=0.2)), budget)
    assert recat.drifted == ["c"]
    assert recat.features["c"].statistics["chi2_p_value"] < 1e-6
    both = compare_window(ref, window_of(ref, sample_rows(rng, 500, shift=1.0, p_a=0.2)), budget)
    assert set(both.drifted) == {"x", "c"}
    for result in (shifted, recat, both):
        assert result.n == 500
        assert result.alpha == 0.01
        assert result.tests == len(ref.features)  # one jensen_shannon test per feature
        json.dumps(result.as_dict(), allow_nan=False)


def test_compare_window_orders_outputs_last_and_reports_rates() -> None:
    rng = np.random.default_rng(11)
    ref = build_ref(sample_rows(rng, 1000))
    rows = sample_rows(rng, 400)
    for features, *_ in rows[:100]:
        features["x"] = None
    drifted_out = [(f, 1, 1.0) for f, _, _ in rows]  # outputs changed
    result = compare_window(ref, window_of(ref, drifted_out), DriftBudget(false_alarm_events=10**5))
    # the missing values drift x; outputs come after every feature
    assert result.drifted[0] == "x"
    assert set(result.drifted[1:]) == {PREDICTION, SCORE}
    assert result.features["x"].missing_rate == 0.25
    assert result.value("missing_rate:x") == 0.25
    assert result.features[SCORE].out_of_range_rate == 1.0  # above every score seen
    assert result.features["z"].out_of_range_rate < 0.05
    assert result.value("out_of_range_rate:c") is None
    assert result.value("psi:nope") is None
    assert result.alpha == pytest.approx(400 / 10**5)


def test_compare_window_false_alarm_rate_on_undrifted_windows() -> None:
    """Under no drift a window alarms with probability at most alpha (fresh reference each)."""
    rng = np.random.default_rng(12)
    trials, alpha = 100, 0.05
    for correction in ("bonferroni", "benjamini_hochberg"):
        budget = DriftBudget(
            window_false_alarm_rate=alpha,
            correction=correction,  # type: ignore[arg-type]
            alarm_statistics=("jensen_shannon", "ks", "chi2"),
        )
        alarms = 0
        for t in range(trials):
            ref = build_ref(without_z(sample_rows(rng, 400)))
            win = window_of(ref, without_z(sample_rows(rng, 250)))
            result = compare_window(ref, win, budget, seed=t)
            alarms += bool(result.drifted)
        # P(Binomial(100, 0.05) > bound) < 0.001
        bound = sps.binom.ppf(0.999, trials, alpha)
        assert alarms <= bound, (correction, alarms)


def test_compare_window_is_deterministic() -> None:
    rng = np.random.default_rng(13)
    ref = build_ref(sample_rows(rng, 600))
    win = window_of(ref, sample_rows(rng, 300, shift=0.15))
    budget = DriftBudget(
        window_false_alarm_rate=0.05, alarm_statistics=("psi", "ks", "wasserstein", "chi2")
    )
    first = compare_window(ref, win, budget, seed=3).as_dict()
    again = compare_window(ref, win, budget, seed=3).as_dict()
    datadrift._CALIBRATIONS.clear()  # recomputed from scratch, not read from the cache
    fresh = compare_window(ref, win, budget, seed=3).as_dict()
    assert first == again == fresh
    # a reference with the same bins (even rebuilt) gives the same result
    rebuilt = Reference(
        {k: FeatureReference(**_fields(v)) for k, v in ref.features.items()}, ref.rows, ref.source
    )
    assert rebuilt.fingerprint == ref.fingerprint
    assert compare_window(rebuilt, win, budget, seed=3).as_dict() == first


def _fields(f: FeatureReference) -> dict[str, Any]:
    return {
        "name": f.name,
        "kind": f.kind,
        "counts": list(f.counts),
        "edges": list(f.edges),
        "categories": list(f.categories),
        "low": f.low,
        "high": f.high,
        "scale": f.scale,
    }


def test_calibration_cache_distinguishes_references_by_scale() -> None:
    def ref_with(scale: float) -> Reference:
        fref = FeatureReference(
            "x", "numeric", [0, 100, 100, 100, 100, 0, 0], edges=[0, 1, 2, 3, 4], low=0, high=4
        )
        fref.scale = scale
        return Reference({"x": fref}, 400, "training")

    win = WindowCounts({"x": [0, 40, 60, 100, 100, 0, 0]}, {"x": 0}, 300)
    budget = DriftBudget(window_false_alarm_rate=0.05, alarm_statistics=("wasserstein",))
    datadrift._CALIBRATIONS.clear()
    fresh = compare_window(ref_with(100.0), win, budget).as_dict()
    datadrift._CALIBRATIONS.clear()
    compare_window(ref_with(1.0), win, budget)
    after_other = compare_window(ref_with(100.0), win, budget).as_dict()
    assert after_other == fresh


def test_module_example() -> None:
    rng = np.random.default_rng(0)
    builder = ReferenceBuilder(500, categorical=())
    for x in rng.normal(size=500):
        builder.add({"x": float(x), "c": "a" if x > 0 else "b"}, prediction=int(x > 0), score=None)
    ref = builder.build()
    win = WindowCounts.empty(ref)
    for x in rng.normal(loc=1.0, size=300):
        win.add(ref, {"x": float(x), "c": "a"}, prediction=1, score=None)
    assert win.n == 300
    assert sum(win.counts["x"]) == 300
    result = compare_window(ref, win, DriftBudget(window_false_alarm_rate=0.01), seed=1)
    assert result.drifted == ["c", "x", PREDICTION]
