"""The status read API and its people-facing view, on the in-memory store."""

from __future__ import annotations

import io
import json

from rich.console import Console

from consumers.status_view import render_status
from streaming.evaluation import PartitionEvaluator, series_field
from streaming.settings import ModelConfig
from streaming.state_store import InMemoryStateStore, Ops
from streaming.status import read_status


def _store_with_one_model() -> tuple[InMemoryStateStore, float]:
    store = InMemoryStateStore()
    epoch = store.claim("joiner:0")
    counts = {"predictions": 5, "joined": 4, "unlabeled": 0, "duplicate_outcomes": 1}
    ops = Ops().meta("offset:predictions", 5).meta("offset:outcomes", 6)
    for name, n in counts.items():
        ops.hincrby("counts", f"credit\x1f2\x1f{name}", n)
    store.commit("joiner:0", epoch, 1, ops)

    cfg = ModelConfig(
        task="classification", positive_label=1, windows=["count:3"], detectors={}, segment_tags=[]
    )
    ev = PartitionEvaluator(lambda model: cfg)
    pairs = [(1, 1), (0, 1), (1, 1), (0, 0)]
    for seq, (y, p) in enumerate(pairs, start=1):
        ev.apply(
            {
                "prediction_id": f"p{seq}",
                "model_name": "credit",
                "model_version": "2",
                "prediction_timestamp": 0,
                "outcome_timestamp": 1000 * seq,
                "label_delay_ms": 1500,
                "features": {},
                "prediction": p,
                "label": y,
                "score": None,
                "probabilities": None,
                "tags": {},
                "source_partition": 0,
                "source_sequence": seq,
            }
        )
    e2 = store.claim("evaluator:1")
    ops = Ops().meta("offset:labeled", 4)
    for key, series in ev.series.items():
        ops.hset("snapshots", series_field(key), json.dumps(series.snapshot()))
    store.commit("evaluator:1", e2, 1, ops)
    return store, 3 / 4


def test_read_status_merges_joiner_counts_and_evaluator_series() -> None:
    store, accuracy = _store_with_one_model()
    status = read_status(store, end_offset=lambda topic, p: 10)
    model = status["models"]["credit"]
    v2 = model["versions"]["2"]
    assert v2["counts"]["joined"] == 4 and v2["counts"]["pending"] == 1
    assert v2["counts"]["duplicate_outcomes"] == 1
    assert v2["metrics"]["cumulative"]["accuracy"] == accuracy
    assert v2["metrics"]["windows"]["count:3"]["count"] == 3
    assert v2["labeled"] == 4 and v2["last_event_time_ms"] == 4000
    assert model["all_versions"]["labeled"] == 4
    lags = {
        (p["topic"], p["partition"]): p["lag"]
        for p in status["consumer_groups"]["joiner"]["partitions"]
    }
    assert lags == {("predictions", 0): 5, ("outcomes", 0): 4}
    assert status["consumer_groups"]["evaluator"]["lag"] == 6
    assert read_status(store, model="other")["models"] == {}


def test_render_status_shows_a_column_per_version() -> None:
    store, _ = _store_with_one_model()
    buf = io.StringIO()
    render_status(Console(file=buf, width=100), read_status(store))
    text = buf.getvalue()
    assert "model credit" in text and "v2" in text and "0.7500" in text
    assert "1.5 s / 1.5 s" in text  # label delay
    assert "accuracy count:3" in text


def test_label_free_view_in_status_and_its_table() -> None:
    import random

    from streaming.datadrift import DriftBudget
    from streaming.labelfree import LabelFreeConfig, LabelFreeMonitor
    from streaming.metrics import parse_window

    cfg = LabelFreeConfig(
        windows=[parse_window("count:400", name="count:400")],
        reference_events=400,
        budget=DriftBudget(window_false_alarm_rate=0.01),
    )
    mon, rnd = LabelFreeMonitor("credit", "2", cfg), random.Random(5)
    for k in range(1200):
        shift = 2.0 if k >= 800 else 0.0
        mon.observe(
            {
                "timestamp": k,
                "features": {"income": rnd.gauss(shift, 1), "age": rnd.gauss(0, 1)},
                "prediction": k % 2,
                "score": 0.6,
                "probabilities": None,
            }
        )
    store, _ = _store_with_one_model()
    epoch = store.claim("evaluator:1")
    snap = json.dumps(mon.snapshot())
    store.commit(
        "evaluator:1", epoch, 2, Ops().hset("label_free_snapshots", "credit\x1f2\x1f", snap)
    )
    lf = read_status(store)["models"]["credit"]["versions"]["2"]["label_free"]
    assert lf["predictions"] == 1200 and lf["reference"]["source"] == "first_predictions"
    latest = lf["windows"]["count:400"]["latest"]
    assert latest["drift"]["drifted"] == ["income"]
    assert latest["estimated"]["estimated_accuracy"] == 0.5
    buf = io.StringIO()
    render_status(Console(file=buf, width=120), read_status(store))
    text = buf.getvalue()
    assert "drifted features (count:400)" in text and "first_predictions (400)" in text
    assert "v2 drift over count:400 (400 predictions" in text
    (income,) = [line for line in text.splitlines() if line.strip().startswith("income")]
    (age,) = [line for line in text.splitlines() if line.strip().startswith("age ")]
    assert "DRIFT" in income and "DRIFT" not in age
