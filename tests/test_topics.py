"""Topics on the real broker: layout, idempotency, co-partitioning, a round trip per contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic

from streaming.errors import TopicError
from streaming.kafka_io import admin_client, check_copartitioned, create_topics, describe_configs
from streaming.serde import serde_for
from streaming.settings import Settings

pytestmark = pytest.mark.integration

STREAMMON = shutil.which("streammon", path=os.path.dirname(sys.executable)) or "streammon"


def test_create_topics_layout_and_idempotency(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(predictions_partitions=4, labeled_partitions=2)
    first = {r.name: r for r in create_topics(s)}
    assert all(r.created for r in first.values())
    assert first[s.topic("predictions")].partitions == 4
    assert first[s.topic("outcomes")].partitions == 4
    assert first[s.topic("labeled")].partitions == 2
    admin = admin_client(s)
    configs = describe_configs(admin, list(first))
    assert configs[s.topic("model-versions")]["cleanup.policy"] == "compact"
    assert configs[s.topic("predictions")]["cleanup.policy"] == "delete"
    again = create_topics(s)
    assert not any(r.created for r in again)
    assert check_copartitioned(admin, s) == 4


def test_mismatched_partitions_are_refused_naming_both_counts(
    make_settings: Callable[..., Settings],
) -> None:
    s = make_settings(predictions_partitions=3)
    admin = admin_client(s)
    futures = admin.create_topics(
        [NewTopic(s.topic("predictions"), 3, 1), NewTopic(s.topic("outcomes"), 2, 1)]
    )
    for f in futures.values():
        f.result()
    with pytest.raises(TopicError) as info:
        create_topics(s)
    assert "3" in str(info.value) and "2" in str(info.value)
    with pytest.raises(TopicError, match="co-partitioned"):
        check_copartitioned(admin, s)


def test_joiner_refuses_to_start_on_mismatched_topics(
    make_settings: Callable[..., Settings], service_env: dict[str, str]
) -> None:
    s = make_settings()
    admin = admin_client(s)
    for f in admin.create_topics(
        [NewTopic(s.topic("predictions"), 3, 1), NewTopic(s.topic("outcomes"), 1, 1)]
    ).values():
        f.result()
    proc = subprocess.run(
        [STREAMMON, "joiner"], env=service_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "co-partitioned" in proc.stderr


def test_evaluator_refuses_labeled_and_predictions_by_model_of_other_counts(
    make_settings: Callable[..., Settings], service_env: dict[str, str]
) -> None:
    s = make_settings()
    admin = admin_client(s)
    for f in admin.create_topics(
        [NewTopic(s.topic("labeled"), 2, 1), NewTopic(s.topic("predictions-by-model"), 3, 1)]
    ).values():
        f.result()
    proc = subprocess.run(
        [STREAMMON, "evaluator"], env=service_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "co-partitioned" in proc.stderr and "predictions-by-model" in proc.stderr


def test_cli_topics_create_and_help(service_env: dict[str, str]) -> None:
    help_out = subprocess.run([STREAMMON, "--help"], capture_output=True, text=True, timeout=30)
    assert help_out.returncode == 0 and "topics" in help_out.stdout
    first = subprocess.run(
        [STREAMMON, "topics", "create", "--json"],
        env=service_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    prefix = service_env["STREAMMON_TOPIC_PREFIX"]
    assert {t["topic"] for t in created} == {
        prefix + n
        for n in (
            "predictions",
            "outcomes",
            "labeled",
            "predictions-by-model",
            "alerts",
            "retrain-requests",
            "model-versions",
            "dead-letter",
        )
    }
    second = subprocess.run(
        [STREAMMON, "topics", "create", "--json"],
        env=service_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0 and not any(t["created"] for t in json.loads(second.stdout))


def test_bad_config_exits_2_naming_the_field(service_env: dict[str, str]) -> None:
    env = {**service_env, "STREAMMON_PREDICTIONS_PARTITIONS": "zero"}
    proc = subprocess.run(
        [STREAMMON, "topics", "create"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "predictions_partitions" in proc.stderr


SAMPLES = {
    "PredictionEvent": {
        "prediction_id": "p-1",
        "model_name": "credit",
        "model_version": "3",
        "timestamp": 1_700_000_000_123,
        "features": {"income": 52_000.5, "age": 41, "region": "eu", "vip": True, "missing": None},
        "prediction": 1,
        "score": 0.82,
        "probabilities": {"0": 0.18, "1": 0.82},
        "tags": {"region": "eu"},
    },
    "OutcomeEvent": {
        "prediction_id": "p-1",
        "timestamp": 1_700_000_060_000,
        "label": 0,
        "model_name": "credit",
    },
    "LabeledExample": {
        "prediction_id": "p-1",
        "model_name": "credit",
        "model_version": "3",
        "prediction_timestamp": 1_700_000_000_123,
        "outcome_timestamp": 1_700_000_060_000,
        "label_delay_ms": 59_877,
        "features": {"income": 52_000.5},
        "prediction": "approve",
        "label": "deny",
        "score": None,
        "probabilities": None,
        "tags": {},
        "source_partition": 2,
        "source_sequence": 17,
    },
    "AlertEvent": {
        "alert_id": "a-1",
        "fingerprint": "f",
        "status": "firing",
        "rule": "low_accuracy",
        "model_name": "credit",
        "model_version": "3",
        "severity": "page",
        "labels": {"team": "risk"},
        "annotations": {"summary": "accuracy below 0.8"},
        "starts_at": 1_700_000_000_000,
        "ends_at": None,
        "value": 0.71,
        "threshold": 0.8,
        "generator_url": None,
        "emitted_at": 1_700_000_000_000,
    },
    "RetrainRequest": {
        "request_id": "r-1",
        "model_name": "credit",
        "model_version": "3",
        "reason": "drift",
        "alert_fingerprint": "f",
        "window_start": 1,
        "window_end": 2,
        "requested_at": 3,
    },
    "ModelVersionEvent": {
        "event_id": "e-1",
        "model_name": "credit",
        "version": 4,
        "parent_version": 3,
        "status": "champion",
        "artifact_uri": "file:///models/credit/4.skops",
        "artifact_sha256": "ab" * 32,
        "estimator": "HistGradientBoostingClassifier",
        "params": {"max_depth": "6"},
        "metrics": {"accuracy": 0.91},
        "champion_metrics": {"accuracy": 0.85},
        "training_window_start": 1,
        "training_window_end": 2,
        "training_rows": 5000,
        "request_id": "r-1",
        "alert_fingerprint": "f",
        "reason": "drift",
        "reference_profile": "{}",
        "created_at": 1_700_000_000_000,
    },
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_contract_round_trips_through_a_topic(
    name: str, make_settings: Callable[..., Settings]
) -> None:
    s = make_settings()
    topic = f"{s.topic_prefix}roundtrip-{name}"
    admin = admin_client(s)
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result()
    serde = serde_for(name)
    producer = Producer({"bootstrap.servers": s.kafka_bootstrap_servers})
    producer.produce(topic, key=b"k", value=serde.encode(SAMPLES[name]))
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap_servers,
            "group.id": f"rt-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        msg = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None
        value = msg.value()
        assert value is not None and value[:2] == b"\xc3\x01"
        assert serde.decode(value) == SAMPLES[name]
    finally:
        consumer.close()
