"""The per-version label-free monitor: references, windows, estimates, labels, state."""

from __future__ import annotations

import json
import math
import pickle
import random
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from streaming.datadrift import DriftBudget, Reference, ReferenceBuilder
from streaming.estimation import ScoreHistogram
from streaming.labelfree import LabelFreeConfig, LabelFreeMonitor
from streaming.metrics import parse_window

BUDGET = DriftBudget(window_false_alarm_rate=0.01)


def config(*windows: str, **kw: Any) -> LabelFreeConfig:
    kw.setdefault("budget", BUDGET)
    kw.setdefault("lateness_ms", 0)
    return LabelFreeConfig(windows=[parse_window(w) for w in windows], **kw)


class Stream:
    """Predictions of a binary model with a numeric ``x``, a categorical ``c`` and a score."""

    def __init__(self, seed: int = 0) -> None:
        self.rnd = random.Random(seed)

    def prediction(
        self, ts: int, *, shift: float = 0.0, skew: float = 1.0, multiclass: bool = False
    ) -> dict[str, Any]:
        x = self.rnd.gauss(shift, 1.0)
        c = self.rnd.choice("aab")
        p = self.rnd.random()  # the true probability of the positive class
        score = p**skew
        if multiclass:
            probs = {"a": p / 2, "b": (1 - p) / 2, "c": 0.5}
            pred = max(probs, key=lambda k: probs[k])
            return {
                "timestamp": ts,
                "features": {"x": x, "c": c},
                "prediction": pred,
                "score": None,
                "probabilities": probs,
                "_p": p,
            }
        return {
            "timestamp": ts,
            "features": {"x": x, "c": c},
            "prediction": int(score >= 0.5),
            "score": score,
            "probabilities": None,
            "_p": p,
        }

    def label(self, record: dict[str, Any]) -> dict[str, Any]:
        y = int(self.rnd.random() < record["_p"])
        return {
            "label": y,
            "prediction": record["prediction"],
            "score": record["score"],
            "prediction_timestamp": record["timestamp"],
        }


def reference(seed: int = 99, n: int = 1000) -> Reference:
    stream = Stream(seed)
    builder = ReferenceBuilder(n)
    for i in range(n):
        r = stream.prediction(i)
        builder.add(r["features"], prediction=r["prediction"], score=r["score"])
    return builder.build()


def feed(mon: LabelFreeMonitor, records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Observe every record; the (index, window) of each window closed."""
    return [(i, name) for i, r in enumerate(records) for name in mon.observe(r)]


def walk(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [v for x in value.values() for v in walk(x)]
    if isinstance(value, list | tuple):
        return [v for x in value for v in walk(x)]
    return [value] if isinstance(value, float) else []


def assert_json_clean(snapshot: dict[str, Any]) -> None:
    json.dumps(snapshot, allow_nan=False)
    assert all(math.isfinite(v) for v in walk(snapshot))


# --------------------------------------------------------------------------- windows


def test_reference_from_first_predictions_then_count_windows() -> None:
    mon = LabelFreeMonitor("m", "1", config("count:100", reference_events=200))
    stream = Stream(1)
    snap = mon.snapshot()
    assert snap["reference"] == {"source": "building", "rows": 0, "needed": 200, "features": []}
    closed = feed(mon, [stream.prediction(i) for i in range(150)])
    assert closed == []
    assert mon.reference is None
    assert mon.snapshot()["reference"]["rows"] == 150
    closed = feed(mon, [stream.prediction(i) for i in range(150, 200)])
    assert closed == []
    assert mon.reference is not None
    assert mon.reference.source == "first_predictions"
    assert mon.reference.rows == 200
    assert set(mon.reference.features) == {"x", "c", "output:prediction", "output:score"}
    assert mon.latest == {}
    # after the reference: a window closes every 100 predictions, tiling the ordinals
    closed = feed(mon, [stream.prediction(i) for i in range(200, 550)])
    assert closed == [(99, "last_100"), (199, "last_100"), (299, "last_100")]
    latest = mon.latest["last_100"]
    assert (latest.start, latest.end, latest.n) == (200, 300, 100)
    assert [(h["start"], h["end"], h["n"]) for h in mon.history["last_100"]] == [
        (0, 100, 100),
        (100, 200, 100),
        (200, 300, 100),
    ]
    assert latest.drift is not None
    assert latest.drift.drifted == []
    assert mon.seen == 550
    snap = mon.snapshot()
    assert snap["predictions"] == 550
    assert snap["reference"]["source"] == "first_predictions"
    assert snap["reference"]["needed"] is None
    assert snap["windows"]["last_100"]["latest"]["start"] == 200


def test_count_window_history_is_bounded() -> None:
    mon = LabelFreeMonitor("m", "1", config("count:50", history=3), reference())
    stream = Stream(2)
    closed = feed(mon, [stream.prediction(i) for i in range(260)])
    assert [i for i, _ in closed] == [49, 99, 149, 199, 249]
    assert [h["start"] for h in mon.history["last_50"]] == [100, 150, 200]


def test_time_windows_close_after_end_plus_lateness_and_drop_late_predictions() -> None:
    mon = LabelFreeMonitor(
        "m", "1", config("time:1s", lateness_ms=500, min_window_events=10), reference()
    )
    stream = Stream(3)
    assert feed(mon, [stream.prediction(ts) for ts in range(0, 1000, 5)]) == []  # 200 in [0, 1s)
    assert feed(mon, [stream.prediction(ts) for ts in range(1000, 1500, 10)]) == []  # 50
    assert mon.latest == {}
    # within the lateness: still added to its window
    assert mon.observe(stream.prediction(900)) == []
    assert mon.late == 0
    # the event time reaches end + lateness: the window closes
    assert mon.observe(stream.prediction(1500)) == ["1s"]
    first = mon.latest["1s"]
    assert (first.start, first.end, first.n) == (0, 1000, 201)
    assert first.drift is not None
    # later predictions of a closed window are counted as late and added nowhere
    for ts in (999, 0, 500):
        assert mon.observe(stream.prediction(ts)) == []
    assert mon.late == 3
    assert mon.snapshot()["late_predictions"] == 3
    feed(mon, [stream.prediction(ts) for ts in range(1500, 2000, 10)])  # 50 more in [1s, 2s)
    assert mon.observe(stream.prediction(2499)) == []
    assert mon.observe(stream.prediction(2500)) == ["1s"]
    second = mon.latest["1s"]
    assert (second.start, second.end, second.n) == (1000, 2000, 101)
    assert [h["n"] for h in mon.history["1s"]] == [201, 101]
    assert mon.seen == 200 + 50 + 1 + 1 + 3 + 50 + 2


def test_one_event_can_close_several_time_windows_in_order() -> None:
    cfg = config("time:1s", min_window_events=1, lateness_ms=5000)
    mon = LabelFreeMonitor("m", "1", cfg, reference())
    stream = Stream(4)
    assert feed(mon, [stream.prediction(ts) for ts in (10, 1010, 2010, 5999)]) == []
    assert mon.observe(stream.prediction(8000)) == ["1s", "1s", "1s"]
    assert [(h["start"], h["n"]) for h in mon.history["1s"]] == [(0, 1), (1000, 1), (2000, 1)]


def test_straggler_for_a_window_past_its_lateness_is_late() -> None:
    mon = LabelFreeMonitor("m", "1", config("time:1s", min_window_events=1), reference())
    stream = Stream(5)
    feed(mon, [stream.prediction(ts) for ts in range(0, 1000, 10)])
    assert mon.observe(stream.prediction(5000)) == ["1s"]  # closes [0, 1s)
    assert mon.observe(stream.prediction(2500)) == []  # [2s, 3s) ended 2.5 s of event time ago
    assert mon.late == 1
    assert mon.latest["1s"].start == 0


# --------------------------------------------------------------------------- metrics


def test_metric_and_samples() -> None:
    mon = LabelFreeMonitor(
        "m",
        "1",
        config("count:400", "time:1h", budget=DriftBudget(false_alarm_events=100_000)),
        reference(),
    )
    stream = Stream(6)
    assert mon.metric("last_400", "estimated_accuracy") is None
    assert mon.samples("last_400") == 0
    records = [stream.prediction(i, shift=1.0) for i in range(400)]
    assert feed(mon, records) == [(399, "last_400")]
    expected = ScoreHistogram.empty()
    for r in records:
        expected.add(r["score"], r["prediction"] == 1)
    est = expected.estimate(None)
    for k in ("accuracy", "precision", "recall", "f1"):
        assert mon.metric("last_400", f"estimated_{k}") == pytest.approx(est[k])
    drift = mon.latest["last_400"].drift
    assert drift is not None
    assert drift.drifted == ["x"]
    assert drift.alpha == pytest.approx(400 / 100_000 / 2)  # split over 2 window kinds
    assert mon.metric("last_400", "drifted_features") == 1.0
    assert mon.metric("last_400", "psi:x") == drift.features["x"].statistics["psi"] > 0.1
    assert mon.metric("last_400", "psi:c") == drift.features["c"].statistics["psi"] < 0.1
    assert mon.metric("last_400", "missing_rate:x") == 0.0
    assert mon.metric("last_400", "psi:nope") is None
    assert mon.metric("1h", "estimated_accuracy") is None  # not closed
    assert mon.samples("last_400") == 400


def test_small_time_window_is_reported_but_not_tested() -> None:
    mon = LabelFreeMonitor("m", "1", config("time:1s", min_window_events=100), reference())
    stream = Stream(7)
    feed(mon, [stream.prediction(ts) for ts in range(0, 1000, 20)])  # 50 events
    assert mon.observe(stream.prediction(1000)) == ["1s"]
    closed = mon.latest["1s"]
    assert closed.n == 50
    assert closed.drift is None
    assert mon.samples("1s") == 0
    assert mon.metric("1s", "drifted_features") is None
    assert mon.metric("1s", "estimated_accuracy") is not None
    assert mon.history["1s"][-1]["drifted"] is None
    assert_json_clean(mon.snapshot())


def test_multiclass_estimate_from_probabilities() -> None:
    mon = LabelFreeMonitor("m", "1", config("count:200"), reference())
    stream = Stream(8)
    records = [stream.prediction(i, multiclass=True) for i in range(200)]
    feed(mon, records)
    assert mon.multiclass is True
    confidence = [r["probabilities"][r["prediction"]] for r in records]
    assert mon.metric("last_200", "estimated_accuracy") == pytest.approx(np.mean(confidence))
    assert mon.metric("last_200", "estimated_precision") is None
    # labels of a multi-class model never train a binary calibration
    for r in records:
        mon.observe_label({**stream.label(r), "label": "a"})
    assert mon.calibration_source == "none"


# --------------------------------------------------------------------------- labels


def test_labels_fill_the_time_window_of_their_prediction() -> None:
    mon = LabelFreeMonitor("m", "1", config("time:1s", calibration_events=10**6), reference())
    stream = Stream(9)
    first = [stream.prediction(ts) for ts in range(0, 1000, 5)]  # 200 in [0, 1s)
    second = [stream.prediction(ts) for ts in range(1000, 2000, 10)]  # 100 in [1s, 2s)
    feed(mon, first + second)
    rows = mon.estimation_rows()
    assert [(r["start"], r["end"], r["predictions"], r["labeled"]) for r in rows] == [
        (0, 1000, 200, 0),
        (1000, 2000, 100, 0),
    ]
    assert rows[0]["realized"]["accuracy"] is None
    assert rows[0]["error"] == {}
    labels = [stream.label(r) for r in first]
    for lab in labels[:99]:
        mon.observe_label(lab)
    mon.observe_label({**labels[0], "prediction_timestamp": 10**9})  # no such window: ignored
    rows = mon.estimation_rows()
    assert rows[0]["labeled"] == 99
    assert rows[1]["labeled"] == 0
    assert rows[0]["error"] == {}  # fewer than half the predictions labeled
    mon.observe_label(labels[99])
    rows = mon.estimation_rows()
    assert rows[0]["labeled"] == 100
    y = [lab["label"] for lab in labels[:100]]
    p = [lab["prediction"] for lab in labels[:100]]
    realized = rows[0]["realized"]
    assert realized["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert realized["precision"] == pytest.approx(precision_score(y, p))
    assert realized["recall"] == pytest.approx(recall_score(y, p))
    assert realized["f1"] == pytest.approx(f1_score(y, p))
    expected = ScoreHistogram.empty()
    for r in first:
        expected.add(r["score"], r["prediction"] == 1)
    assert rows[0]["estimated"] == pytest.approx(expected.estimate(None))
    assert set(rows[0]["error"]) == {"accuracy", "precision", "recall", "f1"}
    for k, v in rows[0]["error"].items():
        assert v == pytest.approx(rows[0]["estimated"][k] - realized[k])
    assert rows[1]["error"] == {}
    est = mon.snapshot()["estimation"]
    assert est["compared_windows"] == 1
    assert est["mean_abs_error"] == {k: abs(v) for k, v in sorted(rows[0]["error"].items())}


def test_a_few_labels_are_not_compared() -> None:
    mon = LabelFreeMonitor("m", "1", config("time:1s"), reference())
    stream = Stream(10)
    records = [stream.prediction(ts) for ts in range(0, 1000, 25)]  # 40 predictions
    feed(mon, records)
    for r in records[:29]:
        mon.observe_label(stream.label(r))
    assert mon.estimation_rows()[0]["error"] == {}  # at least 30 labels are needed
    mon.observe_label(stream.label(records[29]))
    assert mon.estimation_rows()[0]["error"] != {}


def test_calibration_learnt_from_the_first_labels() -> None:
    cfg = config("time:1s", calibration_events=1000)
    mon = LabelFreeMonitor("m", "1", cfg, reference())
    stream = Stream(11)
    records = [stream.prediction(i, skew=3.0) for i in range(2000)]  # over-confident negatives
    feed(mon, records)
    labels = [stream.label(r) for r in records]
    before = mon.estimation_rows()[0]["estimated"]["accuracy"]
    for lab in labels[:999]:
        mon.observe_label(lab)
    assert mon.calibration_source == "none"
    assert mon.calibration is None
    mon.observe_label(labels[999])
    assert mon.calibration_source == "labels"
    assert mon.calibration is not None
    assert mon.snapshot()["calibration"] == "labels"
    for lab in labels[1000:]:
        mon.observe_label(lab)
    row = mon.estimation_rows()[0]
    truth = row["realized"]["accuracy"]
    after = row["estimated"]["accuracy"]
    assert abs(after - truth) < abs(before - truth)
    assert abs(after - truth) < 0.05
    assert abs(before - truth) > 0.1
    # only the first calibration_events labels: later ones change nothing
    cal = mon.calibration
    for lab in labels[:1000]:
        mon.observe_label(lab)
    assert mon.calibration is cal


def test_calibrated_scores_keep_no_calibration() -> None:
    mon = LabelFreeMonitor("m", "1", config("time:1s", calibration_events=1000), reference())
    stream = Stream(12)
    for r in (stream.prediction(i) for i in range(1000)):
        mon.observe_label(stream.label(r))
    assert mon.calibration_source == "calibrated_already"
    assert mon.calibration is None


def test_reference_calibration_is_used_and_not_relearnt() -> None:
    ref = reference()
    ref.calibration = ([0.0, 1.0], [0.5, 0.5])  # every event: a coin flip
    mon = LabelFreeMonitor("m", "1", config("count:100", calibration_events=50), ref)
    assert mon.calibration_source == "reference"
    stream = Stream(13)
    records = [stream.prediction(i) for i in range(100)]
    feed(mon, records)
    assert mon.metric("last_100", "estimated_accuracy") == pytest.approx(0.5)
    for r in records:
        mon.observe_label(stream.label(r))
    assert mon.calibration_source == "reference"


# --------------------------------------------------------------------------- state


def mixed_events(stream: Stream, start: int, stop: int) -> list[tuple[str, dict[str, Any]]]:
    """Predictions (a late one now and then, a drift half way) and labels of earlier ones."""
    out: list[tuple[str, dict[str, Any]]] = []
    recent: list[dict[str, Any]] = []
    for i in range(start, stop):
        ts = i * 7
        if i % 97 == 0:
            ts -= 3000  # late
        r = stream.prediction(ts, shift=0.8 if i > (start + stop) / 2 else 0.0)
        out.append(("p", r))
        recent.append(r)
        if i % 4 != 0 and len(recent) > 20:
            out.append(("l", stream.label(recent[-20])))
    return out


def play(mon: LabelFreeMonitor, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    closed: list[str] = []
    for kind, rec in events:
        if kind == "p":
            closed.extend(mon.observe(rec))
        else:
            mon.observe_label(rec)
    return closed


@pytest.mark.parametrize("prefix", [150, 1500])
def test_pickle_round_trip_continues_identically(prefix: int) -> None:
    cfg = config(
        "count:250", "time:2s", reference_events=300, calibration_events=400, lateness_ms=200
    )
    mon = LabelFreeMonitor("m", "1", cfg)
    stream = Stream(14)
    play(mon, mixed_events(stream, 0, prefix))  # 150: mid-reference; 1500: windows open
    copy = pickle.loads(pickle.dumps(mon))
    assert copy.snapshot() == mon.snapshot()
    rest = mixed_events(stream, prefix, 3000)
    assert play(copy, rest) == play(mon, rest)
    a, b = mon.snapshot(), copy.snapshot()
    assert a == b
    assert a["predictions"] == 3000
    assert a["late_predictions"] > 0
    assert a["calibration"] in ("labels", "calibrated_already")
    assert a["windows"]["last_250"]["latest"]["drift"]["drifted"]
    assert a["estimation"]["compared_windows"] > 0
    assert_json_clean(a)


def test_replay_rebuilds_the_same_state() -> None:
    cfg = config("count:200", "time:1s", reference_events=300, lateness_ms=100)
    events = mixed_events(Stream(15), 0, 2000)
    one, two = LabelFreeMonitor("m", "1", cfg), LabelFreeMonitor("m", "1", cfg)
    assert play(one, events) == play(two, events)
    assert one.snapshot() == two.snapshot()


def test_snapshot_is_json_without_nan() -> None:
    cfg = config("count:100", "time:1s", reference_events=100, min_window_events=50)
    mon = LabelFreeMonitor("m", "1", cfg)
    assert_json_clean(mon.snapshot())  # still building
    stream = Stream(16)
    records = [stream.prediction(i * 3) for i in range(1200)]
    # a feature that is always missing, one constant, and a window of only negatives
    for r in records[600:]:
        r["features"]["x"] = None
    for r in records:
        r["features"]["k"] = 1.0
    for r in records[900:]:
        r["score"], r["prediction"] = 0.0, 0
    feed(mon, records)
    for r in records[:50]:
        mon.observe_label(stream.label(r))
    snap = mon.snapshot()
    assert_json_clean(snap)
    assert set(snap["windows"]) == {"last_100", "1s"}
    assert snap["reference"]["features"] == ["c", "k", "output:prediction", "output:score", "x"]
    latest = snap["windows"]["last_100"]["latest"]
    assert latest["estimated"]["estimated_precision"] is None
    assert latest["drift"]["features"]["x"]["missing_rate"] == 1.0
    assert json.loads(json.dumps(snap)) == snap
