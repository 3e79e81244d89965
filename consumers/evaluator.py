"""The evaluator: ``labeled`` -> metrics and drift detectors per model/version/segment in Redis.

river objects stay in process. Every ``checkpoint_interval_ms`` (and on revoke and on stop) the
evaluator writes, in one atomic Lua call per partition, the signed state blob of every series
that changed, a JSON snapshot of it for ``streammon status``, the duplicate-suppression
sequence numbers, and the partition's offset. A crash replays from the last checkpoint; the
replay is deterministic (one partition, one order), so it rebuilds the same state.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from consumers.service import Output, PartitionedService, PartitionState
from streaming.errors import SerializationError
from streaming.evaluation import PartitionEvaluator, Series, parse_series_field, series_field
from streaming.kafka_io import dead_letter_headers, offset_of, partition_of, topic_of
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
    dead_letters: int = 0
    pending_dead_letters: int = 0


class Evaluator(PartitionedService):
    """Keeps metrics and detectors of the models whose ``labeled`` partitions it owns."""

    name = "evaluator"

    def __init__(self, settings: Settings, store: StateStore, **kwargs: Any) -> None:
        self.t_labeled = settings.topic("labeled")
        self.t_dead = settings.topic("dead-letter")
        super().__init__(settings, store, topics=[self.t_labeled], **kwargs)
        self.serde = serde_for("LabeledExample")
        self.codec = SignedStateCodec(
            settings.state_hmac_key.get_secret_value().encode(),
            formats={**STATE_FORMATS, SERIES_FORMAT: 1},
        )

    # ---- state ----------------------------------------------------------------------------
    def load(self, state: PartitionState, meta: dict[str, str]) -> None:
        ev = PartitionEvaluator(self.settings.model_settings)
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
    def process(self, state: PartitionState, messages: list[Message]) -> tuple[list[Output], Any]:
        data: EvaluatorPartition = state.data
        outputs: list[Output] = []
        for m in messages:
            raw = m.value() or b""
            try:
                example = self.serde.decode(raw)
            except SerializationError as exc:
                error = f"{type(exc).__name__}: LabeledExample: {exc}"
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
            fired = data.evaluator.apply(example)
            for key, alarm in fired or []:
                log.info(
                    "evaluator: drift alarm %s on %s/%s%s at position %d (%s)",
                    alarm["detector"],
                    key[0],
                    key[1],
                    f"/{key[2]}" if key[2] else "",
                    alarm["position"],
                    alarm["direction"],
                )
        if messages:
            data.pending_offset = offset_of(messages[-1]) + 1
        return outputs, None

    def checkpoint(self, state: PartitionState, token: Any, messages: list[Message]) -> None:
        data: EvaluatorPartition = state.data
        now = time.monotonic()
        if (now - data.last_checkpoint) * 1000 < self.settings.checkpoint_interval_ms:
            return
        self.flush_partition(state)

    def flush_partition(self, state: PartitionState) -> None:
        data: EvaluatorPartition = state.data
        if data.pending_offset is None:
            return
        ev = data.evaluator
        ops = Ops()
        for key in sorted(ev.dirty):
            series = ev.series[key]
            fld = series_field(key)
            ops.hset("series", fld, self.codec.encode(series, SERIES_FORMAT))
            ops.hset("snapshots", fld, json.dumps(series.snapshot(), separators=(",", ":")))
        ops.meta(f"offset:{self.t_labeled}", data.pending_offset)
        ops.meta("dedupe", json.dumps({str(k): v for k, v in sorted(ev.last_sequence.items())}))
        ops.meta("dead_letters", data.dead_letters + data.pending_dead_letters)
        ops.meta("duplicates_dropped", ev.duplicates_dropped)
        self.store.commit(state.scope, state.epoch, state.generation + 1, ops)
        state.generation += 1
        state.offsets[self.t_labeled] = data.pending_offset
        data.dead_letters += data.pending_dead_letters
        data.pending_dead_letters = 0
        data.pending_offset = None
        data.last_checkpoint = time.monotonic()
        ev.dirty.clear()
        log.debug(
            "evaluator: checkpoint partition %d at offset %d",
            state.partition,
            state.offsets[self.t_labeled],
        )

    def idle(self) -> None:
        now = time.monotonic()
        for state in list(self.partitions.values()):
            data: EvaluatorPartition = state.data
            if (
                data.pending_offset is not None
                and (now - data.last_checkpoint) * 1000 >= self.settings.checkpoint_interval_ms
            ):
                self.flush_safely(state)
