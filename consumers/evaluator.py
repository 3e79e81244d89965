"""The evaluator: ``labeled`` -> metrics, drift detectors and alerts per model/version/segment.

river objects stay in process. Every ``checkpoint_interval_ms`` (and on revoke and on stop) the
evaluator writes, in one atomic Lua call per partition, the signed state blob of every series
that changed, a JSON snapshot of it for ``streammon status``, the alert engine's state, the
duplicate-suppression sequence numbers, and the partition's offset. A crash replays from the
last checkpoint; the replay is deterministic (one partition, one order), so it rebuilds the
same state and re-produces the same alert and retrain records with the same ids.

Alert transitions go to ``alerts`` (key: fingerprint), retrain requests to
``retrain-requests`` (key: model), both produced before the checkpoint that covers them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from consumers.service import Output, PartitionedService, PartitionState
from streaming.alerting import (
    AlertEngine,
    AlertTransition,
    DataQualityRule,
    Emission,
    RuleInput,
)
from streaming.errors import SerializationError
from streaming.evaluation import PartitionEvaluator, Series, parse_series_field, series_field
from streaming.kafka_io import (
    client_config,
    dead_letter_headers,
    offset_of,
    partition_of,
    topic_of,
)
from streaming.serde import serde_for
from streaming.settings import Settings
from streaming.state_codec import STATE_FORMATS, SignedStateCodec
from streaming.state_store import Ops, StateStore

log = logging.getLogger(__name__)

SERIES_FORMAT = "evaluator_series"


@dataclass
class EvaluatorPartition:
    evaluator: PartitionEvaluator
    last_checkpoint: float
    pending_offset: int | None = None
    dirty: bool = False
    dead_letters: int = 0
    pending_dead_letters: int = 0
    last_seen_wall: dict[str, float] = field(default_factory=dict)
    """Wall-clock time of the last example per model (for ``no_events_ms`` rules)."""


class ModelVersionWatcher:
    """Tails ``model-versions`` (no consumer group) and queues each version event.

    The evaluator uses them to end in-flight retrains: an event that carries a request id ends
    that request. Reading from the beginning of the compacted topic is harmless: an event for
    an older request matches nothing in flight.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("model-versions")
        self.events: deque[tuple[str, str | None, int, str]] = deque()
        """(model, request id, version, status) of every version event, in topic order."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-versions", daemon=True)
        self._serde = serde_for("ModelVersionEvent")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conf = client_config(self.settings)
        conf.update(
            {
                "group.id": f"streammon-watch-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer = Consumer(conf)
        try:
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                try:
                    event = self._serde.decode(msg.value() or b"")
                except SerializationError as exc:
                    log.warning(
                        "model-versions: undecodable event at offset %s: %s", msg.offset(), exc
                    )
                    continue
                self.events.append(
                    (
                        event["model_name"],
                        event.get("request_id"),
                        event["version"],
                        event["status"],
                    )
                )
        except KafkaException as exc:
            log.error("model-versions watcher stopped: %s", exc)
        finally:
            consumer.close()


class Evaluator(PartitionedService):
    """Keeps metrics, detectors and alerts of the models whose ``labeled`` partitions it owns."""

    name = "evaluator"

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        watch_versions: bool = True,
        **kwargs: Any,
    ) -> None:
        self.t_labeled = settings.topic("labeled")
        self.t_dead = settings.topic("dead-letter")
        self.t_alerts = settings.topic("alerts")
        self.t_retrain = settings.topic("retrain-requests")
        super().__init__(settings, store, topics=[self.t_labeled], **kwargs)
        self.serde = serde_for("LabeledExample")
        self.alert_serde = serde_for("AlertEvent")
        self.retrain_serde = serde_for("RetrainRequest")
        self.codec = SignedStateCodec(
            settings.state_hmac_key.get_secret_value().encode(),
            formats={**STATE_FORMATS, SERIES_FORMAT: 1},
        )
        self.policy = settings.retrain_policy()
        self.quality: dict[tuple[str, str], dict[str, float | None]] = {}
        self._quality_at = 0.0
        self.watcher = ModelVersionWatcher(settings) if watch_versions else None
        if self.watcher is not None:
            self.watcher.start()

    # ---- state ----------------------------------------------------------------------------
    def load(self, state: PartitionState, meta: dict[str, str]) -> None:
        engine_state = meta.get("alert_engine")
        engine = (
            AlertEngine.from_state(json.loads(engine_state), self.policy)
            if engine_state
            else AlertEngine(self.policy)
        )
        ev = PartitionEvaluator(
            self.settings.model_settings, rules_for=self.settings.rules_for, engine=engine
        )
        ev.quality = self.quality
        ev.last_sequence = {int(k): v for k, v in json.loads(meta.get("dedupe", "{}")).items()}
        ev.duplicates_dropped = int(meta.get("duplicates_dropped", "0"))
        for fld, blob in self.store.hgetall(state.scope, "series").items():
            series = self.codec.decode(blob, SERIES_FORMAT)
            if not isinstance(series, Series):
                msg = f"{state.scope}: series {fld!r} is not a Series"
                raise TypeError(msg)
            ev.series[parse_series_field(fld)] = series
        state.offsets.setdefault(self.t_labeled, 0)
        state.data = EvaluatorPartition(
            ev, time.monotonic(), dead_letters=int(meta.get("dead_letters", "0"))
        )

    # ---- processing -----------------------------------------------------------------------
    def _emission_output(self, emission: Emission) -> Output:
        if isinstance(emission, AlertTransition):
            rec = emission.record
            log.info(
                "alert %s: %s %s/%s value=%s threshold=%s (id %s)",
                rec["status"],
                rec["rule"],
                rec["model_name"],
                rec["model_version"],
                rec["value"],
                rec["threshold"],
                rec["alert_id"],
            )
            return Output(self.t_alerts, self.alert_serde.encode(rec), emission.key.encode())
        rec = emission.record
        log.info(
            "retrain requested for %s/%s: %s (id %s)",
            rec["model_name"],
            rec["model_version"],
            rec["reason"],
            rec["request_id"],
        )
        return Output(self.t_retrain, self.retrain_serde.encode(rec), emission.key.encode())

    def _apply_version_events(self) -> list[Output]:
        """End in-flight retrains and resolve alerts of versions that stopped serving."""
        outputs: list[Output] = []
        if self.watcher is None:
            return outputs
        while self.watcher.events:
            model, request_id, version, status = self.watcher.events.popleft()
            for state in self.partitions.values():
                engine = state.data.evaluator.engine
                if request_id and engine.retrain_finished(model, request_id):
                    state.data.dirty = True
                    log.info("retrain %s for %s finished", request_id, model)
                if status in ("retired", "rolled_back") and version > 0:
                    emitted = engine.retire_version(
                        model,
                        str(version),
                        f"version {version} of {model} {status.replace('_', ' ')}",
                    )
                    if emitted:
                        state.data.dirty = True
                        outputs.extend(self._emission_output(e) for e in emitted)
        return outputs

    def process(self, state: PartitionState, messages: list[Message]) -> tuple[list[Output], Any]:
        data: EvaluatorPartition = state.data
        self._refresh_quality()
        outputs: list[Output] = self._apply_version_events()
        now = time.monotonic()
        for m in messages:
            raw = m.value() or b""
            try:
                example = self.serde.decode(raw)
            except SerializationError as exc:
                error = f"{type(exc).__name__}: {exc}"
                outputs.append(
                    Output(
                        self.t_dead,
                        raw,
                        m.key(),
                        dead_letter_headers(topic_of(m), partition_of(m), offset_of(m), error),
                    )
                )
                data.pending_dead_letters += 1
                log.warning(
                    "evaluator: dead-lettered %s[%d]@%d: %s",
                    topic_of(m),
                    partition_of(m),
                    offset_of(m),
                    error,
                )
                continue
            applied = data.evaluator.apply(example)
            if applied is None:
                continue
            data.last_seen_wall[example["model_name"]] = now
            for key, alarm in applied.alarms:
                log.info(
                    "drift alarm %s on %s/%s%s at position %d (%s)",
                    alarm["detector"],
                    key[0],
                    key[1],
                    f"/{key[2]}" if key[2] else "",
                    alarm["position"],
                    alarm["direction"],
                )
            outputs.extend(self._emission_output(e) for e in applied.emissions)
        if messages:
            data.pending_offset = offset_of(messages[-1]) + 1
            data.dirty = True
        return outputs, None

    def checkpoint(self, state: PartitionState, token: Any, messages: list[Message]) -> None:
        data: EvaluatorPartition = state.data
        now = time.monotonic()
        if (now - data.last_checkpoint) * 1000 < self.settings.checkpoint_interval_ms:
            return
        self.flush_partition(state)

    def flush_partition(self, state: PartitionState) -> None:
        data: EvaluatorPartition = state.data
        if not data.dirty:
            return
        ev = data.evaluator
        ops = Ops()
        for key in sorted(ev.dirty):
            series = ev.series[key]
            fld = series_field(key)
            ops.hset("series", fld, self.codec.encode(series, SERIES_FORMAT))
            ops.hset("snapshots", fld, json.dumps(series.snapshot(), separators=(",", ":")))
        offset = (
            data.pending_offset
            if data.pending_offset is not None
            else (state.offsets[self.t_labeled])
        )
        ops.meta(f"offset:{self.t_labeled}", offset)
        ops.meta("dedupe", json.dumps({str(k): v for k, v in sorted(ev.last_sequence.items())}))
        ops.meta("dead_letters", data.dead_letters + data.pending_dead_letters)
        ops.meta("duplicates_dropped", ev.duplicates_dropped)
        ops.meta("alert_engine", json.dumps(ev.engine.to_state(), separators=(",", ":")))
        models = sorted({k[0] for k in ev.series})
        ops.meta(
            "alerts_summary",
            json.dumps(
                {
                    m: {"firing": ev.engine.firing(m), "retrain_in_flight": ev.engine.in_flight(m)}
                    for m in models
                },
                separators=(",", ":"),
            ),
        )
        self.store.commit(state.scope, state.epoch, state.generation + 1, ops)
        state.generation += 1
        state.offsets[self.t_labeled] = offset
        data.dead_letters += data.pending_dead_letters
        data.pending_dead_letters = 0
        data.pending_offset = None
        data.dirty = False
        data.last_checkpoint = time.monotonic()
        ev.dirty.clear()
        log.debug("evaluator: checkpoint partition %d at offset %d", state.partition, offset)

    # ---- data quality ---------------------------------------------------------------------
    def _refresh_quality(self) -> None:
        """Re-read the joiner's counters (at most every ``quality_refresh_ms``)."""
        now = time.monotonic()
        if (now - self._quality_at) * 1000 < self.settings.quality_refresh_ms:
            return
        self._quality_at = now
        totals: dict[tuple[str, str], dict[str, int]] = {}
        for scope in self.store.scopes("joiner"):
            for fld, raw in self.store.hgetall(scope, "counts").items():
                model, version, name = fld.split("\x1f")
                bucket = totals.setdefault((model, version), {})
                bucket[name] = bucket.get(name, 0) + int(raw)
        for key, c in totals.items():
            done = c.get("joined", 0) + c.get("unlabeled", 0)
            received = c.get("predictions", 0)
            dead = c.get("dead_letter_predictions", 0) + c.get("dead_letter_outcomes", 0)
            self.quality[key] = {
                "unlabeled_rate": c.get("unlabeled", 0) / done if done else None,
                "dead_letter_rate": dead / (received + dead) if received + dead else None,
            }

    def idle(self) -> None:
        pending = self._apply_version_events()
        if pending:
            self.produce_all(pending)
        now = time.monotonic()
        for state in list(self.partitions.values()):
            data: EvaluatorPartition = state.data
            self._check_silence(state, now)
            if data.dirty and (
                (now - data.last_checkpoint) * 1000 >= self.settings.checkpoint_interval_ms
            ):
                self.flush_safely(state)

    def _check_silence(self, state: PartitionState, now: float) -> None:
        """Evaluate ``no_events_ms`` rules for the models of a partition (wall clock)."""
        data: EvaluatorPartition = state.data
        ev = data.evaluator
        outputs: list[Output] = []
        for key, series in ev.series.items():
            if key[1] == "*" or key[2]:
                continue
            rules = self.settings.rules_for(key[0])
            if not any(isinstance(r, DataQualityRule) and r.check == "no_events_ms" for r in rules):
                continue
            seen = data.last_seen_wall.setdefault(key[0], now)
            # Only the silence is new: every other value is "unknown", so no other rule moves.
            inp = RuleInput(
                model=key[0],
                version=key[1],
                position=series.position,
                event_time_ms=series.last_event_time_ms or 0,
                alarms=series.alarms,
                quality={"no_events_ms": (now - seen) * 1000},
                rules=rules,
            )
            outputs.extend(self._emission_output(e) for e in ev.engine.evaluate(inp))
        if outputs:
            self.produce_all(outputs)
            data.dirty = True

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        super().close()
