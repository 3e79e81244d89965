"""PartitionEvaluator with label-free monitoring: sightings, duplicates, drift alerts."""

from __future__ import annotations

import random
from typing import Any

from streaming.alerting import AlertEngine, AlertTransition, DataDriftRule
from streaming.datadrift import DriftBudget
from streaming.evaluation import PartitionEvaluator
from streaming.labelfree import LabelFreeConfig
from streaming.metrics import parse_window
from streaming.settings import ModelConfig

CFG = ModelConfig(
    task="classification", positive_label=1, windows=["count:100"], detectors={}, segment_tags=[]
)
LF = LabelFreeConfig(
    windows=[parse_window("count:500", name="count:500")],
    reference_events=500,
    budget=DriftBudget(window_false_alarm_rate=0.01),
    lateness_ms=0,
)
RULE = DataDriftRule(name="data_drift", window="count:500")


def evaluator() -> PartitionEvaluator:
    return PartitionEvaluator(
        lambda model: CFG,
        rules_for=lambda model: [RULE],
        engine=AlertEngine(),
        label_free_for=lambda model: LF,
    )


def sighting(k: int, shift: float, rnd: random.Random) -> dict[str, Any]:
    x = rnd.gauss(shift, 1.0)
    return {
        "prediction_id": f"p{k}",
        "model_name": "m",
        "model_version": "1",
        "timestamp": 1_000 * k,
        "features": {"x": x, "z": rnd.gauss(0, 1)},
        "prediction": int(x > 0),
        "score": 0.5,
        "probabilities": None,
        "tags": {},
    }


def test_sightings_feed_the_monitor_once_and_drift_fires_a_feature_alert() -> None:
    ev, rnd = evaluator(), random.Random(3)
    fired: list[dict[str, Any]] = []
    seq = 0
    for k in range(2000):
        seq += 1
        applied = ev.apply_prediction(sighting(k, 1.5 if k >= 1500 else 0.0, rnd), 0, seq)
        assert applied is not None
        fired += [e.record for e in applied.emissions if isinstance(e, AlertTransition)]
    # a replayed sighting (same joiner partition and sequence) is dropped
    assert ev.apply_prediction(sighting(5, 0.0, rnd), 0, seq) is None
    assert ev.duplicates_dropped == 1
    mon = ev.monitors[("m", "1")]
    assert mon.seen == 2000
    assert [(r["status"], r["labels"]["feature"]) for r in fired][:1] == [("firing", "x")]
    assert all(r["starts_at"] >= 1_500_000 for r in fired)
    assert ("m", "1") in ev.monitors_dirty


def test_labeled_examples_reach_the_version_monitor() -> None:
    ev, rnd = evaluator(), random.Random(4)
    for k in range(10):
        ev.apply_prediction(sighting(k, 0.0, rnd), 0, k + 1)
    example = {
        "prediction_id": "p1",
        "model_name": "m",
        "model_version": "1",
        "prediction_timestamp": 1_000,
        "outcome_timestamp": 2_000,
        "label_delay_ms": 1_000,
        "features": {},
        "label": 1,
        "prediction": 1,
        "score": 0.5,
        "probabilities": None,
        "tags": {},
        "source_partition": 0,
        "source_sequence": 11,
    }
    assert ev.apply(example) is not None
    assert ev.monitors[("m", "1")]._cal_scores == [0.5]
    # without label-free monitoring there is no monitor at all
    off = PartitionEvaluator(lambda model: CFG)
    assert off.apply_prediction(sighting(1, 0.0, rnd), 0, 1) is not None
    assert off.monitors == {}
