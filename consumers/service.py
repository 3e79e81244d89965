"""The loop every partitioned service shares: consume a batch, call pure logic, write, checkpoint.

A subclass says which topics it reads, how to load a partition's state when it is assigned
(:meth:`PartitionedService.load`), and how to process the messages of one partition
(:meth:`PartitionedService.process`). This module handles the rest: the consumer group with
range assignment, seeking to the offsets stored with the state, signals (the first SIGTERM or
SIGINT finishes the batch in hand; a second exits at once), and producing with delivery
confirmed before any checkpoint (retried with back-off while Kafka is away).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from streaming.errors import FencedError
from streaming.kafka_io import (
    OutRecord,
    consumer_config,
    offset_of,
    partition_of,
    produce_acknowledged,
    producer_config,
    topic_of,
)
from streaming.settings import Settings
from streaming.state_store import StateStore

log = logging.getLogger(__name__)


Output = OutRecord
"""One record to produce before the checkpoint that covers it."""


@dataclass
class PartitionState:
    """What a service keeps in process for one owned partition (number ``p``)."""

    partition: int
    scope: str
    epoch: int
    generation: int
    offsets: dict[str, int]
    """Next offset to read, per physical topic."""
    queue: list[Message] = field(default_factory=list)
    """Fetched messages not processed yet, in the order the consumer returned them."""
    data: Any = None
    """The subclass's in-process state (e.g. river bundles)."""


def runs_of(messages: list[Message], topics: list[str]) -> list[tuple[int, int]]:
    """Compress a message order into runs of ``(index in topics, last offset)``."""
    runs: list[tuple[int, int]] = []
    index = {t: i for i, t in enumerate(topics)}
    for m in messages:
        t = index[topic_of(m)]
        if runs and runs[-1][0] == t:
            runs[-1] = (t, offset_of(m))
        else:
            runs.append((t, offset_of(m)))
    return runs


def take_planned(
    state: PartitionState, plan: list[tuple[int, int]], topics: list[str]
) -> list[Message] | None:
    """The messages of a stored order (runs of :func:`runs_of`) taken off ``state.queue`` in
    that order, once all of them have been fetched; None to wait for more."""
    last = dict.fromkeys(range(len(topics)), -1)
    for t, off in plan:
        last[t] = max(last[t], off)
    per_topic: dict[int, list[Message]] = {
        i: [m for m in state.queue if topic_of(m) == name] for i, name in enumerate(topics)
    }
    for t, queued in per_topic.items():
        if last[t] >= 0 and (not queued or offset_of(queued[-1]) < last[t]):
            return None  # wait until every planned message has been fetched
    taken: list[Message] = []
    pos = dict.fromkeys(per_topic, 0)
    for t, off in plan:
        q = per_topic[t]
        while pos[t] < len(q) and offset_of(q[pos[t]]) <= off:
            taken.append(q[pos[t]])
            pos[t] += 1
    taken_ids = {id(m) for m in taken}
    state.queue[:] = [m for m in state.queue if id(m) not in taken_ids]
    return taken


class GracefulStop:
    """First signal: stop after the batch in hand. Second signal: exit at once."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            log.warning("second signal: exiting now")
            raise SystemExit(1)
        log.info("signal %s: finishing the batch in hand, then stopping", signum)
        self.event.set()

    @property
    def stopping(self) -> bool:
        return self.event.is_set()


class PartitionedService:
    """Base of the joiner and the evaluator (see module docstring)."""

    name = "service"

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        topics: list[str],
        stop: GracefulStop | None = None,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.topics = topics
        self.stop = stop or GracefulStop()
        self.group_id = settings.consumer_group(self.name)
        self.consumer = consumer or Consumer(
            consumer_config(settings, self.group_id, **{"client.id": f"streammon-{self.name}"})
        )
        self.producer = producer or Producer(
            producer_config(settings, **{"client.id": f"streammon-{self.name}"})
        )
        self.partitions: dict[int, PartitionState] = {}
        self.batches = 0

    # ---- to implement ---------------------------------------------------------------------
    def scope(self, partition: int) -> str:
        return f"{self.name}:{partition}"

    def load(self, state: PartitionState, meta: dict[str, str]) -> None:
        """Fill ``state.data`` from the store after a claim (``meta`` is the stored metadata)."""

    def ready(self, state: PartitionState) -> list[Message] | None:
        """The messages to process now, taken off the queues, or None to wait."""
        msgs = state.queue[: self.settings.max_batch_size]
        del state.queue[: len(msgs)]
        return msgs or None

    def process(self, state: PartitionState, messages: list[Message]) -> tuple[list[Output], Any]:
        """Pure part of a batch: outputs to produce and a token passed to :meth:`checkpoint`."""
        raise NotImplementedError

    def checkpoint(self, state: PartitionState, token: Any, messages: list[Message]) -> None:
        """Write state and offsets atomically (after the outputs are delivered)."""
        raise NotImplementedError

    def idle(self) -> None:
        """Called after every poll (e.g. to checkpoint state that waited for its interval)."""

    def flush_partition(self, state: PartitionState) -> None:
        """Checkpoint whatever of ``state`` is not stored yet (on revoke and on stop)."""

    def flush_safely(self, state: PartitionState) -> None:
        try:
            self.flush_partition(state)
        except FencedError as exc:
            log.error("%s: %s; dropping partition %d", self.name, exc, state.partition)
            self.partitions.pop(state.partition, None)

    # ---- assignment -----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        by_partition: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in tps:
            by_partition[tp.partition].append(tp)
        assigned = []
        for p, group in sorted(by_partition.items()):
            scope = self.scope(p)
            epoch = self.store.claim(scope)
            meta = self.store.meta(scope)
            offsets = {}
            for tp in group:
                stored = meta.get(f"offset:{tp.topic}")
                tp.offset = int(stored) if stored is not None else OFFSET_BEGINNING
                offsets[tp.topic] = int(stored) if stored is not None else 0
                assigned.append(tp)
            state = PartitionState(p, scope, epoch, int(meta.get("generation", "0")), offsets)
            self.load(state, meta)
            self.partitions[p] = state
            log.info(
                "%s: assigned partition %d (epoch %d, generation %d, offsets %s)",
                self.name,
                p,
                epoch,
                state.generation,
                offsets,
            )
        consumer.assign(assigned)

    def _on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        for p in sorted({tp.partition for tp in tps}):
            state = self.partitions.get(p)
            if state is not None:
                self.flush_safely(state)
            if self.partitions.pop(p, None) is not None:
                log.info("%s: revoked partition %d", self.name, p)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        # Another member may own them already: drop without writing (the epoch would fence us).
        log.warning("%s: partitions lost: %s", self.name, sorted({tp.partition for tp in tps}))
        for p in {tp.partition for tp in tps}:
            self.partitions.pop(p, None)
        consumer.unassign()

    # ---- output ---------------------------------------------------------------------------
    def produce_all(self, outputs: list[Output]) -> None:
        """Produce and wait until every record is acknowledged (see
        :func:`streaming.kafka_io.produce_acknowledged`)."""
        produce_acknowledged(
            self.producer,
            outputs,
            what=f"{self.name}: {len(outputs)} records",
            max_backoff_s=self.settings.retry_max_backoff_s,
        )

    # ---- the loop -------------------------------------------------------------------------
    def run(
        self, *, max_idle_s: float | None = None, until: Callable[[], bool] | None = None
    ) -> int:
        """Consume until stopped; return the process exit code."""
        self.consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("%s: started (group %s, topics %s)", self.name, self.group_id, self.topics)
        last_activity = time.monotonic()
        try:
            while not self.stop.stopping:
                msgs = self.consumer.consume(
                    num_messages=self.settings.max_batch_size,
                    timeout=self.settings.poll_timeout_ms / 1000,
                )
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.error(
                                "%s: consumer error on %s[%s]: %s",
                                self.name,
                                topic_of(m),
                                partition_of(m),
                                err,
                            )
                        continue
                    state = self.partitions.get(partition_of(m))
                    if state is not None:
                        state.queue.append(m)
                worked = self._process_ready()
                if worked:
                    last_activity = time.monotonic()
                self.idle()
                if until is not None and until():
                    break
                if max_idle_s is not None and time.monotonic() - last_activity > max_idle_s:
                    break
        finally:
            self.close()
        return 0

    def _process_ready(self) -> bool:
        worked = False
        for p in list(self.partitions):
            state = self.partitions.get(p)
            if state is None:
                continue
            msgs = self.ready(state)
            if not msgs:
                continue
            worked = True
            try:
                outputs, token = self.process(state, msgs)
                self.produce_all(outputs)
                self.checkpoint(state, token, msgs)
            except FencedError as exc:
                log.error("%s: %s; dropping partition %d", self.name, exc, p)
                self.partitions.pop(p, None)
                continue
            self.batches += 1
            self._commit_for_monitoring(state)
        return worked

    def _commit_for_monitoring(self, state: PartitionState) -> None:
        """Mirror the stored offsets to Kafka so standard tools show the group's lag.

        The truth is the offset stored with the state; this commit is informational.
        """
        tps = [TopicPartition(t, state.partition, o) for t, o in state.offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=True)
        except Exception as exc:
            log.debug("%s: offset mirror commit failed: %s", self.name, exc)

    def close(self) -> None:
        log.info("%s: stopping", self.name)
        for state in list(self.partitions.values()):
            self.flush_safely(state)
        try:
            self.consumer.close()
        finally:
            self.producer.flush(30)
        log.info("%s: stopped after %d batches", self.name, self.batches)
