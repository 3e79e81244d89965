"""Checks of ``streammon status --json`` against what a generated stream must produce.

Counts come from the generator's bookkeeping (:class:`streams.Expectation`), metrics from
scikit-learn on the generated pairs; floats must agree to 1e-9.
"""

from __future__ import annotations

import math
from typing import Any

from streams import GeneratedStream, classification_metrics, regression_metrics

TOL = 1e-9
SEGMENT_TAG = "region"


def topics(prefix: str) -> dict[str, str]:
    return {t: f"{prefix}{t}" for t in ("predictions", "outcomes", "labeled", "dead-letter")}


def close(actual: Any, expected: float, what: str) -> None:
    assert actual is not None, f"{what}: missing (expected {expected})"
    assert math.isclose(actual, expected, rel_tol=TOL, abs_tol=TOL), (
        f"{what}: {actual!r} != {expected!r}"
    )


def check_classification(series: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    cum = series["metrics"]["cumulative"]
    assert series["task"] == "classification", what
    assert series["labeled"] == expected["count"], f"{what}: labeled"
    assert cum["count"] == expected["count"], f"{what}: count"
    assert cum["averaging"] == "binary", what
    assert cum["positive_label"] == 1, what
    for name in ("accuracy", "precision", "recall", "f1", "log_loss"):
        close(cum[name], expected[name], f"{what}: {name}")
    assert cum["confusion_matrix"]["labels"] == expected["labels"], what
    assert cum["confusion_matrix"]["matrix"] == expected["confusion_matrix"], what


def check_regression(series: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    cum = series["metrics"]["cumulative"]
    assert series["task"] == "regression", what
    assert series["labeled"] == expected["count"], f"{what}: labeled"
    assert cum["count"] == expected["count"], f"{what}: count"
    for name in ("mae", "rmse", "r2"):
        close(cum[name], expected[name], f"{what}: {name}")


def assert_counts(st: dict[str, Any], stream: GeneratedStream, *, flushed: bool) -> None:
    """Every count of every model and version, orphans and dead letters, exactly.

    Before the flush of a stream that expires entries mid-stream, only what cannot depend on
    expiry timing is compared (see :class:`streams.Expectation`).
    """
    exp = stream.expected
    models = st["models"]
    assert set(models) == set(exp.models())

    def same(got: dict[str, int], want: dict[str, int], what: Any) -> None:
        assert {k: got.get(k) for k in want} == want, what

    for model in exp.models():
        same(models[model]["counts"], exp.model_counts(model, flushed=flushed), model)
        assert set(models[model]["versions"]) == set(exp.versions(model)), model
        for version in exp.versions(model):
            got = models[model]["versions"][version]["counts"]
            want = exp.version_counts(model, version, flushed=flushed)
            same(got, want, (model, version))
            # label-free monitoring saw every distinct prediction exactly once (sightings are
            # deduplicated like labeled examples across joiner replays)
            lf = models[model]["versions"][version]["label_free"]
            assert lf is not None and lf["predictions"] == want["predictions"], (model, version)
    if flushed or not exp.expire_mid_stream:
        assert st["orphaned_without_model"] == (exp.orphaned_without_model if flushed else 0)
        assert st["duplicate_outcomes_without_model"] == (
            exp.duplicate_outcomes_without_model if flushed else 0
        )
    assert st["dead_letter"] == {
        "predictions": exp.dead_letter["predictions"],
        "outcomes": exp.dead_letter["outcomes"],
        "labeled": 0,
    }


def assert_metrics(st: dict[str, Any], stream: GeneratedStream, segments: bool) -> None:
    exp = stream.expected
    credit, demand = st["models"]["credit"], st["models"]["demand"]
    check_classification(
        credit["all_versions"], classification_metrics(exp.select("credit")), "credit/*"
    )
    for version in exp.versions("credit"):
        series = credit["versions"][version]
        check_classification(
            series, classification_metrics(exp.select("credit", version)), f"credit/{version}"
        )
        if segments:
            regions = sorted({p.tags[SEGMENT_TAG] for p in exp.select("credit", version)})
            assert sorted(series["segments"]) == [f"{SEGMENT_TAG}={r}" for r in regions]
            for region in regions:
                want = classification_metrics(exp.select("credit", version, (SEGMENT_TAG, region)))
                check_classification(
                    series["segments"][f"{SEGMENT_TAG}={region}"],
                    want,
                    f"credit/{version}/{region}",
                )
    check_regression(demand["all_versions"], regression_metrics(exp.select("demand")), "demand/*")
    check_regression(
        demand["versions"]["1"], regression_metrics(exp.select("demand", "1")), "demand/1"
    )
    if segments:
        for region in sorted({p.tags[SEGMENT_TAG] for p in exp.select("demand")}):
            check_regression(
                demand["versions"]["1"]["segments"][f"{SEGMENT_TAG}={region}"],
                regression_metrics(exp.select("demand", "1", (SEGMENT_TAG, region))),
                f"demand/1/{region}",
            )
