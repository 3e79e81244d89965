"""Tests for streaming.metrics: scikit-learn parity, windows, revert, state round trips."""

from __future__ import annotations

import json
import math
import pickle
import time
from typing import Any

import numpy as np
import pytest
from river import metrics as river_metrics
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from streaming.errors import ConfigError, ContractError, StateError
from streaming.metrics import (
    ConfusionMatrix,
    DDSketch,
    ExactSum,
    LabelDelayStats,
    LogitHistogramAUC,
    MetricBundle,
    WindowSpec,
    error_of,
    parse_window,
    roc_auc_exact,
)

TOL = 1e-9


def json_round_trip(data: Any) -> Any:
    return json.loads(json.dumps(data, allow_nan=False))


def sk_cls_metrics(y_true: list[Any], y_pred: list[Any], pos: Any | None) -> dict[str, float]:
    kw: dict[str, Any] = (
        {"average": "binary", "pos_label": pos} if pos is not None else {"average": "macro"}
    )
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0.0, **kw),
        "recall": recall_score(y_true, y_pred, zero_division=0.0, **kw),
        "f1": f1_score(y_true, y_pred, zero_division=0.0, **kw),
    }


def assert_matches(ours: dict[str, Any], expected: dict[str, float], tol: float = TOL) -> None:
    for name, value in expected.items():
        assert ours[name] is not None, name
        assert ours[name] == pytest.approx(value, abs=tol, rel=0), name


def feed(bundle: MetricBundle, events: list[dict[str, Any]]) -> None:
    for ev in events:
        bundle.update(
            ev["y_true"],
            ev["y_pred"],
            score=ev.get("score"),
            probabilities=ev.get("probabilities"),
            event_time_ms=ev["t"],
            label_delay_ms=ev["delay"],
        )


def binary_events(n: int, seed: int, labels: tuple[Any, Any] = (0, 1)) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    is_pos = rng.random(n) < 0.35
    scores = np.clip(np.where(is_pos, rng.beta(3, 2, n), rng.beta(2, 3, n)), 0, 1)
    scores[rng.random(n) < 0.02] = 1.0  # exercise clipping
    scores[rng.random(n) < 0.02] = 0.0
    preds = (scores > rng.uniform(0.3, 0.7, n)).tolist()
    times = np.cumsum(rng.integers(0, 50, n)) + 1_700_000_000_000
    delays = rng.integers(0, 100_000, n)
    neg, pos = labels
    return [
        {
            "y_true": pos if is_pos[i] else neg,
            "y_pred": pos if preds[i] else neg,
            "score": float(scores[i]),
            "t": int(times[i]),
            "delay": int(delays[i]),
        }
        for i in range(n)
    ]


def multiclass_events(n: int, seed: int, classes: list[Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = np.where(rng.random(n) < 0.8, proba.argmax(axis=1), rng.integers(0, k, n))
    out = []
    for i in range(n):
        probs = {str(c): float(proba[i, j]) for j, c in enumerate(classes)}
        if i % 7 == 0:
            probs[str(classes[int(y[i])])] = 0.0  # a zero probability on the true class
        out.append(
            {
                "y_true": classes[int(y[i])],
                "y_pred": classes[int(pred[i])],
                "probabilities": probs,
                "t": 1000 * i,
                "delay": int(rng.integers(0, 5000)),
            }
        )
    return out


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count:1000", WindowSpec(name="last_1000", kind="count", size=1000)),
        ("time:1h", WindowSpec(name="1h", kind="time", seconds=3600.0)),
        ("time:90s", WindowSpec(name="90s", kind="time", seconds=90.0)),
        ("time:15m", WindowSpec(name="15m", kind="time", seconds=900.0)),
        ("time:7d", WindowSpec(name="7d", kind="time", seconds=7 * 86400.0)),
        ("time:1.5h", WindowSpec(name="1.5h", kind="time", seconds=5400.0)),
        ("time:30", WindowSpec(name="30", kind="time", seconds=30.0)),
        (" Count:5 ", WindowSpec(name="last_5", kind="count", size=5)),
        ("recent=count:50", WindowSpec(name="recent", kind="count", size=50)),
        ("time:1h", WindowSpec(name="1h", kind="time", seconds=3600.0, panes=60)),
        ("time:1h/12", WindowSpec(name="1h/12", kind="time", seconds=3600.0, panes=12)),
        ("hour=time:1h/1", WindowSpec(name="hour", kind="time", seconds=3600.0, panes=1)),
        ("time:2s/2000", WindowSpec(name="2s/2000", kind="time", seconds=2.0, panes=2000)),
        ("time:0.01s", WindowSpec(name="0.01s", kind="time", seconds=0.01, panes=10)),
    ],
)
def test_parse_window(text: str, expected: WindowSpec) -> None:
    spec = parse_window(text)
    assert spec == expected
    assert WindowSpec.from_dict(json_round_trip(spec.to_dict())) == spec


def test_time_window_spec_default_panes() -> None:
    assert WindowSpec(name="w", kind="time", seconds=3600).panes == 60
    assert WindowSpec(name="w", kind="time", seconds=0.002).panes == 2  # panes of >= 1 ms
    assert WindowSpec(name="w", kind="count", size=3).panes is None


def test_parse_window_explicit_name_wins() -> None:
    assert parse_window("time:1h", name="hour").name == "hour"


@pytest.mark.parametrize(
    "text",
    [
        "count:0",
        "count:-5",
        "count:1.5",
        "count:abc",
        "time:1w",
        "time:",
        "time:0s",
        "time:-1h",
        "time:h",
        "hours:1",
        "1000",
        "",
        "time:/5",
        "time:1h/12/3",
        "count:10/2",
    ],
)
def test_parse_window_rejects_bad_specs(text: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        parse_window(text)
    assert repr(text) in str(exc_info.value)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("time:1h/0", "got 0"),
        ("time:1h/x", "got 'x'"),
        ("time:1h/", "got ''"),
        ("time:1h/-3", "got '-3'"),
        ("time:1h/1.5", "got '1.5'"),
        ("time:1h/10001", "got 10001"),
        ("time:0.01s/60", "60 panes"),  # panes of 1/6 ms
    ],
)
def test_parse_window_rejects_bad_panes_naming_them(text: str, bad: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        parse_window(text)
    message = str(exc_info.value)
    assert repr(text) in message
    assert bad in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "kind": "count", "size": 5},
        {"name": "w", "kind": "count", "size": 0},
        {"name": "w", "kind": "count", "size": True},
        {"name": "w", "kind": "count", "size": 5, "seconds": 1.0},
        {"name": "w", "kind": "time", "seconds": 0.0},
        {"name": "w", "kind": "time", "seconds": math.inf},
        {"name": "w", "kind": "time", "seconds": 10.0, "size": 3},
        {"name": "w", "kind": "sliding", "size": 3},
        {"name": "w", "kind": "count", "size": 5, "panes": 5},
        {"name": "w", "kind": "time", "seconds": 10.0, "panes": 0},
        {"name": "w", "kind": "time", "seconds": 10.0, "panes": True},
        {"name": "w", "kind": "time", "seconds": 10.0, "panes": 2.0},
        {"name": "w", "kind": "time", "seconds": 3600.0, "panes": 10_001},
        {"name": "w", "kind": "time", "seconds": 0.005, "panes": 10},
    ],
)
def test_window_spec_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WindowSpec(**kwargs)


def test_bundle_config_errors() -> None:
    w = parse_window("count:10")
    with pytest.raises(ConfigError, match="unique"):
        MetricBundle("classification", [w, w])
    with pytest.raises(ConfigError, match="task"):
        MetricBundle("ranking", [w])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive_label"):
        MetricBundle("regression", [w], positive_label=1)
    with pytest.raises(ConfigError, match="positive_label"):
        MetricBundle("classification", [w], positive_label=True)
    with pytest.raises(ConfigError):
        MetricBundle("classification", ["count:10"])  # type: ignore[list-item]


def test_count_window_keeps_last_n() -> None:
    b = MetricBundle("classification", [parse_window("count:3")])
    labels = [(0, 0), (1, 0), (1, 1), (0, 1), (1, 1)]
    for i, (t, p) in enumerate(labels):
        b.update(t, p, event_time_ms=i, label_delay_ms=10 * i)
    win = b.snapshot()["windows"]["last_3"]
    assert win["count"] == 3
    y_true = [t for t, _ in labels[-3:]]
    y_pred = [p for _, p in labels[-3:]]
    assert win["confusion_matrix"]["matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert win["label_delay"]["max_ms"] == 40
    assert win["label_delay"]["median_ms"] == 30.0


def covered(events: list[dict[str, Any]], spec: WindowSpec) -> list[dict[str, Any]]:
    """Brute force: the events whose pane is among the last ``panes`` panes of the newest."""
    p, span = spec.panes, spec.span_ms
    assert p is not None
    top = max(e["t"] * p // span for e in events)
    return [e for e in events if e["t"] * p // span > top - p]


def expected_delays(delays: list[int]) -> dict[str, Any]:
    stats = LabelDelayStats()
    for d in delays:
        stats.add(d)
    return stats.summary()


def test_time_window_pane_boundaries_and_late_events() -> None:
    spec = parse_window("time:10s/10")  # panes of 1000 ms: pane = t // 1000
    assert spec.name == "10s/10"
    b = MetricBundle("regression", [spec])
    seen: list[tuple[int, float]] = []

    def add(t: int, y: float, delay: int = 0) -> dict[str, Any]:
        b.update(y, 0.0, event_time_ms=t, label_delay_ms=delay)
        seen.append((t, y))
        win: dict[str, Any] = b.snapshot()["windows"]["10s/10"]
        return win

    add(0, 1.0, delay=900)
    add(999, 2.0)
    add(1_000, 3.0)
    win = add(9_999, 4.0)  # pane 9: panes 0..9 are in
    assert win["count"] == 4
    assert win["label_delay"]["max_ms"] == 900
    win = add(10_000, 5.0)  # pane 10: pane 0 (t=0 and t=999) leaves
    assert win["count"] == 3
    assert win["mae"] == pytest.approx(np.mean([3.0, 4.0, 5.0]), abs=TOL)
    assert win["label_delay"]["max_ms"] == 0  # the 900 ms delay left with its pane
    assert add(10_999, 6.0)["count"] == 4  # same pane
    win = add(500, 7.0)  # late, for pane 0 that has left: not added
    assert win["count"] == 4
    assert b.snapshot()["count"] == 7  # but counted cumulatively
    assert b.snapshot()["cumulative"]["mae"] == pytest.approx(np.mean([y for _, y in seen]))
    win = add(1_500, 8.0)  # late, for pane 1 still in: added
    assert win["count"] == 5
    assert win["mae"] == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0, 8.0]), abs=TOL)
    win = add(11_000, 9.0)  # pane 11: pane 1 (t=1000 and t=1500) leaves
    assert win["count"] == 4
    assert win["mae"] == pytest.approx(np.mean([4.0, 5.0, 6.0, 9.0]), abs=TOL)
    win = add(100_000, 10.0)  # far ahead: every pane leaves
    assert win["count"] == 1
    assert win["mae"] == 10.0
    assert win["r2"] is None
    win = add(91_000, 11.0)  # late, for pane 91: panes 91..100 are in
    assert win["count"] == 2
    assert add(90_999, 12.0)["count"] == 2  # pane 90 has left
    snap = b.snapshot()
    assert snap["first_event_time_ms"] == 0
    assert snap["last_event_time_ms"] == 100_000
    assert snap["count"] == len(seen)


def test_time_window_default_panes_cover_between_t_minus_pane_and_t() -> None:
    spec = parse_window("time:1h")
    assert (spec.panes, spec.span_ms) == (60, 3_600_000)
    b = MetricBundle("classification", [spec])
    minute = 60_000
    for t in (0, 59_999, 60_000, 60 * minute - 1, 60 * minute, 61 * minute - 1):
        b.update(1, 1, event_time_ms=t, label_delay_ms=0)
    # top pane 60 (t in [60 min, 61 min)): panes 1..60 are in, pane 0 has left
    assert b.snapshot()["windows"]["1h"]["count"] == 4


def _out_of_order(events: list[dict[str, Any]], seed: int, jitter_ms: int) -> None:
    rng = np.random.default_rng(seed)
    for ev, shift in zip(events, rng.integers(-jitter_ms, 1, len(events)).tolist(), strict=True):
        ev["t"] += shift


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("window", ["time:3s", "time:2s/7", "time:1.5s/1"])
def test_time_window_matches_brute_force_over_covered_panes(window: str) -> None:
    events = binary_events(1500, seed=18)
    _out_of_order(events, seed=19, jitter_ms=4000)  # some arrive after their pane left
    for i, ev in enumerate(events):
        if i % 13 == 0:
            del ev["score"]  # unscored
    spec = parse_window(window)
    b = MetricBundle("classification", [spec], positive_label=1)
    p = spec.panes or 0
    panes = [e["t"] * p // spec.span_ms for e in events]
    dropped = sum(1 for i in range(1, len(panes)) if panes[i] <= max(panes[:i]) - p)
    assert dropped > 10  # late events whose pane had left: never added
    for stop in (1, 40, 333, 777, 1000, 1234, 1500):
        feed(b, events[b.count : stop])
        win = b.snapshot()["windows"][spec.name]
        part = covered(events[:stop], spec)
        assert win["count"] == len(part)
        y_true = [e["y_true"] for e in part]
        y_pred = [e["y_pred"] for e in part]
        assert_matches(win, sk_cls_metrics(y_true, y_pred, 1))
        labels = sorted(set(y_true) | set(y_pred))
        assert win["confusion_matrix"] == {
            "labels": labels,
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        }
        scored = [e for e in part if "score" in e]
        assert (win["scored_count"], win["unscored_count"]) == (
            len(scored),
            len(part) - len(scored),
        )
        is_pos = [e["y_true"] == 1 for e in scored]
        scores = [e["score"] for e in scored]
        if scored:
            expected_ll = log_loss(is_pos, scores, labels=[False, True])
            assert win["log_loss"] == pytest.approx(expected_ll, abs=TOL, rel=0)
        else:
            assert win["log_loss"] is None
        hist = LogitHistogramAUC()  # the window's AUC is this histogram's, exactly
        for yi, si in zip(is_pos, scores, strict=True):
            hist.add(si, yi)
        assert win["roc_auc"] == hist.value()
        if len(set(is_pos)) == 2:
            assert win["roc_auc"] == pytest.approx(roc_auc_score(is_pos, scores), abs=2e-3)
        else:
            assert win["roc_auc"] is None
        delays = [e["delay"] for e in part]
        assert win["label_delay"] == expected_delays(delays)
        assert win["label_delay"]["mean_ms"] == pytest.approx(np.mean(delays), rel=1e-12)
        assert win["label_delay"]["max_ms"] == max(delays)
        exact_median = float(np.quantile(delays, 0.5, method="lower"))
        assert abs(win["label_delay"]["median_ms"] - exact_median) <= 0.01 * exact_median + 1e-9
    assert b.snapshot()["windows"][spec.name]["count"] < len(events) / 2


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
def test_time_window_multiclass_matches_brute_force() -> None:
    events = multiclass_events(600, seed=20, classes=["cat", "dog", "eel"])  # 1 s apart
    _out_of_order(events, seed=21, jitter_ms=30_000)
    spec = parse_window("time:2m/8")
    b = MetricBundle("classification", [spec])
    for stop in (50, 300, 600):
        feed(b, events[b.count : stop])
        win = b.snapshot()["windows"][spec.name]
        part = covered(events[:stop], spec)
        assert win["count"] == len(part)
        assert len(part) < stop or stop == 50
        y_true = [e["y_true"] for e in part]
        y_pred = [e["y_pred"] for e in part]
        assert win["averaging"] == "macro"
        assert_matches(win, sk_cls_metrics(y_true, y_pred, None))
        proba = [[e["probabilities"][c] for c in ("cat", "dog", "eel")] for e in part]
        expected = log_loss(y_true, proba, labels=["cat", "dog", "eel"])
        assert win["log_loss"] == pytest.approx(expected, abs=TOL, rel=0)
        assert win["roc_auc"] is None


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_time_window_regression_matches_brute_force(offset: float) -> None:
    events = regression_events(2000, seed=22, offset=offset)  # 10 ms apart
    _out_of_order(events, seed=23, jitter_ms=400)
    spec = parse_window("time:3s/12")
    b = MetricBundle("regression", [spec])
    for stop in (3, 250, 301, 1200, 2000):
        feed(b, events[b.count : stop])
        win = b.snapshot()["windows"][spec.name]
        part = covered(events[:stop], spec)
        assert win["count"] == len(part)
        y = [e["y_true"] for e in part]
        yhat = [e["y_pred"] for e in part]
        assert win["mae"] == pytest.approx(mean_absolute_error(y, yhat), abs=TOL, rel=0)
        assert win["rmse"] == pytest.approx(root_mean_squared_error(y, yhat), abs=TOL, rel=0)
        assert win["r2"] == pytest.approx(r2_score(y, yhat), abs=TOL, rel=0)
        assert win["label_delay"] == expected_delays([e["delay"] for e in part])


def test_time_window_after_huge_values_leave_is_exact() -> None:
    # huge values pass through the window's panes; after they leave, small ones are exact
    b = MetricBundle("regression", [parse_window("time:1s/4")])
    rng = np.random.default_rng(24)
    for i, v in enumerate(rng.normal(0, 1e12, 300).tolist()):
        b.update(v, v + 1e9, event_time_ms=i, label_delay_ms=0)
    small = rng.normal(1e-3, 1e-6, 50).tolist()
    pred = [v + 1e-7 for v in small]
    for i, (v, p) in enumerate(zip(small, pred, strict=True)):
        b.update(v, p, event_time_ms=10_000 + i, label_delay_ms=0)
    win = b.snapshot()["windows"]["1s/4"]
    assert win["count"] == 50
    assert win["mae"] == pytest.approx(mean_absolute_error(small, pred), rel=1e-12)
    assert win["r2"] == pytest.approx(r2_score(small, pred), abs=1e-9)


def test_time_window_state_and_snapshot_do_not_grow_with_events() -> None:
    n, hours = 200_000, 10
    rng = np.random.default_rng(25)
    is_pos = rng.random(n) < 0.35
    scores = np.where(is_pos, rng.beta(3, 2, n), rng.beta(2, 3, n)).tolist()
    y = is_pos.astype(int).tolist()
    pred = (np.asarray(scores) > 0.5).astype(int).tolist()
    times = (1_700_000_000_000 + np.sort(rng.integers(0, hours * 3_600_000, n))).tolist()
    delays = rng.integers(0, 600_000, n).tolist()
    b = MetricBundle("classification", [parse_window("time:1h")], positive_label=1)
    sizes = []
    for i in range(n):
        b.update(y[i], pred[i], score=scores[i], event_time_ms=times[i], label_delay_ms=delays[i])
        if i + 1 in (n // 2, n):
            sizes.append(len(json.dumps(b.to_state())))
    assert sizes[1] < 1_000_000
    assert sizes[1] < 1.2 * sizes[0]  # 5 hours more of events, about the same state
    assert len(pickle.dumps(b)) < 1_000_000
    elapsed = []
    for _ in range(5):
        start = time.perf_counter()
        snap = b.snapshot()
        elapsed.append(time.perf_counter() - start)
    assert min(elapsed) < 0.020
    win = snap["windows"]["1h"]
    spec = parse_window("time:1h")
    in_window = sum(1 for t in times if t // 60_000 > times[-1] // 60_000 - spec.panes)
    assert win["count"] == in_window
    assert 0.6 < win["roc_auc"] < 0.9


# --------------------------------------------------------------------------- classification


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize(
    ("labels", "configured"),
    [((0, 1), 1), ((0, 1), None), (("no", "yes"), "yes"), (("false", "True"), None)],
)
def test_binary_parity_with_sklearn_cumulative_and_windows(
    labels: tuple[Any, Any], configured: Any
) -> None:
    events = binary_events(600, seed=1, labels=labels)
    size = 150
    b = MetricBundle("classification", [parse_window(f"count:{size}")], configured)
    pos = labels[1]
    for stop in (1, 37, 150, 151, 400, 600):
        feed(b, events[b.count : stop])
        snap = b.snapshot()
        # without a configured label, binary starts once the positive label has been seen
        binary = configured is not None or any(e["y_true"] == pos for e in events[:stop])
        binary = binary or any(e["y_pred"] == pos for e in events[:stop])
        for scope, lo in (("cumulative", 0), ("window", max(0, stop - size))):
            part = events[lo:stop]
            y_true = [e["y_true"] for e in part]
            y_pred = [e["y_pred"] for e in part]
            ours = snap["cumulative"] if scope == "cumulative" else snap["windows"]["last_150"]
            assert ours["count"] == len(part)
            assert ours["averaging"] == ("binary" if binary else "macro")
            assert ours["positive_label"] == (pos if binary else None)
            assert_matches(ours, sk_cls_metrics(y_true, y_pred, pos if binary else None))
            is_pos = [e["y_true"] == pos for e in part]
            scores = [e["score"] for e in part]
            expected_ll = log_loss(is_pos, scores, labels=[False, True])
            assert ours["log_loss"] == pytest.approx(expected_ll, abs=TOL, rel=0)
            cm = confusion_matrix(y_true, y_pred, labels=sorted(set(y_true) | set(y_pred)))
            assert ours["confusion_matrix"]["matrix"] == cm.tolist()
            if len(set(is_pos)) == 2:
                auc = roc_auc_score(is_pos, scores)
                if scope == "window":  # exact from the stored pairs
                    assert ours["roc_auc"] == pytest.approx(auc, abs=TOL, rel=0)
                else:
                    assert ours["roc_auc"] == pytest.approx(auc, abs=2e-3)
            else:
                assert ours["roc_auc"] is None


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.parametrize("classes", [[0, 1, 2], ["cat", "dog", "eel"], [0.0, 1.0, 2.0]])
def test_multiclass_macro_parity_with_sklearn(classes: list[Any]) -> None:
    events = multiclass_events(500, seed=2, classes=classes)
    b = MetricBundle("classification", [parse_window("count:120")])
    for stop in (60, 121, 500):
        feed(b, events[b.count : stop])
        snap = b.snapshot()
        for ours, lo in ((snap["cumulative"], 0), (snap["windows"]["last_120"], stop - 120)):
            part = events[max(0, lo) : stop]
            y_true = [e["y_true"] for e in part]
            y_pred = [e["y_pred"] for e in part]
            assert ours["averaging"] == "macro"
            assert ours["positive_label"] is None
            assert_matches(ours, sk_cls_metrics(y_true, y_pred, None))
            present = sorted(set(y_true) | set(y_pred))
            proba = [[e["probabilities"][str(c)] for c in classes] for e in part]
            expected = log_loss(y_true, proba, labels=classes)
            assert ours["log_loss"] == pytest.approx(expected, abs=TOL, rel=0)
            assert ours["confusion_matrix"]["labels"] == present
            cm = confusion_matrix(y_true, y_pred, labels=present)
            assert ours["confusion_matrix"]["matrix"] == cm.tolist()
            assert ours["roc_auc"] is None


def test_degenerate_one_class_only() -> None:
    # configured positive label that never appears
    b = MetricBundle("classification", positive_label=1)
    for _ in range(5):
        b.update(0, 0, score=0.2, event_time_ms=0, label_delay_ms=0)
    cum = b.snapshot()["cumulative"]
    y = [0] * 5
    assert_matches(cum, sk_cls_metrics(y, y, 1))
    assert cum["precision"] == 0.0
    assert cum["accuracy"] == 1.0
    assert cum["roc_auc"] is None
    assert cum["log_loss"] == pytest.approx(
        log_loss([False] * 5, [0.2] * 5, labels=[False, True]), abs=TOL
    )
    assert cum["confusion_matrix"] == {"labels": [0], "matrix": [[5]]}
    # without a configured label and no candidate: macro over the one label
    auto = MetricBundle("classification")
    for _ in range(3):
        auto.update("a", "a", event_time_ms=0, label_delay_ms=0)
    snap = auto.snapshot()["cumulative"]
    assert snap["averaging"] == "macro"
    assert_matches(snap, sk_cls_metrics(["a"] * 3, ["a"] * 3, None))
    assert snap["log_loss"] is None
    assert snap["unscored_count"] == 3


def test_degenerate_no_positive_predictions() -> None:
    y_true = [1, 0, 1, 0, 0, 1]
    y_pred = [0] * 6
    b = MetricBundle("classification")
    for t, p in zip(y_true, y_pred, strict=True):
        b.update(t, p, score=0.1, event_time_ms=0, label_delay_ms=0)
    cum = b.snapshot()["cumulative"]
    assert cum["averaging"] == "binary"
    assert_matches(cum, sk_cls_metrics(y_true, y_pred, 1))
    assert (cum["precision"], cum["recall"], cum["f1"]) == (0.0, 0.0, 0.0)
    assert cum["roc_auc"] == 0.5  # all scores tie


def test_empty_bundle_snapshot_is_all_none() -> None:
    windows = [parse_window("count:3"), parse_window("time:1h")]
    snap = MetricBundle("classification", windows).snapshot()
    json.dumps(snap, allow_nan=False)
    for scope in (snap["cumulative"], snap["windows"]["last_3"], snap["windows"]["1h"]):
        for name in ("accuracy", "precision", "recall", "f1", "log_loss", "roc_auc"):
            assert scope[name] is None
        assert scope["count"] == 0
    for delays in (snap["label_delay"], snap["windows"]["1h"]["label_delay"]):
        assert delays["median_ms"] is None
    assert snap["first_event_time_ms"] is None
    reg = MetricBundle("regression", windows).snapshot()
    for scope in (reg["cumulative"], reg["windows"]["1h"]):
        assert (scope["mae"], scope["rmse"], scope["r2"]) == (None, None, None)
    for task in ("classification", "regression"):
        empty = MetricBundle(task, windows)
        restored = MetricBundle.from_state(json_round_trip(empty.to_state()))
        assert restored.snapshot() == empty.snapshot()


@pytest.mark.parametrize(
    ("labels", "averaging", "positive"),
    [
        ([0, 1], "binary", 1),
        ([0.0, 1.0], "binary", 1.0),
        (["0", "1"], "binary", "1"),
        (["FALSE", "TRUE"], "binary", "TRUE"),
        (["yes", "no"], "macro", None),
        ([1, 2], "binary", 1),
        ([0, 1, 2], "macro", None),
        (["0"], "macro", None),
    ],
)
def test_default_positive_label(labels: list[Any], averaging: str, positive: Any) -> None:
    b = MetricBundle("classification")
    for label in labels:
        b.update(label, label, event_time_ms=0, label_delay_ms=0)
    cum = b.snapshot()["cumulative"]
    assert (cum["averaging"], cum["positive_label"]) == (averaging, positive)
    assert type(cum["positive_label"]) is type(positive)


def test_configured_positive_label_is_one_vs_rest_with_more_labels() -> None:
    y_true = [0, 1, 2, 1, 2, 0, 1]
    y_pred = [0, 2, 2, 1, 1, 1, 1]
    b = MetricBundle("classification", positive_label=1)
    for t, p in zip(y_true, y_pred, strict=True):
        b.update(t, p, event_time_ms=0, label_delay_ms=0)
    cum = b.snapshot()["cumulative"]
    assert cum["averaging"] == "binary"
    expected = precision_score(y_true, y_pred, labels=[1], average="macro", zero_division=0.0)
    assert cum["precision"] == pytest.approx(expected, abs=TOL)


def test_labels_keep_their_type() -> None:
    b = MetricBundle("classification")
    for t, p in [(1, "1"), ("1", "1"), (2.5, 1), (1.0, 2.5)]:
        b.update(t, p, event_time_ms=0, label_delay_ms=0)
    restored = MetricBundle.from_state(json_round_trip(b.to_state()))
    for bundle in (b, restored):
        cm = bundle.snapshot()["cumulative"]["confusion_matrix"]
        assert cm["labels"] == [1, 2.5, "1"]
        assert [type(v) for v in cm["labels"]] == [int, float, str]
        # 1 and 1.0 are one label; "1" is another
        assert cm["matrix"] == [[0, 1, 1], [1, 0, 0], [0, 0, 1]]


def test_confusion_matrix_add_and_revert() -> None:
    cm = ConfusionMatrix()
    pairs = [(0, 0), (0, 1), (1, 1), (2, 0), (1, 1)]
    for t, p in pairs:
        cm.add(t, p)
    assert cm.as_dict()["matrix"] == confusion_matrix(*zip(*pairs, strict=True)).tolist()
    cm.revert(2, 0)
    assert cm.labels() == [0, 1]
    for t, p in pairs:
        if (t, p) != (2, 0):
            cm.revert(t, p)
    assert cm.count == 0
    assert cm.as_dict() == {"labels": [], "matrix": []}
    assert cm.accuracy() is None
    with pytest.raises(StateError):
        cm.revert(0, 0)
    restored = ConfusionMatrix.from_state(json_round_trip(_filled_cm(pairs).to_state()))
    assert restored.as_dict() == _filled_cm(pairs).as_dict()


def _filled_cm(pairs: list[tuple[int, int]]) -> ConfusionMatrix:
    cm = ConfusionMatrix()
    for t, p in pairs:
        cm.add(t, p)
    return cm


def test_multiclass_probability_keys_and_missing_label() -> None:
    b = MetricBundle("classification")
    b.update(2.0, 1.0, probabilities={"1": 0.25, "2": 0.75}, event_time_ms=0, label_delay_ms=0)
    b.update(1.0, 1.0, probabilities={"2": 1.0}, event_time_ms=0, label_delay_ms=0)
    got = b.snapshot()["cumulative"]["log_loss"]
    expected = log_loss([2, 1], [[0.25, 0.75], [0.0, 1.0]], labels=[1, 2])
    assert got == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize(
    ("y_true", "kwargs"),
    [
        (None, {}),
        (math.nan, {}),
        (math.inf, {}),
        ([1], {}),
        (1, {"score": 1.5}),
        (1, {"score": math.nan}),
        (1, {"score": -0.1}),
        (1, {"probabilities": {"1": 2.0}}),
        (1, {"probabilities": {"1": "0.5"}}),
        ("new", {"score": "0.5"}),
    ],
)
def test_contract_errors(y_true: Any, kwargs: dict[str, Any]) -> None:
    b = MetricBundle("classification", [parse_window("count:2")])
    b.update(0, 0, event_time_ms=0, label_delay_ms=0)
    before = json.dumps(b.to_state())
    with pytest.raises(ContractError):
        b.update(y_true, "other", event_time_ms=0, label_delay_ms=0, **kwargs)
    if not kwargs:  # a bad predicted label after a new true label
        with pytest.raises(ContractError):
            b.update("other", y_true, event_time_ms=0, label_delay_ms=0)
    assert json.dumps(b.to_state()) == before  # labels of a rejected event are not kept


def test_contract_errors_times_and_regression_values() -> None:
    b = MetricBundle("regression")
    with pytest.raises(ContractError):
        b.update(1.0, 2.0, event_time_ms=1.5, label_delay_ms=0)  # type: ignore[arg-type]
    with pytest.raises(ContractError):
        b.update("1.0", 2.0, event_time_ms=1, label_delay_ms=0)
    with pytest.raises(ContractError):
        b.update(1.0, math.nan, event_time_ms=1, label_delay_ms=0)
    with pytest.raises(ContractError):
        b.update(1e200, -1e200, event_time_ms=1, label_delay_ms=0)
    with pytest.raises(ContractError):
        b.update(10**400, 1, event_time_ms=1, label_delay_ms=0)
    assert b.count == 0


# --------------------------------------------------------------------------- ROC AUC


def test_exact_window_auc_with_ties_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.4
    s = np.round(np.clip(rng.normal(0.5 + 0.2 * y, 0.2), 0, 1), 1)  # many ties
    pairs = list(zip(s.tolist(), y.tolist(), strict=True))
    assert roc_auc_exact(pairs) == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert roc_auc_exact([(0.3, True), (0.9, True)]) is None


def _bunched(n: int, seed: int) -> tuple[list[bool], list[float]]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = np.where(y, 1 - rng.beta(1, 260, n), 1 - rng.beta(1, 50, n))
    return y.tolist(), s.tolist()


def test_histogram_auc_on_scores_bunched_near_one() -> None:
    y, s = _bunched(5000, seed=4)
    true_auc = roc_auc_score(y, s)
    assert true_auc > 0.8
    hist = LogitHistogramAUC()
    river_auc = river_metrics.ROCAUC()
    for yi, si in zip(y, s, strict=True):
        hist.add(si, yi)
        river_auc.update(yi, si)
    assert hist.value() == pytest.approx(true_auc, abs=2e-3)
    # why we do not use river's default: its 10 thresholds on [0, 1] are far off here
    assert abs(river_auc.get() - true_auc) > 0.2


def test_histogram_auc_on_uniform_scores() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(5000) < 0.5
    s = np.clip(rng.random(5000) * 0.7 + 0.3 * y, 0, 1)
    hist = LogitHistogramAUC()
    for yi, si in zip(y.tolist(), s.tolist(), strict=True):
        hist.add(si, yi)
    assert hist.value() == pytest.approx(roc_auc_score(y, s), abs=2e-3)
    merged = LogitHistogramAUC()
    merged.merge(hist)
    assert merged.value() == hist.value()
    with pytest.raises(ConfigError):
        merged.merge(LogitHistogramAUC(bins=16))


def test_bundle_cumulative_auc_on_bunched_scores() -> None:
    y, s = _bunched(3000, seed=6)
    b = MetricBundle("classification", [parse_window("count:3000")], positive_label=1)
    for yi, si in zip(y, s, strict=True):
        b.update(int(yi), int(si > 0.99), score=si, event_time_ms=0, label_delay_ms=0)
    snap = b.snapshot()
    true_auc = roc_auc_score(y, s)
    assert snap["cumulative"]["roc_auc"] == pytest.approx(true_auc, abs=2e-3)
    assert snap["windows"]["last_3000"]["roc_auc"] == pytest.approx(true_auc, abs=TOL)


# --------------------------------------------------------------------------- regression


def regression_events(n: int, seed: int, offset: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    y = offset + rng.normal(0, 3, n)
    yhat = y + rng.normal(0.2, 1.0, n)
    return [
        {"y_true": float(y[i]), "y_pred": float(yhat[i]), "t": i * 10, "delay": i % 97}
        for i in range(n)
    ]


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_regression_parity_with_sklearn(offset: float) -> None:
    events = regression_events(700, seed=7, offset=offset)
    size = 200
    b = MetricBundle("regression", [parse_window(f"count:{size}")])
    for stop in (2, 199, 201, 700):
        feed(b, events[b.count : stop])
        snap = b.snapshot()
        for ours, lo in ((snap["cumulative"], 0), (snap["windows"]["last_200"], stop - size)):
            part = events[max(0, lo) : stop]
            y = [e["y_true"] for e in part]
            yhat = [e["y_pred"] for e in part]
            assert ours["count"] == len(part)
            assert ours["mae"] == pytest.approx(mean_absolute_error(y, yhat), abs=TOL, rel=0)
            assert ours["rmse"] == pytest.approx(root_mean_squared_error(y, yhat), abs=TOL, rel=0)
            assert ours["r2"] == pytest.approx(r2_score(y, yhat), abs=TOL, rel=0)


def test_regression_r2_undefined_cases() -> None:
    b = MetricBundle("regression", [parse_window("count:2")])
    b.update(3.0, 1.0, event_time_ms=0, label_delay_ms=0)
    snap = b.snapshot()["cumulative"]
    assert snap["r2"] is None
    assert snap["mae"] == 2.0
    b.update(3, 5, event_time_ms=0, label_delay_ms=0)  # ints count as numbers
    assert b.snapshot()["cumulative"]["r2"] is None  # zero variance
    b.update(4.0, 4.0, event_time_ms=0, label_delay_ms=0)
    snap = b.snapshot()
    assert snap["cumulative"]["r2"] == pytest.approx(r2_score([3, 3, 4], [1, 5, 4]), abs=TOL)
    assert snap["windows"]["last_2"]["r2"] == pytest.approx(r2_score([3, 4], [5, 4]), abs=TOL)


def test_regression_window_revert_does_not_drift() -> None:
    # huge values pass through the window; afterwards a small-scale window must be exact
    b = MetricBundle("regression", [parse_window("count:50")])
    rng = np.random.default_rng(8)
    for v in rng.normal(0, 1e12, 500).tolist():
        b.update(v, v + 1e9, event_time_ms=0, label_delay_ms=0)
    small = rng.normal(1e-3, 1e-6, 50).tolist()
    pred = [v + 1e-7 for v in small]
    for v, p in zip(small, pred, strict=True):
        b.update(v, p, event_time_ms=0, label_delay_ms=0)
    win = b.snapshot()["windows"]["last_50"]
    assert win["mae"] == pytest.approx(mean_absolute_error(small, pred), rel=1e-12)
    assert win["r2"] == pytest.approx(r2_score(small, pred), abs=1e-9)


def test_exact_sum_is_exact_and_reversible() -> None:
    rng = np.random.default_rng(9)
    values = (rng.normal(0, 1, 1000) * 10.0 ** rng.integers(-300, 300, 1000)).tolist()
    s = ExactSum()
    for v in values:
        s.add(v)
    assert s.value() == math.fsum(values)
    for v in values[:-1]:
        s.sub(v)
    assert s.value() == values[-1]
    restored = ExactSum.from_state(json_round_trip(s.to_state()))
    assert restored.exact == s.exact


def test_error_of() -> None:
    assert error_of("classification", "a", "a") == 0.0
    assert error_of("classification", 1, "1") == 1.0
    assert error_of("classification", 1, 1.0) == 0.0
    assert error_of("regression", 2.5, 4) == 1.5
    with pytest.raises(ConfigError):
        error_of("ranking", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ContractError):
        error_of("regression", "1", 1)


# --------------------------------------------------------------------------- label delay


def test_ddsketch_relative_error_on_lognormal() -> None:
    rng = np.random.default_rng(10)
    data = rng.lognormal(mean=8, sigma=2, size=20_000)
    sketch = DDSketch(relative_accuracy=0.01)
    for v in data.tolist():
        sketch.add(v)
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
        exact = float(np.quantile(data, q, method="lower"))
        est = sketch.quantile(q)
        assert est is not None
        assert abs(est - exact) / exact <= 0.01 + 1e-12, q
        if 0.25 <= q <= 0.95:  # where neighbouring order statistics are close
            assert abs(est - float(np.quantile(data, q))) / exact <= 0.015, q
    assert len(sketch.to_state()["buckets"]) < 1500


def test_ddsketch_merge_equals_sketch_of_union_and_is_bounded() -> None:
    rng = np.random.default_rng(11)
    a_vals = rng.lognormal(5, 1, 3000).tolist()
    b_vals = [*rng.lognormal(9, 1, 3000).tolist(), 0, 0]
    a, b, both = DDSketch(), DDSketch(), DDSketch()
    for v in a_vals:
        a.add(v)
        both.add(v)
    for v in b_vals:
        b.add(v)
        both.add(v)
    a.merge(b)
    assert a.to_state() == both.to_state()
    assert a.quantile(0.0) == 0.0
    with pytest.raises(ConfigError):
        a.merge(DDSketch(relative_accuracy=0.02))
    small = DDSketch(max_buckets=10)
    for v in np.geomspace(1, 1e9, 500).tolist():
        small.add(v)
    assert len(small.to_state()["buckets"]) == 10
    assert small.quantile(1.0) == pytest.approx(1e9, rel=0.01)


def test_label_delay_stats_cumulative_and_windows() -> None:
    rng = np.random.default_rng(12)
    delays = np.round(rng.lognormal(9, 1.5, 5000)).astype(int)
    b = MetricBundle("regression", [parse_window("count:500")])
    for i, d in enumerate(delays.tolist()):
        b.update(1.0, 0.5, event_time_ms=i, label_delay_ms=d)
    snap = b.snapshot()
    cum = snap["label_delay"]
    assert cum["count"] == 5000
    assert cum["mean_ms"] == pytest.approx(delays.mean(), rel=1e-12)
    assert cum["max_ms"] == int(delays.max())
    for key, q in (("median_ms", 0.5), ("p95_ms", 0.95)):
        exact = float(np.quantile(delays, q, method="lower"))
        assert abs(cum[key] - exact) / exact <= 0.01 + 1e-12
    win = snap["windows"]["last_500"]["label_delay"]
    last = delays[-500:]
    assert win["count"] == 500
    assert win["median_ms"] == pytest.approx(float(np.median(last)), abs=1e-9)
    assert win["p95_ms"] == pytest.approx(float(np.quantile(last, 0.95)), abs=1e-9)
    assert win["mean_ms"] == pytest.approx(float(last.mean()), abs=1e-9)
    assert win["max_ms"] == int(last.max())


def test_label_delay_merge_and_negative_delays() -> None:
    a, b = LabelDelayStats(), LabelDelayStats()
    for d in (10, 20, 30):
        a.add(d)
    for d in (1000, 2000):
        b.add(d)
    a.merge(b)
    summary = a.summary()
    assert (summary["count"], summary["max_ms"], summary["mean_ms"]) == (5, 2000, 612.0)
    restored = LabelDelayStats.from_state(json_round_trip(a.to_state()))
    assert restored.summary() == summary
    bundle = MetricBundle("classification")
    bundle.update(1, 1, event_time_ms=0, label_delay_ms=-500)  # clock skew counts as 0
    assert bundle.snapshot()["label_delay"]["max_ms"] == 0


# --------------------------------------------------------------------------- state


def _mixed_classification_events(n: int, seed: int) -> list[dict[str, Any]]:
    events = binary_events(n, seed)
    for i, ev in enumerate(events):
        ev["t"] += (i % 5) * -200  # a little out of order
        if i % 11 == 0:
            del ev["score"]  # unscored events
    return events


SPECS = ["count:50", "count:300", "fast=time:2s", "time:1m", "coarse=time:5s/5"]


@pytest.mark.parametrize(
    ("task", "make_events", "positive"),
    [
        ("classification", lambda: _mixed_classification_events(900, 13), None),
        ("classification", lambda: _mixed_classification_events(900, 14), 1),
        ("classification", lambda: multiclass_events(900, 15, ["a", 2, 3.5]), None),
        ("regression", lambda: regression_events(900, 16, 1e6), None),
    ],
)
def test_state_round_trip_through_json_is_exact(task: Any, make_events: Any, positive: Any) -> None:
    events = make_events()
    for ev in events[::37]:
        ev["t"] -= 6_000  # late enough to miss the panes of "fast" and "coarse"
    original = MetricBundle(task, [parse_window(s) for s in SPECS], positive)
    feed(original, events[:500])
    state = original.to_state()
    assert [list(w) for w in state["window_state"]] == [["events"]] * 2 + [
        ["top_pane", "panes"]
    ] * 3
    blob = json.dumps(state, allow_nan=False)
    restored = MetricBundle.from_state(json.loads(blob))
    unpickled = pickle.loads(pickle.dumps(original))
    for other in (restored, unpickled):
        assert json.dumps(other.to_state(), allow_nan=False) == blob
        assert other.snapshot() == original.snapshot()
    for stop in (501, 650, 900):
        for bundle in (original, restored, unpickled):
            feed(bundle, events[bundle.count : stop])
        expected = json.dumps(original.snapshot())
        assert json.dumps(restored.snapshot()) == expected
        assert json.dumps(unpickled.snapshot()) == expected
    expected = json.dumps(original.to_state())
    assert json.dumps(restored.to_state()) == expected
    assert json.dumps(unpickled.to_state()) == expected
    snap = original.snapshot()
    assert set(snap["windows"]) == {"last_50", "last_300", "fast", "1m", "coarse"}
    for name in ("fast", "coarse"):
        assert 0 < snap["windows"][name]["count"] < snap["count"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(format="other"),
        lambda s: s.update(version=99),
        lambda s: s.update(task="ranking"),
        lambda s: s.update(windows=[{"name": "w", "kind": "count", "size": 0}]),
        lambda s: s.update(window_state=[]),
        lambda s: s["cumulative"].update(confusion=[[0, 5, 1]]),
        lambda s: s["cumulative"].update(confusion=[[0, 0, -1]]),
        lambda s: s["cumulative"].update(loss=["zz", 0]),
        lambda s: s.update(labels=[["x", 1]]),
        lambda s: s["label_delay"].update(count=-1),
        lambda s: s["window_state"][0].update(events=[[0, 0, 0, 0, "bad", None]]),
        lambda s: s.pop("cumulative"),
        lambda s: s.update(count=999),
        lambda s: s["window_state"][0]["events"].extend(s["window_state"][0]["events"]),
        lambda s: s["cumulative"].update(loss=["1", -(10**6)]),
        lambda s: s.update(version=1),  # events of time windows: not this layout
        lambda s: s["cumulative"]["roc_auc"].update(bins=2**15),
        # time window ("time:0.3s/3", panes of 100 ms)
        lambda s: s["windows"][1].update(panes=0),
        lambda s: s["window_state"][1].update(top_pane=None),
        lambda s: s["window_state"][1].update(top_pane=s["window_state"][1]["top_pane"] + 3),
        lambda s: s["window_state"][1]["panes"].append(s["window_state"][1]["panes"][0]),
        lambda s: _pane(s).update(pane=_pane(s)["pane"] - 3),
        lambda s: _pane(s).update(pane=str(_pane(s)["pane"])),
        lambda s: _pane(s).update(confusion=[[0, 0, 0]]),
        lambda s: _pane(s).update(confusion=[[0, 9, 1]]),
        lambda s: _pane(s)["confusion"].append(_pane(s)["confusion"][0]),
        lambda s: _pane(s).update(loss=["zz", 0]),
        lambda s: _pane(s).update(scored=10**6),
        lambda s: _pane(s).update(roc_auc=[*_pane(s)["roc_auc"], 0, 1]),  # a key twice
        lambda s: _pane(s).update(roc_auc=[2**15, 1]),  # beyond the bins
        lambda s: _pane(s).update(roc_auc=[5, 0]),
        lambda s: _pane(s).update(roc_auc=[5]),
        lambda s: _pane(s).update(delays=[]),
        lambda s: _pane(s).update(delays=[-2, _pane(s)["delays"][1], *_pane(s)["delays"][2:]]),
        lambda s: _pane(s).update(delay_min=10**9),
        lambda s: _pane(s).update(delay_sum=-1),
        lambda s: _pane(s).update(delay_sum=10**12),
        lambda s: _pane(s).pop("delays"),
    ],
)
def test_from_state_rejects_bad_state(mutate: Any) -> None:
    b = MetricBundle("classification", [parse_window("count:5"), parse_window("time:0.3s/3")])
    feed(b, binary_events(20, seed=17))
    state = json_round_trip(b.to_state())
    MetricBundle.from_state(json_round_trip(state))  # restores before the mutation
    mutate(state)
    with pytest.raises(StateError):
        MetricBundle.from_state(state)


def _pane(state: dict[str, Any]) -> dict[str, Any]:
    panes: list[dict[str, Any]] = state["window_state"][1]["panes"]
    assert len(panes) >= 2
    return panes[0]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: _pane(s).update(n=_pane(s)["n"] + 1),  # delays no longer add up
        lambda s: _pane(s).update(sum_abs=["1", 1]),
        lambda s: _pane(s).update(n=-1),
    ],
)
def test_from_state_rejects_bad_regression_panes(mutate: Any) -> None:
    b = MetricBundle("regression", [parse_window("count:5"), parse_window("time:0.3s/3")])
    feed(b, regression_events(50, seed=17, offset=0.0))
    state = json_round_trip(b.to_state())
    MetricBundle.from_state(json_round_trip(state))
    mutate(state)
    with pytest.raises(StateError):
        MetricBundle.from_state(state)


def test_pickle_of_an_older_layout_is_refused() -> None:
    b = MetricBundle("classification", [parse_window("time:1m")])
    b.update(1, 1, score=0.5, event_time_ms=0, label_delay_ms=0)
    assert pickle.loads(pickle.dumps(b)).to_state() == b.to_state()
    # a bundle pickled before it pickled as its state unpickles as a new object whose
    # attributes are set from the pickled dict: that is refused
    bare = MetricBundle.__new__(MetricBundle)
    with pytest.raises(StateError, match="older layout"):
        bare.__setstate__(dict(vars(b)))


def test_from_state_rejects_non_mapping() -> None:
    with pytest.raises(StateError):
        MetricBundle.from_state([])  # type: ignore[arg-type]


def test_log_loss_clips_both_ends_like_sklearn() -> None:
    b = MetricBundle("classification", positive_label=1)
    b.update(1, 1, score=1.0, event_time_ms=0, label_delay_ms=0)
    b.update(0, 0, score=0.0, event_time_ms=0, label_delay_ms=0)
    expected = log_loss([True, False], [1.0, 0.0], labels=[False, True])
    assert expected > 0
    assert b.snapshot()["cumulative"]["log_loss"] == pytest.approx(expected, rel=1e-12, abs=0)
    b.update(1, 0, score=0.0, event_time_ms=0, label_delay_ms=0)
    expected = log_loss([True, False, True], [1.0, 0.0, 0.0], labels=[False, True])
    assert b.snapshot()["cumulative"]["log_loss"] == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_value_accessor_matches_snapshot(task: str) -> None:
    """The cheap accessor the alert rules use agrees with the snapshot for every window."""
    import random as _random

    rng = _random.Random(7)
    specs = [parse_window("count:50"), parse_window("time:10s/5", name="t10")]
    bundle = MetricBundle(task, specs, positive_label=1 if task == "classification" else None)  # type: ignore[arg-type]
    for i in range(400):
        if task == "classification":
            y, p = rng.choice([0, 1]), rng.choice([0, 1])
            bundle.update(y, p, score=rng.random(), event_time_ms=i * 100, label_delay_ms=i)
        else:
            y = rng.gauss(0, 1)
            bundle.update(y, y + rng.gauss(0, 0.3), event_time_ms=i * 100, label_delay_ms=i)
    snap = bundle.snapshot()
    names = (
        ["accuracy", "precision", "recall", "f1", "log_loss", "roc_auc"]
        if task == "classification"
        else ["mae", "rmse", "r2"]
    )
    for window, values in [("cumulative", snap["cumulative"]), *snap["windows"].items()]:
        for name in names:
            assert bundle.value(window, name) == pytest.approx(values[name], abs=1e-12)
        expected_n = snap["count"] if window == "cumulative" else values["count"]
        assert bundle.samples(window) == expected_n
    assert bundle.value("cumulative", "label_delay_p95_ms") == snap["label_delay"]["p95_ms"]
    assert (
        bundle.value("last_50", "label_delay_p95_ms")
        == snap["windows"]["last_50"]["label_delay"]["p95_ms"]
    )
    assert bundle.value("no-such-window", names[0]) is None
