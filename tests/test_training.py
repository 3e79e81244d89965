"""Retraining logic: tables, time-ordered search, budget, gate, profiles, skops round trip."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from river.datasets import synth
from sklearn.metrics import f1_score
from sklearn.model_selection import ParameterSampler
from skops.io.exceptions import UntrustedTypesFoundException

from streaming.errors import ConfigError, ContractError, TrainingError
from streaming.settings import load_settings
from streaming.training import (
    CANDIDATE_KINDS,
    PROFILE_QUANTILES,
    CandidateReport,
    TrainingConfig,
    _pick,  # selection across candidates
    build_table,
    categorical_columns,
    evaluate,
    feature_columns,
    features_frame,
    fit_best,
    frame_for,
    gate,
    make_pipeline,
    not_enough_data,
    param_distributions,
    reference_profile,
)

FAST = TrainingConfig(n_iter=3, cv_folds=3, time_budget_s=120.0, seed=0)
"""Small search for the tests (the default is 6 draws per family)."""

NO_CHURN_MARGIN = 0.02


def example(
    i: int, features: dict[str, Any], label: object, *, ts: int | None = None, pid: str = ""
) -> dict[str, Any]:
    return {
        "prediction_id": pid or f"p{i:06d}",
        "model_name": "m",
        "model_version": "1",
        "prediction_timestamp": i * 1000 if ts is None else ts,
        "outcome_timestamp": (i * 1000 if ts is None else ts) + 500,
        "label_delay_ms": 500,
        "features": features,
        "prediction": label,
        "label": label,
    }


def agrawal(function: int, seed: int, n: int, start_ms: int) -> list[dict[str, Any]]:
    """Agrawal loan applications (5% perturbation); ``elevel`` as a string category."""
    stream = synth.Agrawal(classification_function=function, seed=seed, perturbation=0.05)
    out = []
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        features = dict(x)
        features["elevel"] = f"level{features['elevel']}"
        out.append(example(i, features, int(y), ts=start_ms + i * 1000, pid=f"{seed}-{i}"))
    return out


def linear(n: int, seed: int, coef: tuple[float, float]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.normal(size=2)
        group = ["north", "south", "east"][i % 3]
        y = coef[0] * a + coef[1] * b + (1.5 if group == "north" else 0.0) + rng.normal(0, 0.3)
        features = {"a": float(a), "b": float(b) if i % 10 else None, "group": group}
        out.append(example(i, features, float(y)))
    return out


# ---- config ----------------------------------------------------------------------------------


def test_config_from_settings_copies_the_trainer_settings() -> None:
    settings = load_settings(
        trainer_candidates=["random_forest"],
        trainer_n_iter=2,
        trainer_time_budget_s=5.0,
        trainer_cv_folds=4,
        trainer_holdout_fraction=0.3,
        trainer_min_rows=50,
        trainer_max_rows=1000,
        trainer_primary_metric="f1",
        trainer_promotion_margin=0.05,
        trainer_seed=7,
    )
    cfg = TrainingConfig.from_settings(settings)
    assert cfg == TrainingConfig(
        candidates=("random_forest",),
        n_iter=2,
        time_budget_s=5.0,
        cv_folds=4,
        holdout_fraction=0.3,
        min_rows=50,
        max_rows=1000,
        primary_metric="f1",
        promotion_margin=0.05,
        seed=7,
    )
    assert TrainingConfig.from_settings(load_settings()).candidates == CANDIDATE_KINDS


def test_config_rejects_unknown_candidates_and_metrics() -> None:
    settings = load_settings(trainer_candidates=["random_forest", "xgboost"])
    with pytest.raises(ConfigError, match=r"trainer_candidates: unknown candidate 'xgboost'"):
        TrainingConfig.from_settings(settings)
    with pytest.raises(ConfigError, match="listed more than once: random_forest"):
        TrainingConfig(candidates=("random_forest", "random_forest"))
    with pytest.raises(ConfigError, match="trainer_primary_metric: unknown metric 'auc'"):
        TrainingConfig(primary_metric="auc")
    rmse = TrainingConfig(primary_metric="rmse")
    assert rmse.metric_for("regression") == "rmse"
    with pytest.raises(ConfigError, match="'rmse' is not a classification metric"):
        rmse.metric_for("classification")
    assert TrainingConfig().metric_for("classification") == "accuracy"
    assert TrainingConfig().metric_for("regression") == "rmse"


# ---- tables ----------------------------------------------------------------------------------


def test_build_table_orders_by_time_then_id_and_keeps_the_most_recent() -> None:
    examples = [
        example(0, {"x": 3.0}, 1, ts=300, pid="c"),
        example(0, {"x": 1.0}, 0, ts=100, pid="a"),
        example(0, {"x": 2.5}, 1, ts=200, pid="z"),
        example(0, {"x": 2.0}, 0, ts=200, pid="b"),
        example(0, {"x": 4.0}, 1, ts=400, pid="d"),
    ]
    table = build_table(examples, max_rows=10)
    assert table.times.tolist() == [100, 200, 200, 300, 400]
    assert table.X["x"].tolist() == [1.0, 2.0, 2.5, 3.0, 4.0]  # the 200 tie: "b" before "z"
    assert table.y.tolist() == [0, 0, 1, 1, 1]
    assert (table.window_start_ms, table.window_end_ms) == (100, 401)

    recent = build_table(examples, max_rows=3)
    assert recent.times.tolist() == [200, 300, 400]
    assert recent.X["x"].tolist() == [2.5, 3.0, 4.0]
    assert len(recent) == 3
    with pytest.raises(ConfigError, match="max_rows"):
        build_table(examples, max_rows=0)


def test_build_table_missing_values_mixed_types_and_kinds() -> None:
    examples = [
        example(0, {"age": 30, "plan": "pro", "vip": True, "code": 7}, "yes"),
        example(1, {"age": None, "plan": None, "vip": False, "code": "A7"}, "no"),
        example(2, {"age": float("nan"), "score": 0.5}, "yes"),
        example(3, {"age": float("inf"), "plan": "free", "code": 8.5}, "no"),
    ]
    table = build_table(examples, max_rows=100)
    assert table.columns == ["age", "code", "plan", "score", "vip"]  # union, sorted
    assert table.numeric == ["age", "score", "vip"]
    assert table.categorical == ["code", "plan"]  # str, and str mixed with numbers
    assert table.task == "classification"
    assert table.y.tolist() == ["yes", "no", "yes", "no"]
    x = table.X
    assert x["age"].dtype == np.float64
    assert x["age"].tolist()[0] == 30.0
    assert all(math.isnan(v) for v in x["age"].tolist()[1:])  # None, NaN, inf
    assert x["vip"].tolist()[:2] == [1.0, 0.0]
    assert math.isnan(x["vip"].tolist()[2])  # absent key
    assert x["score"].tolist()[2] == 0.5
    assert x["plan"].dtype == object
    assert x["plan"].tolist()[0] == "pro"
    assert x["plan"].tolist()[3] == "free"
    assert x["plan"].isna().tolist() == [False, True, True, False]
    assert x["code"].tolist()[:2] == ["7", "A7"]
    assert x["code"].tolist()[3] == "8.5"


def test_build_table_task_inference_and_labels() -> None:
    floats = [example(i, {"x": float(i)}, float(i) / 2) for i in range(4)]
    assert build_table(floats, max_rows=10).task == "regression"
    assert build_table(floats, max_rows=10).y.dtype == np.float64
    ints = [example(i, {"x": float(i)}, i % 2) for i in range(4)]
    assert build_table(ints, max_rows=10).task == "classification"
    as_float = [example(i, {"x": float(i)}, float(i % 2)) for i in range(4)]
    table = build_table(as_float, max_rows=10, task="classification")
    assert table.y.dtype == np.int64
    assert table.y.tolist() == [0, 1, 0, 1]
    with pytest.raises(TrainingError, match="must be integers or strings"):
        build_table(floats, max_rows=10, task="classification")
    strings = [example(i, {"x": 1.0}, "a") for i in range(2)]
    with pytest.raises(TrainingError, match="numeric labels"):
        build_table(strings, max_rows=10, task="regression")
    unlabeled = [*ints, example(9, {"x": 1.0}, None), example(10, {"x": 1.0}, float("nan"))]
    table = build_table(unlabeled, max_rows=10)
    assert (len(table), table.dropped_rows) == (4, 2)
    bad = example(0, {"x": 1.0}, 1)
    del bad["prediction_timestamp"]
    with pytest.raises(ContractError, match="prediction_timestamp"):
        build_table([bad], max_rows=10)


def test_features_frame_has_exactly_the_columns() -> None:
    rows = [{"b": 2, "a": "x", "extra": 1}, {"a": None}, {}]
    frame = features_frame(rows, ["a", "b", "never"], categorical=["a"])
    assert list(frame.columns) == ["a", "b", "never"]
    assert frame["a"].dtype == object
    assert frame["a"].isna().tolist() == [False, True, True]
    assert frame["b"].dtype == np.float64
    assert frame["b"].tolist()[0] == 2.0
    assert frame["never"].isna().all()
    # without kinds they are inferred from the values: a digits-only batch stays numeric
    assert features_frame([{"a": 3}], ["a"])["a"].dtype == np.float64
    assert features_frame([{"a": 3}], ["a"], categorical=["a"])["a"].tolist() == ["3"]


# ---- search ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift() -> dict[str, Any]:
    """An old champion (Agrawal function 0), a retrain after the change to function 2, and
    a second retrain on more data of function 2; with each one's holdout metrics."""
    pre = build_table(agrawal(0, seed=1, n=2000, start_ms=0), max_rows=10_000)
    post = build_table(agrawal(2, seed=2, n=2000, start_ms=10**8), max_rows=10_000)
    later = build_table(agrawal(2, seed=3, n=2000, start_ms=2 * 10**8), max_rows=10_000)
    old = fit_best(pre, FAST)
    new = fit_best(post, FAST)
    again = fit_best(later, FAST)
    h1, h2 = new.holdout, again.holdout
    return {
        "pre": pre,
        "old": old,
        "new": new,
        "again": again,
        "after_change": {
            "candidate": evaluate(new.estimator, h1.X, h1.y, "classification"),
            "champion": evaluate(old.estimator, h1.X, h1.y, "classification"),
        },
        "unchanged": {
            "candidate": evaluate(again.estimator, h2.X, h2.y, "classification"),
            "champion": evaluate(new.estimator, h2.X, h2.y, "classification"),
        },
    }


def test_holdout_is_the_most_recent_slice(drift: dict[str, Any]) -> None:
    result = drift["old"]
    assert result.train_rows + result.holdout_rows == 2000
    assert result.holdout_rows == 400  # holdout_fraction 0.2
    assert result.train.times.max() <= result.holdout.times.min()
    assert np.all(np.diff(result.train.times) >= 0)
    assert result.holdout.times.tolist() == drift["pre"].times[-400:].tolist()
    assert result.holdout.y.tolist() == drift["pre"].y[-400:].tolist()
    assert (result.window_start_ms, result.window_end_ms) == (0, 1599 * 1000 + 1)


def test_search_reports_every_candidate(drift: dict[str, Any]) -> None:
    result = drift["new"]
    assert [c.kind for c in result.candidates] == list(CANDIDATE_KINDS)
    assert all(c.status == "ok" and c.n_iter == 3 for c in result.candidates)
    assert all(c.cv_score is not None and c.seconds > 0 for c in result.candidates)
    best = max(result.candidates, key=lambda c: c.cv_score or 0.0)
    assert result.kind == best.kind
    assert result.cv_score == best.cv_score
    assert result.params == best.params
    assert result.params and all(isinstance(v, str) for v in result.params.values())
    assert result.cv_metric == "accuracy"
    assert result.estimator_name in {
        "LogisticRegression",
        "RandomForestClassifier",
        "HistGradientBoostingClassifier",
    }
    json.dumps([c.as_dict() for c in result.candidates], allow_nan=False)


def test_retrain_after_concept_change_beats_the_old_champion(drift: dict[str, Any]) -> None:
    cand, champ = drift["after_change"]["candidate"], drift["after_change"]["champion"]
    print(f"\nafter change: candidate {cand}\n              old champion {champ}")
    decision = gate(cand, champ, task="classification", primary_metric=None, margin=NO_CHURN_MARGIN)
    assert decision.promote is True, decision.reason
    assert decision.primary_metric == "accuracy"
    assert cand["accuracy"] > 0.9
    assert champ["accuracy"] < 0.7  # function 0 knows nothing of function 2
    assert f"{cand['accuracy']:.4f}" in decision.reason
    assert f"{champ['accuracy']:.4f}" in decision.reason


def test_retrain_on_unchanged_concept_is_not_promoted(drift: dict[str, Any]) -> None:
    cand, champ = drift["unchanged"]["candidate"], drift["unchanged"]["champion"]
    print(f"\nunchanged: candidate {cand}\n           champion {champ}")
    assert champ["accuracy"] > 0.9  # the champion is good, the comparison is not vacuous
    decision = gate(cand, champ, task="classification", primary_metric=None, margin=NO_CHURN_MARGIN)
    assert decision.promote is False, decision.reason
    assert decision.candidate_score == cand["accuracy"]
    assert decision.champion_score == champ["accuracy"]
    assert "does not beat" in decision.reason
    assert f"{cand['accuracy']:.4f}" in decision.reason
    assert f"{champ['accuracy']:.4f}" in decision.reason


def test_binary_metrics(drift: dict[str, Any]) -> None:
    metrics = drift["after_change"]["candidate"]
    assert set(metrics) == {"accuracy", "f1", "log_loss", "roc_auc"}
    assert 0 < metrics["log_loss"] < drift["after_change"]["champion"]["log_loss"]
    assert metrics["roc_auc"] > 0.9


def test_search_is_deterministic_for_a_seed(drift: dict[str, Any]) -> None:
    config = TrainingConfig(candidates=("random_forest",), n_iter=2, cv_folds=3, seed=0)
    pre = drift["pre"].rows(0, 600)
    first, second = fit_best(pre, config), fit_best(pre, config)
    assert first.params == second.params
    assert first.cv_score == second.cv_score
    probe = drift["pre"].rows(1000, 1300).X
    assert np.array_equal(
        first.estimator.predict_proba(probe), second.estimator.predict_proba(probe)
    )
    other = fit_best(pre, TrainingConfig(candidates=("random_forest",), n_iter=2, seed=1))
    assert other.params != first.params


def test_budget_runs_only_the_first_candidate(drift: dict[str, Any]) -> None:
    table = drift["pre"].rows(0, 500)
    config = TrainingConfig(n_iter=2, cv_folds=3, time_budget_s=1e-6, seed=0)
    result = fit_best(table, config)
    first, *rest = result.candidates
    assert (first.kind, first.status) == ("logistic_regression", "ok")
    assert [(c.kind, c.status) for c in rest] == [
        ("random_forest", "skipped"),
        ("hist_gradient_boosting", "skipped"),
    ]
    assert all("time budget spent" in (c.reason or "") and c.n_iter == 0 for c in rest)
    assert result.kind == "logistic_regression"
    assert len(result.estimator.predict(result.holdout.X)) == result.holdout_rows
    # an explicit deadline that has passed: the same
    past = fit_best(table, TrainingConfig(n_iter=1, seed=0), deadline_s=0.0)
    assert [c.status for c in past.candidates] == ["ok", "skipped", "skipped"]


def test_a_single_class_fold_does_not_sink_the_search() -> None:
    rng = np.random.default_rng(0)
    examples = []
    for i in range(400):
        x = float(rng.normal())
        label = 0 if i < 150 else int(x > 0)  # the first time-ordered fold has one class
        examples.append(example(i, {"x": x, "c": "hi" if x > 1 else "lo"}, label))
    table = build_table(examples, max_rows=1000)
    result = fit_best(table, TrainingConfig(n_iter=2, cv_folds=3, seed=0))
    logreg = result.candidates[0]
    assert logreg.kind == "logistic_regression"
    assert logreg.status == "ok"
    assert logreg.failed_fits == 2  # fold 0 of both draws
    assert logreg.fold_scores[0] is None
    assert all(s is not None for s in logreg.fold_scores[1:])
    assert result.estimator is not None


def test_search_refuses_tables_it_cannot_use() -> None:
    one_class = build_table([example(i, {"x": float(i)}, 1) for i in range(50)], max_rows=100)
    with pytest.raises(TrainingError, match="single class"):
        fit_best(one_class, FAST)
    tiny = build_table([example(i, {"x": float(i)}, i % 2) for i in range(4)], max_rows=100)
    with pytest.raises(TrainingError, match="too few"):
        fit_best(tiny, FAST)
    no_features = build_table([example(i, {}, i % 2) for i in range(50)], max_rows=100)
    with pytest.raises(TrainingError, match="no feature columns"):
        fit_best(no_features, FAST)


def test_regression_search_and_lower_is_better_gate() -> None:
    table = build_table(linear(600, seed=1, coef=(2.0, -1.0)), max_rows=10_000)
    assert table.task == "regression"
    config = TrainingConfig(n_iter=2, cv_folds=3, seed=0)
    result = fit_best(table, config)
    assert result.cv_metric == "neg_root_mean_squared_error"
    assert all(c.cv_score is not None and c.cv_score < 0 for c in result.candidates)
    old_table = build_table(linear(600, seed=2, coef=(-2.0, 1.0)), max_rows=10_000)
    old = make_pipeline("logistic_regression", "regression", ["a", "b"], ["group"], 0)
    old.fit(old_table.X, old_table.y)
    h = result.holdout
    cand = evaluate(result.estimator, h.X, h.y, "regression")
    champ = evaluate(old, h.X, h.y, "regression")
    print(f"\nregression: candidate {cand}\n            old champion {champ}")
    assert set(cand) == {"mae", "rmse", "r2"}
    assert cand["rmse"] < 0.6  # noise sd 0.3, plus what the missing b costs
    assert cand["r2"] > 0.8
    decision = gate(cand, champ, task="regression", primary_metric=None, margin=0.01)
    assert decision.promote is True
    assert decision.primary_metric == "rmse"
    reverse = gate(champ, cand, task="regression", primary_metric=None, margin=0.01)
    assert reverse.promote is False


# ---- evaluation and gate ---------------------------------------------------------------------


def test_champion_with_other_columns_is_still_scored() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        a = float(rng.normal())
        rows.append(example(i, {"a": a, "kind": "k1" if a > 0 else "k2", "gone": 1.0}, int(a > 0)))
    old = build_table(rows, max_rows=1000)
    champion = make_pipeline("random_forest", "classification", ["a", "gone"], ["kind"], 0)
    champion.fit(old.X, old.y)
    assert feature_columns(champion) == ["a", "gone", "kind"]
    assert categorical_columns(champion) == ["kind"]
    # the new data lost "gone", gained "new", and its "kind" happens to be absent
    new_rows = [
        example(i, {"a": float(v), "new": 3.0}, int(v > 0))
        for i, v in enumerate(rng.normal(size=100))
    ]
    holdout = build_table(new_rows, max_rows=1000)
    assert holdout.columns == ["a", "new"]
    metrics = evaluate(champion, holdout.X, holdout.y, "classification")
    assert metrics["accuracy"] > 0.8  # "a" alone carries the label
    served = frame_for(champion, [r["features"] for r in new_rows[:5]])
    assert list(served.columns) == ["a", "gone", "kind"]
    assert served["kind"].dtype == object
    assert len(champion.predict(served)) == 5


def test_multiclass_and_string_label_metrics() -> None:
    rng = np.random.default_rng(4)
    rows = [
        example(i, {"x": float(v)}, ["lo", "mid", "hi"][int(np.digitize(v, [-0.5, 0.5]))])
        for i, v in enumerate(rng.normal(size=300))
    ]
    table = build_table(rows, max_rows=1000)
    model = make_pipeline("logistic_regression", "classification", ["x"], [], 0)
    model.fit(table.X, table.y)
    metrics = evaluate(model, table.X, table.y, "classification")
    assert set(metrics) == {"accuracy", "f1"}  # no log_loss/roc_auc beyond two classes
    assert metrics["accuracy"] > 0.9
    binary = [
        example(i, {"x": float(v)}, "yes" if v > 0 else "no")
        for i, v in enumerate(rng.normal(size=200))
    ]
    bt = build_table(binary, max_rows=1000)
    model = make_pipeline("logistic_regression", "classification", ["x"], [], 0).fit(bt.X, bt.y)
    metrics = evaluate(model, bt.X, bt.y, "classification", positive_label="yes")
    assert set(metrics) == {"accuracy", "f1", "log_loss", "roc_auc"}
    predicted = model.predict(bt.X)
    tp = int(np.sum((predicted == "yes") & (bt.y == "yes")))
    expected_f1 = 2 * tp / (int(np.sum(predicted == "yes")) + int(np.sum(bt.y == "yes")))
    assert metrics["f1"] == pytest.approx(expected_f1)


def test_gate_directions_margin_and_missing_metrics() -> None:
    def decide(cand: dict[str, float], champ: dict[str, float] | None, metric: str) -> bool:
        task = "regression" if metric in {"rmse", "mae", "r2"} else "classification"
        return gate(cand, champ, task=task, primary_metric=metric, margin=0.01).promote

    assert decide({"accuracy": 0.80}, {"accuracy": 0.78}, "accuracy") is True
    assert decide({"accuracy": 0.785}, {"accuracy": 0.78}, "accuracy") is False  # within margin
    assert decide({"accuracy": 0.70}, {"accuracy": 0.78}, "accuracy") is False
    assert decide({"roc_auc": 0.9}, {"roc_auc": 0.8}, "roc_auc") is True
    assert decide({"r2": 0.5}, {"r2": 0.6}, "r2") is False
    assert decide({"log_loss": 0.30}, {"log_loss": 0.40}, "log_loss") is True
    assert decide({"log_loss": 0.40}, {"log_loss": 0.30}, "log_loss") is False
    assert decide({"mae": 1.0}, {"mae": 1.005}, "mae") is False  # within margin
    assert decide({"rmse": 1.0}, {"rmse": 1.2}, "rmse") is True

    first = gate({"accuracy": 0.5}, None, task="classification", primary_metric=None, margin=0.1)
    assert (first.promote, first.champion_score) == (True, None)
    assert "no champion" in first.reason
    no_proba = gate(
        {"log_loss": 0.2},
        {"accuracy": 0.9},
        task="classification",
        primary_metric="log_loss",
        margin=0.0,
    )
    assert no_proba.promote is True
    assert "champion has no log_loss" in no_proba.reason
    lacking = gate(
        {"f1": 0.2}, {"accuracy": 0.9}, task="classification", primary_metric="accuracy", margin=0.0
    )
    assert (lacking.promote, lacking.reason) == (False, "candidate has no accuracy")
    with pytest.raises(ConfigError, match="not a regression metric"):
        gate({"accuracy": 1.0}, None, task="regression", primary_metric="accuracy", margin=0)
    json.dumps(first.as_dict(), allow_nan=False)


def test_gate_margin_is_strict() -> None:
    at_margin = gate(
        {"accuracy": 0.75},
        {"accuracy": 0.5},
        task="classification",
        primary_metric=None,
        margin=0.25,
    )
    assert at_margin.promote is False
    assert "0.7500" in at_margin.reason and "0.5000" in at_margin.reason
    lower = gate({"mae": 0.5}, {"mae": 0.75}, task="regression", primary_metric="mae", margin=0.25)
    assert lower.promote is False


def test_f1_is_binary_for_label_1_else_macro() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=200)
    frame = pd.DataFrame({"x": x})
    for labels, average in [((0, 1), "binary"), ((2, 3), "macro")]:
        y = np.where(x + rng.normal(0, 0.8, size=200) > 0.3, labels[1], labels[0])
        model = make_pipeline("logistic_regression", "classification", ["x"], [], 0).fit(frame, y)
        predicted = model.predict(frame)
        binary = f1_score(y, predicted, average="binary", pos_label=labels[1])
        macro = f1_score(y, predicted, average="macro")
        assert binary != pytest.approx(macro)  # so the check below tells them apart
        got = evaluate(model, frame, y, "classification")["f1"]
        assert got == pytest.approx(binary if average == "binary" else macro)


def test_candidates_are_compared_on_common_folds() -> None:
    a = CandidateReport("logistic_regression", "ok", cv_score=0.80, fold_scores=(None, 0.8, 0.8))
    b = CandidateReport("random_forest", "ok", cv_score=0.833, fold_scores=(0.99, 0.75, 0.76))
    skipped = CandidateReport("hist_gradient_boosting", "skipped")
    assert _pick([b, a, skipped]) is a  # on folds 1 and 2: 0.80 against 0.755
    assert _pick([skipped]) is None
    tie = CandidateReport("random_forest", "ok", cv_score=0.8, fold_scores=(0.8, 0.8, 0.8))
    assert _pick([a, tie]) is a  # ties go to the earlier candidate


def test_pipeline_layout_and_search_spaces() -> None:
    pipe = make_pipeline("random_forest", "classification", ["n1", "n2"], ["c1"], 3)
    assert [name for name, _ in pipe.steps] == ["prep", "model"]
    prep = pipe.named_steps["prep"]
    (num_name, num, num_cols), (cat_name, cat, cat_cols) = prep.transformers
    assert (num_name, num_cols, cat_name, cat_cols) == ("num", ["n1", "n2"], "cat", ["c1"])
    assert num.steps[0][1].strategy == "median" and num.steps[0][1].add_indicator is True
    assert type(num.steps[1][1]).__name__ == "StandardScaler"
    assert cat.steps[0][1].fill_value == "__missing__"
    assert cat.steps[1][1].handle_unknown == "infrequent_if_exist"
    assert pipe.named_steps["model"].random_state == 3
    assert pipe.named_steps["model"].n_jobs == 1
    expected = {
        ("logistic_regression", "classification"): "LogisticRegression",
        ("logistic_regression", "regression"): "Ridge",
        ("random_forest", "regression"): "RandomForestRegressor",
        ("hist_gradient_boosting", "classification"): "HistGradientBoostingClassifier",
        ("hist_gradient_boosting", "regression"): "HistGradientBoostingRegressor",
    }
    for (kind, task), name in expected.items():
        model = make_pipeline(kind, task, ["n"], [], 0).named_steps["model"]
        assert type(model).__name__ == name
    for kind in CANDIDATE_KINDS:
        for task in ("classification", "regression"):
            space = param_distributions(kind, task)
            pipe = make_pipeline(kind, task, ["n"], [], 0)
            for draw in ParameterSampler(space, n_iter=50, random_state=0):
                pipe.set_params(**draw)  # every key addresses the model step
                if kind == "random_forest":
                    assert draw["model__n_estimators"] <= 200
    with pytest.raises(ConfigError, match="unknown candidate 'svm'"):
        make_pipeline("svm", "classification", ["n"], [], 0)


def test_not_enough_data_rejects() -> None:
    decision = not_enough_data(12, 500)
    assert decision.promote is False
    assert decision.reason == "not enough labeled rows: 12 < trainer_min_rows 500"
    assert decision.candidate_score is None and decision.champion_score is None


# ---- reference profile -----------------------------------------------------------------------


def test_reference_profile_of_a_known_frame() -> None:
    n = 101
    frame = pd.DataFrame(
        {
            "x": pd.Series([float(i) for i in range(n - 1)] + [math.nan], dtype=np.float64),
            "empty": pd.Series([math.nan] * n, dtype=np.float64),
            "city": pd.Series(
                ["paris"] * 60 + ["rome"] * 30 + [f"c{i}" for i in range(10)] + [math.nan],
                dtype=object,
            ),
        }
    )
    y = np.asarray([i % 2 for i in range(n)])
    profile = reference_profile(frame, y, predictions=np.ones(n, dtype=np.int64))
    text = json.dumps(profile, allow_nan=False)
    assert json.loads(text) == profile
    assert profile["rows"] == n
    x = profile["features"]["x"]
    assert x["kind"] == "numeric"
    assert x["count"] == 100
    assert x["missing_rate"] == pytest.approx(1 / n)
    assert (x["min"], x["max"], x["mean"]) == (0.0, 99.0, 49.5)
    assert x["std"] == pytest.approx(np.std(np.arange(100)))
    assert len(x["quantiles"]) == len(PROFILE_QUANTILES) == 21
    assert list(x["quantiles"])[:3] == ["p01", "p05", "p10"]
    assert list(x["quantiles"])[-2:] == ["p95", "p99"]
    assert x["quantiles"]["p50"] == 49.5
    assert x["quantiles"]["p01"] == pytest.approx(0.99)
    assert len(x["histogram"]["edges"]) == 21
    assert x["histogram"]["counts"] == [5] * 20
    assert x["histogram"]["edges"][0] == 0.0 and x["histogram"]["edges"][-1] == 99.0
    empty = profile["features"]["empty"]
    assert (empty["count"], empty["missing_rate"], empty["mean"]) == (0, 1.0, None)
    assert empty["histogram"] is None
    city = profile["features"]["city"]
    assert city["kind"] == "categorical"
    assert (city["count"], city["distinct"]) == (100, 12)
    assert city["missing_rate"] == pytest.approx(1 / n)
    assert list(city["frequencies"].items())[:2] == [("paris", 60), ("rome", 30)]
    assert sum(city["frequencies"].values()) == 100
    assert profile["label"]["frequencies"] == {"0": 51, "1": 50}
    assert profile["predictions"]["frequencies"] == {"1": n}


def test_reference_profile_top_k_other_bucket_and_regression_label() -> None:
    values = [f"v{i:03d}" for i in range(80) for _ in range(2)] + ["v000"]
    frame = pd.DataFrame({"c": pd.Series(values, dtype=object)})
    y = np.linspace(0.0, 1.0, len(values))
    profile = reference_profile(frame, y)
    freq = profile["features"]["c"]["frequencies"]
    assert len(freq) == 51
    assert next(iter(freq)) == "v000"
    assert freq["v000"] == 3
    assert freq["__other__"] == 2 * 30
    label = profile["label"]
    assert label["kind"] == "numeric" and label["max"] == 1.0
    assert profile["predictions"] is None
    json.dumps(profile, allow_nan=False)
    # a forced categorical numeric column
    numeric_codes = pd.DataFrame({"code": pd.Series([1.0, 1.0, 2.0], dtype=np.float64)})
    forced = reference_profile(numeric_codes, [0, 1, 0], categorical=["code"])
    # integral floats are keyed as integers, as production values are binned
    assert forced["features"]["code"]["frequencies"] == {"1": 2, "2": 1}


def test_profile_of_a_training_table_is_json(drift: dict[str, Any]) -> None:
    result = drift["old"]
    profile = reference_profile(result.train.X, result.train.y)
    json.dumps(profile, allow_nan=False)
    assert profile["features"]["elevel"]["kind"] == "categorical"
    assert profile["features"]["salary"]["kind"] == "numeric"
    assert set(profile["features"]) == set(result.train.columns)


# ---- skops ------------------------------------------------------------------------------------

EXPECTED_UNTRUSTED = {
    "logistic_regression": ["numpy.dtype"],
    "random_forest": ["numpy.dtype", "sklearn.tree._tree.Tree"],
    "hist_gradient_boosting": [
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ],
}
"""What skops reports as untrusted for each pipeline family (both tasks)."""


@pytest.fixture(scope="module")
def mixed_table() -> Any:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(300):
        a, b = rng.normal(size=2)
        city = "rare" if i % 100 == 0 else ["paris", "rome", "oslo"][int(rng.integers(0, 3))]
        features = {"a": float(a), "b": float(b) if i % 7 else None, "city": city, "vip": a > 1}
        rows.append(example(i, features, int(a + b > 0)))
    return build_table(rows, max_rows=1000)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("kind", CANDIDATE_KINDS)
def test_pipeline_round_trips_through_skops(kind: str, task: str, mixed_table: Any) -> None:
    t = mixed_table
    y = t.y if task == "classification" else t.y + t.X["a"].to_numpy()
    model = make_pipeline(kind, task, t.numeric, t.categorical, 0)
    model.fit(t.X, y)
    data = sio.dumps(model)
    untrusted = sio.get_untrusted_types(data=data)
    assert sorted(untrusted) == EXPECTED_UNTRUSTED[kind]
    with pytest.raises(UntrustedTypesFoundException):
        sio.loads(data)
    loaded = sio.loads(data, trusted=untrusted)
    probe = frame_for(loaded, [{"a": 0.3, "city": "unseen"}, {"b": -1.0}, {"a": 2.0, "vip": 1}])
    assert feature_columns(loaded) == t.columns
    assert categorical_columns(loaded) == t.categorical
    assert np.array_equal(loaded.predict(probe), model.predict(probe))
    assert np.array_equal(loaded.predict(t.X), model.predict(t.X))
    if task == "classification":
        assert np.array_equal(loaded.predict_proba(t.X), model.predict_proba(t.X))
