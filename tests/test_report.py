"""The demo report (pure): rolling metrics, summary numbers, PNG plots and the HTML page."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from streaming.report import (
    PLOTS,
    AlertSpan,
    DemoRun,
    Marker,
    ScoredEvent,
    System,
    VersionInfo,
    accuracy_of,
    recovery_point,
    rolling,
    summarize,
    write_report,
)

RATE = 100.0
START = 1_800_000_000_000
EVENTS = 3_000
DRIFT_AT = 1_000
SWAP_AT = 1_400
WINDOW = 200


def t(index: int) -> int:
    return START + round(index * 1000 / RATE)


def good(i: int) -> bool:
    """95 % right: wrong on every 20th event."""
    return i % 20 != 0


def bad(i: int) -> bool:
    """50 % right."""
    return i % 2 == 0


def event(i: int, correct: bool, version: str) -> ScoredEvent:
    label = 1 if i % 3 else 0
    return ScoredEvent(i, t(i), label, label if correct else 1 - label, version)


def labeled(i: int) -> bool:
    return i % 17 != 5  # some events never get a label


def synthetic_run() -> DemoRun:
    live = [
        event(i, good(i) if i < DRIFT_AT or i >= SWAP_AT else bad(i), "1" if i < SWAP_AT else "2")
        for i in range(EVENTS)
        if labeled(i)
    ]
    none = [event(i, good(i) if i < DRIFT_AT else bad(i), "initial") for i in range(EVENTS)]
    none = [e for e in none if labeled(e.index)]
    periodic = [
        event(i, good(i) if i < DRIFT_AT or i >= 2_200 else bad(i), "p0")
        for i in range(EVENTS)
        if labeled(i)
    ]
    alerts = [
        AlertSpan("accuracy_drift", "detector", "1", t(300), t(420), t(300) + 900),  # false
        AlertSpan("accuracy_drift", "detector", "1", t(DRIFT_AT + 60), t(1_500), t(1_090)),
        AlertSpan("low_accuracy", "threshold", "1", t(DRIFT_AT + 150), None, t(1_160)),
    ]
    markers = [
        Marker("retrain_request", t(DRIFT_AT + 60), "1"),
        Marker("promotion", t(SWAP_AT), "2"),
        Marker("refit", t(2_200), "p1"),
    ]
    rf = "RandomForestClassifier"
    versions = [
        VersionInfo(1, "retired", rf, 3000, {"accuracy": 0.95}, promoted=True),
        VersionInfo(2, "champion", rf, 300, {"accuracy": 0.93}, {"accuracy": 0.5}, promoted=True),
        VersionInfo(3, "rejected", "LogisticRegression", 300, {"accuracy": 0.6}, reason="worse"),
    ]
    return DemoRun(
        title="synthetic",
        seed=3,
        events=EVENTS,
        drift_at=DRIFT_AT,
        rate=RATE,
        start_ms=START,
        live=System("live", "live loop", live, retrains=2, promotions=1),
        baselines=[
            System("no_retrain", "no retraining", none),
            System("periodic", "periodic retrain", periodic, retrains=1, promotions=1),
        ],
        alerts=alerts,
        markers=markers,
        versions=versions,
        window=WINDOW,
        recovery_tolerance=0.05,
        config={"alert rules": "[...]"},
    )


def brute_recovery(events: list[ScoredEvent], target: float) -> int | None:
    after = [e for e in sorted(events, key=lambda e: e.index) if e.index >= DRIFT_AT]
    for j in range(len(after) - WINDOW + 1):
        part = after[j : j + WINDOW]
        if sum(e.label == e.prediction for e in part) / WINDOW >= target:
            return after[j].index
    return None


def test_rolling_matches_brute_force() -> None:
    rng = random.Random(5)
    events = [
        ScoredEvent(i, i * 10, rng.choice([0, 1]), rng.choice([0, 1]), "v") for i in range(400)
    ]
    r = rolling(events, window=50, min_periods=10)
    for k in (0, 8, 9, 10, 49, 50, 51, 250, 399):
        part = events[max(0, k - 49) : k + 1]
        if len(part) < 10:
            assert np.isnan(r.accuracy[k]) and np.isnan(r.f1[k])
            continue
        acc = np.mean([e.label == e.prediction for e in part])
        f1 = f1_score([e.label for e in part], [e.prediction for e in part], zero_division=0.0)
        assert r.accuracy[k] == pytest.approx(acc)
        assert r.f1[k] == pytest.approx(f1)
    assert r.time_ms.tolist() == [e.event_time_ms for e in events]


def test_rolling_orders_by_stream_position() -> None:
    events = [ScoredEvent(i, i, 1, 1 if i < 3 else 0, "v") for i in range(6)]
    r = rolling(list(reversed(events)), window=3, min_periods=1)
    assert r.index.tolist() == list(range(6))
    assert r.accuracy.round(3).tolist() == [1.0, 1.0, 1.0, 0.667, 0.333, 0.0]


def test_recovery_point_is_the_start_of_the_first_good_window() -> None:
    run = synthetic_run()
    live = list(run.live.events)
    before = [e for e in live if e.index < DRIFT_AT][-WINDOW:]
    target = (accuracy_of(before) or 0) - 0.05
    found = recovery_point(live, drift_at=DRIFT_AT, window=WINDOW, target=target)
    assert found is not None
    assert found.index == brute_recovery(live, target)
    assert DRIFT_AT < found.index <= SWAP_AT
    no = list(run.baselines[0].events)
    assert recovery_point(no, drift_at=DRIFT_AT, window=WINDOW, target=target) is None


def test_summary_numbers() -> None:
    run = synthetic_run()
    s = summarize(run)
    live, none, periodic = s.systems
    assert (live.key, none.key, periodic.key) == ("live", "no_retrain", "periodic")

    before = [e for e in run.live.events if e.index < DRIFT_AT][-WINDOW:]
    assert live.accuracy_before == pytest.approx(sum(good(e.index) for e in before) / WINDOW)
    after = [e for e in run.live.events if e.index >= DRIFT_AT][:WINDOW]
    assert live.accuracy_after_change == pytest.approx(sum(bad(e.index) for e in after) / WINDOW)
    assert 0.40 < live.accuracy_after_change < 0.60 < 0.9 < live.accuracy_before

    target = live.accuracy_before - 0.05
    rec = brute_recovery(list(run.live.events), target)
    assert live.recovered_at_index == rec and rec is not None
    assert live.events_to_recovery == rec - DRIFT_AT
    assert live.seconds_to_recovery == pytest.approx((t(rec) - t(DRIFT_AT)) / 1000)
    assert s.recovered and s.recovery_from_index == rec
    # "after recovery" is computed on the same events (from the loop's recovery) for all
    tail = [e for e in run.live.events if e.index >= rec]
    assert live.accuracy_after_recovery == pytest.approx(accuracy_of(tail))
    none_tail = [e for e in none_events(run) if e.index >= rec]
    assert none.accuracy_after_recovery == pytest.approx(accuracy_of(none_tail))
    assert s.gain_over_no_retrain == pytest.approx(
        (accuracy_of(tail) or 0) - (accuracy_of(none_tail) or 0)
    )
    assert s.gain_over_no_retrain is not None and s.gain_over_no_retrain > 0.3
    assert none.events_to_recovery is None
    assert periodic.recovered_at_index == brute_recovery(
        list(run.baselines[1].events), periodic.accuracy_before - 0.05
    )

    # detection: the first alert from the change on; the one before it is a false alarm
    assert s.detected and s.detection_rule == "accuracy_drift" and s.detection_version == "1"
    assert s.detection_delay_events == 60
    assert s.detection_delay_s == pytest.approx(0.6)
    assert s.detection_seen_after_s == pytest.approx((t(1_090) - t(DRIFT_AT)) / 1000)
    assert s.false_alarms == 1 and s.alerts_after_change == 2
    assert s.promoted_versions == [2]
    assert (live.retrains, live.promotions, periodic.retrains) == (2, 1, 1)
    assert live.labeled == sum(1 for i in range(EVENTS) if labeled(i))


def none_events(run: DemoRun) -> list[ScoredEvent]:
    return list(run.baselines[0].events)


def test_no_detection_and_no_recovery() -> None:
    run = synthetic_run()
    stuck = DemoRun(
        title="stuck",
        seed=1,
        events=EVENTS,
        drift_at=DRIFT_AT,
        rate=RATE,
        start_ms=START,
        live=System("live", "live loop", none_events(run)),
        baselines=[System("no_retrain", "no retraining", none_events(run))],
        alerts=[run.alerts[0]],
        window=WINDOW,
    )
    s = summarize(stuck)
    assert not s.detected and s.detection_delay_events is None and s.false_alarms == 1
    assert not s.recovered and s.promoted_versions == []
    last = sorted(none_events(run), key=lambda e: e.index)[-WINDOW:]
    assert s.recovery_from_index == last[0].index
    assert s.system("live").accuracy_after_recovery == pytest.approx(accuracy_of(last))
    assert s.gain_over_no_retrain == pytest.approx(0.0)


def test_write_report(tmp_path: Path) -> None:
    run = synthetic_run()
    page = write_report(run, tmp_path / "out")
    assert page == tmp_path / "out" / "index.html"
    for name in PLOTS:
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name
    text = page.read_text()
    for name in PLOTS:
        assert f"<img src='{name}'" in text
    s = summarize(run)
    live, none, _ = s.systems
    # the summary table shows the computed numbers
    row = re.search(r"accuracy after recovery</th>(.*?)</tr>", text)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:2] == [
        f"{100 * (live.accuracy_after_recovery or 0):.1f}%",
        f"{100 * (none.accuracy_after_recovery or 0):.1f}%",
    ]
    row = re.search(r"events to recovery</th>(.*?)</tr>", text)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[0] == str(live.events_to_recovery) and cells[1] == "not recovered"
    row = re.search(r"detection delay \(events\)</th>(.*?)</tr>", text)
    assert row is not None and re.findall(r"<td>(.*?)</td>", row.group(1))[0] == "60"
    row = re.search(r"false alarms.*?</th>(.*?)</tr>", text)
    assert row is not None and re.findall(r"<td>(.*?)</td>", row.group(1))[0] == "1"
    assert "Change detected: yes" in text and "Retrained version promoted: yes (v2)" in text
    assert "rejected" in text and "low_accuracy" in text and "firing at the end" in text


def test_write_report_escapes_text(tmp_path: Path) -> None:
    run = synthetic_run()
    nasty = AlertSpan("r<script>", "threshold", "1", t(DRIFT_AT + 10), summary="<b>x</b>")
    hostile = DemoRun(
        title="<title>",
        seed=1,
        events=EVENTS,
        drift_at=DRIFT_AT,
        rate=RATE,
        start_ms=START,
        live=run.live,
        alerts=[nasty],
        window=WINDOW,
        config={"k": json.dumps({"a": "<x>"})},
    )
    text = write_report(hostile, tmp_path).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<b>x</b>" not in text and "<title>&lt;title&gt;</title>" in text
