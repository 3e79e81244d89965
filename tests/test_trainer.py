"""The trainer on real Kafka and Redis: retrain after a concept change, no churn without one,
too little data, and a trainer killed mid-retrain."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from procs import streammon_path
from river.datasets import synth

from consumers.trainer import Trainer
from streaming.artifacts import dump_model
from streaming.kafka_io import create_topics
from streaming.registry import registry_from_settings
from streaming.serde import serde_for
from streaming.settings import Settings
from streaming.training import build_table, make_pipeline

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 3_600_000  # an hour ago: inside the broker's timestamp limits


def agrawal_examples(
    function: int, n: int, seed: int, start_ms: int, model: str = "credit"
) -> list[dict[str, Any]]:
    """LabeledExample records of Agrawal's concept ``function``, one every 100 ms."""
    gen = synth.Agrawal(classification_function=function, seed=seed, perturbation=0.05)
    out = []
    for i, (x, y) in enumerate(gen.take(n)):
        ts = start_ms + i * 100
        out.append(
            {
                "prediction_id": f"{model}-{function}-{seed}-{i}",
                "model_name": model,
                "model_version": "1",
                "prediction_timestamp": ts,
                "outcome_timestamp": ts + 50,
                "label_delay_ms": 50,
                "features": {k: v for k, v in x.items()},
                "prediction": 0,
                "label": int(y),
                "score": None,
                "probabilities": None,
                "tags": {},
                "source_partition": 0,
                "source_sequence": i + 1,
            }
        )
    return out


def produce_labeled(settings: Settings, examples: list[dict[str, Any]]) -> None:
    serde = serde_for("LabeledExample")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for ex in examples:
        producer.produce(
            settings.topic("labeled"),
            key=ex["model_name"].encode(),
            value=serde.encode(ex),
            timestamp=ex["outcome_timestamp"],
        )
    assert producer.flush(60) == 0


def request(settings: Settings, model: str, request_id: str, start: int, end: int) -> None:
    serde = serde_for("RetrainRequest")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(
        settings.topic("retrain-requests"),
        key=model.encode(),
        value=serde.encode(
            {
                "request_id": request_id,
                "model_name": model,
                "model_version": "1",
                "reason": "test",
                "alert_fingerprint": "fp",
                "window_start": start,
                "window_end": end,
                "requested_at": end,
            }
        ),
    )
    assert producer.flush(30) == 0


def version_events(settings: Settings) -> list[dict[str, Any]]:
    serde = serde_for("ModelVersionEvent")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    topic = settings.topic("model-versions")
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(out) < high and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append(serde.decode(msg.value()))
    consumer.close()
    return out


@pytest.fixture
def trainer_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(
        artifact_dir=str(tmp_path / "artifacts"),
        trainer_candidates=["logistic_regression", "hist_gradient_boosting"],
        trainer_n_iter=2,
        trainer_cv_folds=2,
        trainer_time_budget_s=30,
        trainer_min_rows=300,
        trainer_promotion_margin=0.02,
        labeled_partitions=1,
    )
    create_topics(settings)
    yield settings


def bootstrap_champion(settings: Settings, examples: list[dict[str, Any]]) -> None:
    """Version 1, trained on the pre-change concept elsewhere, registered by a user."""
    table = build_table(examples, max_rows=10_000)
    pipeline = make_pipeline(
        "hist_gradient_boosting", "classification", table.numeric, table.categorical, seed=0
    )
    pipeline.fit(table.X, table.y)
    registry = registry_from_settings(settings)
    v = registry.register(
        "credit",
        dump_model(pipeline),
        status="champion",
        estimator="HistGradientBoostingClassifier",
        reason="bootstrap",
    )
    assert v.version == 1


def test_retrain_after_concept_change_promotes_and_without_change_rejects(
    trainer_settings: Settings,
) -> None:
    s = trainer_settings
    before = agrawal_examples(0, 2000, seed=1, start_ms=T0)
    bootstrap_champion(s, before)
    after_start = T0 + 2000 * 100
    after = agrawal_examples(2, 2500, seed=2, start_ms=after_start)
    produce_labeled(s, before + after)
    registry = registry_from_settings(s)

    # 1. a request over the post-change window: the retrained candidate must win
    request(s, "credit", "req-drift", after_start, after_start + 2500 * 100)
    trainer = Trainer(s)
    trainer.run(max_idle_s=5)
    champion = registry.champion("credit")
    assert champion is not None and champion.version == 2, registry.list("credit")
    assert champion.request_id == "req-drift"
    assert champion.metrics["accuracy"] > champion.champion_metrics["accuracy"] + 0.02
    assert champion.parent_version == 1
    assert champion.reference_profile and "salary" in champion.reference_profile
    assert champion.training_rows and champion.training_rows > 1000

    # 2. the same concept again: the new candidate does not beat v2 by the margin -> rejected
    more = agrawal_examples(2, 2500, seed=3, start_ms=after_start + 2500 * 100)
    produce_labeled(s, more)
    request(s, "credit", "req-same", after_start + 2500 * 100, after_start + 5000 * 100)
    Trainer(s).run(max_idle_s=5)
    assert registry.champion("credit").version == 2  # type: ignore[union-attr]
    rejected = registry.get("credit", 3)
    assert rejected.status == "rejected" and rejected.request_id == "req-same"
    assert "does not beat" in (rejected.reason or "")
    assert rejected.champion_metrics["accuracy"] > 0

    # 3. a redelivered request is not trained twice
    request(s, "credit", "req-same", after_start + 2500 * 100, after_start + 5000 * 100)
    Trainer(s).run(max_idle_s=5)
    assert [v.version for v in registry.list("credit")] == [1, 2, 3]

    events = version_events(s)
    by_request = {(e["request_id"], e["status"]) for e in events if e["request_id"]}
    assert ("req-drift", "champion") in by_request and ("req-same", "rejected") in by_request


def test_not_enough_data_is_answered_without_a_version(trainer_settings: Settings) -> None:
    s = trainer_settings
    before = agrawal_examples(0, 800, seed=4, start_ms=T0)
    bootstrap_champion(s, before)
    produce_labeled(s, before[:100])
    request(s, "credit", "req-small", T0, T0 + 100 * 100)
    Trainer(s).run(max_idle_s=5)
    registry = registry_from_settings(s)
    assert [v.version for v in registry.list("credit")] == [1]
    assert registry.answered("credit", "req-small")
    answer = [e for e in version_events(s) if e["request_id"] == "req-small"]
    assert answer and answer[0]["status"] == "rejected" and answer[0]["version"] == 0
    assert "not enough" in answer[0]["reason"] and "300" in answer[0]["reason"]
    assert version_events(s)[-1]["status"] == "champion"  # compaction keeps the champion


def test_trainer_killed_mid_retrain_leaves_no_half_version(
    trainer_settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> None:
    s = trainer_settings
    before = agrawal_examples(0, 1500, seed=5, start_ms=T0)
    bootstrap_champion(s, before)
    after_start = T0 + 1500 * 100
    after = agrawal_examples(2, 2500, seed=6, start_ms=after_start)
    produce_labeled(s, before + after)
    request(s, "credit", "req-kill", after_start, after_start + 2500 * 100)
    env = {
        **service_env,
        "STREAMMON_ARTIFACT_DIR": s.artifact_dir,
        "STREAMMON_LABELED_PARTITIONS": "1",
        "STREAMMON_TRAINER_CANDIDATES": '["random_forest", "hist_gradient_boosting"]',
        "STREAMMON_TRAINER_N_ITER": "3",
        "STREAMMON_TRAINER_CV_FOLDS": "2",
        "STREAMMON_TRAINER_TIME_BUDGET_S": "20",
        "STREAMMON_TRAINER_MIN_ROWS": "300",
    }
    log = (tmp_path / "trainer.log").open("w")
    proc = subprocess.Popen(
        [streammon_path(), "trainer"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    registry = registry_from_settings(s)
    try:
        # kill it once it is searching (it logs "retraining" when it starts a request)
        deadline = time.monotonic() + 60
        while "retraining credit" not in (tmp_path / "trainer.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert [v.version for v in registry.list("credit")] == [1]
        assert not registry.answered("credit", "req-kill")
        # restart: the request is delivered again and answered exactly once
        proc = subprocess.Popen(
            [streammon_path(), "trainer"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 240
        while not registry.answered("credit", "req-kill"):
            assert time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()[-3000:]
            time.sleep(0.5)
        versions = registry.list("credit")
        assert [v.version for v in versions] == [1, 2]
        assert versions[1].request_id == "req-kill" and versions[1].announced
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
