"""The trainer: ``retrain-requests`` -> a tuned, gated, registered model version.

One request at a time per process; requests are keyed by model, so one model's requests land
on one partition and are handled one after another (one retrain per model at a time). For
each request the trainer

1. skips it when the registry already answered its request id (a redelivery after a crash);
2. reads the model's ``LabeledExample`` records from ``labeled`` over the training window,
   seeking by event time (``offsets_for_times``; the joiner stamps records with their event
   time), keeping at most ``trainer_max_rows`` of the most recent rows;
3. tunes and selects a candidate on time-ordered folds, scores it and the champion on the same
   most recent holdout, and gates it (:mod:`streaming.training`);
4. registers the candidate as champion or rejected (:mod:`streaming.registry`), which
   publishes ``ModelVersionEvent`` records; too little data is answered without a version;
5. commits the request's offset only then.

A crash before 4 leaves nothing registered and the request is delivered again; a crash after
4 but before 5 is caught by 1. Artifacts are content-addressed, registry writes idempotent by
request id.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from consumers.service import GracefulStop
from streaming.artifacts import dump_model, load_model
from streaming.errors import SerializationError, StreammonError, TrainingError
from streaming.kafka_io import (
    client_config,
    consumer_config,
    dead_letter_headers,
    offset_of,
    partition_of,
    producer_config,
    topic_of,
)
from streaming.registry import Registry, registry_from_settings
from streaming.serde import serde_for
from streaming.settings import Settings
from streaming.training import (
    TrainingConfig,
    build_table,
    evaluate,
    fit_best,
    frame_for,
    gate,
    not_enough_data,
    output_profile,
    reference_profile,
)

log = logging.getLogger(__name__)


def read_labeled(
    settings: Settings,
    model: str,
    start_ms: int,
    end_ms: int,
    *,
    max_rows: int,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """The model's labeled examples with event time in ``[start_ms, end_ms]``, newest
    ``max_rows`` at most, duplicates (joiner replays) dropped."""
    topic = settings.topic("labeled")
    conf = client_config(settings)
    conf.update(
        {
            "group.id": f"streammon-trainer-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer = Consumer(conf)
    serde = serde_for("LabeledExample")
    rows: deque[dict[str, Any]] = deque(maxlen=max_rows)
    seen: set[tuple[int, int]] = set()
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = sorted(md.topics[topic].partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, max(0, start_ms)) for p in partitions], timeout=10
        )
        ends = {}
        assign = []
        for tp in starts:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
            begin = tp.offset if tp.offset >= 0 else high
            if begin < high:
                ends[tp.partition] = high
                assign.append(TopicPartition(topic, tp.partition, begin))
        if not assign:
            return []
        consumer.assign(assign)
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(assign) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error() is not None:
                    continue
                p, off = partition_of(msg), offset_of(msg)
                if off >= ends[p] - 1:
                    done.add(p)
                _, ts = msg.timestamp()
                if ts > end_ms:
                    done.add(p)
                    continue
                try:
                    example = serde.decode(msg.value() or b"")
                except SerializationError:
                    continue
                if example["model_name"] != model:
                    continue
                t = max(example["prediction_timestamp"], example["outcome_timestamp"])
                if t < start_ms or t > end_ms:
                    continue
                ident = (example["source_partition"], example["source_sequence"])
                if ident in seen:
                    continue
                seen.add(ident)
                rows.append(example)
        if len(done) < len(assign):
            log.warning("trainer: reading %s timed out after %.0fs", topic, timeout_s)
    finally:
        consumer.close()
    return list(rows)


class Trainer:
    """Consumes retrain requests and answers each with a registered version (see module)."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        stop: GracefulStop | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or GracefulStop()
        self.config = TrainingConfig.from_settings(settings)
        self.registry = registry or registry_from_settings(settings)
        self.t_requests = settings.topic("retrain-requests")
        self.t_dead = settings.topic("dead-letter")
        self.serde = serde_for("RetrainRequest")
        budget_ms = int(self.config.time_budget_s * 1000)
        self.consumer = Consumer(
            consumer_config(
                settings,
                settings.consumer_group("trainer"),
                **{"max.poll.interval.ms": max(300_000, 4 * budget_ms + 120_000)},
            )
        )
        self.handled = 0

    def run(self, *, max_idle_s: float | None = None) -> int:
        reconciled = self.registry.reconcile()
        if any(reconciled.values()):
            log.info("trainer: re-announced unannounced versions: %s", reconciled)
        self.consumer.subscribe([self.t_requests])
        log.info("trainer: started (group %s)", self.settings.consumer_group("trainer"))
        idle_since = time.monotonic()
        try:
            while not self.stop.stopping:
                msg = self.consumer.poll(0.5)
                if msg is None:
                    if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.error("trainer: consumer error: %s", err)
                    continue
                self.handle(msg)
                self.consumer.commit(message=msg, asynchronous=False)
                self.handled += 1
                idle_since = time.monotonic()
        finally:
            self.consumer.close()
            log.info("trainer: stopped after %d requests", self.handled)
        return 0

    def _dead_letter(self, msg: Message, error: str) -> None:
        from confluent_kafka import Producer

        producer = Producer(producer_config(self.settings))
        producer.produce(
            self.t_dead,
            value=msg.value(),
            key=msg.key(),
            headers=dead_letter_headers(topic_of(msg), partition_of(msg), offset_of(msg), error),
        )
        producer.flush(30)

    def handle(self, msg: Message) -> None:
        try:
            request = self.serde.decode(msg.value() or b"")
        except SerializationError as exc:
            log.warning("trainer: dead-lettering an undecodable request: %s", exc)
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
            return
        model, request_id = request["model_name"], request["request_id"]
        if self.registry.answered(model, request_id):
            log.info("trainer: request %s for %s already answered; skipping", request_id, model)
            return
        try:
            self.retrain(request)
        except StreammonError as exc:
            log.error("trainer: request %s for %s failed: %s", request_id, model, exc)
            self.registry.answer_without_version(
                model,
                request_id,
                f"retrain failed: {exc}",
                alert_fingerprint=request.get("alert_fingerprint"),
            )

    def retrain(self, request: dict[str, Any]) -> None:
        """Train, gate and register one request (see module docstring)."""
        model, request_id = request["model_name"], request["request_id"]
        end = int(request["window_end"])
        start = (
            end - self.settings.trainer_window_ms
            if self.settings.trainer_window_ms is not None
            else int(request["window_start"])
        )
        started = time.monotonic()
        log.info(
            "trainer: retraining %s for request %s (%s) on event time %d..%d",
            model,
            request_id,
            request["reason"],
            start,
            end,
        )
        examples = read_labeled(self.settings, model, start, end, max_rows=self.config.max_rows)
        window = (start, end)
        if len(examples) < self.config.min_rows:
            decision = not_enough_data(len(examples), self.config.min_rows)
            log.info("trainer: %s: %s", model, decision.reason)
            self.registry.answer_without_version(
                model,
                request_id,
                decision.reason,
                alert_fingerprint=request.get("alert_fingerprint"),
                training_rows=len(examples),
                training_window=window,
            )
            return
        champion = self.registry.champion(model)
        table = build_table(examples, max_rows=self.config.max_rows)
        try:
            result = fit_best(table, self.config, deadline_s=started + self.config.time_budget_s)
        except TrainingError as exc:
            self.registry.answer_without_version(
                model,
                request_id,
                f"no candidate: {exc}",
                alert_fingerprint=request.get("alert_fingerprint"),
                training_rows=len(table),
                training_window=window,
            )
            return
        holdout = result.holdout
        cand_metrics = evaluate(result.estimator, holdout.X, holdout.y, result.task)
        champ_metrics: dict[str, float] | None = None
        if champion is not None and champion.artifact_uri and champion.artifact_sha256:
            try:
                store = self.registry.artifact_store
                assert store is not None
                champ_est = load_model(
                    store.get(champion.artifact_uri), expected_sha256=champion.artifact_sha256
                )
                rows = holdout.X.to_dict("records")
                champ_metrics = evaluate(
                    champ_est, frame_for(champ_est, rows), holdout.y, result.task
                )
            except StreammonError as exc:
                log.error(
                    "trainer: champion v%d of %s cannot be scored: %s", champion.version, model, exc
                )
        decision = gate(
            cand_metrics,
            champ_metrics,
            task=result.task,
            primary_metric=self.config.primary_metric,
            margin=self.config.promotion_margin,
        )
        profile = reference_profile(result.train.X, result.train.y)
        profile.update(output_profile(result.estimator, holdout.X, holdout.y))
        params = {"kind": result.kind, **result.params}
        version = self.registry.register(
            model,
            dump_model(result.estimator),
            status="champion" if decision.promote else "candidate",
            estimator=result.estimator_name,
            params=params,
            metrics=cand_metrics,
            champion_metrics=champ_metrics or {},
            reference_profile=profile,
            request_id=request_id,
            alert_fingerprint=request.get("alert_fingerprint"),
            reason=decision.reason,
            training_window=(result.window_start_ms, result.window_end_ms),
            training_rows=result.train_rows,
            parent_version=champion.version if champion is not None else None,
        )
        if not decision.promote and version.status == "candidate":
            version = self.registry.reject(
                model, version.version, decision.reason, champion_metrics=champ_metrics or {}
            )
        log.info(
            "trainer: %s v%d %s in %.1fs (%s; %d rows; %s)",
            model,
            version.version,
            "promoted" if decision.promote else "rejected",
            time.monotonic() - started,
            result.estimator_name,
            result.train_rows,
            decision.reason,
        )
