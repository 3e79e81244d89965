"""The joiner: ``predictions`` + ``outcomes`` (partition p of both) -> ``labeled``.

Exactly-once effect, per partition p:

1. **Intent.** Before producing anything for a batch, the joiner stores the batch's message
   order (runs of ``(topic, last offset)``) with its epoch check. A replay after a crash finds
   the intent and processes exactly the same messages in exactly the same order, so it
   re-produces byte-identical records with the same sequence numbers.
2. **Produce** the joined examples (key: model name, ``source_partition`` +
   ``source_sequence`` for duplicate suppression downstream) and dead letters; wait for acks.
3. **Checkpoint** in one atomic Lua call: entry changes, expiry indexes, counters, offsets,
   watermarks, output sequence, and clearing the intent.

A crash before 1 replays freely; between 1 and 3 replays the intent; after 3 nothing is
repeated. A zombie owner is fenced by the epoch at 1 and at 3.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from consumers.service import Output, PartitionedService, PartitionState, runs_of, take_planned
from streaming.errors import ContractError, SerializationError
from streaming.join import (
    EXPIRY_BY_OUTCOMES,
    EXPIRY_BY_PREDICTIONS,
    NO_WATERMARK,
    Entry,
    JoinBatch,
    JoinResult,
    check_outcome,
    check_prediction,
)
from streaming.kafka_io import dead_letter_headers, offset_of, sighting_headers, topic_of
from streaming.serde import serde_for
from streaming.settings import Settings
from streaming.state_store import Ops, StateStore

log = logging.getLogger(__name__)

COUNTER_SEP = "\x1f"


def counter_field(model: str, version: str, name: str) -> str:
    return COUNTER_SEP.join((model, version, name))


@dataclass
class JoinerPartition:
    watermark_predictions: int
    watermark_outcomes: int
    sequence: int
    intent: list[tuple[int, int]] | None


class Joiner(PartitionedService):
    """Joins co-partitioned predictions and outcomes by prediction id."""

    name = "joiner"

    def __init__(self, settings: Settings, store: StateStore, **kwargs: Any) -> None:
        self.t_pred = settings.topic("predictions")
        self.t_out = settings.topic("outcomes")
        self.t_labeled = settings.topic("labeled")
        self.t_by_model = settings.topic("predictions-by-model")
        self.t_dead = settings.topic("dead-letter")
        super().__init__(settings, store, topics=[self.t_pred, self.t_out], **kwargs)
        self.pred_serde = serde_for("PredictionEvent")
        self._recent: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        """Decoded predictions by their bytes, so a join in a later batch does not decode the
        stored prediction again (a pure speed-up, bounded by ``RECENT_PREDICTIONS``)."""
        self.out_serde = serde_for("OutcomeEvent")
        self.labeled_serde = serde_for("LabeledExample")

    # ---- state ----------------------------------------------------------------------------
    def load(self, state: PartitionState, meta: dict[str, str]) -> None:
        intent_raw = meta.get("intent") or ""
        intent = [(int(t), int(o)) for t, o in json.loads(intent_raw)] if intent_raw else None
        state.data = JoinerPartition(
            int(meta.get("watermark_predictions", NO_WATERMARK)),
            int(meta.get("watermark_outcomes", NO_WATERMARK)),
            int(meta.get("sequence", "0")),
            intent,
        )
        for t in (self.t_pred, self.t_out):
            state.offsets.setdefault(t, 0)
        if intent:
            log.info(
                "joiner: partition %d replays an unfinished batch (%d runs)",
                state.partition,
                len(intent),
            )

    # ---- batching -------------------------------------------------------------------------
    def ready(self, state: PartitionState) -> list[Message] | None:
        data: JoinerPartition = state.data
        if data.intent:
            return self._take_planned(state, data.intent)
        return super().ready(state)

    def _take_planned(
        self, state: PartitionState, plan: list[tuple[int, int]]
    ) -> list[Message] | None:
        """The messages of a stored intent, in its order, once all of them have arrived."""
        return take_planned(state, plan, [self.t_pred, self.t_out])

    # ---- processing -----------------------------------------------------------------------
    def process(self, state: PartitionState, messages: list[Message]) -> tuple[list[Output], Any]:
        data: JoinerPartition = state.data
        if not data.intent:
            plan = runs_of(messages, [self.t_pred, self.t_out])
            self.store.commit(
                state.scope,
                state.epoch,
                state.generation + 1,
                Ops().meta("intent", json.dumps(plan)),
            )
            state.generation += 1
        decoded = self._decode(messages)
        ids = [pid for pid, _, _ in decoded if pid]
        wm_p, wm_o = data.watermark_predictions, data.watermark_outcomes
        for _, kind, rec in decoded:
            if isinstance(rec, dict):
                if kind == 0:
                    wm_p = max(wm_p, int(rec["timestamp"]))
                else:
                    wm_o = max(wm_o, int(rec["timestamp"]))
        candidates = self.store.zrange_upto(state.scope, EXPIRY_BY_OUTCOMES, wm_o)
        candidates += self.store.zrange_upto(state.scope, EXPIRY_BY_PREDICTIONS, wm_p)
        wanted = list(dict.fromkeys(ids + candidates))
        blobs = self.store.hmget(state.scope, "entries", wanted)
        entries = {
            pid: (Entry.decode(b) if b is not None else None)
            for pid, b in zip(wanted, blobs, strict=True)
        }
        batch = JoinBatch(
            self.settings.join_max_label_delay_ms,
            self.settings.join_grace_ms,
            entries,
            data.watermark_predictions,
            data.watermark_outcomes,
            decode_prediction=self._decode_stored_prediction,
            decode_outcome=self.out_serde.decode,
            track_sightings=self.settings.label_free_monitoring,
        )
        for (pid, kind, rec), msg in zip(decoded, messages, strict=True):
            topic = "predictions" if kind == 0 else "outcomes"
            raw = msg.value() or b""
            if isinstance(rec, str):
                batch.add_dead_letter(topic, offset_of(msg), raw, rec)
            elif kind == 0:
                batch.add_prediction(pid, rec, raw, offset_of(msg))
            else:
                batch.add_outcome(pid, rec, raw, offset_of(msg))
        result = batch.finish(state.partition, data.sequence + 1)
        # First sightings come first: their sequence numbers precede the batch's joins.
        outputs = [
            Output(
                self.t_by_model,
                s.raw,
                s.key.encode(),
                sighting_headers(state.partition, s.sequence),
                timestamp_ms=_clamp_time(s.timestamp_ms),
            )
            for s in result.sightings
        ]
        # The record timestamp is the join's event time, so the trainer can seek `labeled`
        # by event time with offsets_for_times.
        outputs += [
            Output(
                self.t_labeled,
                self.labeled_serde.encode(ex.record, trusted=True),
                ex.key.encode(),
                timestamp_ms=_record_time(ex.record),
            )
            for ex in result.joined
        ]
        for dl in result.dead_letters:
            src = self.t_pred if dl.topic == "predictions" else self.t_out
            outputs.append(
                Output(
                    self.t_dead,
                    dl.raw,
                    None,
                    dead_letter_headers(src, state.partition, dl.offset, dl.error),
                )
            )
        if result.dead_letters:
            log.warning(
                "joiner: partition %d: %d messages dead-lettered (first: %s)",
                state.partition,
                len(result.dead_letters),
                result.dead_letters[0].error,
            )
        return outputs, result

    def _remember(self, raw: bytes, record: dict[str, Any]) -> None:
        self._recent[raw] = record
        if len(self._recent) > RECENT_PREDICTIONS:
            self._recent.popitem(last=False)

    def _decode_stored_prediction(self, raw: bytes) -> dict[str, Any]:
        record = self._recent.pop(raw, None)
        return record if record is not None else self.pred_serde.decode(raw)

    def _decode(self, messages: list[Message]) -> list[tuple[str, int, dict[str, Any] | str]]:
        out: list[tuple[str, int, dict[str, Any] | str]] = []
        for m in messages:
            kind = 0 if topic_of(m) == self.t_pred else 1
            raw = m.value()
            try:
                if raw is None:
                    msg = "message has no value (tombstone)"
                    raise ContractError(msg)
                if kind == 0:
                    rec = self.pred_serde.decode(raw)
                    self._remember(raw, rec)
                    check_prediction(rec)
                else:
                    rec = self.out_serde.decode(raw)
                    check_outcome(rec)
                out.append((rec["prediction_id"], kind, rec))
            except (SerializationError, ContractError) as exc:
                what = "PredictionEvent" if kind == 0 else "OutcomeEvent"
                text = str(exc) if str(exc).startswith(what) else f"{what}: {exc}"
                out.append(("", kind, f"{type(exc).__name__}: {text}"))
        return out

    def checkpoint(self, state: PartitionState, token: Any, messages: list[Message]) -> None:
        result: JoinResult = token
        data: JoinerPartition = state.data
        ops = Ops()
        grace, delay = self.settings.join_grace_ms, self.settings.join_max_label_delay_ms
        for pid, entry in result.puts.items():
            ops.hset("entries", pid, entry.encode())
            which, when = entry.deadline(delay, grace)
            other = EXPIRY_BY_PREDICTIONS if which == EXPIRY_BY_OUTCOMES else EXPIRY_BY_OUTCOMES
            ops.zadd(which, pid, when).zrem(other, pid)
        for pid in result.deletes:
            ops.hdel("entries", pid).zrem(EXPIRY_BY_OUTCOMES, pid).zrem(EXPIRY_BY_PREDICTIONS, pid)
        for (model, version, name), n in sorted(result.counters.items()):
            ops.hincrby("counts", counter_field(model, version, name), n)
        for m in messages:
            state.offsets[topic_of(m)] = max(state.offsets.get(topic_of(m), 0), offset_of(m) + 1)
        for topic, off in state.offsets.items():
            ops.meta(f"offset:{topic}", off)
        sequence = data.sequence + len(result.sightings) + len(result.joined)
        ops.meta("watermark_predictions", result.watermark_predictions)
        ops.meta("watermark_outcomes", result.watermark_outcomes)
        ops.meta("sequence", sequence).meta("intent", "")
        self.store.commit(state.scope, state.epoch, state.generation + 1, ops)
        state.generation += 1
        data.sequence = sequence
        data.watermark_predictions = result.watermark_predictions
        data.watermark_outcomes = result.watermark_outcomes
        data.intent = None


MAX_FUTURE_MS = 50 * 60 * 1000
RECENT_PREDICTIONS = 20_000


def _record_time(record: dict[str, Any]) -> int:
    """Kafka timestamp of a joined example: its event time, clamped to at most 50 minutes
    ahead of this host's clock (brokers refuse timestamps more than
    ``message.timestamp.after.max.ms``, one hour by default, in the future)."""
    event_time = max(int(record["prediction_timestamp"]), int(record["outcome_timestamp"]))
    return _clamp_time(event_time)


def _clamp_time(event_time: int) -> int:
    return max(1, min(event_time, int(time.time() * 1000) + MAX_FUTURE_MS))
