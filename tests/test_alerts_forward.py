"""The alert forwarder against a real Alertmanager and local webhooks; ``tail_alerts``.

The Alertmanager is ``$STREAMMON_ALERTMANAGER_URL`` or the one of the local stack
(``scripts/services up --with-alertmanager``). Outside CI a missing Alertmanager skips the tests
that need it; in CI (``$CI`` set) it fails them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from rich.console import Console

from consumers.alerts import (
    DEFAULT_FIRING_HORIZON_MS,
    alertmanager_alert,
    rfc3339,
    run_forwarder,
    tail_alerts,
    webhook_payload,
)
from consumers.service import GracefulStop
from streaming.errors import ConfigError, TopicError
from streaming.kafka_io import client_config, create_topics, producer_config
from streaming.serde import serde_for
from streaming.settings import Settings, load_settings

SERDE = serde_for("AlertEvent")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SCHEMA_FIELDS = [f["name"] for f in SERDE.schema["fields"]]


# ---------------------------------------------------------------------------------- helpers


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_ms(text: str) -> int:
    return (dt.datetime.fromisoformat(text) - EPOCH) // dt.timedelta(milliseconds=1)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def event(
    rule: str,
    model: str,
    *,
    status: str = "firing",
    alert_id: str | None = None,
    starts_at: int | None = None,
    ends_at: int | None = None,
    emitted_at: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    starts = starts_at if starts_at is not None else now_ms() - 120_000
    record: dict[str, Any] = {
        "alert_id": alert_id or f"{rule}:{status}:{uuid.uuid4().hex[:8]}",
        "fingerprint": f"fp-{rule}-{model}",
        "status": status,
        "rule": rule,
        "model_name": model,
        "model_version": "3",
        "severity": "critical",
        "labels": {"team": "risk"},
        "annotations": {"summary": f"{rule} on {model}"},
        "starts_at": starts,
        "ends_at": ends_at,
        "value": 0.71,
        "threshold": 0.8,
        "generator_url": None,
        "emitted_at": emitted_at if emitted_at is not None else (ends_at or starts),
    }
    record.update(extra)
    return record


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def produce(
    settings: Settings, values: list[bytes | dict[str, Any]], *, partition: int | None = None
) -> None:
    producer = Producer(producer_config(settings))
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for value in values:
        if isinstance(value, dict):
            data, key = SERDE.encode(value), value["fingerprint"].encode()
        else:
            data, key = value, b"garbage"
        kwargs: dict[str, Any] = {"value": data, "key": key, "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(settings.topic("alerts"), **kwargs)
    assert producer.flush(30) == 0
    assert not errors


def committed(settings: Settings) -> dict[int, int]:
    """The forwarder group's committed offsets on ``alerts``, by partition (only committed)."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": settings.consumer_group("alert-forwarder"),
            "enable.auto.commit": False,
        }
    )
    try:
        tps = [
            TopicPartition(settings.topic("alerts"), p) for p in range(settings.alerts_partitions)
        ]
        return {
            tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10) if tp.offset >= 0
        }
    finally:
        consumer.close()


def read_all(settings: Settings, logical: str, count: int, timeout: float = 20.0) -> list[Message]:
    """``count`` messages of a topic from the beginning (fails on fewer, checks for more)."""
    topic = settings.topic(logical)
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Message] = []
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (len(out) < count or len(eof) < len(parts)):
            for m in consumer.consume(100, timeout=0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                    eof.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    eof.add(int(m.partition() or 0))
        assert len(out) == count, f"{topic}: expected {count} messages, read {len(out)}"
        return out
    finally:
        consumer.close()


class Forwarder:
    """``run_forwarder`` in a thread, stopped with its :class:`GracefulStop`."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.stop_event = GracefulStop()
        self.result: int | None = None
        self.error: BaseException | None = None
        kwargs.setdefault("alertmanager_url", None)
        kwargs.setdefault("webhook_urls", [])

        def target() -> None:
            try:
                self.result = run_forwarder(settings, stop=self.stop_event, **kwargs)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, name="test-forwarder", daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30.0) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "forwarder did not stop"
        if self.error is not None:
            raise self.error
        return self.result

    def stop(self) -> int | None:
        self.stop_event.event.set()
        return self.join()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    committed: dict[int, int] | None = None


@dataclass
class Webhook:
    """A local HTTP receiver answering from a script of status codes (the last one repeats)."""

    statuses: list[int | Callable[[Any], int]]
    before_answer: Callable[[], dict[int, int]] | None = None
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    server: ThreadingHTTPServer | None = None

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                index = min(len(hook.requests), len(hook.statuses) - 1)
                planned = hook.statuses[index]
                status = planned(body) if callable(planned) else planned
                seen = hook.before_answer() if hook.before_answer else None
                hook.requests.append(Received(self.path, dict(self.headers), body, seen))
                text = b"ok" if status < 300 else f"refused with {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def alert_ids(self) -> list[str]:
        return [r.body["alert"]["alert_id"] for r in self.requests]


@pytest.fixture
def webhook() -> Iterator[Callable[..., Webhook]]:
    started: list[Webhook] = []

    def make(*statuses: int | Callable[[Any], int], **kwargs: Any) -> Webhook:
        hook = Webhook(list(statuses) or [200], **kwargs).start()
        started.append(hook)
        return hook

    yield make
    for hook in started:
        hook.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings(retry_max_backoff_s=1.0)
    create_topics(s)
    return s


def _alertmanager_answers(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/status", timeout=5) as response:
            json.loads(response.read())
        return None
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def alertmanager() -> str:
    """URL of a real Alertmanager that answers."""
    url = os.environ.get("STREAMMON_ALERTMANAGER_URL")
    problem = None
    if not url:
        from consumers.devstack import DevStackError, ensure_stack

        try:
            url = ensure_stack(with_alertmanager=True).alertmanager_url
        except DevStackError as exc:
            problem = str(exc)
    if url and problem is None:
        problem = _alertmanager_answers(url)
    if not url or problem is not None:
        reason = f"no Alertmanager: {problem or 'the stack has none'}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def am_alerts(url: str, rule: str, **params: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"filter": f'alertname="{rule}"', **params})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/alerts?{query}", timeout=10) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, list)
    return data


def header(msg: Message, name: str) -> str:
    headers = msg.headers() or []
    assert isinstance(headers, list)
    values = [v for k, v in headers if k == name]
    assert len(values) == 1, f"header {name}: {values}"
    value = values[0]
    assert isinstance(value, bytes)
    return value.decode()


def value_of(msg: Message) -> bytes:
    value = msg.value()
    assert value is not None
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------------ pure formatting


def test_alertmanager_alert_labels_annotations_and_times() -> None:
    e = event(
        "acc-low",
        "credit",
        labels={"team": "risk", "model.tier": "gold", "alertname": "ignored"},
        annotations={"summary": "accuracy dropped", "runbook.url": "https://runbooks/acc"},
        starts_at=1_700_000_000_000,
        generator_url="https://grafana.example/d/acc",
    )
    now = 1_700_000_500_000
    alert = alertmanager_alert(e, now_ms=now, horizon_ms=3_600_000)
    assert alert["labels"] == {
        "alertname": "acc-low",
        "model": "credit",
        "version": "3",
        "severity": "critical",
        "team": "risk",
        "model_tier": "gold",
    }
    assert alert["annotations"] == {
        "summary": "accuracy dropped",
        "runbook_url": "https://runbooks/acc",
        "value": "0.71",
        "threshold": "0.8",
    }
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    # firing: the horizon counts from forwarding when that is later than the start
    assert parse_ms(alert["endsAt"]) == now + 3_600_000
    early = alertmanager_alert(e, now_ms=e["starts_at"] - 10, horizon_ms=3_600_000)
    assert parse_ms(early["endsAt"]) == e["starts_at"] + 3_600_000
    assert alert["generatorURL"] == "https://grafana.example/d/acc"

    resolved = dict(e, status="resolved", ends_at=1_700_000_300_456, model_version=None)
    resolved["generator_url"] = "not a url"
    alert = alertmanager_alert(resolved, now_ms=now)
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert alert["endsAt"] == "2023-11-14T22:18:20.456Z"
    assert "version" not in alert["labels"]
    assert "generatorURL" not in alert
    # an all-versions series keeps its own version label
    every = dict(resolved, labels={"version": "*"})
    assert alertmanager_alert(every, now_ms=now)["labels"]["version"] == "*"
    # event time ahead of the forwarder's clock: resolved now, not in the future
    ahead = alertmanager_alert(resolved, now_ms=1_700_000_100_000)
    assert parse_ms(ahead["endsAt"]) == 1_700_000_100_000
    assert ahead["startsAt"] == "2023-11-14T22:13:20.000Z"
    future = dict(resolved, starts_at=1_700_000_200_000)
    both_ahead = alertmanager_alert(future, now_ms=1_700_000_100_000)
    assert both_ahead["startsAt"] == both_ahead["endsAt"] == rfc3339(1_700_000_100_000)


def test_webhook_payload_has_every_field_and_both_time_forms() -> None:
    e = event("drift", "churn", starts_at=1_700_000_000_123, value=math.nan)
    payload = webhook_payload(e)
    assert payload["version"] == 1
    alert = payload["alert"]
    assert alert["starts_at"] == rfc3339(e["starts_at"]) == "2023-11-14T22:13:20.123Z"
    assert alert["starts_at_ms"] == e["starts_at"]
    assert alert["ends_at"] is None and alert["ends_at_ms"] is None
    assert alert["value"] is None  # NaN is not JSON
    for name in SCHEMA_FIELDS:
        assert name in alert
    json.dumps(payload, allow_nan=False)


def test_forwarder_needs_a_destination_and_http_urls() -> None:
    s = load_settings(kafka_bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ConfigError, match="STREAMMON_ALERTMANAGER_URL"):
        run_forwarder(s, alertmanager_url=None, webhook_urls=[], stop=GracefulStop())
    with pytest.raises(ConfigError, match="http"):
        run_forwarder(s, alertmanager_url=None, webhook_urls=["ftp://x/hook"], stop=GracefulStop())


# ----------------------------------------------------------------------------- Alertmanager


@pytest.mark.integration
def test_firing_then_resolved_in_alertmanager(settings: Settings, alertmanager: str) -> None:
    rule, model = unique("acc-low"), unique("credit")
    firing = event(
        rule,
        model,
        labels={"team": "risk", "model.tier": "gold"},
        annotations={"summary": "accuracy below 0.8", "runbook_url": "https://runbooks/acc"},
        generator_url="https://grafana.example/d/acc?var-model=credit",
    )
    produce(settings, [firing])
    before = now_ms()
    fwd = Forwarder(settings, alertmanager_url=alertmanager)
    try:
        shown = wait_for(
            lambda: [a for a in am_alerts(alertmanager, rule) if a["status"]["state"] == "active"],
            "the firing alert in Alertmanager",
        )
        after = now_ms()
        assert len(shown) == 1
        alert = shown[0]
        assert alert["labels"] == {
            "alertname": rule,
            "model": model,
            "version": "3",
            "severity": "critical",
            "team": "risk",
            "model_tier": "gold",
        }
        assert alert["annotations"] == {
            "summary": "accuracy below 0.8",
            "runbook_url": "https://runbooks/acc",
            "value": "0.71",
            "threshold": "0.8",
        }
        assert parse_ms(alert["startsAt"]) == firing["starts_at"]
        ends = parse_ms(alert["endsAt"])
        assert before + DEFAULT_FIRING_HORIZON_MS <= ends <= after + DEFAULT_FIRING_HORIZON_MS
        assert alert["generatorURL"] == firing["generator_url"]
        [partition] = partitions_used(settings)
        wait_for(lambda: committed(settings) == {partition: 1}, "the commit of the firing event")

        resolved = event(
            rule,
            model,
            status="resolved",
            starts_at=firing["starts_at"],
            ends_at=now_ms() - 1_000,
            labels=firing["labels"],
            annotations=firing["annotations"],
        )
        produce(settings, [resolved])
        # Alertmanager's API leaves out every alert whose endsAt is past, whatever the filters
        wait_for(lambda: am_alerts(alertmanager, rule) == [], "the alert resolved")
        assert am_alerts(alertmanager, rule, active="true") == []
        assert partitions_used(settings) == {partition}
        wait_for(lambda: committed(settings) == {partition: 2}, "the commit of both events")
    finally:
        assert fwd.stop() == 0


def partitions_used(settings: Settings) -> set[int]:
    """The partitions of ``alerts`` holding messages."""
    topic = settings.topic("alerts")
    consumer = Consumer({**client_config(settings), "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        used = set()
        for p in range(settings.alerts_partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                used.add(p)
        return used
    finally:
        consumer.close()


@pytest.mark.integration
def test_alertmanager_rejection_is_dead_lettered_and_the_stream_goes_on(
    settings: Settings, alertmanager: str
) -> None:
    rule, model = unique("latency"), unique("ranker")
    start = now_ms() - 60_000
    bad = event(rule, model, status="resolved", starts_at=start, ends_at=start - 5_000)
    good = event(rule, model, starts_at=start)
    produce(settings, [bad, good])
    fwd = Forwarder(settings, alertmanager_url=alertmanager)
    try:
        wait_for(lambda: am_alerts(alertmanager, rule), "the valid alert in Alertmanager")
        wait_for(lambda: sum(committed(settings).values()) == 2, "the commit of both events")
    finally:
        assert fwd.stop() == 0
    [dead] = read_all(settings, "dead-letter", 1)
    assert SERDE.decode(value_of(dead))["alert_id"] == bad["alert_id"]
    assert header(dead, "streammon.source.topic") == settings.topic("alerts")
    assert header(dead, "streammon.source.offset") == "0"
    error = header(dead, "streammon.error")
    assert error.startswith(
        f"Alertmanager at {alertmanager.rstrip('/')} rejected the alert: HTTP 400"
    )
    assert "start time must be before end time" in error
    [shown] = am_alerts(alertmanager, rule)
    assert parse_ms(shown["startsAt"]) == start


@pytest.mark.integration
def test_alertmanager_down_is_retried_and_nothing_committed_until_delivered(
    settings: Settings, alertmanager: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rule, model = unique("drift"), unique("churn")
    produce(settings, [event(rule, model)])
    down = f"http://127.0.0.1:{free_port()}"
    fwd = Forwarder(settings, alertmanager_url=down)
    pattern = re.compile(
        rf"Alertmanager at {re.escape(down)} unavailable \(.+\); retrying in 1\.0s \(attempt 2\)"
    )
    try:
        wait_for(lambda: pattern.search(caplog.text), "the second retry logged")
    finally:
        assert fwd.stop() == 0
    assert "retrying in 0.5s (attempt 1)" in caplog.text
    assert committed(settings) == {}
    assert am_alerts(alertmanager, rule) == []

    fwd = Forwarder(settings, alertmanager_url=alertmanager)
    try:
        wait_for(lambda: am_alerts(alertmanager, rule), "the alert delivered after restart")
        wait_for(lambda: sum(committed(settings).values()) == 1, "the commit after delivery")
    finally:
        assert fwd.stop() == 0


# --------------------------------------------------------------------------------- webhooks


@pytest.mark.integration
def test_webhook_is_retried_and_offsets_committed_only_after_it_accepts(
    settings: Settings, webhook: Callable[..., Webhook], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hook = webhook(503, 503, 200, before_answer=lambda: committed(settings))
    rule, model = unique("acc-low"), unique("credit")
    e = event(rule, model, ends_at=None)
    produce(settings, [e])
    secret_url = hook.url.replace("http://", "http://bot:s3cr3t@") + "/hooks/T0/s3cr3t-token"
    fwd = Forwarder(settings, webhook_urls=[secret_url])
    try:
        wait_for(lambda: sum(committed(settings).values()) == 1, "the commit after the 200")
    finally:
        assert fwd.stop() == 0
    assert len(hook.requests) == 3
    # every answer, the 200 included, was given before anything was committed
    assert [r.committed for r in hook.requests] == [{}, {}, {}]
    first = hook.requests[0]
    assert all(r.body == first.body for r in hook.requests)
    assert all(r.headers["Idempotency-Key"] == e["alert_id"] for r in hook.requests)
    assert first.path == "/hooks/T0/s3cr3t-token"
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:s3cr3t").decode()
    assert first.headers["Content-Type"] == "application/json"
    alert = first.body["alert"]
    assert first.body["version"] == 1
    assert alert["alert_id"] == e["alert_id"] and alert["rule"] == rule
    assert alert["starts_at_ms"] == e["starts_at"] and alert["starts_at"] == rfc3339(e["starts_at"])
    assert alert["labels"] == {"team": "risk"} and alert["value"] == 0.71
    assert f"webhook {hook.url}/hooks/... unavailable (HTTP 503: refused with 503)" in caplog.text
    assert "retrying in 0.5s (attempt 1)" in caplog.text
    assert "retrying in 1.0s (attempt 2)" in caplog.text
    assert "s3cr3t" not in caplog.text

    # after the commit, a restarted forwarder sends the next event only
    later = event(rule, model, status="resolved", starts_at=e["starts_at"], ends_at=now_ms())
    produce(settings, [later])
    fwd = Forwarder(settings, webhook_urls=[secret_url])
    try:
        wait_for(lambda: len(hook.requests) >= 4, "the resolved event")
        wait_for(lambda: sum(committed(settings).values()) == 2, "the second commit")
    finally:
        assert fwd.stop() == 0
    assert hook.alert_ids() == [e["alert_id"]] * 3 + [later["alert_id"]]
    assert hook.requests[3].body["alert"]["ends_at_ms"] == later["ends_at"]


@pytest.mark.integration
def test_stopped_before_acceptance_is_delivered_again(
    settings: Settings, webhook: Callable[..., Webhook]
) -> None:
    down = webhook(503)
    e = event(unique("drift"), unique("churn"))
    produce(settings, [e])
    fwd = Forwarder(settings, webhook_urls=[down.url])
    try:
        wait_for(lambda: down.requests, "a first attempt")
    finally:
        assert fwd.stop() == 0
    assert committed(settings) == {}

    up = webhook(200)
    fwd = Forwarder(settings, webhook_urls=[up.url])
    try:
        wait_for(lambda: up.requests, "the delivery after restart")
        wait_for(lambda: sum(committed(settings).values()) == 1, "the commit")
    finally:
        assert fwd.stop() == 0
    assert up.alert_ids() == [e["alert_id"]]


@pytest.mark.integration
def test_undecodable_and_refused_events_are_dead_lettered(
    settings: Settings, webhook: Callable[..., Webhook]
) -> None:
    rule, model = unique("acc-low"), unique("credit")
    refused, good = event(rule, model), event(rule, model)
    hook = webhook(lambda body: 400 if body["alert"]["alert_id"] == refused["alert_id"] else 200)
    produce(settings, [b"\x00not avro", refused, good], partition=0)
    fwd = Forwarder(settings, webhook_urls=[hook.url])
    try:
        wait_for(lambda: committed(settings) == {0: 3}, "the commit of all three")
    finally:
        assert fwd.stop() == 0
    assert hook.alert_ids() == [refused["alert_id"], good["alert_id"]]
    garbage, dead = read_all(settings, "dead-letter", 2)
    assert garbage.value() == b"\x00not avro"
    assert header(garbage, "streammon.source.offset") == "0"
    assert "AlertEvent" in header(garbage, "streammon.error")
    assert SERDE.decode(value_of(dead))["alert_id"] == refused["alert_id"]
    assert header(dead, "streammon.source.topic") == settings.topic("alerts")
    assert header(dead, "streammon.source.partition") == "0"
    assert header(dead, "streammon.source.offset") == "1"
    assert header(dead, "streammon.error") == (
        f"webhook {hook.url} rejected the alert: HTTP 400: refused with 400"
    )


@pytest.mark.integration
def test_duplicate_alert_id_is_delivered_once(
    settings: Settings, webhook: Callable[..., Webhook]
) -> None:
    hook = webhook(200)
    rule, model = unique("drift"), unique("churn")
    first, other = event(rule, model), event(rule, model)
    produce(settings, [first, first])
    fwd = Forwarder(settings, webhook_urls=[hook.url])
    try:
        wait_for(lambda: sum(committed(settings).values()) == 2, "the first batch")
        produce(settings, [first, other])  # a replay, in a later batch
        wait_for(lambda: sum(committed(settings).values()) == 4, "the second batch")
    finally:
        assert fwd.stop() == 0
    assert hook.alert_ids() == [first["alert_id"], other["alert_id"]]


# ------------------------------------------------------------------------------------- tail


@pytest.mark.integration
def test_tail_prints_transitions_sorted_and_deduplicated(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    base = 1_700_000_000_000
    model = unique("credit")
    e0 = event("acc-low", model, emitted_at=base, annotations={"summary": "step 0"})
    e1 = event(
        "latency-very-high",
        model,
        model_version=None,
        value=None,
        threshold=None,
        emitted_at=base + 1_000,
        annotations={"summary": "step 1"},
    )
    e2 = event(
        "acc-low",
        model,
        status="resolved",
        alert_id=e0["alert_id"] + "-r",
        starts_at=e0["starts_at"],
        ends_at=base + 2_000,
        emitted_at=base + 2_000,
        value=math.nan,
        annotations={"summary": "step 2"},
    )
    e3 = event("drift", model, emitted_at=base + 3_000, annotations={"summary": "step 3"})
    produce(settings, [e3, e0], partition=0)
    produce(settings, [e1, b"garbage"], partition=1)
    produce(settings, [e2, e1], partition=2)  # e1 again: a duplicate

    out = StringIO()
    assert tail_alerts(settings, follow=False, as_json=False, console=Console(file=out)) == 0
    lines = out.getvalue().splitlines()
    assert [line.rsplit("  ", 1)[-1] for line in lines] == ["step 0", "step 1", "step 2", "step 3"]
    assert "\x1b" not in out.getvalue()
    assert lines[0].startswith("2023-11-14 22:13:20Z  FIRING ")
    assert lines[2].split()[2:5] == ["RESOLVED", "acc-low", f"{model}/3"]
    assert f"{model}/3" in lines[0] and "0.71 vs 0.8" in lines[0]
    assert f" {model} " in lines[1] and "  -  " in lines[1]
    assert "  - vs 0.8  " in lines[2]
    # aligned: every column starts at the same place on every line
    assert len({line.index(model) for line in lines}) == 1
    assert len({line.index("step") for line in lines}) == 1
    assert "skipped" in caplog.text

    out = StringIO()
    assert tail_alerts(settings, follow=False, as_json=True, console=Console(file=out)) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["alert_id"] for r in rows] == [e["alert_id"] for e in (e0, e1, e2, e3)]
    assert all(list(r) == SCHEMA_FIELDS for r in rows)
    assert rows[2]["ends_at"] == base + 2_000 and rows[2]["value"] is None
    assert rows[0] == e0
    assert "NaN" not in out.getvalue()

    colour = StringIO()
    terminal = Console(file=colour, force_terminal=True, color_system="standard", width=300)
    tail_alerts(settings, follow=False, as_json=False, console=terminal)
    assert "\x1b[" in colour.getvalue() and "FIRING" in colour.getvalue()


@pytest.mark.integration
def test_tail_follow_prints_new_transitions_until_stopped(settings: Settings) -> None:
    model = unique("churn")
    produce(settings, [event("drift", model, annotations={"summary": "before"})])
    out = StringIO()
    stop = GracefulStop()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            tail_alerts(settings, follow=True, as_json=True, console=Console(file=out), stop=stop)
        ),
        daemon=True,
    )
    thread.start()
    try:
        wait_for(lambda: "before" in out.getvalue(), "the stored transition")
        after = event("drift", model, annotations={"summary": "after"})
        produce(settings, [after, after])
        wait_for(lambda: "after" in out.getvalue(), "the new transition")
        time.sleep(1.0)
    finally:
        stop.event.set()
        thread.join(15)
    assert not thread.is_alive() and result == [0]
    summaries = [json.loads(line)["annotations"]["summary"] for line in out.getvalue().splitlines()]
    assert summaries == ["before", "after"]


@pytest.mark.integration
def test_tail_of_a_missing_topic_names_it(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with pytest.raises(TopicError, match=re.escape(s.topic("alerts"))):
        tail_alerts(s, follow=False, as_json=False, console=Console(file=StringIO()))
