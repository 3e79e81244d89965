"""Label-free performance estimation: expected confusion matrices, realized counts, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from streaming.estimation import (
    SCORE_BINS,
    Calibration,
    RealizedCounts,
    ScoreHistogram,
    expected_calibration_error,
    fit_calibration,
)

TOL = 1e-9


def histogram(scores: list[float], threshold: float = 0.5) -> ScoreHistogram:
    h = ScoreHistogram.empty()
    for s in scores:
        h.add(s, s >= threshold)
    return h


def expected_metrics(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    return {
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
    }


def assert_close(ours: dict[str, float | None], expected: dict[str, float], tol: float = TOL):
    assert set(ours) == set(expected)
    for k, v in expected.items():
        assert ours[k] == pytest.approx(v, abs=tol), k


# --------------------------------------------------------------------------- ScoreHistogram


def test_estimate_against_hand_computed_confusion_matrix() -> None:
    h = histogram([0.9, 0.8, 0.6, 0.3, 0.1])
    assert h.n == 5
    # predicted positive: E[TP] = 0.9 + 0.8 + 0.6, E[FP] = 0.1 + 0.2 + 0.4
    # predicted negative: E[FN] = 0.3 + 0.1, E[TN] = 0.7 + 0.9
    assert_close(h.estimate(None), expected_metrics(2.3, 0.7, 0.4, 1.6))
    assert h.estimate(None)["accuracy"] == pytest.approx(3.9 / 5)


def test_estimate_module_example_and_same_bin_scores() -> None:
    h = ScoreHistogram.empty()
    for s, positive in [(0.9, True), (0.8, True), (0.3, False), (0.1, False)]:
        h.add(s, positive)
    est = h.estimate(None)
    assert est["accuracy"] == pytest.approx(0.825)
    assert est["precision"] == pytest.approx(0.85)
    assert est["recall"] == pytest.approx(1.7 / 2.1)
    # scores sharing a bin: the estimate uses their sum, so it stays exact without calibration
    same = histogram([0.901, 0.905, 0.909, 0.2])
    assert_close(same.estimate(None), expected_metrics(2.715, 0.285, 0.2, 0.8))


def test_estimate_clamps_and_bins_extremes() -> None:
    h = ScoreHistogram.empty()
    h.add(1.5, True)  # clamped to 1
    h.add(-0.5, False)  # clamped to 0
    h.add(1.0, True)
    assert h.pos_count[SCORE_BINS - 1] == 2
    assert h.neg_count[0] == 1
    assert h.estimate(None) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_estimate_of_an_empty_histogram_is_undefined() -> None:
    assert ScoreHistogram.empty().estimate(None) == dict.fromkeys(
        ("accuracy", "precision", "recall", "f1")
    )
    # only confident negatives: no expected positives at all
    h = histogram([0.0, 0.0])
    est = h.estimate(None)
    assert est["accuracy"] == 1.0
    assert est["precision"] is None
    assert est["recall"] is None
    assert est["f1"] is None


def test_estimate_with_a_calibration() -> None:
    scores = [0.95, 0.75, 0.55, 0.35, 0.05]  # one per bin
    # a piecewise-linear map: c(s) = s / 2 below 0.5, then up to 1 at s = 1
    cal = Calibration((0.0, 0.5, 1.0), (0.0, 0.25, 1.0))
    c = [float(v) for v in cal.apply(scores)]
    assert c == pytest.approx([0.925, 0.625, 0.325, 0.175, 0.025])
    tp, fp = c[0] + c[1] + c[2], 3 - (c[0] + c[1] + c[2])
    fn, tn = c[3] + c[4], 2 - (c[3] + c[4])
    h = histogram(scores)
    assert_close(h.estimate(cal), expected_metrics(tp, fp, fn, tn))
    assert h.estimate(cal)["accuracy"] != pytest.approx(h.estimate(None)["accuracy"])
    # the identity calibration changes nothing
    identity = Calibration((0.0, 1.0), (0.0, 1.0))
    assert_close(h.estimate(identity), h.estimate(None))  # type: ignore[arg-type]
    assert cal.as_dict() == {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.25, 1.0]}


def test_estimate_multiclass_accuracy_is_the_mean_confidence() -> None:
    h = ScoreHistogram.empty(multiclass=True)
    confidences = [0.9, 0.6, 0.45, 0.8, 0.35]
    for p in confidences:
        h.add(p, True)
    est = h.estimate(None)
    assert est["accuracy"] == pytest.approx(np.mean(confidences))
    assert est["precision"] is est["recall"] is est["f1"] is None
    cal = Calibration((0.0, 1.0), (0.5, 1.0))  # c(p) = (1 + p) / 2
    expected = np.mean([(1 + p) / 2 for p in confidences])
    assert h.estimate(cal)["accuracy"] == pytest.approx(expected)


def test_estimate_is_unbiased_for_calibrated_scores() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20_000)
    y = rng.uniform(size=20_000) < p
    pred = p >= 0.5
    h = histogram(p.tolist())
    est = h.estimate(None)
    assert est["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=0.01)
    assert est["precision"] == pytest.approx(precision_score(y, pred), abs=0.01)
    assert est["recall"] == pytest.approx(recall_score(y, pred), abs=0.01)
    assert est["f1"] == pytest.approx(f1_score(y, pred), abs=0.01)


# --------------------------------------------------------------------------- RealizedCounts


def test_realized_counts_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(10, 200))
        y = rng.integers(0, 2, size=n)
        pred = np.where(rng.uniform(size=n) < 0.7, y, 1 - y)
        if y.sum() in (0, n) or pred.sum() in (0, n):
            continue
        r = RealizedCounts()
        for a, b in zip(y.tolist(), pred.tolist(), strict=True):
            r.add(predicted_positive=b == 1, actual_positive=a == 1, correct=a == b)
        assert r.n == n
        assert (r.tp, r.fp, r.fn, r.tn) == (
            int(((pred == 1) & (y == 1)).sum()),
            int(((pred == 1) & (y == 0)).sum()),
            int(((pred == 0) & (y == 1)).sum()),
            int(((pred == 0) & (y == 0)).sum()),
        )
        assert_close(
            r.metrics(),
            {
                "accuracy": accuracy_score(y, pred),
                "precision": precision_score(y, pred),
                "recall": recall_score(y, pred),
                "f1": f1_score(y, pred),
            },
        )


def test_realized_counts_undefined_and_multiclass() -> None:
    assert RealizedCounts().metrics() == dict.fromkeys(("accuracy", "precision", "recall", "f1"))
    r = RealizedCounts()
    for _ in range(3):
        r.add(predicted_positive=False, actual_positive=False, correct=True)
    assert r.metrics() == {"accuracy": 1.0, "precision": None, "recall": None, "f1": None}
    y = ["a", "b", "c", "a", "c", "b", "a"]
    p = ["a", "c", "c", "a", "b", "b", "b"]
    m = RealizedCounts(multiclass=True)
    for a, b in zip(y, p, strict=True):
        m.add(predicted_positive=False, actual_positive=False, correct=a == b)
    assert m.metrics() == {
        "accuracy": pytest.approx(accuracy_score(y, p)),
        "precision": None,
        "recall": None,
        "f1": None,
    }


# --------------------------------------------------------------------------- calibration


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0]) == pytest.approx(0.1)
    # bins: [0, .1): |0 - .05|; [.1, .2): |1 - .15|; [.9, 1]: |.5 - .95| twice (1.0 included)
    scores, labels = [0.05, 0.15, 0.9, 1.0], [0, 1, 1, 0]
    assert expected_calibration_error(scores, labels) == pytest.approx((0.05 + 0.85 + 0.9) / 4)
    assert expected_calibration_error([0.3, 0.3], [0, 1]) == pytest.approx(0.2)
    assert expected_calibration_error([0.25, 0.75], [0, 1], bins=1) == pytest.approx(0.0)
    assert expected_calibration_error([], []) == 0.0
    # against a direct computation on random data
    rng = np.random.default_rng(2)
    s = rng.uniform(size=500)
    y = (rng.uniform(size=500) < s**2).astype(int)
    idx = np.minimum((s * 10).astype(int), 9)
    direct = sum(
        (idx == b).sum() * abs(y[idx == b].mean() - s[idx == b].mean())
        for b in range(10)
        if (idx == b).any()
    ) / len(s)
    assert expected_calibration_error(s, y) == pytest.approx(direct)


def test_fit_calibration_leaves_calibrated_scores_alone_or_nearly() -> None:
    nones = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        p = rng.uniform(size=1000)
        y = (rng.uniform(size=1000) < p).astype(int)
        cal = fit_calibration(p, y)
        if cal is None:
            nones += 1
            continue
        # a map kept on calibrated scores barely moves the estimate on fresh scores
        fresh = rng.uniform(size=5000)
        h = ScoreHistogram.empty()
        for v in fresh:
            h.add(float(v), v > 0.5)
        raw, mapped = h.estimate(None)["accuracy"], h.estimate(cal)["accuracy"]
        assert raw is not None and mapped is not None
        assert abs(mapped - raw) < 0.03, seed
    assert nones >= 15


def test_fit_calibration_too_few_examples_or_one_class() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=59)
    assert fit_calibration(p**3, (rng.uniform(size=59) < p).astype(int)) is None
    q = rng.uniform(size=1000)
    assert fit_calibration(q**3, np.zeros(1000, dtype=int)) is None
    few_pos = np.zeros(1000, dtype=int)
    few_pos[:14] = 1  # fewer than 5 per fold
    assert fit_calibration(q**3, few_pos) is None


def test_fit_calibration_corrects_miscalibrated_scores() -> None:
    closer = 0
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        p = rng.uniform(size=4000)
        y = (rng.uniform(size=4000) < p).astype(int)
        scores = p**3  # over-confident negatives
        cal = fit_calibration(scores[:2000], y[:2000])
        assert cal is not None
        assert list(cal.x) == sorted(cal.x)
        assert list(cal.y) == sorted(cal.y)  # isotonic
        assert all(0.0 <= v <= 1.0 for v in cal.y)
        assert abs(float(cal.apply([0.125])[0]) - 0.5) < 0.1  # c(p^3) ~ p
        # on fresh data: lower calibration error, and estimated accuracy closer to the truth
        s_test, y_test = scores[2000:], y[2000:]
        assert expected_calibration_error(cal.apply(s_test), y_test) < 0.5 * (
            expected_calibration_error(s_test, y_test)
        )
        h = histogram(s_test.tolist())
        truth = accuracy_score(y_test, s_test >= 0.5)
        raw_err = abs(h.estimate(None)["accuracy"] - truth)  # type: ignore[operator]
        cal_err = abs(h.estimate(cal)["accuracy"] - truth)  # type: ignore[operator]
        assert raw_err > 0.1
        closer += cal_err < raw_err and cal_err < 0.04
    assert closer == 5


def test_fit_calibration_is_deterministic() -> None:
    rng = np.random.default_rng(4)
    p = rng.uniform(size=1500)
    y = (rng.uniform(size=1500) < p).astype(int)
    assert fit_calibration(p**2, y) == fit_calibration(p**2, y)
