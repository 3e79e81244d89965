"""The evaluator: ``labeled`` -> metrics, drift detectors and alerts per model/version/segment;
``predictions-by-model`` -> data drift and estimated performance per model version (label-free
monitoring, :mod:`streaming.labelfree`). Partition p of both topics belongs to one owner.

river objects stay in process. Every ``checkpoint_interval_ms`` (and on revoke and on stop) the
evaluator writes, in one atomic Lua call per partition, the signed state blob of every series
that changed, a JSON snapshot of it for ``streammon status``, the alert engine's state, the
duplicate-suppression sequence numbers, and the partition's offset. A crash replays from the
last checkpoint; the replay is deterministic (one partition, one order), so it rebuilds the
same state and re-produces the same alert and retrain records with the same ids. With two
input topics the consumer's interleaving could differ on a replay, so the message order of
every batch since the last checkpoint is stored (meta ``order``) before the batch is acted on,
and a restart processes those messages again in that order.

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

from consumers.service import (
    Output,
    PartitionedService,
    PartitionState,
    runs_of,
    take_planned,
)
from streaming.alerting import (
    AlertEngine,
    AlertTransition,
    DataQualityRule,
    Emission,
    RuleInput,
)
from streaming.datadrift import Reference
from streaming.errors import ContractError, SerializationError
from streaming.evaluation import PartitionEvaluator, Series, parse_series_field, series_field
from streaming.kafka_io import (
    client_config,
    dead_letter_headers,
    offset_of,
    partition_of,
    sighting_of,
    topic_of,
)
from streaming.labelfree import LabelFreeMonitor
from streaming.serde import serde_for
from streaming.settings import Settings
from streaming.state_codec import STATE_FORMATS, SignedStateCodec
from streaming.state_store import Ops, StateStore

log = logging.getLogger(__name__)

SERIES_FORMAT = "evaluator_series"
LABEL_FREE_FORMAT = "label_free_monitor"
WATCHER_WAIT_S = 30.0
"""How long the evaluator waits at start for the model-versions history (reference
profiles) before processing without it."""


@dataclass
class EvaluatorPartition:
    evaluator: PartitionEvaluator
    last_checkpoint: float
    pending_offsets: dict[str, int] = field(default_factory=dict)
    """Next offset per topic of what was processed since the last checkpoint."""
    order: list[tuple[int, int]] = field(default_factory=list)
    """Message order (runs) of every batch since the last checkpoint, as stored."""
    replay: list[tuple[int, int]] | None = None
    """A stored order to process again after a restart, before anything new."""
    replaying: bool = False
    """The batch in hand is that stored order (already logged)."""
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
        self.profiles: dict[tuple[str, str], str] = {}
        """Reference profile (JSON) of each (model, version) that has one."""
        self.caught_up = threading.Event()
        """Set once the events that existed at start have been read (or reading failed)."""
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
            try:
                _, end = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, 0), timeout=10, cached=False
                )
            except KafkaException as exc:
                log.warning("model-versions: end offset unknown (%s); not waiting for it", exc)
                end = 0
            if end <= 0:
                self.caught_up.set()
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                if msg.offset() is not None and int(msg.offset() or 0) >= end - 1:
                    self.caught_up.set()
                try:
                    event = self._serde.decode(msg.value() or b"")
                except SerializationError as exc:
                    log.warning(
                        "model-versions: undecodable event at offset %s: %s", msg.offset(), exc
                    )
                    continue
                if event.get("reference_profile"):
                    self.profiles[(event["model_name"], str(event["version"]))] = event[
                        "reference_profile"
                    ]
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
            self.caught_up.set()
            consumer.close()

    def reference(self, model: str, version: str) -> Reference | None:
        """The reference of a version from its training profile, if it was registered with
        one (a profile that cannot be read is logged and ignored)."""
        raw = self.profiles.get((model, version))
        if raw is None:
            return None
        try:
            ref = Reference.from_profile(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("reference profile of %s v%s unreadable: %s", model, version, exc)
            return None
        return ref if ref.features else None


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
        self.t_by_model = settings.topic("predictions-by-model")
        self.t_dead = settings.topic("dead-letter")
        self.t_alerts = settings.topic("alerts")
        self.t_retrain = settings.topic("retrain-requests")
        self.inputs = [self.t_labeled]
        if settings.label_free_monitoring:
            self.inputs.append(self.t_by_model)
        super().__init__(settings, store, topics=list(self.inputs), **kwargs)
        self.serde = serde_for("LabeledExample")
        self.pred_serde = serde_for("PredictionEvent")
        self.alert_serde = serde_for("AlertEvent")
        self.retrain_serde = serde_for("RetrainRequest")
        self.codec = SignedStateCodec(
            settings.state_hmac_key.get_secret_value().encode(),
            formats={**STATE_FORMATS, SERIES_FORMAT: 1, LABEL_FREE_FORMAT: 1},
        )
        self.policy = settings.retrain_policy()
        self.quality: dict[tuple[str, str], dict[str, float | None]] = {}
        self._quality_at = 0.0
        self.watcher = ModelVersionWatcher(settings) if watch_versions else None
        if self.watcher is not None:
            self.watcher.start()
        self._started = time.monotonic()

    # ---- state ----------------------------------------------------------------------------
    def load(self, state: PartitionState, meta: dict[str, str]) -> None:
        engine_state = meta.get("alert_engine")
        engine = (
            AlertEngine.from_state(json.loads(engine_state), self.policy)
            if engine_state
            else AlertEngine(self.policy)
        )
        label_free = self.settings.label_free_monitoring
        ev = PartitionEvaluator(
            self.settings.model_settings,
            rules_for=self.settings.rules_for,
            engine=engine,
            label_free_for=self.settings.label_free_config if label_free else None,
            reference_for=self.watcher.reference if self.watcher is not None else None,
        )
        ev.quality = self.quality
        ev.last_sequence = {int(k): v for k, v in json.loads(meta.get("dedupe", "{}")).items()}
        ev.last_sighting = {
            int(k): v for k, v in json.loads(meta.get("dedupe_sightings", "{}")).items()
        }
        ev.duplicates_dropped = int(meta.get("duplicates_dropped", "0"))
        for fld, blob in self.store.hgetall(state.scope, "series").items():
            series = self.codec.decode(blob, SERIES_FORMAT)
            if not isinstance(series, Series):
                msg = f"{state.scope}: series {fld!r} is not a Series"
                raise TypeError(msg)
            ev.series[parse_series_field(fld)] = series
        for fld, blob in self.store.hgetall(state.scope, "label_free").items():
            mon = self.codec.decode(blob, LABEL_FREE_FORMAT)
            if not isinstance(mon, LabelFreeMonitor):
                msg = f"{state.scope}: label-free monitor {fld!r} is not a LabelFreeMonitor"
                raise TypeError(msg)
            mon.configure(self.settings.label_free_config(mon.model))
            ev.monitors[(mon.model, mon.version)] = mon
        for t in self.inputs:
            state.offsets.setdefault(t, 0)
        order = [(int(t), int(o)) for t, o in json.loads(meta.get("order") or "[]")]
        state.data = EvaluatorPartition(
            ev,
            time.monotonic(),
            dead_letters=int(meta.get("dead_letters", "0")),
            order=order,
            replay=list(order) or None,
        )
        if order:
            log.info(
                "evaluator: partition %d replays %d runs in their stored order",
                state.partition,
                len(order),
            )

    # ---- processing -----------------------------------------------------------------------
    def ready(self, state: PartitionState) -> list[Message] | None:
        # Wait (a bounded time) for the version history, so a version's reference comes from
        # its training profile whenever it has one, on the first run as on a replay.
        if self.watcher is not None and not self.watcher.caught_up.is_set():
            if time.monotonic() - self._started < WATCHER_WAIT_S:
                return None
            log.warning("evaluator: model-versions not read after %.0fs; going on", WATCHER_WAIT_S)
            self.watcher.caught_up.set()
        data: EvaluatorPartition = state.data
        if data.replay:
            msgs = take_planned(state, data.replay, self.inputs)
            if msgs is not None:
                data.replay, data.replaying = None, True
            return msgs
        return super().ready(state)

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
                if status == "champion" and version > 0:
                    engine.reinstate_version(model, str(version))
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

    def _log_order(self, state: PartitionState, messages: list[Message]) -> None:
        """Store the order of a new batch before acting on it, so that a restart processes
        the two input topics in the same interleaving (alerts depend on it)."""
        data: EvaluatorPartition = state.data
        if len(self.inputs) == 1:
            return  # one input partition: its order is fixed already
        runs = runs_of(messages, self.inputs)
        if data.order and runs and data.order[-1][0] == runs[0][0]:
            data.order[-1] = runs[0]
            runs = runs[1:]
        data.order.extend(runs)
        self.store.commit(
            state.scope,
            state.epoch,
            state.generation + 1,
            Ops().meta("order", json.dumps(data.order)),
        )
        state.generation += 1

    def process(self, state: PartitionState, messages: list[Message]) -> tuple[list[Output], Any]:
        data: EvaluatorPartition = state.data
        if data.replaying:
            data.replaying = False
        else:
            self._log_order(state, messages)
        self._refresh_quality()
        outputs: list[Output] = self._apply_version_events()
        now = time.monotonic()
        for m in messages:
            raw = m.value() or b""
            topic = topic_of(m)
            data.pending_offsets[topic] = offset_of(m) + 1
            try:
                if topic == self.t_by_model:
                    sighting = sighting_of(m)
                    if sighting is None:
                        msg = "forwarded prediction without streammon.source headers"
                        raise ContractError(msg)
                    record = self.pred_serde.decode(raw)
                    applied = data.evaluator.apply_prediction(record, *sighting)
                    if applied is not None:
                        outputs.extend(self._emission_output(e) for e in applied.emissions)
                    continue
                example = self.serde.decode(raw)
            except (SerializationError, ContractError) as exc:
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
        for mkey in sorted(ev.monitors_dirty):
            mon = ev.monitors[mkey]
            fld = series_field((*mkey, ""))
            ops.hset("label_free", fld, self.codec.encode(mon, LABEL_FREE_FORMAT))
            ops.hset("label_free_snapshots", fld, json.dumps(mon.snapshot(), separators=(",", ":")))
        offsets = {**state.offsets, **data.pending_offsets}
        for topic, off in offsets.items():
            ops.meta(f"offset:{topic}", off)
        ops.meta("order", "")
        ops.meta("dedupe", json.dumps({str(k): v for k, v in sorted(ev.last_sequence.items())}))
        ops.meta(
            "dedupe_sightings",
            json.dumps({str(k): v for k, v in sorted(ev.last_sighting.items())}),
        )
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
        state.offsets.update(offsets)
        data.dead_letters += data.pending_dead_letters
        data.pending_dead_letters = 0
        data.pending_offsets = {}
        data.order = []
        data.dirty = False
        data.last_checkpoint = time.monotonic()
        ev.dirty.clear()
        ev.monitors_dirty.clear()
        log.debug("evaluator: checkpoint partition %d at offsets %s", state.partition, offsets)

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
