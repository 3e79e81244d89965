"""Alerting end to end: real ``streammon`` processes on the real Kafka, Redis and Alertmanager.

Each test produces predictions and outcomes the way a foreign producer would
(:mod:`streams`), runs ``streammon monitor`` (and ``streammon alerts forward``) as
subprocesses configured through ``STREAMMON_*`` variables, and checks what the outside sees:
the ``alerts`` and ``retrain-requests`` topics (decoded directly and through
``streammon alerts tail``) and Alertmanager's own API.

Accuracy is deterministic by construction: the example at position ``k`` of a model (1-based)
is wrong when ``k % 10`` is in the phase's set of wrong residues, so every count window of a
multiple of 10 examples inside one phase holds exactly the phase's accuracy. Predictions and
outcomes go to a single partition, so the joiner emits the examples of a model in position
order whatever the interleaving of the two topics. :func:`expected_transitions` derives from
the documented rule semantics (``min_samples``, ``for_events``) at which positions, event
times and values an alert must fire and resolve.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from monitor_checks import topics
from procs import (
    EndOffsets,
    Fleet,
    Service,
    cleanup_prefix,
    create_topics,
    fleet,
    run_cli,
    status,
    streammon_path,
)
from streams import ApacheAvroWriter, Event, prediction_record, produce

from consumers.alerts import rfc3339
from streaming.alerting import AlertEngine, RetrainPolicy, RuleInput, validate_rules
from streaming.serde import serde_for

pytestmark = pytest.mark.integration

WINDOW_SIZE = 200
WINDOW = f"count:{WINDOW_SIZE}"
THRESHOLD = 0.7
MIN_SAMPLES = 200
FOR_EVENTS = 50
VERSION = "1"
T0_MS = (time.time_ns() // 3_600_000_000_000 - 3) * 3_600_000
"""Event time of position 0: a whole hour, three hours ago. Recent on purpose: ``labeled``
records carry their event time as Kafka timestamp, and the topic's time retention (30 days)
applies to it, so the broker may delete older examples at any moment, even before an
evaluator that was killed has checkpointed them."""
STEP_MS = 1_000
"""Event time between two predictions of a model."""
DELAY_MS = 500
"""Label delay of every outcome."""
WRONG = {0.9: frozenset({0}), 0.4: frozenset(range(6))}
"""Residues ``position % 10`` of the wrong predictions, per phase accuracy."""
DROP = [(2000, 0.9), (1000, 0.4), (2000, 0.9)]
"""The drop of the brief: 2,000 events at 90 %, 1,000 at 40 %, 2,000 at 90 % again."""

ALERT_SERDE = serde_for("AlertEvent")
RETRAIN_SERDE = serde_for("RetrainRequest")


# ---------------------------------------------------------------------------------- streams


def outcomes(phases: Sequence[tuple[int, float]]) -> list[bool]:
    """Whether the prediction at each position (index k-1) is right."""
    correct: list[bool] = []
    for n, accuracy in phases:
        wrong = WRONG[accuracy]
        for _ in range(n):
            correct.append((len(correct) + 1) % 10 not in wrong)
    return correct


def event_time(position: int) -> int:
    """Event time of the outcome at a position: the engine's "now" after that example."""
    return T0_MS + position * STEP_MS + DELAY_MS


def model_events(
    writer: ApacheAvroWriter, model: str, correct: Sequence[bool], start: int, stop: int
) -> list[Event]:
    """Prediction and outcome of positions ``start+1 .. stop`` (both on partition 0)."""
    events = []
    for k in range(start + 1, stop + 1):
        pid = f"{model}-{k:06d}"
        ts = T0_MS + k * STEP_MS
        prediction = k % 2
        label = prediction if correct[k - 1] else 1 - prediction
        pred = prediction_record(pid, model, VERSION, ts, prediction, None, {}, {})
        out = {
            "prediction_id": pid,
            "timestamp": ts + DELAY_MS,
            "label": label,
            "model_name": model,
        }
        events.append(Event("predictions", pid.encode(), writer.encode("PredictionEvent", pred), 0))
        events.append(Event("outcomes", pid.encode(), writer.encode("OutcomeEvent", out), 0))
    return events


def interleaved(writer: ApacheAvroWriter, streams: Mapping[str, Sequence[bool]]) -> list[Event]:
    """The examples of several models, position after position: each topic in event-time
    order, as the joiner's watermarks expect (an outcome consumed before its prediction waits
    at most ``join_grace_ms`` of predictions event time)."""
    events: list[Event] = []
    for k in range(max(len(c) for c in streams.values())):
        for model, correct in streams.items():
            if k < len(correct):
                events.extend(model_events(writer, model, correct, k, k + 1))
    return events


def window_values(
    correct: Sequence[bool], size: int = WINDOW_SIZE
) -> Iterator[tuple[int, float, int]]:
    """``(position, accuracy over the last size examples, samples)`` after each example."""
    window: deque[bool] = deque()
    hits = 0
    for k, ok in enumerate(correct, start=1):
        window.append(ok)
        hits += ok
        if len(window) > size:
            hits -= window.popleft()
        yield k, hits / len(window), len(window)


@dataclass(frozen=True)
class Expected:
    status: str
    position: int
    value: float

    @property
    def time(self) -> int:
        return event_time(self.position)


def expected_transitions(
    correct: Sequence[bool], *, for_events: int = FOR_EVENTS, threshold: float = THRESHOLD
) -> list[Expected]:
    """The rule ``accuracy < threshold`` over WINDOW as the alerting module documents it: a
    window with fewer than MIN_SAMPLES is unknown; the first breach makes the alert pending,
    the ``for_events``-th breaching evaluation after that fires it, a non-breach resolves it."""
    out: list[Expected] = []
    state, held = "inactive", 0
    for k, value, samples in window_values(correct):
        if samples < MIN_SAMPLES:
            continue
        if value < threshold:
            if state == "inactive":
                state, held = "pending", 0
            elif state == "pending":
                held += 1
            if state == "pending" and held >= for_events:
                state = "firing"
                out.append(Expected("firing", k, value))
        else:
            if state == "firing":
                out.append(Expected("resolved", k, value))
            state = "inactive"
    return out


def longest_breach(correct: Sequence[bool]) -> int:
    """The most consecutive evaluations (with enough samples) below the threshold."""
    run = best = 0
    for _, value, samples in window_values(correct):
        run = run + 1 if samples >= MIN_SAMPLES and value < THRESHOLD else 0
        best = max(best, run)
    return best


def threshold_rule(name: str, **overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": name,
        "type": "threshold",
        "metric": "accuracy",
        "window": WINDOW,
        "op": "<",
        "threshold": THRESHOLD,
        "min_samples": MIN_SAMPLES,
        "for_events": FOR_EVENTS,
        "severity": "critical",
        "labels": {"team": "ml"},
    }
    rule.update(overrides)
    return rule


def engine_emissions(
    model: str, correct: Sequence[bool], rules: list[dict[str, Any]], policy: RetrainPolicy
) -> list[tuple[str, dict[str, Any]]]:
    """``(logical topic, record)`` that the pure alert engine emits for these inputs."""
    parsed = validate_rules(rules, windows={WINDOW}, detectors=set())
    engine = AlertEngine(policy)
    out = []
    for k, value, samples in window_values(correct):

        def metric(window: str, name: str, v: float = value) -> float | None:
            return v if (window, name) == (WINDOW, "accuracy") else None

        def count(window: str, n: int = samples) -> int:
            return n if window == WINDOW else 0

        inp = RuleInput(
            model=model,
            version=VERSION,
            position=k,
            event_time_ms=event_time(k),
            metric=metric,
            samples=count,
            rules=parsed,
        )
        out.extend((e.topic, e.record) for e in engine.evaluate(inp))
    return out


# ---------------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class Stored:
    partition: int
    offset: int
    key: bytes | None
    record: dict[str, Any]


def read_topic(bootstrap: str, topic: str, serde_name: str) -> list[Stored]:
    """Every message of a topic up to its current end, decoded, by partition and offset."""
    serde = ALERT_SERDE if serde_name == "AlertEvent" else RETRAIN_SERDE
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = sorted(md.topics[topic].partitions)
        pending = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False
            )
            if high > low:
                pending[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Stored] = []
        deadline = time.monotonic() + 30
        while pending:
            assert time.monotonic() < deadline, f"{topic}: not read to its end: {pending}"
            m = consumer.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, str(err)
                continue
            p, offset = int(m.partition() or 0), int(m.offset() or 0)
            end = pending.get(p)
            if end is None or offset >= end:
                continue
            out.append(Stored(p, offset, m.key(), serde.decode(m.value() or b"")))
            if offset + 1 >= end:
                del pending[p]
        return sorted(out, key=lambda s: (s.partition, s.offset))
    finally:
        consumer.close()


def alerts_of(bootstrap: str, prefix: str) -> list[Stored]:
    return read_topic(bootstrap, f"{prefix}alerts", "AlertEvent")


def requests_of(bootstrap: str, prefix: str) -> list[Stored]:
    return read_topic(bootstrap, f"{prefix}retrain-requests", "RetrainRequest")


def by_status(stored: Sequence[Stored], status: str) -> list[dict[str, Any]]:
    return [s.record for s in stored if s.record["status"] == status]


def unique_by(records: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """First record of each id, in order (what an id-deduplicating consumer keeps)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        seen.setdefault(r[key], r)
    return list(seen.values())


def tail_json(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """``streammon alerts tail --json``: one JSON object per line."""
    done = run_cli(env, "alerts", "tail", "--json")
    assert done.returncode == 0, f"alerts tail failed ({done.returncode}): {done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------- processes


class Command(Service):
    """A long-running ``streammon`` command with arguments (``procs.Service`` takes one word)."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        super().__init__(name, args[0], env, log)
        self.args = list(args)

    def start(self) -> Command:
        assert not self.alive, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [streammon_path(), *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        return self


def start_command(f: Fleet, name: str, *args: str) -> Command:
    cmd = Command(name, args, f.env, f.log_dir / f"{name}.log")
    f.services.append(cmd)
    return cmd.start()


def wait_for(
    condition: Callable[[], Any],
    what: str,
    alive: Sequence[Service] = (),
    timeout: float = 60.0,
    poll_s: float = 0.2,
) -> Any:
    """Poll until ``condition()`` is truthy (failing early when a service died)."""
    deadline = time.monotonic() + timeout
    while True:
        for svc in alive:
            svc.assert_alive()
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(poll_s)


def at_least(n: int, stored: list[Stored]) -> list[Stored] | None:
    return stored if len(stored) >= n else None


def wait_evaluated(
    redis_url: str, prefix: str, ends: EndOffsets, alive: Sequence[Service], timeout: float = 90
) -> None:
    """Wait until the joiner's checkpoints hold the end offsets of both inputs and then the
    evaluator's those of ``labeled``: everything the monitor produces for them is in Kafka
    (outputs are acknowledged before the checkpoint that covers them)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)

    def stored(scope: str, topic: str) -> int:
        return int(r.hget(f"streammon:{prefix}:{{{scope}}}:meta", f"offset:{topic}") or 0)

    def caught_up(service: str, topic: str) -> bool:
        ends_now = ends(f"{prefix}{topic}")
        return all(stored(f"{service}:{p}", f"{prefix}{topic}") == e for p, e in ends_now.items())

    try:
        wait_for(
            lambda: (
                caught_up("joiner", "predictions")
                and caught_up("joiner", "outcomes")
                and caught_up("evaluator", "labeled")
            ),
            "the monitor to checkpoint the end of its inputs",
            alive,
            timeout,
        )
    finally:
        r.close()


def assert_all_evaluated(env: Mapping[str, str], streams: Mapping[str, Sequence[bool]]) -> None:
    """Every example of every model was joined and evaluated (``streammon status``), so the
    transitions seen are those of the whole stream."""
    models = status(env)["models"]
    for model, correct in streams.items():
        version = models[model]["versions"][VERSION]
        assert version["counts"]["joined"] == len(correct), (model, version["counts"])
        assert version["labeled"] == len(correct), model


def stored_engine_alerts(redis_url: str, prefix: str) -> list[dict[str, Any]]:
    """Alerts in the evaluator's checkpointed engine state (meta ``alert_engine``)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        found = []
        for key in r.scan_iter(match=f"streammon:{prefix}:{{evaluator:*}}:meta"):
            raw = r.hget(key, "alert_engine")
            if raw:
                found.extend(json.loads(raw)["alerts"])
        return found
    finally:
        r.close()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def env(
    service_env: dict[str, str], stack: dict[str, str], unique_prefix: str
) -> Iterator[dict[str, str]]:
    """Service environment: one input partition, one count window, no drift detectors."""
    yield {
        **service_env,
        "STREAMMON_PREDICTIONS_PARTITIONS": "1",
        "STREAMMON_WINDOWS": json.dumps([WINDOW]),
        "STREAMMON_DETECTORS": "{}",
        # the broker's minimum: a killed member's partitions move on after 6 s
        "STREAMMON_KAFKA_CONSUMER_CONFIG": '{"session.timeout.ms": 6000, '
        '"heartbeat.interval.ms": 1500}',
        "STREAMMON_RETRY_MAX_BACKOFF_S": "1",
        # nothing expires while a test runs, however the joiner interleaves the two topics
        "STREAMMON_JOIN_GRACE_MS": str(3_600_000),
    }
    cleanup_prefix(stack["kafka"], stack["redis"], unique_prefix, f"streammon:{unique_prefix}")


@pytest.fixture(scope="session")
def alertmanager_url() -> str:
    """A real Alertmanager that answers (``$STREAMMON_ALERTMANAGER_URL`` or the local stack)."""
    url = os.environ.get("STREAMMON_ALERTMANAGER_URL")
    if not url:
        from consumers.devstack import ensure_stack

        url = ensure_stack(with_alertmanager=True).alertmanager_url
    assert url, "no Alertmanager: run scripts/services up --with-alertmanager"
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/status", timeout=10) as resp:
        json.loads(resp.read())
    return url


def am_alerts(url: str, rule: str, **params: str) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts?filter=alertname="<rule>"`` of Alertmanager itself."""
    query = urllib.parse.urlencode({"filter": f'alertname="{rule}"', **params})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/alerts?{query}", timeout=10) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, list)
    return data


def parse_ms(text: str) -> int:
    moment = dt.datetime.fromisoformat(text)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def unique_rule(stem: str) -> str:
    """Rule names unique to the run: Alertmanager is shared with other tests and runs."""
    return f"{stem}_{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------- checks


def check_pair(
    firing: dict[str, Any],
    resolved: dict[str, Any],
    want: Sequence[Expected],
    *,
    rule: str,
    model: str,
) -> None:
    """One firing and one resolved transition of one alert, at the expected positions."""
    fire, resolve = want
    labels = {
        "alertname": rule,
        "model": model,
        "version": VERSION,
        "severity": "critical",
        "team": "ml",
    }
    for rec in (firing, resolved):
        assert rec["rule"] == rule
        assert rec["model_name"] == model
        assert rec["model_version"] == VERSION
        assert rec["severity"] == "critical"
        assert rec["labels"] == labels
        assert rec["threshold"] == THRESHOLD
        assert rec["starts_at"] == fire.time
    assert firing["status"] == "firing"
    assert firing["ends_at"] is None
    assert firing["emitted_at"] == fire.time
    assert firing["value"] == fire.value
    assert firing["value"] < THRESHOLD
    assert resolved["status"] == "resolved"
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert resolved["alert_id"] != firing["alert_id"]
    assert resolved["ends_at"] == resolved["emitted_at"] == resolve.time
    assert resolved["ends_at"] > resolved["starts_at"]
    assert resolved["value"] == resolve.value
    assert resolved["value"] >= THRESHOLD


# ---------------------------------------------------------------------------------- tests


def test_accuracy_drop_fires_once_and_resolves_once(
    env: dict[str, str], stack: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    rule, model = unique_rule("low_acc"), "credit"
    correct = outcomes(DROP)
    want = expected_transitions(correct)
    assert [w.status for w in want] == ["firing", "resolved"]
    # the window starts breaching in the 40 % phase and recovers in the last 90 % phase
    assert 2000 < want[0].position <= 3000 < want[1].position
    env = {**env, "STREAMMON_ALERT_RULES": json.dumps([threshold_rule(rule)])}
    create_topics(env)
    ends = EndOffsets(stack["kafka"])
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        produce(
            stack["kafka"], topics(unique_prefix), interleaved(ApacheAvroWriter(), {model: correct})
        )
        wait_evaluated(stack["redis"], unique_prefix, ends, [monitor])
        assert monitor.alive
    ends.close()
    assert_all_evaluated(env, {model: correct})

    stored = alerts_of(stack["kafka"], unique_prefix)
    assert [s.record["status"] for s in stored] == ["firing", "resolved"], stored
    firing, resolved = (s.record for s in stored)
    check_pair(firing, resolved, want, rule=rule, model=model)
    # keyed by fingerprint: both transitions of the alert on the same partition
    assert {s.key for s in stored} == {firing["fingerprint"].encode()}
    assert stored[0].partition == stored[1].partition
    assert firing["annotations"]["summary"].startswith(f"{model} {VERSION}: accuracy over")
    assert requests_of(stack["kafka"], unique_prefix) == []  # the rule asks for no retrain

    assert tail_json(env) == [firing, resolved]


def test_dip_shorter_than_for_yields_no_alert(
    env: dict[str, str], stack: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    held, instant, model = unique_rule("held"), unique_rule("instant"), "credit"
    for_events = 200
    correct = outcomes([(1000, 0.9), (100, 0.4), (1000, 0.9)])
    # the 100-event dip keeps the window below the threshold for fewer evaluations than
    # `for`, so the held rule must stay silent; the same rule without `for` must fire
    breach = longest_breach(correct)
    assert 0 < breach < for_events
    assert expected_transitions(correct, for_events=for_events) == []
    want = expected_transitions(correct, for_events=0)
    assert [w.status for w in want] == ["firing", "resolved"]
    rules = [threshold_rule(held, for_events=for_events), threshold_rule(instant, for_events=0)]
    env = {**env, "STREAMMON_ALERT_RULES": json.dumps(rules)}
    create_topics(env)
    ends = EndOffsets(stack["kafka"])
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        produce(
            stack["kafka"], topics(unique_prefix), interleaved(ApacheAvroWriter(), {model: correct})
        )
        wait_evaluated(stack["redis"], unique_prefix, ends, [monitor])
    ends.close()
    assert_all_evaluated(env, {model: correct})

    stored = alerts_of(stack["kafka"], unique_prefix)
    assert [(s.record["rule"], s.record["status"]) for s in stored] == [
        (instant, "firing"),
        (instant, "resolved"),
    ]
    firing, resolved = (s.record for s in stored)
    check_pair(firing, resolved, want, rule=instant, model=model)
    # the breach lasted `breach` evaluations: from the pending one to the one before resolving
    assert want[1].position - want[0].position == breach
    assert [e["rule"] for e in tail_json(env)] == [instant, instant]


def test_alert_is_active_in_alertmanager_while_firing_and_resolved_there_after(
    env: dict[str, str],
    stack: dict[str, str],
    unique_prefix: str,
    tmp_path: Path,
    alertmanager_url: str,
) -> None:
    rule, model = unique_rule("low_acc_am"), "credit"
    correct = outcomes(DROP)
    want = expected_transitions(correct)
    assert [w.status for w in want] == ["firing", "resolved"]
    env = {**env, "STREAMMON_ALERT_RULES": json.dumps([threshold_rule(rule)])}
    create_topics(env)
    writer, names = ApacheAvroWriter(), topics(unique_prefix)
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        forwarder = start_command(
            f, "forwarder", "alerts", "forward", "--alertmanager-url", alertmanager_url
        )
        alive = [monitor, forwarder]
        # the drop only: the alert fires and stays firing
        produce(stack["kafka"], names, model_events(writer, model, correct, 0, 3000))
        stored = wait_for(
            lambda: alerts_of(stack["kafka"], unique_prefix), "the firing transition", alive
        )
        [firing] = (s.record for s in stored)
        assert firing["status"] == "firing"
        assert firing["starts_at"] == want[0].time
        shown = wait_for(
            lambda: [
                a for a in am_alerts(alertmanager_url, rule) if a["status"]["state"] == "active"
            ],
            "the firing alert in Alertmanager",
            alive,
        )
        [alert] = shown
        assert alert["labels"] == {
            "alertname": rule,
            "model": model,
            "version": VERSION,
            "severity": "critical",
            "team": "ml",
        }
        assert parse_ms(alert["startsAt"]) == firing["starts_at"]
        assert alert["startsAt"] == rfc3339(firing["starts_at"])
        assert parse_ms(alert["endsAt"]) > time.time() * 1000  # active until resolved
        assert alert["annotations"]["summary"] == firing["annotations"]["summary"]
        assert float(alert["annotations"]["value"]) == pytest.approx(firing["value"], rel=1e-5)
        assert float(alert["annotations"]["threshold"]) == THRESHOLD
        assert am_alerts(alertmanager_url, rule, active="true") == shown
        # still firing: nothing resolved it in the topic either
        assert len(alerts_of(stack["kafka"], unique_prefix)) == 1

        # the recovery: resolved in the topic, then gone from Alertmanager's list
        produce(stack["kafka"], names, model_events(writer, model, correct, 3000, len(correct)))
        stored = wait_for(
            lambda: at_least(2, alerts_of(stack["kafka"], unique_prefix)),
            "the resolved transition",
            alive,
        )
        firing, resolved = (s.record for s in stored)
        check_pair(firing, resolved, want, rule=rule, model=model)
        # Alertmanager's API leaves out the alerts whose endsAt is past
        wait_for(lambda: am_alerts(alertmanager_url, rule) == [], "the alert resolved", alive)
        assert am_alerts(alertmanager_url, rule, active="true") == []
        assert forwarder.terminate() == 0, forwarder.tail()
        assert "forwarded" in forwarder.log_text()
        ends = EndOffsets(stack["kafka"])
        wait_evaluated(stack["redis"], unique_prefix, ends, [monitor])
        ends.close()
    assert_all_evaluated(env, {model: correct})
    assert len(alerts_of(stack["kafka"], unique_prefix)) == 2


RETRAIN_COOLDOWN_MS = 1_500_000
RETRAIN_MIN_LABELED = 300
RETRAIN_MAX_IN_FLIGHT_MS = 60_000
RETRAIN_WINDOW_MS = 3_600_000


def test_retrain_requests_respect_cooldown_and_min_labeled(
    env: dict[str, str], stack: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    rule = unique_rule("low_acc_retrain")
    rules = [threshold_rule(rule, retrain=True)]
    dip, calm = (300, 0.4), (600, 0.9)
    # churn: three dips; the second one is inside the cooldown of the first request, the
    # third one after it. fresh: bad from the start, fires before min_labeled, dips again.
    streams = {
        "churn": outcomes([calm, dip, calm, dip, calm, dip, calm]),
        "fresh": outcomes([dip, calm, dip, calm]),
    }
    fired = {
        m: [w for w in expected_transitions(c) if w.status == "firing"] for m, c in streams.items()
    }
    c1, c2, c3 = fired["churn"]
    assert RETRAIN_MAX_IN_FLIGHT_MS <= c2.time - c1.time < RETRAIN_COOLDOWN_MS <= c3.time - c1.time
    f1, f2 = fired["fresh"]
    assert f1.position < RETRAIN_MIN_LABELED <= f2.position
    env = {
        **env,
        "STREAMMON_ALERT_RULES": json.dumps(rules),
        "STREAMMON_RETRAIN_COOLDOWN_MS": str(RETRAIN_COOLDOWN_MS),
        "STREAMMON_RETRAIN_MIN_LABELED": str(RETRAIN_MIN_LABELED),
        "STREAMMON_RETRAIN_MAX_IN_FLIGHT_MS": str(RETRAIN_MAX_IN_FLIGHT_MS),
        "STREAMMON_RETRAIN_WINDOW_MS": str(RETRAIN_WINDOW_MS),
    }
    create_topics(env)
    ends = EndOffsets(stack["kafka"])
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        produce(stack["kafka"], topics(unique_prefix), interleaved(ApacheAvroWriter(), streams))
        wait_evaluated(stack["redis"], unique_prefix, ends, [monitor])
    ends.close()
    assert_all_evaluated(env, streams)

    alerts = alerts_of(stack["kafka"], unique_prefix)
    requests = requests_of(stack["kafka"], unique_prefix)
    firing = {
        m: [
            s.record
            for s in alerts
            if s.record["model_name"] == m and s.record["status"] == "firing"
        ]
        for m in streams
    }
    for model, correct in streams.items():
        seen = [s.record for s in alerts if s.record["model_name"] == model]
        assert [(r["status"], r["emitted_at"], r["value"]) for r in seen] == [
            (w.status, w.time, w.value) for w in expected_transitions(correct)
        ], model
    assert len(alerts) == 10

    # one request per cooldown: churn's first and third dips, fresh's second one
    got = sorted((s.record for s in requests), key=lambda r: (r["model_name"], r["requested_at"]))
    assert [(r["model_name"], r["requested_at"]) for r in got] == [
        ("churn", c1.time),
        ("churn", c3.time),
        ("fresh", f2.time),
    ]
    assert len({r["request_id"] for r in got}) == 3
    for stored in requests:
        assert stored.key == stored.record["model_name"].encode()
    by_start = {(r["model_name"], r["starts_at"]): r for rs in firing.values() for r in rs}
    for r in got:
        alert = by_start[(r["model_name"], r["requested_at"])]
        assert r["model_version"] == VERSION
        assert r["alert_fingerprint"] == alert["fingerprint"]
        assert r["window_end"] == r["requested_at"]
        assert r["window_start"] == r["requested_at"] - RETRAIN_WINDOW_MS
        assert rule in r["reason"]
        assert alert["annotations"]["retrain"] == f"requested {r['request_id']}"
    first = got[0]
    assert firing["churn"][1]["annotations"]["retrain"] == (
        f"not requested: cooldown after {first['request_id']} at {first['requested_at']}"
    )
    assert firing["fresh"][0]["annotations"]["retrain"] == (
        f"not requested: {f1.position} labeled events, min_labeled is {RETRAIN_MIN_LABELED}"
    )

    # the ids are digests of what they identify: the pure engine fed the same inputs in
    # another process emits the very same records
    policy = RetrainPolicy(
        cooldown_ms=RETRAIN_COOLDOWN_MS,
        min_labeled=RETRAIN_MIN_LABELED,
        max_in_flight_ms=RETRAIN_MAX_IN_FLIGHT_MS,
        window_ms=RETRAIN_WINDOW_MS,
    )
    for model, correct in streams.items():
        emitted = engine_emissions(model, correct, rules, policy)
        assert [s.record for s in alerts if s.record["model_name"] == model] == [
            rec for topic, rec in emitted if topic == "alerts"
        ]
        assert [s.record for s in requests if s.record["model_name"] == model] == [
            rec for topic, rec in emitted if topic == "retrain-requests"
        ]


def test_kill_9_between_firing_and_checkpoint_doubles_nothing_visible(
    env: dict[str, str], stack: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    rule, model = unique_rule("low_acc_crash"), "credit"
    correct = outcomes(DROP)
    want = expected_transitions(correct)
    assert [w.status for w in want] == ["firing", "resolved"]
    env = {
        **env,
        "STREAMMON_ALERT_RULES": json.dumps([threshold_rule(rule, retrain=True)]),
        "STREAMMON_RETRAIN_MIN_LABELED": str(RETRAIN_MIN_LABELED),
    }
    create_topics(env)
    writer, names = ApacheAvroWriter(), topics(unique_prefix)
    ends = EndOffsets(stack["kafka"])
    with fleet(env, tmp_path) as f:
        # the evaluator checkpoints 60 s after it got its partitions, not before: the firing
        # transition comes well before that (a few seconds), so the kill lands in between
        first = f.service("monitor-1", env={"STREAMMON_CHECKPOINT_INTERVAL_MS": "60000"}).start()
        started = time.monotonic()
        produce(stack["kafka"], names, model_events(writer, model, correct, 0, 3000))

        def transition_out() -> bool:
            return bool(alerts_of(stack["kafka"], unique_prefix)) and bool(
                requests_of(stack["kafka"], unique_prefix)
            )

        wait_for(transition_out, "the firing transition and its retrain request", [first], 50, 0.05)
        first.kill()
        elapsed = time.monotonic() - started
        # the kill came before any evaluator checkpoint covered the firing transition
        assert not [
            a
            for a in stored_engine_alerts(stack["redis"], unique_prefix)
            if a["status"] == "firing"
        ], f"a checkpoint covered the firing transition before the kill ({elapsed:.1f}s)"
        assert "alert firing" in first.log_text()
        print(f"monitor-1 killed {elapsed:.1f}s after its start, right after the firing transition")
        before = alerts_of(stack["kafka"], unique_prefix)
        assert [s.record["status"] for s in before] == ["firing"]

        second = f.service("monitor-2", env={"STREAMMON_CHECKPOINT_INTERVAL_MS": "1000"}).start()
        produce(stack["kafka"], names, model_events(writer, model, correct, 3000, len(correct)))
        wait_evaluated(stack["redis"], unique_prefix, ends, [second])
    ends.close()
    assert_all_evaluated(env, {model: correct})

    stored = alerts_of(stack["kafka"], unique_prefix)
    firings, resolveds = by_status(stored, "firing"), by_status(stored, "resolved")
    # the replay re-produced the firing transition: the same record, the same alert_id
    assert len(firings) == 2, stored
    assert firings[0] == firings[1] == before[0].record
    assert len(resolveds) == 1
    firing, resolved = unique_by([*firings, *resolveds], "alert_id")
    check_pair(firing, resolved, want, rule=rule, model=model)
    assert len({s.key for s in stored}) == 1

    requests = [s.record for s in requests_of(stack["kafka"], unique_prefix)]
    assert len(requests) == 2 and requests[0] == requests[1], requests
    [request] = unique_by(requests, "request_id")
    assert request["alert_fingerprint"] == firing["fingerprint"]
    assert request["requested_at"] == firing["starts_at"]

    # `alerts tail` drops the copy by alert_id: one firing and one resolved
    assert tail_json(env) == [firing, resolved]
    done = run_cli(env, "alerts", "tail")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if rule in line]
    assert [("FIRING" in line, "RESOLVED" in line) for line in lines] == [
        (True, False),
        (False, True),
    ], done.stdout
