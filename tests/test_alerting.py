"""Tests for streaming.alerting: rule validation, alert lifecycle, retrain policy, state."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from streaming.alerting import (
    AlertEngine,
    AlertRule,
    AlertTransition,
    DataDriftRule,
    DataQualityRule,
    DetectorRule,
    Emission,
    RetrainEmission,
    RetrainPolicy,
    Rule,
    RuleInput,
    ThresholdRule,
    rules_for,
    validate_rules,
)
from streaming.errors import ConfigError, StateError
from streaming.evaluation import PartitionEvaluator
from streaming.serde import AvroSerde, load_schema
from streaming.settings import ModelConfig

T0 = 1_700_000_000_000
STEP_MS = 1000
WINDOWS = {"count:1000", "time:1h"}
DETECTORS = {"adwin", "ddm"}
NO_RETRAIN_LIMITS = RetrainPolicy(cooldown_ms=0, min_labeled=0, max_in_flight_ms=10**12)


def low_acc(**kw: Any) -> ThresholdRule:
    values: dict[str, Any] = {
        "name": "low_acc",
        "metric": "accuracy",
        "window": "count:1000",
        "op": "<",
        "threshold": 0.8,
        "min_samples": 1,
    }
    values.update(kw)
    return ThresholdRule(**values)


def drift(**kw: Any) -> DetectorRule:
    values: dict[str, Any] = {"name": "drift", "detector": "adwin", "resolve_after_events": 50}
    values.update(kw)
    return DetectorRule(**values)


def make_input(
    position: int,
    rules: Sequence[Rule],
    *,
    acc: float | None = None,
    t: int | None = None,
    samples: int | None = None,
    alarms: Sequence[Mapping[str, Any]] = (),
    quality: Mapping[str, float | None] | None = None,
    model: str = "credit",
    version: str | None = "v3",
    window: str = "count:1000",
) -> RuleInput:
    """A series whose only defined metric is ``accuracy`` over ``window``."""

    def metric(w: str, m: str) -> float | None:
        return acc if (w, m) == (window, "accuracy") else None

    def count(w: str) -> int:
        if w != window:
            return 0
        return position if samples is None else samples

    return RuleInput(
        model=model,
        version=version,
        position=position,
        event_time_ms=T0 + STEP_MS * position if t is None else t,
        metric=metric,
        samples=count,
        alarms=alarms,
        quality=quality or {},
        rules=rules,
    )


def feed(
    engine: AlertEngine, rules: Sequence[Rule], accs: Iterable[float | None], start: int = 1
) -> list[tuple[int, Emission]]:
    """Feed an accuracy series (one value per position); return (position, emission) pairs."""
    out = []
    for position, acc in enumerate(accs, start=start):
        out.extend((position, e) for e in engine.evaluate(make_input(position, rules, acc=acc)))
    return out


def alerts(emitted: Iterable[tuple[int, Emission]]) -> list[tuple[int, str]]:
    return [(p, e.record["status"]) for p, e in emitted if isinstance(e, AlertTransition)]


def requests(emitted: Iterable[tuple[int, Emission]]) -> list[RetrainEmission]:
    return [e for _, e in emitted if isinstance(e, RetrainEmission)]


def alarm(position: int, detector: str = "adwin", direction: str = "increase") -> dict[str, Any]:
    return {
        "detector": detector,
        "kind": detector,
        "position": position,
        "event_time_ms": T0 + STEP_MS * position,
        "direction": direction,
        "mean_before": None,
        "mean_after": None,
    }


# --------------------------------------------------------------------------- lifecycle


def test_drop_fires_once_and_recovery_resolves_once() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    emitted = feed(engine, [low_acc()], [0.9] * 10 + [0.7] * 10 + [0.9] * 10)
    assert alerts(emitted) == [(11, "firing"), (21, "resolved")]
    firing, resolved = (e.record for _, e in emitted)
    assert firing["starts_at"] == T0 + 11 * STEP_MS == firing["emitted_at"]
    assert firing["ends_at"] is None
    assert resolved["starts_at"] == firing["starts_at"]
    assert resolved["ends_at"] == T0 + 21 * STEP_MS == resolved["emitted_at"]
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert resolved["alert_id"] != firing["alert_id"]
    assert (firing["value"], firing["threshold"]) == (0.7, 0.8)
    assert resolved["value"] == 0.9
    assert firing["labels"] == {
        "alertname": "low_acc",
        "model": "credit",
        "version": "v3",
        "severity": "warning",
    }
    assert firing["annotations"]["summary"] == "credit v3: accuracy over count:1000 is 0.7 < 0.8"
    assert "no longer < 0.8" in resolved["annotations"]["summary"]
    assert (firing["rule"], firing["model_name"], firing["model_version"]) == (
        "low_acc",
        "credit",
        "v3",
    )
    assert engine.firing() == []


def test_firing_alert_is_listed_until_it_resolves() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    feed(engine, [low_acc()], [0.7])
    assert [(a["rule"], a["model"], a["version"]) for a in engine.firing()] == [
        ("low_acc", "credit", "v3")
    ]
    assert engine.firing("other") == []


def test_threshold_reads_the_rule_window_and_metric() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    # the fake series defines accuracy over count:1000 only
    assert feed(engine, [low_acc(window="time:1h")], [0.1] * 5) == []
    assert feed(engine, [low_acc(metric="f1")], [0.1] * 5) == []
    assert alerts(feed(engine, [low_acc(op=">", threshold=0.5)], [0.6])) == [(1, "firing")]


@pytest.mark.parametrize(("breach", "expected"), [(3, []), (4, [(14, "firing")])])
def test_for_events_needs_that_many_more_breaching_evaluations(
    breach: int, expected: list[tuple[int, str]]
) -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(for_events=3)
    emitted = feed(engine, [rule], [0.9] * 10 + [0.7] * breach + [0.9] * 5)
    # pending at 11; fires when 3 more evaluations (12, 13, 14) breached too
    assert alerts(emitted) == [*expected, *([(15, "resolved")] if expected else [])]


@pytest.mark.parametrize(("breach", "fires"), [(5, False), (6, True)])
def test_for_ms_needs_that_much_event_time(breach: int, fires: bool) -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    emitted = feed(engine, [low_acc(for_ms=5 * STEP_MS)], [0.9] + [0.7] * breach + [0.9])
    # pending at position 2 (t = 2 s); 5 s later is position 7, the 6th breaching evaluation
    assert alerts(emitted) == ([(7, "firing"), (8, "resolved")] if fires else [])


def test_for_ms_counts_event_time_not_evaluations() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(for_ms=60_000)
    assert engine.evaluate(make_input(1, [rule], acc=0.7, t=T0)) == []
    assert engine.evaluate(make_input(2, [rule], acc=0.7, t=T0 + 59_999)) == []
    (fired,) = engine.evaluate(make_input(3, [rule], acc=0.7, t=T0 + 60_000))
    assert fired.record["status"] == "firing"
    assert fired.record["starts_at"] == T0 + 60_000


def test_event_time_going_backwards_does_not_move_now_back() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc()
    engine.evaluate(make_input(1, [rule], acc=0.7, t=T0 + 10_000))
    (resolved,) = engine.evaluate(make_input(2, [rule], acc=0.9, t=T0 + 5_000))
    assert resolved.record["ends_at"] == T0 + 10_000 == resolved.record["starts_at"]


def test_min_samples_gates_firing() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(min_samples=100)
    emitted = []
    for position in range(1, 131):
        inp = make_input(position, [rule], acc=0.5)  # samples = position
        emitted.extend((position, e) for e in engine.evaluate(inp))
    assert alerts(emitted) == [(100, "firing")]


def test_insufficient_samples_keep_a_firing_alert_firing() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(min_samples=10)
    assert alerts([(1, e) for e in engine.evaluate(make_input(1, [rule], acc=0.5, samples=10))])
    # the window emptied (e.g. a time window after a gap): the value does not count
    for position in range(2, 6):
        assert engine.evaluate(make_input(position, [rule], acc=0.95, samples=3)) == []
    (resolved,) = engine.evaluate(make_input(6, [rule], acc=0.95, samples=10))
    assert resolved.record["status"] == "resolved"


def test_insufficient_samples_neither_advance_nor_reset_a_pending_alert() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(for_events=2, min_samples=10)
    assert engine.evaluate(make_input(1, [rule], acc=0.5, samples=10)) == []  # pending
    for position in range(2, 10):  # unknown: pending does not advance
        assert engine.evaluate(make_input(position, [rule], acc=0.5, samples=2)) == []
    assert engine.evaluate(make_input(10, [rule], acc=0.5, samples=10)) == []  # held 1
    (fired,) = engine.evaluate(make_input(11, [rule], acc=0.5, samples=10))  # held 2
    assert fired.record["status"] == "firing"


@pytest.mark.parametrize("undefined", [None, float("nan")])
def test_undefined_metric_is_unknown(undefined: float | None) -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    emitted = feed(engine, [low_acc()], [0.7, undefined, undefined, 0.7, 0.9])
    assert alerts(emitted) == [(1, "firing"), (5, "resolved")]


def test_rule_that_disappears_resolves_its_firing_alert() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc()
    (fired,) = engine.evaluate(make_input(1, [rule], acc=0.7))
    (resolved,) = engine.evaluate(make_input(2, [], acc=0.7))
    assert resolved.record["status"] == "resolved"
    assert resolved.record["fingerprint"] == fired.record["fingerprint"]
    assert resolved.record["value"] is None
    assert "resolved_reason" in resolved.record["annotations"]
    assert engine.evaluate(make_input(3, [], acc=0.7)) == []


def test_models_filter_limits_a_rule_to_its_models() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(models=["fraud"])
    assert engine.evaluate(make_input(1, [rule], acc=0.1, model="credit")) == []
    assert len(engine.evaluate(make_input(1, [rule], acc=0.1, model="fraud"))) == 1


def test_all_versions_series_has_null_version_and_never_requests_a_retrain() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    (fired,) = engine.evaluate(make_input(1, [low_acc(retrain=True)], acc=0.5, version=None))
    record = fired.record
    assert record["model_version"] is None
    assert record["labels"]["version"] == "*"
    assert record["annotations"]["summary"].startswith("credit all versions:")
    assert record["annotations"]["retrain"].startswith("not requested")


def test_duplicate_rule_names_in_an_input_are_refused() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    with pytest.raises(ConfigError, match=r"alert_rules\[low_acc\]\.name: duplicate"):
        engine.evaluate(make_input(1, [low_acc(), low_acc(threshold=0.5)], acc=0.5))


# --------------------------------------------------------------------------- records


def test_records_encode_with_the_avro_contracts() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    emitted = feed(engine, [low_acc(retrain=True)], [0.7, 0.9])
    kinds = [type(e).__name__ for _, e in emitted]
    assert kinds == ["AlertTransition", "RetrainEmission", "AlertTransition"]
    for _, e in emitted:
        name = "AlertEvent" if isinstance(e, AlertTransition) else "RetrainRequest"
        fields = [f["name"] for f in load_schema(name)["fields"]]
        assert list(e.record) == fields
        serde = AvroSerde(name)
        assert serde.decode(serde.encode(e.record)) == e.record
    assert emitted[0][1].key == emitted[0][1].record["fingerprint"]
    assert emitted[1][1].key == "credit"
    assert (emitted[0][1].topic, emitted[1][1].topic) == ("alerts", "retrain-requests")


def test_annotation_templates_are_rendered() -> None:
    rule = low_acc(
        annotations={
            "summary": "{model}/{version} {rule}: {metric}@{window} = {value:.2f} (< {threshold})",
            "runbook": "https://runbooks.example/{rule}",
        },
        labels={"team": "risk"},
        severity="critical",
    )
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    (fired,) = engine.evaluate(make_input(1, [rule], acc=0.712345))
    ann = fired.record["annotations"]
    assert ann["summary"] == "credit/v3 low_acc: accuracy@count:1000 = 0.71 (< 0.8)"
    assert ann["runbook"] == "https://runbooks.example/low_acc"
    assert ann["description"].startswith("Rule low_acc fires when accuracy")
    assert fired.record["labels"]["team"] == "risk"
    assert fired.record["labels"]["severity"] == fired.record["severity"] == "critical"


def test_ids_are_stable_and_distinct_per_transition() -> None:
    accs = [0.7, 0.9, 0.7, 0.9]
    first = feed(AlertEngine(NO_RETRAIN_LIMITS), [low_acc()], accs)
    again = feed(AlertEngine(NO_RETRAIN_LIMITS), [low_acc()], accs)
    assert [e.record for _, e in first] == [e.record for _, e in again]
    ids = [e.record["alert_id"] for _, e in first]
    assert len(set(ids)) == 4
    assert len({e.record["fingerprint"] for _, e in first}) == 1
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_ids_differ_for_two_episodes_at_the_same_event_time() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc()
    out = []
    for position, acc in enumerate([0.7, 0.9, 0.7], start=1):
        out += engine.evaluate(make_input(position, [rule], acc=acc, t=T0))
    assert [e.record["status"] for e in out] == ["firing", "resolved", "firing"]
    assert out[0].record["starts_at"] == out[2].record["starts_at"]
    assert out[0].record["alert_id"] != out[2].record["alert_id"]


def test_fingerprint_depends_on_rule_model_version_and_labels() -> None:
    def fingerprint(rule: Rule, model: str = "credit", version: str = "v3") -> str:
        engine = AlertEngine(NO_RETRAIN_LIMITS)
        (fired,) = engine.evaluate(make_input(1, [rule], acc=0.5, model=model, version=version))
        return str(fired.record["fingerprint"])

    base = fingerprint(low_acc())
    assert base == fingerprint(low_acc(threshold=0.9))  # not identifying
    assert base == fingerprint(low_acc(annotations={"summary": "x"}))
    others = {
        fingerprint(low_acc(name="other")),
        fingerprint(low_acc(), model="fraud"),
        fingerprint(low_acc(), version="v4"),
        fingerprint(low_acc(labels={"team": "risk"})),
    }
    assert base not in others
    assert len(others) == 4


# --------------------------------------------------------------------------- retrain


def test_repeated_breaches_within_cooldown_request_one_retrain() -> None:
    policy = RetrainPolicy(cooldown_ms=60_000, min_labeled=0, max_in_flight_ms=1, window_ms=10)
    engine = AlertEngine(policy)
    # fire/resolve every other second for 50 s, then again at 70 s
    accs: list[float] = [0.7, 0.9] * 25 + [0.9] * 20 + [0.7]
    emitted = feed(engine, [low_acc(retrain=True)], accs)
    assert len([s for _, s in alerts(emitted) if s == "firing"]) == 26
    got = requests(emitted)
    assert [r.record["requested_at"] for r in got] == [T0 + STEP_MS, T0 + 71 * STEP_MS]
    assert got[0].id != got[1].id
    firings = [e for _, e in emitted if isinstance(e, AlertTransition)]
    assert firings[2].record["annotations"]["retrain"].startswith("not requested: cooldown")


def test_retrain_request_fields() -> None:
    policy = RetrainPolicy(
        cooldown_ms=0, min_labeled=0, max_in_flight_ms=1000, window_ms=86_400_000
    )
    engine = AlertEngine(policy)
    fired, request = engine.evaluate(make_input(5, [low_acc(retrain=True)], acc=0.7))
    now = T0 + 5 * STEP_MS
    assert isinstance(request, RetrainEmission)
    assert request.record == {
        "request_id": request.id,
        "model_name": "credit",
        "model_version": "v3",
        "reason": "alert low_acc firing: accuracy over count:1000 is 0.7 < 0.8",
        "alert_fingerprint": fired.record["fingerprint"],
        "window_start": now - 86_400_000,
        "window_end": now,
        "requested_at": now,
    }
    assert fired.record["annotations"]["retrain"] == f"requested {request.id}"
    assert engine.in_flight("credit") == request.id
    again = AlertEngine(policy).evaluate(make_input(5, [low_acc(retrain=True)], acc=0.7))
    assert again[1].id == request.id


def test_rule_without_retrain_requests_nothing() -> None:
    emitted = feed(AlertEngine(NO_RETRAIN_LIMITS), [low_acc()], [0.7])
    assert requests(emitted) == []
    assert "retrain" not in emitted[0][1].record["annotations"]


def test_min_labeled_gates_retrain() -> None:
    policy = RetrainPolicy(cooldown_ms=0, min_labeled=50, max_in_flight_ms=10**9)
    engine = AlertEngine(policy)
    accs = [0.7] + [0.9] * 48 + [0.7, 0.9, 0.7]  # fires at 1, 50 and 52
    emitted = feed(engine, [low_acc(retrain=True)], accs)
    firings = [(p, e) for p, e in emitted if isinstance(e, AlertTransition)]
    assert [p for p, e in firings if e.record["status"] == "firing"] == [1, 50, 52]
    assert firings[0][1].record["annotations"]["retrain"] == (
        "not requested: 1 labeled events, min_labeled is 50"
    )
    (request,) = requests(emitted)
    assert request.record["requested_at"] == T0 + 50 * STEP_MS


def test_in_flight_blocks_a_second_request_until_finished() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(retrain=True)
    (first,) = requests(feed(engine, [rule], [0.7, 0.9]))
    blocked = feed(engine, [rule], [0.7, 0.9], start=3)
    assert requests(blocked) == []
    assert blocked[0][1].record["annotations"]["retrain"] == (
        f"not requested: retrain {first.id} in flight"
    )
    assert engine.retrain_finished("credit", "not-the-one") is False
    assert requests(feed(engine, [rule], [0.7, 0.9], start=5)) == []
    assert engine.retrain_finished("credit", first.id) is True
    assert engine.in_flight("credit") is None
    assert engine.retrain_finished("credit") is False
    (second,) = requests(feed(engine, [rule], [0.7], start=7))
    assert second.id != first.id


def test_retrain_finished_without_id_ends_whichever_is_in_flight() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(retrain=True)
    feed(engine, [rule], [0.7, 0.9])
    assert engine.retrain_finished("credit") is True
    assert len(requests(feed(engine, [rule], [0.7], start=3))) == 1


def test_in_flight_times_out_after_max_in_flight_ms() -> None:
    policy = RetrainPolicy(cooldown_ms=0, min_labeled=0, max_in_flight_ms=10 * STEP_MS)
    engine = AlertEngine(policy)
    rule = low_acc(retrain=True)
    # fires at 1 (request), 3, 5, 7, 9 (in flight), 11 (10 s later: timed out)
    emitted = feed(engine, [rule], [0.7, 0.9] * 6)
    assert [r.record["requested_at"] for r in requests(emitted)] == [
        T0 + 1 * STEP_MS,
        T0 + 11 * STEP_MS,
    ]


def test_cooldown_and_in_flight_are_per_model() -> None:
    engine = AlertEngine(RetrainPolicy(cooldown_ms=10**9, min_labeled=0))
    rule = low_acc(retrain=True)
    out = engine.evaluate(make_input(1, [rule], acc=0.5, model="credit"))
    out += engine.evaluate(make_input(1, [rule], acc=0.5, model="fraud"))
    out += engine.evaluate(make_input(1, [rule], acc=0.5, model="credit", version="v4"))
    assert [e.record["model_name"] for e in out if isinstance(e, RetrainEmission)] == [
        "credit",
        "fraud",
    ]


def test_policy_may_depend_on_the_model() -> None:
    strict = RetrainPolicy(cooldown_ms=0, min_labeled=10**6)
    engine = AlertEngine(lambda model: strict if model == "credit" else NO_RETRAIN_LIMITS)
    rule = low_acc(retrain=True)
    assert len(engine.evaluate(make_input(1, [rule], acc=0.5, model="credit"))) == 1
    assert len(engine.evaluate(make_input(1, [rule], acc=0.5, model="fraud"))) == 2


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cooldown_ms": -1}, "cooldown_ms"),
        ({"min_labeled": 1.5}, "min_labeled"),
        ({"max_in_flight_ms": 0}, "max_in_flight_ms"),
        ({"window_ms": True}, "window_ms"),
    ],
)
def test_bad_retrain_policy_is_a_config_error(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"retrain policy {field}: must be an integer"):
        RetrainPolicy(**kw)


# --------------------------------------------------------------------------- inhibition


def test_detector_alert_during_retrain_in_flight_is_marked_inhibited() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rules: list[Rule] = [low_acc(retrain=True), drift()]
    fired, request = engine.evaluate(make_input(1, rules, acc=0.5))
    assert isinstance(request, RetrainEmission)
    (drifted,) = engine.evaluate(make_input(2, rules, acc=0.5, alarms=[alarm(2)]))
    assert drifted.record["rule"] == "drift"
    assert drifted.record["status"] == "firing"
    assert drifted.record["annotations"]["inhibited_by"] == f"retrain {request.id} in flight"
    assert "inhibited_by" not in fired.record["annotations"]  # only detector rules


def test_detector_alert_without_retrain_in_flight_is_not_inhibited() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    (drifted,) = engine.evaluate(make_input(2, [drift()], alarms=[alarm(2)]))
    assert "inhibited_by" not in drifted.record["annotations"]


def test_inhibition_does_not_depend_on_rule_order_within_one_evaluation() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rules: list[Rule] = [drift(), low_acc(retrain=True)]
    drifted, fired, request = engine.evaluate(make_input(1, rules, acc=0.5, alarms=[alarm(1)]))
    assert (drifted.record["rule"], fired.record["rule"]) == ("drift", "low_acc")
    assert drifted.record["annotations"]["inhibited_by"] == f"retrain {request.id} in flight"


def test_detector_rule_is_not_inhibited_by_its_own_request() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    fired, request = engine.evaluate(make_input(1, [drift(retrain=True)], alarms=[alarm(1)]))
    assert isinstance(request, RetrainEmission)
    assert "inhibited_by" not in fired.record["annotations"]


# --------------------------------------------------------------------------- detector rules


def run_alarms(
    engine: AlertEngine,
    rule: DetectorRule,
    alarm_at: Mapping[int, Sequence[dict[str, Any]]],
    until: int,
) -> list[tuple[int, str]]:
    """Feed positions 1..until; the input carries every alarm so far (as a series does)."""
    recent: list[dict[str, Any]] = []
    out = []
    for position in range(1, until + 1):
        recent.extend(alarm_at.get(position, ()))
        inp = make_input(position, [rule], alarms=list(recent[-20:]))
        out.extend((position, e) for e in engine.evaluate(inp))
    return alerts(out)


def test_detector_rule_needs_min_alarms_within_span_events() -> None:
    rule = drift(min_alarms=2, span_events=100, resolve_after_events=50)
    got = run_alarms(
        AlertEngine(NO_RETRAIN_LIMITS),
        rule,
        {10: [alarm(10)], 150: [alarm(150)], 180: [alarm(180)]},
        until=300,
    )
    # 10 and 150 are 140 apart; 150 and 180 within 100; resolves 50 events after 180
    assert got == [(180, "firing"), (230, "resolved")]


def test_detector_rule_counts_each_alarm_once_and_only_rising_ones() -> None:
    rule = drift(min_alarms=2)
    got = run_alarms(
        AlertEngine(NO_RETRAIN_LIMITS),
        rule,
        {
            5: [alarm(5)],
            9: [alarm(9, direction="decrease")],
            12: [alarm(12, detector="ddm")],
            40: [alarm(40, direction="unknown")],
        },
        until=60,
    )
    assert got == [(40, "firing")]


def test_new_alarms_while_firing_postpone_resolution() -> None:
    rule = drift(resolve_after_events=50)
    got = run_alarms(
        AlertEngine(NO_RETRAIN_LIMITS), rule, {10: [alarm(10)], 40: [alarm(40)]}, until=200
    )
    assert got == [(10, "firing"), (90, "resolved")]


def test_alarms_before_a_resolution_never_count_again() -> None:
    rule = drift(min_alarms=2, resolve_after_events=20)
    got = run_alarms(
        AlertEngine(NO_RETRAIN_LIMITS),
        rule,
        {5: [alarm(5)], 6: [alarm(6)], 100: [alarm(100)], 130: [alarm(130)]},
        until=200,
    )
    assert got == [(6, "firing"), (26, "resolved"), (130, "firing"), (150, "resolved")]


def test_detector_rule_span_ms_uses_event_time() -> None:
    rule = drift(min_alarms=2, span_ms=30 * STEP_MS)
    got = run_alarms(
        AlertEngine(NO_RETRAIN_LIMITS),
        rule,
        {10: [alarm(10)], 45: [alarm(45)], 70: [alarm(70)]},
        until=80,
    )
    assert got == [(70, "firing")]


def test_detector_alert_record() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = drift(min_alarms=2, span_events=100)
    engine.evaluate(make_input(3, [rule], alarms=[alarm(3)]))
    (fired,) = engine.evaluate(make_input(4, [rule], alarms=[alarm(3), alarm(4)]))
    assert (fired.record["value"], fired.record["threshold"]) == (2.0, 2.0)
    assert fired.record["annotations"]["summary"] == (
        "credit v3: 2 rising-error alarms of detector adwin within 100 events (min_alarms 2)"
    )


# --------------------------------------------------------------------------- data quality


def test_data_quality_rule_fires_and_resolves() -> None:
    rule = DataQualityRule(
        name="unlabeled", check="unlabeled_rate", op=">", threshold=0.3, for_events=1
    )
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    values = [0.1, 0.5, 0.5, None, 0.6, 0.2]
    out = []
    for position, v in enumerate(values, start=1):
        inp = make_input(position, [rule], quality={"unlabeled_rate": v, "no_events_ms": 9e9})
        out.extend((position, e) for e in engine.evaluate(inp))
    assert alerts(out) == [(3, "firing"), (6, "resolved")]
    assert out[0][1].record["annotations"]["summary"] == ("credit v3: unlabeled_rate is 0.5 > 0.3")


def test_data_quality_value_not_supplied_keeps_state() -> None:
    rule = DataQualityRule(name="quiet", check="no_events_ms", op=">=", threshold=60_000)
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    assert len(engine.evaluate(make_input(1, [rule], quality={"no_events_ms": 60_000}))) == 1
    assert engine.evaluate(make_input(2, [rule], quality={})) == []
    assert len(engine.evaluate(make_input(3, [rule], quality={"no_events_ms": 0}))) == 1


# --------------------------------------------------------------------------- determinism, state


def scenario(seed: int, n: int) -> list[RuleInput]:
    """Random accuracy walks, alarms and quality values for two versions of one model."""
    rng = random.Random(seed)
    rules: list[Rule] = [
        low_acc(for_events=2, retrain=True),
        low_acc(name="slow_low_acc", for_ms=5 * STEP_MS, threshold=0.75),
        drift(min_alarms=2, span_events=40, resolve_after_events=25),
        DataQualityRule(name="unlabeled", check="unlabeled_rate", op=">", threshold=0.4),
    ]
    inputs = []
    recent: dict[str, list[dict[str, Any]]] = {"v1": [], "v2": []}
    positions = {"v1": 0, "v2": 0}
    acc = {"v1": 0.85, "v2": 0.85}
    for i in range(n):
        version = "v1" if rng.random() < 0.6 else "v2"
        positions[version] += 1
        position = positions[version]
        acc[version] = min(1.0, max(0.5, acc[version] + rng.uniform(-0.04, 0.04)))
        if rng.random() < 0.05:
            recent[version].append(alarm(position, direction=rng.choice(["increase", "decrease"])))
        inputs.append(
            make_input(
                position,
                rules,
                acc=acc[version],
                t=T0 + 700 * i,
                samples=position,
                alarms=list(recent[version][-20:]),
                quality={"unlabeled_rate": rng.random() * 0.5},
                version=version,
            )
        )
    return inputs


def policy() -> RetrainPolicy:
    return RetrainPolicy(cooldown_ms=20_000, min_labeled=30, max_in_flight_ms=40_000)


def records(out: Iterable[Emission]) -> list[dict[str, Any]]:
    return [e.record for e in out]


def test_two_engines_fed_the_same_inputs_emit_the_same_records() -> None:
    inputs = scenario(seed=3, n=600)
    a, b = AlertEngine(policy()), AlertEngine(policy())
    out_a = [e for inp in inputs for e in a.evaluate(inp)]
    out_b = [e for inp in inputs for e in b.evaluate(inp)]
    assert records(out_a) == records(out_b)
    statuses = {(type(e).__name__, e.record.get("rule")) for e in out_a}
    # the scenario exercises every rule and the retrain path
    assert {r for _, r in statuses} >= {"low_acc", "slow_low_acc", "drift", "unlabeled"}
    assert ("RetrainEmission", None) in statuses
    ids = [e.id for e in out_a]
    assert len(ids) == len(set(ids))


def test_state_round_trip_continues_identically() -> None:
    inputs = scenario(seed=11, n=700)
    head, tail = inputs[:350], inputs[350:]
    live = AlertEngine(policy())
    for inp in head:
        live.evaluate(inp)
    saved = json.loads(json.dumps(live.to_state()))
    restored = AlertEngine.from_state(saved, policy())
    assert restored.to_state() == live.to_state()
    out_live = [e for inp in tail for e in live.evaluate(inp)]
    out_restored = [e for inp in tail for e in restored.evaluate(inp)]
    assert len(out_live) > 10
    assert records(out_live) == records(out_restored)
    assert live.to_state() == restored.to_state()


def test_round_trip_at_every_point_of_pending_and_alarm_counting() -> None:
    rules: list[Rule] = [
        low_acc(for_events=3),
        low_acc(name="slow", for_ms=3 * STEP_MS),
        drift(min_alarms=3, span_events=30, resolve_after_events=5),
    ]
    alarm_at = {2: [alarm(2)], 4: [alarm(4)], 6: [alarm(6)], 12: [alarm(12)]}
    inputs = []
    recent: list[dict[str, Any]] = []
    for position, acc in enumerate([0.7, 0.7, 0.7, 0.7, 0.9, 0.7, 0.7, 0.7, 0.7] * 2, start=1):
        recent.extend(alarm_at.get(position, ()))
        t = T0 + STEP_MS * position - (2500 if position % 3 == 0 else 0)  # some out of order
        inputs.append(make_input(position, rules, acc=acc, t=t, alarms=list(recent)))
    straight = AlertEngine(NO_RETRAIN_LIMITS)
    expected = [records(straight.evaluate(inp)) for inp in inputs]
    assert sum(map(len, expected)) >= 4
    for cut in range(1, len(inputs)):
        engine = AlertEngine(NO_RETRAIN_LIMITS)
        for inp in inputs[:cut]:
            engine.evaluate(inp)
        engine = AlertEngine.from_state(json.loads(json.dumps(engine.to_state())))
        assert [records(engine.evaluate(inp)) for inp in inputs[cut:]] == expected[cut:], cut


def test_replay_after_a_crash_reemits_identical_records() -> None:
    inputs = scenario(seed=5, n=400)
    engine = AlertEngine(policy())
    for inp in inputs[:200]:
        engine.evaluate(inp)
    checkpoint = json.dumps(engine.to_state())
    first = [e for inp in inputs[200:300] for e in engine.evaluate(inp)]  # then a crash
    replayed = AlertEngine.from_state(json.loads(checkpoint), policy())
    again = [e for inp in inputs[200:300] for e in replayed.evaluate(inp)]
    assert first
    assert records(first) == records(again)


def round_trip(engine: AlertEngine, policy: RetrainPolicy | None = None) -> AlertEngine:
    return AlertEngine.from_state(json.loads(json.dumps(engine.to_state())), policy)


def test_in_flight_and_cooldown_survive_the_state_round_trip() -> None:
    policy = RetrainPolicy(cooldown_ms=10 * STEP_MS, min_labeled=0, max_in_flight_ms=10**9)
    engine = AlertEngine(policy)
    rule = low_acc(retrain=True)
    (request,) = requests(feed(engine, [rule], [0.7, 0.9]))
    restored = round_trip(engine, policy)
    assert restored.in_flight("credit") == request.id
    assert requests(feed(restored, [rule], [0.7, 0.9], start=3)) == []  # in flight
    assert restored.retrain_finished("credit", request.id)
    restored = round_trip(restored, policy)
    assert requests(feed(restored, [rule], [0.7, 0.9], start=5)) == []  # cooldown
    assert len(requests(feed(restored, [rule], [0.7], start=11))) == 1


def test_resolution_of_a_vanished_rule_after_a_round_trip_keeps_the_annotations() -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(annotations={"runbook": "see {rule}"})
    (fired,) = engine.evaluate(make_input(1, [rule], acc=0.5))
    (resolved,) = round_trip(engine).evaluate(make_input(2, [], acc=0.5))
    assert resolved.record["annotations"] == {
        **fired.record["annotations"],
        "resolved_reason": "the rule no longer applies to this model",
    }
    assert resolved.record["labels"] == fired.record["labels"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(format="other"),
        lambda s: s.update(version=2),
        lambda s: s["alerts"][0].update(status="exploded"),
        lambda s: s["alerts"][0].update(starts_at="soon"),
        lambda s: s["models"]["credit"].pop("clock"),
        lambda s: s.update(alerts=[1]),
    ],
)
def test_bad_state_is_a_state_error(mutate: Any) -> None:
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    feed(engine, [low_acc()], [0.7])
    state = json.loads(json.dumps(engine.to_state()))
    AlertEngine.from_state(json.loads(json.dumps(state)))  # intact state loads
    mutate(state)
    with pytest.raises(StateError):
        AlertEngine.from_state(state)


def test_input_from_a_real_series_snapshot() -> None:
    cfg = ModelConfig(
        task="classification",
        positive_label=1,
        windows=["count:1000"],
        detectors={},
        segment_tags=[],
    )
    ev = PartitionEvaluator(lambda model: cfg)
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    rule = low_acc(min_samples=20, threshold=0.6)
    base = {
        "model_name": "credit",
        "model_version": "v3",
        "features": {},
        "score": None,
        "probabilities": None,
        "tags": {},
        "source_partition": 0,
    }
    statuses = []
    for seq in range(1, 61):
        correct = seq <= 20 or seq > 55
        t = T0 + STEP_MS * seq
        ev.apply(
            {
                **base,
                "prediction_id": f"p{seq}",
                "label": 1,
                "prediction": 1 if correct else 0,
                "prediction_timestamp": t - 50,
                "outcome_timestamp": t,
                "label_delay_ms": 50,
                "source_sequence": seq,
            }
        )
        snap = ev.series[("credit", "v3", "")].snapshot()
        inp = RuleInput.from_snapshot(snap, rules=[rule])
        assert inp.position == seq
        statuses += [(seq, e.record["status"]) for e in engine.evaluate(inp)]
    # accuracy over the window: 20/33 >= 0.6, 20/34 < 0.6; at 60 it is 25/60: still firing
    assert statuses == [(34, "firing")]


# --------------------------------------------------------------------------- validation


def threshold_raw(**kw: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "threshold",
        "name": "low_acc",
        "metric": "accuracy",
        "window": "count:1000",
        "op": "<",
        "threshold": 0.8,
    }
    raw.update(kw)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            [threshold_raw(window="count:999")],
            "alert_rules[low_acc].window: unknown window 'count:999' "
            "(configured: cumulative, count:1000, time:1h)",
        ),
        (
            [{"type": "detector", "name": "drift", "detector": "kswin"}],
            "alert_rules[drift].detector: unknown detector 'kswin' (configured: adwin, ddm)",
        ),
        (
            [threshold_raw(metric="acc")],
            "alert_rules[low_acc].metric: unknown metric 'acc' (known: accuracy, precision, "
            "recall, f1, log_loss, roc_auc, mae, rmse, r2, label_delay_p95_ms, estimated_accuracy",
        ),
        (
            [threshold_raw(), threshold_raw(metric="f1")],
            "alert_rules[low_acc].name: duplicate rule name 'low_acc'",
        ),
        (
            [threshold_raw(annotations={"summary": "{model} is {mood}"})],
            "alert_rules[low_acc].annotations.summary: unknown placeholder {mood} in "
            "'{model} is {mood}' (allowed: model, version, value, threshold, rule, metric, window)",
        ),
        (
            [threshold_raw(annotations={"summary": "{model.__class__}"})],
            "alert_rules[low_acc].annotations.summary: unknown placeholder {model.__class__}",
        ),
        (
            [threshold_raw(annotations={"summary": "{value"})],
            "alert_rules[low_acc].annotations.summary: bad template '{value'",
        ),
        (
            [threshold_raw(annotations={"summary": "{model:.2f}"})],
            "alert_rules[low_acc].annotations.summary: format spec '.2f' does not apply to {model}",
        ),
        (
            [threshold_raw(annotations={"summary": "{value!r}"})],
            "alert_rules[low_acc].annotations.summary: conversion !r",
        ),
        (
            [threshold_raw(annotations={"inhibited_by": "me"})],
            "alert_rules[low_acc].annotations.inhibited_by: annotation 'inhibited_by' is set by",
        ),
        (
            [threshold_raw(op="!=")],
            "alert_rules[low_acc].op: Input should be '<', '<=', '>' or '>='",
        ),
        (
            [threshold_raw(labels={"model": "x"})],
            "alert_rules[low_acc].labels.model: label 'model' is set by the engine",
        ),
        (
            [threshold_raw(labels={"bad-name": "x"})],
            "alert_rules[low_acc].labels.bad-name: label name 'bad-name' must match",
        ),
        ([threshold_raw(for_ms=-1)], "alert_rules[low_acc].for_ms: Input should be greater"),
        ([threshold_raw(threshold=float("nan"))], "alert_rules[low_acc].threshold: Input"),
        ([threshold_raw(forr_events=3)], "alert_rules[low_acc].forr_events: Extra inputs"),
        ([threshold_raw(type="thresold")], "alert_rules[low_acc].type: must be one of"),
        (
            [{"type": "data_quality", "name": "dq", "check": "latency", "op": ">", "threshold": 1}],
            "alert_rules[dq].check: Input should be 'unlabeled_rate'",
        ),
        (
            [{"type": "detector", "name": "d", "detector": "adwin", "span_events": 0}],
            "alert_rules[d].span_events: Input should be greater than or equal to 1",
        ),
        ([threshold_raw(name=None)], "alert_rules[#0].name: Input should be a valid string"),
    ],
)
def test_bad_rules_name_the_rule_and_the_field(raw: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_rules(raw, windows=WINDOWS, detectors=DETECTORS)
    assert message in str(info.value)


def test_validate_rules_uses_where_and_reports_every_problem() -> None:
    raw = [threshold_raw(window="w"), {"type": "detector", "name": "d", "detector": "x"}]
    with pytest.raises(ConfigError) as info:
        validate_rules(raw, windows=set(), detectors=set(), where="models.credit.alert_rules")
    assert str(info.value) == (
        "models.credit.alert_rules[low_acc].window: unknown window 'w' (configured: cumulative); "
        "models.credit.alert_rules[d].detector: unknown detector 'x' (configured: none)"
    )


def test_validate_rules_returns_parsed_rules() -> None:
    parsed = validate_rules(
        [
            threshold_raw(window="cumulative"),
            low_acc(name="obj"),
            {"type": "detector", "name": "drift", "detector": "adwin", "span_ms": 1000},
            {
                "type": "data_quality",
                "name": "dq",
                "check": "no_events_ms",
                "op": ">",
                "threshold": 1,
            },
        ],
        windows=WINDOWS,
        detectors=DETECTORS,
    )
    assert [type(r).__name__ for r in parsed] == [
        "ThresholdRule",
        "ThresholdRule",
        "DetectorRule",
        "DataQualityRule",
    ]
    assert parsed[2] == DetectorRule(name="drift", detector="adwin", span_ms=1000)


def test_rules_embedded_in_settings_name_the_rule_and_the_field() -> None:
    class Config(BaseModel):
        alert_rules: list[AlertRule] = []

    with pytest.raises(ValidationError) as info:
        Config(alert_rules=[threshold_raw(op="=<")])
    (err,) = info.value.errors()
    assert err["loc"] == ("alert_rules", 0, "threshold")
    assert err["msg"] == "rule 'low_acc': op: Input should be '<', '<=', '>' or '>='"
    config = Config.model_validate({"alert_rules": [threshold_raw()]})
    assert isinstance(config.alert_rules[0], ThresholdRule)


def test_rules_for_prefers_the_model_rule_and_applies_models_filter() -> None:
    shared = [low_acc(), low_acc(name="fraud_only", models=["fraud"]), drift()]
    own = [low_acc(threshold=0.9)]
    got = rules_for("credit", shared, own)
    assert [(r.name, getattr(r, "threshold", None)) for r in got] == [
        ("low_acc", 0.9),
        ("drift", None),
    ]


# ---------------------------------------------------------------------------------- data drift

DRIFT_WINDOWS = ["count:1000", "time:1h"]


def drift_input(
    position: int,
    drifted: Sequence[str] | None,
    rules: Sequence[Rule],
    *,
    window: str = "count:1000",
    estimated: float | None = 0.9,
    labeled: int = 0,
) -> RuleInput:
    """A drift window of 1,000 predictions closing at ``position`` (None: too few events)."""

    def metric(w: str, name: str) -> float | None:
        if drifted is None or w != window:
            return None
        if name == "drifted_features":
            return float(len(drifted))
        return estimated if name == "estimated_accuracy" else None

    return RuleInput(
        model="m",
        version="1",
        position=position,
        event_time_ms=T0 + position * STEP_MS,
        metric=metric,
        samples=lambda w: 1000 if drifted is not None and w == window else 0,
        rules=rules,
        stream="predictions",
        closed_window=window,
        drifted={window: list(drifted or [])},
        drift_windows=DRIFT_WINDOWS,
        labeled=labeled,
    )


def drift_events(engine: AlertEngine, inp: RuleInput) -> list[tuple[str, str, str]]:
    return [
        (e.record["status"], e.record["labels"].get("feature", ""), e.record["rule"])
        for e in engine.evaluate(inp)
        if isinstance(e, AlertTransition)
    ]


def test_data_drift_fires_and_resolves_one_alert_per_feature() -> None:
    rule = DataDriftRule(name="dd", window="count:1000")
    engine = AlertEngine()
    assert drift_events(engine, drift_input(1000, [], [rule])) == []
    assert drift_events(engine, drift_input(2000, ["income"], [rule])) == [
        ("firing", "income", "dd")
    ]
    assert drift_events(engine, drift_input(3000, ["income", "channel"], [rule])) == [
        ("firing", "channel", "dd")
    ]
    assert drift_events(engine, drift_input(4000, None, [rule])) == []  # too few: unknown
    assert drift_events(engine, drift_input(5000, ["channel"], [rule])) == [
        ("resolved", "income", "dd")
    ]
    assert {a["feature"] for a in engine.firing("m")} == {"channel"}
    assert drift_events(engine, drift_input(6000, [], [rule])) == [("resolved", "channel", "dd")]
    assert engine.firing("m") == []


def test_data_drift_records_name_the_features_and_encode() -> None:
    rule = DataDriftRule(name="dd", window="count:1000")
    engine = AlertEngine()
    (firing,) = engine.evaluate(drift_input(1000, ["income", "output:score"], [rule]))[:1]
    rec = firing.record
    assert rec["labels"] == {
        "alertname": "dd",
        "feature": "income",
        "model": "m",
        "severity": "warning",
        "version": "1",
    }
    assert rec["annotations"]["drifted_features"] == "income, output:score"
    assert "data drift in income over count:1000" in rec["annotations"]["summary"]
    assert rec["value"] == 2.0 and rec["threshold"] == 1.0
    serde = AvroSerde("AlertEvent")
    assert serde.decode(serde.encode(rec)) == rec


def test_data_drift_min_features_features_and_for_windows() -> None:
    gate = DataDriftRule(name="dd", min_features=2)
    engine = AlertEngine()
    assert drift_events(engine, drift_input(1000, ["a"], [gate])) == []
    assert [f for _, f, _ in drift_events(engine, drift_input(2000, ["a", "b"], [gate]))] == [
        "a",
        "b",
    ]
    only = DataDriftRule(name="dd", features=["b"], for_windows=1)
    engine = AlertEngine()
    assert drift_events(engine, drift_input(1000, ["a", "b"], [only])) == []  # pending
    assert drift_events(engine, drift_input(2000, ["a", "b"], [only])) == [("firing", "b", "dd")]


def test_drift_rules_step_only_on_their_closed_window_and_survive_labeled_evaluations() -> None:
    rule = DataDriftRule(name="dd", window="time:1h")
    engine = AlertEngine()
    assert drift_events(engine, drift_input(1000, ["x"], [rule], window="count:1000")) == []
    assert drift_events(engine, drift_input(2000, ["x"], [rule], window="time:1h")) == [
        ("firing", "x", "dd")
    ]
    # a labeled-stream evaluation with the same rules neither steps nor drops the alert
    labeled = make_input(10, [rule, low_acc(min_samples=100)], acc=0.5, model="m", version="1")
    assert engine.evaluate(labeled) == []
    assert [a["feature"] for a in engine.firing("m")] == ["x"]
    # the rule removed: its alert resolves
    gone = engine.evaluate(make_input(11, [], acc=0.5, model="m", version="1"))
    assert [e.record["status"] for e in gone] == ["resolved"]


def test_threshold_on_an_estimated_metric_runs_on_closed_drift_windows() -> None:
    rule = ThresholdRule(
        name="est",
        metric="estimated_accuracy",
        window="count:1000",
        op="<",
        threshold=0.8,
        min_samples=500,
        retrain=True,
    )
    engine = AlertEngine(NO_RETRAIN_LIMITS)
    ignored = make_input(5, [rule], acc=0.1, model="m", version="1")
    assert engine.evaluate(ignored) == []  # a labeled-stream evaluation does not step it
    out = engine.evaluate(drift_input(1000, [], [rule], estimated=0.7, labeled=20))
    assert [type(e).__name__ for e in out] == ["AlertTransition", "RetrainEmission"]
    assert out[0].record["value"] == 0.7
    assert "estimated_accuracy over count:1000" in out[0].record["annotations"]["summary"]
    resolved = engine.evaluate(drift_input(2000, [], [rule], estimated=0.9))
    assert [e.record["status"] for e in resolved] == ["resolved"]


def test_retrain_from_a_drift_rule_counts_labeled_events_for_min_labeled() -> None:
    rule = DataDriftRule(name="dd", retrain=True)
    engine = AlertEngine(RetrainPolicy(cooldown_ms=0, min_labeled=100, max_in_flight_ms=10**9))
    out = engine.evaluate(drift_input(5000, ["x"], [rule], labeled=10))
    assert [type(e).__name__ for e in out] == ["AlertTransition"]
    assert "10 labeled events" in out[0].record["annotations"]["retrain"]


def test_drift_alert_state_round_trips_with_its_feature() -> None:
    rule = DataDriftRule(name="dd")
    engine = AlertEngine()
    engine.evaluate(drift_input(1000, ["x"], [rule]))
    restored = AlertEngine.from_state(json.loads(json.dumps(engine.to_state())))
    assert restored.firing("m") == engine.firing("m")
    assert drift_events(restored, drift_input(2000, [], [rule])) == [("resolved", "x", "dd")]


def test_prediction_stream_rules_must_name_a_drift_window() -> None:
    with pytest.raises(ConfigError, match=r"alert_rules\[dd\]\.window: 'count:5' is not a drift"):
        validate_rules(
            [{"type": "data_drift", "name": "dd", "window": "count:5"}],
            windows=WINDOWS,
            detectors=DETECTORS,
            drift_windows=DRIFT_WINDOWS,
        )
    with pytest.raises(ConfigError, match=r"alert_rules\[e\]\.window: 'cumulative' is not"):
        validate_rules(
            [{"type": "threshold", "name": "e", "metric": "psi:age", "op": ">", "threshold": 1}],
            windows=WINDOWS,
            detectors=DETECTORS,
            drift_windows=DRIFT_WINDOWS,
        )
    ok = validate_rules(
        [{"type": "data_drift", "name": "dd"}],
        windows=WINDOWS,
        detectors=DETECTORS,
        drift_windows=DRIFT_WINDOWS,
    )
    assert isinstance(ok[0], DataDriftRule)


def test_a_retired_version_raises_nothing_until_it_serves_again() -> None:
    rule = DataDriftRule(name="dd")
    engine = AlertEngine()
    engine.evaluate(drift_input(1000, ["x"], [rule]))
    (resolved,) = engine.retire_version("m", "1", "version 1 retired")
    assert resolved.record["annotations"]["resolved_reason"] == "version 1 retired"
    assert engine.evaluate(drift_input(2000, ["x", "y"], [rule])) == []  # stragglers
    restored = AlertEngine.from_state(json.loads(json.dumps(engine.to_state())))
    assert restored.evaluate(drift_input(3000, ["x"], [rule])) == []
    restored.reinstate_version("m", "1")  # e.g. a rollback made it champion again
    assert drift_events(restored, drift_input(4000, ["x"], [rule])) == [("firing", "x", "dd")]
