"""Thin Kafka adapter: client configs from settings, topic layout, dead letters, waiting.

Everything that talks to confluent-kafka lives here or in ``consumers/``; pure logic never
imports it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from streaming.errors import ServiceUnavailableError, TopicError
from streaming.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTER_HEADERS = (
    "streammon.source.topic",
    "streammon.source.partition",
    "streammon.source.offset",
    "streammon.error",
)


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties shared by every client: bootstrap, security, pass-through."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    optional = {
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "sasl.password": (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        ),
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
        "ssl.key.password": (
            settings.kafka_ssl_key_password.get_secret_value()
            if settings.kafka_ssl_key_password
            else None
        ),
    }
    conf.update({k: v for k, v in optional.items() if v is not None})
    conf.update(settings.kafka_config)
    return conf


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An idempotent, batching producer (ordering per partition survives retries)."""
    conf = client_config(settings)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.num.messages": 10000,
        }
    )
    conf.update(settings.kafka_producer_config)
    conf.update(extra)
    return conf


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer whose offsets live with our state: no auto-commit, range assignment.

    Range assignment hands partition p of every subscribed topic to the same member, which
    the joiner needs for co-partitioned ``predictions`` and ``outcomes``.
    """
    conf = client_config(settings)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 2000,
            "max.poll.interval.ms": 300000,
            "fetch.wait.max.ms": 100,
        }
    )
    conf.update(settings.kafka_consumer_config)
    conf.update(extra)
    return conf


@dataclass(frozen=True)
class TopicSpec:
    """The layout streammon expects of one topic."""

    logical: str
    name: str
    partitions: int
    config: Mapping[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic streammon uses, with partitions and settings, under the configured prefix."""
    n = settings.predictions_partitions
    layout: list[tuple[str, int, dict[str, str]]] = [
        ("predictions", n, {}),
        ("outcomes", n, {}),
        (
            "labeled",
            settings.labeled_partitions,
            # Record timestamps are event times (the trainer seeks by them), so time-based
            # retention would delete backfilled or replayed history at once: keep it by size.
            {
                "retention.ms": "-1",
                "retention.bytes": str(settings.labeled_retention_bytes),
                "message.timestamp.after.max.ms": str(2**63 - 1),
            },
        ),
        # the first sighting of each prediction, keyed by model: partition p goes with
        # partition p of labeled to the model's single writer (same count, same key)
        (
            "predictions-by-model",
            settings.labeled_partitions,
            {
                "retention.ms": "-1",
                "retention.bytes": str(settings.labeled_retention_bytes),
                "message.timestamp.after.max.ms": str(2**63 - 1),
            },
        ),
        ("alerts", settings.alerts_partitions, {}),
        ("retrain-requests", settings.retrain_requests_partitions, {}),
        ("model-versions", 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
        ("dead-letter", 1, {"retention.ms": str(settings.dead_letter_retention_ms)}),
    ]
    return [TopicSpec(t, settings.topic(t), p, c) for t, p, c in layout]


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({**client_config(settings), "log_level": 4})


def wait_for_kafka(settings: Settings, timeout_s: float = 60.0) -> AdminClient:
    """Block until a metadata call answers, logging each attempt; raise after ``timeout_s``."""
    admin = admin_client(settings)
    deadline = time.monotonic() + timeout_s
    attempt = 0
    delay = 0.5
    while True:
        attempt += 1
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return admin
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                msg = (
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
                    f"{timeout_s:.0f}s: {exc}"
                )
                raise ServiceUnavailableError(msg) from exc
            log.warning(
                "waiting for Kafka at %s (attempt %d)", settings.kafka_bootstrap_servers, attempt
            )
            time.sleep(delay)
            delay = min(delay * 2, settings.retry_max_backoff_s)


def partition_counts(admin: AdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each existing topic among ``names`` (missing ones are absent)."""
    md = admin.list_topics(timeout=10)
    return {
        name: len(md.topics[name].partitions)
        for name in names
        if name in md.topics and md.topics[name].error is None
    }


def _check_equal_partitions(admin: AdminClient, first: str, second: str, why: str) -> int:
    counts = partition_counts(admin, [first, second])
    missing = [t for t in (first, second) if t not in counts]
    if missing:
        msg = f"topics missing: {', '.join(missing)}; run `streammon topics create` first"
        raise TopicError(msg)
    if counts[first] != counts[second]:
        msg = (
            f"{first} has {counts[first]} partitions but {second} has {counts[second]}: they "
            f"must be co-partitioned {why}"
        )
        raise TopicError(msg)
    return counts[first]


def check_copartitioned(admin: AdminClient, settings: Settings) -> int:
    """Refuse to go on unless ``predictions`` and ``outcomes`` exist with equal partitions."""
    return _check_equal_partitions(
        admin,
        settings.topic("predictions"),
        settings.topic("outcomes"),
        "(equal counts, same key) for the join to be correct",
    )


def check_by_model_copartitioned(admin: AdminClient, settings: Settings) -> int:
    """Refuse to go on unless ``labeled`` and ``predictions-by-model`` exist with equal
    partitions (the evaluator reads partition p of both as the single writer of its models)."""
    return _check_equal_partitions(
        admin,
        settings.topic("labeled"),
        settings.topic("predictions-by-model"),
        "(equal counts, key = model name) so that one evaluator owns all of a model",
    )


@dataclass
class TopicReport:
    name: str
    partitions: int
    created: bool
    config: Mapping[str, str]


def create_topics(settings: Settings, admin: AdminClient | None = None) -> list[TopicReport]:
    """Create every topic idempotently; refuse mismatched co-partitioned topics, naming counts.

    Existing topics are left as they are (their settings are reported, never silently
    changed), except that a compacted topic that is not compacted is an error.
    """
    admin = admin or wait_for_kafka(settings)
    specs = topic_specs(settings)
    existing = partition_counts(admin, [s.name for s in specs])
    lab, by_model = settings.topic("labeled"), settings.topic("predictions-by-model")
    if (
        lab in existing
        and by_model not in existing
        and existing[lab] != (settings.labeled_partitions)
    ):
        # an existing labeled topic from before predictions-by-model: follow its count
        specs = [
            TopicSpec(s.logical, s.name, existing[lab], s.config) if s.name == by_model else s
            for s in specs
        ]
    pred, out = settings.topic("predictions"), settings.topic("outcomes")
    want = settings.predictions_partitions
    for name in (pred, out):
        if name in existing and existing[name] != want:
            other = out if name == pred else pred
            msg = (
                f"{name} already exists with {existing[name]} partitions but "
                f"predictions_partitions is {want}"
                + (f" ({other} has {existing[other]})" if other in existing else "")
                + ": predictions and outcomes must have equal partition counts; "
                "set STREAMMON_PREDICTIONS_PARTITIONS to match or recreate the topics"
            )
            raise TopicError(msg)
    to_create = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=settings.replication_factor,
            config=dict(s.config),
        )
        for s in specs
        if s.name not in existing
    ]
    created: set[str] = set()
    if to_create:
        futures = admin.create_topics(to_create, operation_timeout=30, request_timeout=30)
        for name, fut in futures.items():
            try:
                fut.result()
                created.add(name)
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                msg = f"could not create topic {name}: {exc}"
                raise TopicError(msg) from exc
    _wait_for_metadata(admin, [s.name for s in specs])
    counts = partition_counts(admin, [s.name for s in specs])
    check_copartitioned(admin, settings)
    check_by_model_copartitioned(admin, settings)
    configs = describe_configs(admin, [s.name for s in specs])
    reports = []
    for s in specs:
        cfg = configs.get(s.name, {})
        if s.config.get("cleanup.policy") == "compact" and "compact" not in cfg.get(
            "cleanup.policy", ""
        ):
            msg = (
                f"{s.name} exists but is not compacted (cleanup.policy={cfg.get('cleanup.policy')})"
            )
            raise TopicError(msg)
        reports.append(TopicReport(s.name, counts[s.name], s.name in created, cfg))
    return reports


def _wait_for_metadata(admin: AdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        md = admin.list_topics(timeout=10)
        ready = [
            n
            for n in names
            if n in md.topics
            and md.topics[n].error is None
            and all(p.leader >= 0 for p in md.topics[n].partitions.values())
        ]
        if len(ready) == len(names):
            return
        if time.monotonic() > deadline:
            msg = f"topics not ready after {timeout_s:.0f}s: {sorted(set(names) - set(ready))}"
            raise TopicError(msg)
        time.sleep(0.2)


def describe_configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """The cleanup policy and retention of each topic, as the broker reports them."""
    resources = [ConfigResource("topic", n) for n in names]
    out: dict[str, dict[str, str]] = {}
    for res, fut in admin.describe_configs(resources, request_timeout=30).items():
        entries = fut.result()
        out[res.name] = {
            k: str(v.value)
            for k, v in entries.items()
            if k in ("cleanup.policy", "retention.ms", "retention.bytes")
        }
    return out


def dead_letter_headers(
    source_topic: str, partition: int, offset: int, error: str
) -> list[tuple[str, str | bytes | None]]:
    """Headers naming where a dead-lettered message came from and why."""
    return [
        ("streammon.source.topic", source_topic.encode()),
        ("streammon.source.partition", str(partition).encode()),
        ("streammon.source.offset", str(offset).encode()),
        ("streammon.error", error.encode()[:4000]),
    ]


SIGHTING_KIND: Final = b"prediction"
"""Value of the ``streammon.kind`` header on a prediction forwarded to
``predictions-by-model``."""


def sighting_headers(partition: int, sequence: int) -> list[tuple[str, str | bytes | None]]:
    """Headers of a prediction the joiner forwards to ``predictions-by-model`` (its value is
    the original ``PredictionEvent`` bytes): the kind, and the joiner partition and sequence
    number that let the evaluator drop replayed duplicates."""
    return [
        ("streammon.kind", SIGHTING_KIND),
        ("streammon.source.partition", str(partition).encode()),
        ("streammon.source.sequence", str(sequence).encode()),
    ]


def sighting_of(msg: Message) -> tuple[int, int] | None:
    """``(joiner partition, sequence)`` of a forwarded prediction, None for anything else.

    Only the first header is looked at when it is not ``streammon.kind``.
    """
    headers: Any = msg.headers()
    if not headers or tuple(headers[0]) != ("streammon.kind", SIGHTING_KIND):
        return None
    found: dict[str, Any] = {str(k): v for k, v in headers}
    try:
        return int(found["streammon.source.partition"]), int(found["streammon.source.sequence"])
    except (KeyError, TypeError, ValueError):
        return None


def topic_of(msg: Message) -> str:
    """The topic of a consumed (non-error) message."""
    topic = msg.topic()
    assert topic is not None
    return topic


def partition_of(msg: Message) -> int:
    """The partition of a consumed (non-error) message."""
    partition = msg.partition()
    assert partition is not None
    return partition


def offset_of(msg: Message) -> int:
    """The offset of a consumed (non-error) message."""
    offset = msg.offset()
    assert offset is not None
    return offset


@dataclass
class OutRecord:
    """One record to produce (before the checkpoint that covers it)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, str | bytes | None]] | None = None
    timestamp_ms: int | None = None
    """Kafka record timestamp (CreateTime); None lets the producer use the wall clock."""


class ProduceAbortedError(Exception):
    """``produce_acknowledged`` gave up because its ``wait`` said to stop."""


def _sleep(delay: float) -> bool:
    time.sleep(delay)
    return False


def produce_acknowledged(
    producer: Producer,
    records: Sequence[OutRecord],
    *,
    what: str,
    max_backoff_s: float,
    wait: Callable[[float], bool] = _sleep,
) -> None:
    """Produce ``records`` and wait until Kafka acknowledged every one; on any failure log
    it and send the lot again after a capped exponential back-off.

    Re-sent records may already be stored: they carry deterministic ids, so consumers drop
    them. ``wait(delay)`` sleeps between attempts and returns True to give up, which raises
    :class:`ProduceAbortedError` (e.g. on a stop signal).
    """
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    delay, attempt = 0.5, 0
    while True:
        errors.clear()
        for rec in records:
            while True:
                try:
                    producer.produce(
                        rec.topic,
                        value=rec.value,
                        key=rec.key,
                        headers=rec.headers,
                        on_delivery=delivered,
                        timestamp=rec.timestamp_ms or 0,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        remaining = producer.flush(60)
        if remaining == 0 and not errors:
            return
        attempt += 1
        log.warning(
            "%s: %d not acknowledged (%s); retrying in %.1fs (attempt %d)",
            what,
            remaining + len(errors),
            "; ".join(errors[:3]) or "flush timed out",
            delay,
            attempt,
        )
        if wait(delay):
            raise ProduceAbortedError(what)
        delay = min(delay * 2, max_backoff_s)
