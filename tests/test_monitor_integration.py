"""The monitor end to end: real Kafka, real Redis, ``streammon monitor`` as a real process.

Events are written by another client (a plain confluent_kafka producer) and another Avro
implementation (the Apache ``avro`` package), see ``tests/streams.py``. Expected counts come
from the generator's bookkeeping and expected metrics from scikit-learn on the generated pairs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_checks import SEGMENT_TAG, assert_counts, assert_metrics, topics
from procs import EndOffsets, cleanup_prefix, create_topics, fleet, wait_consumed
from streams import (
    FLUSH_MODEL,
    ApacheAvroWriter,
    Event,
    canonical_form,
    crc64_avro,
    generate_monitor_stream,
    prediction_record,
    produce,
    single_object_fingerprint,
)

from streaming.serde import fingerprint_of, serde_for

pytestmark = pytest.mark.integration


@pytest.fixture
def monitor_env(
    service_env: dict[str, str], stack: dict[str, str], unique_prefix: str
) -> Iterator[dict[str, str]]:
    """The service environment of this test; its topics and Redis keys are deleted after."""
    yield dict(service_env)
    cleanup_prefix(stack["kafka"], stack["redis"], unique_prefix, f"streammon:{unique_prefix}")


def read_dead_letters(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-reader-{topic}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                if len(out) >= expected:
                    break
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out


def test_fingerprints_are_the_ones_the_serde_expects() -> None:
    import fastavro.schema

    for name in ("PredictionEvent", "OutcomeEvent", "LabeledExample"):
        # the CRC-64-AVRO of tests/streams.py agrees with fastavro's, and the header carries
        # the fingerprint the serde expects
        form = canonical_form(name)
        ours = crc64_avro(form.encode()).to_bytes(8, "little")
        assert ours.hex() == fastavro.schema.fingerprint(form, "CRC-64-AVRO")
        assert single_object_fingerprint(name) == ours == fingerprint_of(name)
        assert "logicalType" not in form
    # and a message of the Apache writer decodes to what was written
    w = ApacheAvroWriter()
    rec = prediction_record("p1", "m", "1", 1_700_000_000_123, 1, 0.25, {"x": 1.5}, {"r": "eu"})
    assert serde_for("PredictionEvent").decode(w.encode("PredictionEvent", rec)) == rec
    rec = prediction_record("p2", "m", "1", 1_700_000_000_124, 2.5, None, {"x": None}, {})
    assert serde_for("PredictionEvent").decode(w.encode("PredictionEvent", rec)) == rec
    out = {"prediction_id": "p1", "timestamp": 1_700_000_000_999, "label": 0, "model_name": None}
    assert serde_for("OutcomeEvent").decode(w.encode("OutcomeEvent", out)) == out


def test_exact_counts_metrics_and_dead_letters(
    monitor_env: dict[str, str],
    stack: dict[str, str],
    unique_prefix: str,
    tmp_path: Path,
    ends: EndOffsets,
) -> None:
    partitions = 3
    env = {
        **monitor_env,
        "STREAMMON_JOIN_MAX_LABEL_DELAY_MS": str(10 * 60_000),
        "STREAMMON_JOIN_GRACE_MS": "60000",
        "STREAMMON_CHECKPOINT_INTERVAL_MS": "200",
        "STREAMMON_MAX_BATCH_SIZE": "700",
        "STREAMMON_SEGMENT_TAGS": f'["{SEGMENT_TAG}"]',
    }
    stream = generate_monitor_stream(3000, seed=11, step_ms=10, max_outcome_delay_ms=60_000)
    # the whole stream spans less event time than max delay + grace: nothing expires early
    assert stream.last_event_ms - stream.t0_ms < 10 * 60_000
    names = topics(unique_prefix)
    reports = create_topics(env)
    assert {r["topic"]: r["partitions"] for r in reports}[names["predictions"]] == partitions
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")

        delivered = produce(stack["kafka"], names, stream.events)
        st = wait_consumed(env, unique_prefix, ends, timeout=120, check=monitor.assert_alive)
        # everything joined that can join; nothing has expired yet
        assert_counts(st, stream, flushed=False)

        produce(stack["kafka"], names, stream.flush_events(partitions))
        st = wait_consumed(env, unique_prefix, ends, timeout=60, check=monitor.assert_alive)
        assert_counts(st, stream, flushed=True)
        flush = st["models"][FLUSH_MODEL]["counts"]
        assert (flush["predictions"], flush["pending"]) == (partitions, partitions)
        assert_metrics(st, stream, segments=True)
        assert st["consumer_groups"][f"{unique_prefix}streammon-joiner"]["lag"] == 0
        assert st["consumer_groups"][f"{unique_prefix}streammon-evaluator"]["lag"] == 0

        # the dead-letter topic holds each bad message's original bytes and where it came from
        bad = {
            (names[ev.topic], d.partition, d.offset): ev
            for ev, d in zip(stream.events, delivered, strict=True)
            if ev.dead_letter is not None
        }
        letters = read_dead_letters(stack["kafka"], names["dead-letter"], len(bad))
        found = {}
        for msg in letters:
            headers = {k: v.decode() for k, v in msg.headers()}
            where = (
                headers["streammon.source.topic"],
                int(headers["streammon.source.partition"]),
                int(headers["streammon.source.offset"]),
            )
            assert where not in found, f"dead-lettered twice: {where}"
            found[where] = (msg.value(), headers["streammon.error"])
        assert set(found) == set(bad)
        for where, ev in bad.items():
            value, error = found[where]
            assert value == ev.value, where
            assert ev.dead_letter in error, (where, error)

        # a restart changes nothing: state and offsets come back from Redis
        assert monitor.terminate() == 0
        again_monitor = f.start("monitor-again")
        again_monitor.wait_for_log("evaluator: assigned partition", partitions)
        again_monitor.wait_for_log("joiner: assigned partition", partitions)
        again = wait_consumed(env, unique_prefix, ends, timeout=60)
        assert again["models"] == st["models"]


def agrawal_stream(
    writer: ApacheAvroWriter, n_before: int, n_after: int, t0_ms: int
) -> tuple[list[Event], dict[str, int]]:
    """Agrawal function 0, then function 2, scored by a tree trained on function 0.

    With 10% feature perturbation the tree errs on about 11% of function 0 and about half
    of function 2.
    """
    from river.datasets import synth
    from sklearn.tree import DecisionTreeClassifier

    def rows(function: int, seed: int, n: int) -> list[tuple[dict[str, Any], int]]:
        gen = synth.Agrawal(classification_function=function, seed=seed, perturbation=0.1)
        return list(gen.take(n))

    train = rows(0, 1, 3000)
    keys = sorted(train[0][0])
    tree = DecisionTreeClassifier(max_depth=6, random_state=0)
    tree.fit([[x[k] for k in keys] for x, _ in train], [y for _, y in train])
    stream = rows(0, 2, n_before) + rows(2, 3, n_after)
    scores = tree.predict_proba([[x[k] for k in keys] for x, _ in stream])[:, 1]
    events, index = [], {}
    for i, ((x, y), score) in enumerate(zip(stream, scores, strict=True)):
        pid = f"a{i:06d}"
        index[pid] = i
        ts = t0_ms + 100 * i
        features = {k: float(x[k]) for k in keys}
        pred = prediction_record(
            pid, "loans", "1", ts, int(score >= 0.5), float(score), features, {"region": "eu"}
        )
        out = {"prediction_id": pid, "timestamp": ts + 500, "label": int(y), "model_name": None}
        events.append(Event("predictions", pid.encode(), writer.encode("PredictionEvent", pred)))
        events.append(Event("outcomes", pid.encode(), writer.encode("OutcomeEvent", out)))
    return events, index


def read_labeled(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False}
    )
    md = consumer.list_topics(topic, timeout=10)
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions]
    )
    serde = serde_for("LabeledExample")
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            out.append(serde.decode(msg.value()))
    finally:
        consumer.close()
    return out


def test_drift_alarm_after_a_concept_change(
    monitor_env: dict[str, str],
    stack: dict[str, str],
    unique_prefix: str,
    tmp_path: Path,
    ends: EndOffsets,
) -> None:
    from river import drift

    n_before, n_after = 4000, 4000
    # one partition: the labeled order is then the order of the events (see below)
    env = {
        **monitor_env,
        "STREAMMON_PREDICTIONS_PARTITIONS": "1",
        "STREAMMON_LABELED_PARTITIONS": "1",
        "STREAMMON_CHECKPOINT_INTERVAL_MS": "200",
    }
    events, index = agrawal_stream(ApacheAvroWriter(), n_before, n_after, 1_700_000_000_000)
    names = topics(unique_prefix)
    create_topics(env)
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        produce(stack["kafka"], names, events)
        st = wait_consumed(env, unique_prefix, ends, timeout=120, check=monitor.assert_alive)
    series = st["models"]["loans"]["versions"]["1"]
    assert series["labeled"] == n_before + n_after

    # Where the concept changed, in labeled positions, as the labeled topic tells it.
    labeled = read_labeled(stack["kafka"], names["labeled"], n_before + n_after)
    assert len(labeled) == n_before + n_after
    order = [index[ex["prediction_id"]] for ex in labeled]
    change_at = 1 + max(pos for pos, i in enumerate(order) if i < n_before)
    assert change_at == n_before  # no post-change example came before a pre-change one
    errors = [int(ex["label"] != ex["prediction"]) for ex in labeled]
    before, after = sum(errors[:change_at]) / change_at, sum(errors[change_at:]) / n_after
    assert 0.05 < before < 0.2 < 0.4 < after, (before, after)

    # The detector the status names, fed the same errors in the same order, offline.
    adwin = series["detectors"]["adwin"]
    assert adwin["kind"] == "adwin"
    offline = drift.ADWIN(**adwin["params"])
    first_offline = None
    for pos, error in enumerate(errors, start=1):
        offline.update(error)
        if offline.drift_detected and first_offline is None:
            first_offline = pos

    alarms = series["alarms"]
    assert alarms, f"no alarm; detector: {adwin}"
    first = alarms[0]
    assert first["detector"] == "adwin"
    assert first["direction"] == "increase", first
    assert change_at < first["position"] <= change_at + 500, (change_at, first)
    assert all(a["position"] > change_at for a in alarms)
    assert first["position"] == first_offline
