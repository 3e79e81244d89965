"""The demo: its data stream and baselines (pure), its settings hand-over, and a quick run
end to end against the real stack (every process of the loop, through Kafka and Redis)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from procs import cleanup_prefix

from consumers.cli import namespace_of
from consumers.demo import DETECTOR_RULE, DemoPlan, run_demo, settings_env
from streaming import demo_data
from streaming.errors import ConfigError
from streaming.report import accuracy_of
from streaming.settings import Settings, load_settings

START = 1_800_000_000_000


def stream(seed: int, events: int = 3_000, drift_at: int = 1_200) -> list[demo_data.Application]:
    return list(demo_data.applications(seed, events, drift_at, START, 100.0))


def test_stream_is_deterministic_by_seed() -> None:
    a, b, c = stream(3), stream(3), stream(4)
    assert a == b
    assert [x.features for x in a] != [x.features for x in c]
    assert [x.label_delay_ms for x in a] != [x.label_delay_ms for x in c]
    # a shorter run is a prefix of a longer one
    assert stream(3, events=1_000) == a[:1_000]
    assert [x.prediction_id for x in a[:3]] == ["app-00000000", "app-00000001", "app-00000002"]
    assert all(demo_data.index_of(x.prediction_id) == x.index for x in a)
    with pytest.raises(ValueError, match="not a demo prediction id"):
        demo_data.index_of("p-1")


def test_event_times_and_label_delays() -> None:
    apps = stream(5, events=6_000, drift_at=2_000)
    assert [x.event_time_ms - START for x in apps[:4]] == [0, 10, 20, 30]
    assert apps[-1].event_time_ms == START + 59_990
    delays = demo_data.default_label_delays(6_000, 100.0)
    never = sum(x.label_delay_ms is None for x in apps) / len(apps)
    assert 0.035 < never < 0.065
    got = [x.label_delay_ms for x in apps if x.label_delay_ms is not None]
    assert 0.8 * delays.median_ms < statistics.median(got) < 1.2 * delays.median_ms
    assert max(got) <= delays.max_ms and min(got) >= 1
    assert all(
        x.outcome_time_ms == x.event_time_ms + x.label_delay_ms
        for x in apps
        if x.label_delay_ms is not None
    )


def test_the_concept_changes_at_drift_at() -> None:
    apps = stream(1, events=4_000, drift_at=1_500)
    assert {x.concept for x in apps[:1_500]} == {demo_data.BEFORE_FUNCTION}
    assert {x.concept for x in apps[1_500:]} == {demo_data.AFTER_FUNCTION}
    model = demo_data.initial_model(demo_data.history(1, 3_000), seed=1)
    scored = demo_data.no_retrain(model, apps)
    assert len(scored) == sum(x.label_delay_ms is not None for x in apps)
    before = accuracy_of([e for e in scored if e.index < 1_500]) or 0.0
    after = accuracy_of([e for e in scored if e.index >= 1_500]) or 1.0
    # the model of the first concept is good on it and about a coin flip on the second
    assert before > 0.9 and after < 0.6


def test_periodic_retrain_recovers_after_refits() -> None:
    apps = stream(2, events=4_000, drift_at=1_500)
    model = demo_data.initial_model(demo_data.history(2, 3_000), seed=2)
    scored, refits = demo_data.periodic_retrain(model, apps, every=500, window=500, seed=2)
    arrivals = sorted(x.outcome_time_ms for x in apps if x.outcome_time_ms is not None)
    assert [r.at_ms for r in refits] == arrivals[499::500]
    assert all(r.rows == 500 for r in refits)
    assert [e.index for e in scored] == [x.index for x in apps if x.label_delay_ms is not None]
    # each event is scored by the model of the last refit at or before its event time
    for e in scored[::97]:
        earlier = [r.version for r in refits if r.at_ms <= e.event_time_ms]
        assert e.version == (earlier[-1] if earlier else "p0")
    late = [e for e in scored if e.index >= 3_000]
    baseline = [e for e in demo_data.no_retrain(model, apps) if e.index >= 3_000]
    assert (accuracy_of(late) or 0) > (accuracy_of(baseline) or 1) + 0.3


def test_plan_defaults_and_overrides() -> None:
    quick = DemoPlan.make(events=None, drift_at=None, seed=1, rate=None, quick=True)
    assert (quick.events, quick.drift_at, quick.rate) == (6_000, 2_500, 150.0)
    default = DemoPlan.make(events=None, drift_at=None, seed=1, rate=None, quick=False)
    assert default.events > quick.events and default.trainer_budget_s > quick.trainer_budget_s
    scaled = DemoPlan.make(events=12_000, drift_at=None, seed=1, rate=None, quick=True)
    assert scaled.drift_at == 5_000
    with pytest.raises(ConfigError, match="--drift-at"):
        DemoPlan.make(events=1_000, drift_at=1_000, seed=1, rate=None, quick=True)
    # the demo's settings validate (rules against windows and detectors)
    settings = load_settings(**quick.overrides())
    assert {r.name for r in settings.alert_rules} >= {DETECTOR_RULE}
    assert settings.retrain_cooldown_ms == quick.ms_of(quick.cooldown_events)


def test_settings_reach_the_children_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = DemoPlan.make(events=None, drift_at=None, seed=1, rate=None, quick=True)
    settings = load_settings(
        topic_prefix="demo1.",
        state_hmac_key="a-secret-key-of-enough-bytes",
        kafka_config={"linger.ms": "7"},
        **plan.overrides(),
    )
    env = settings_env(settings)
    assert env["STREAMMON_STATE_HMAC_KEY"] == "a-secret-key-of-enough-bytes"
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"STREAMMON_{name.upper()}", raising=False)
    monkeypatch.delenv("STREAMMON_CONFIG_FILE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again == settings


@pytest.mark.integration
def test_quick_demo_end_to_end(
    stack: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMMON_CONFIG_FILE", raising=False)
    monkeypatch.delenv("STREAMMON_TOPIC_PREFIX", raising=False)
    settings = load_settings(
        kafka_bootstrap_servers=stack["kafka"],
        redis_url=stack["redis"],
        state_hmac_key="test-key-0123456789abcdef",
    )
    code = run_demo(settings, quick=True, seed=7, report_dir=tmp_path, live=False)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    prefix = summary["topic_prefix"]
    try:
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in (run_dir / "logs").iterdir()}
        assert code == 0, f"demo failed: {summary['end_reason']}\n{json.dumps(logs, indent=1)}"
        check_report(run_dir, summary)
    finally:
        demo = load_settings(
            kafka_bootstrap_servers=stack["kafka"], redis_url=stack["redis"], topic_prefix=prefix
        )
        cleanup_prefix(stack["kafka"], stack["redis"], prefix, namespace_of(demo))


def check_report(run_dir: Path, summary: dict[str, Any]) -> None:
    page = (run_dir / "index.html").read_text()
    for name in ("accuracy.png", "f1.png", "timeline.png", "drift.png", "estimation.png"):
        assert (run_dir / name).read_bytes().startswith(b"\x89PNG"), name
        assert f"src='{name}'" in page
    assert summary["completed"]
    # the change was detected by the drift detector's rule, after the change
    assert summary["detected"], summary["alerts"]
    drift_alerts = [
        a
        for a in summary["alerts"]
        if a["rule"] == DETECTOR_RULE and a["starts_at_ms"] >= summary["change_time_ms"]
    ]
    assert drift_alerts, summary["alerts"]
    assert summary["detection_delay_events"] >= 0
    # a retrained version was promoted
    assert summary["promoted_versions"] and min(summary["promoted_versions"]) > 1
    live, none = summary["systems"][0], summary["systems"][1]
    assert (live["key"], none["key"]) == ("live", "no_retrain")
    assert live["promotions"] >= 1 and live["labeled"] > 0.9 * summary["events"]
    # and the loop recovered well above the model that was never retrained
    assert summary["recovered"], live
    assert live["accuracy_after_recovery"] >= none["accuracy_after_recovery"] + 0.2, (live, none)
    assert "Change detected: yes" in page and "Retrained version promoted: yes" in page
    # the loans grow at the change: flagged without labels, naming the feature
    assert "loan" in summary["drift_detected_features"], summary["alerts"]
    assert summary["drift_detection_delay_events"] >= 0
    assert "Input drift flagged without labels: <b>loan" in page
