"""Join semantics: predictions meet their delayed outcomes, in any arrival order, in event time.

Pure logic. One :class:`JoinBatch` processes the messages of one co-partitioned partition pair
(``predictions`` p and ``outcomes`` p) in the order given, against entries prefetched from the
state store, and returns everything the caller must write: joined examples, dead letters,
entry changes and counters. It never talks to Kafka or Redis.

Rules
-----
* An entry per prediction id holds the prediction, or the outcome that came first, or (after
  the join) a small tombstone that recognises later duplicates.
* An outcome joins its prediction when ``outcome.ts - prediction.ts <= max_label_delay``.
* A pending prediction expires, counted **unlabeled**, once the *outcomes* stream of the
  partition has reached ``prediction.ts + max_label_delay + grace`` in event time: that is when
  the label source has moved past any outcome that could still join it.
* A pending outcome expires, counted **orphaned**, once the *predictions* stream has reached
  ``outcome.ts + grace`` (its prediction cannot be younger than the outcome).
* A tombstone lives as long as its prediction's window, so duplicates inside the window are
  counted as duplicates, never twice as joins.
* An outcome whose label type does not match the prediction's (a string against a number) is a
  contract error: the outcome goes to the dead-letter topic and the prediction keeps waiting.

Expiry is applied at the end of each batch with the batch's final watermarks. The caller makes
replays deterministic by recording the batch's message order before producing (see
``consumers/joiner.py``), so batch boundaries never change results.

>>> batch = JoinBatch(max_label_delay_ms=1000, grace_ms=0, entries={})
>>> batch.add_prediction("p1", {"prediction_id": "p1", "model_name": "m", "model_version": "1",
...     "timestamp": 0, "prediction": 1, "features": {}, "score": 0.9, "probabilities": None,
...     "tags": {}}, b"raw-p1", offset=0)
>>> batch.add_outcome("p1", {"prediction_id": "p1", "timestamp": 250, "label": 1,
...     "model_name": None}, b"raw-o1", offset=0)
>>> result = batch.finish(partition=0, first_sequence=1)
>>> [(ex.record["prediction_id"], ex.record["label_delay_ms"]) for ex in result.joined]
[('p1', 250)]
>>> dict(result.counters)
{('m', '1', 'predictions'): 1, ('m', '1', 'joined'): 1}
"""

from __future__ import annotations

import heapq
import json
import math
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streaming.errors import ContractError

UNKNOWN_MODEL = "_unknown"
"""Model name counters use when an event carries none (an orphaned outcome without a hint)."""

NO_WATERMARK = -(2**62)

PENDING_PREDICTION = "P"
PENDING_OUTCOME = "O"
JOINED = "J"

EXPIRY_BY_OUTCOMES = "p"  # zset of entries whose expiry follows the outcomes stream
EXPIRY_BY_PREDICTIONS = "o"  # zset of entries whose expiry follows the predictions stream


@dataclass
class Entry:
    """The join state of one prediction id."""

    status: str
    model: str
    version: str
    ts: int
    """Event time of the prediction (``P``, ``J``) or of the outcome (``O``)."""
    prediction: bytes = b""
    """Original bytes of the prediction message (``P`` only)."""
    outcome: bytes = b""
    """Original bytes of the first outcome message (``O`` only)."""
    offset: int = -1
    """Source offset of the stored message (for dead letters)."""
    duplicates: int = 0
    """Duplicate outcomes seen while waiting for the prediction (``O`` only)."""

    def deadline(self, max_label_delay_ms: int, grace_ms: int) -> tuple[str, int]:
        """Which watermark expires this entry, and at what event time."""
        if self.status == PENDING_OUTCOME:
            return EXPIRY_BY_PREDICTIONS, self.ts + grace_ms
        return EXPIRY_BY_OUTCOMES, self.ts + max_label_delay_ms + grace_ms

    # Compact binary form: a JSON header line (small) + the raw message bytes.
    def encode(self) -> bytes:
        head = json.dumps(
            [
                self.status,
                self.model,
                self.version,
                self.ts,
                self.offset,
                self.duplicates,
                len(self.prediction),
            ],
            separators=(",", ":"),
        ).encode()
        return struct.pack(">I", len(head)) + head + self.prediction + self.outcome

    @classmethod
    def decode(cls, blob: bytes) -> Entry:
        (n,) = struct.unpack_from(">I", blob, 0)
        status, model, version, ts, offset, dups, plen = json.loads(blob[4 : 4 + n])
        body = blob[4 + n :]
        return cls(status, model, version, ts, body[:plen], body[plen:], offset, dups)


@dataclass(frozen=True)
class JoinedExample:
    """One ``LabeledExample`` record to produce, keyed by model name."""

    key: str
    record: dict[str, Any]


@dataclass
class Sighting:
    """The first sighting of a prediction, forwarded to ``predictions-by-model`` (key: model
    name) for label-free monitoring: the original bytes and a sequence number from the same
    counter as the joined examples."""

    key: str
    raw: bytes
    timestamp_ms: int
    sequence: int = 0


@dataclass(frozen=True)
class DeadLetter:
    """A message that breaks the contract: its original bytes and why."""

    topic: str  # "predictions" or "outcomes" (logical)
    offset: int
    raw: bytes
    error: str


@dataclass
class JoinResult:
    joined: list[JoinedExample]
    dead_letters: list[DeadLetter]
    puts: dict[str, Entry]
    deletes: set[str]
    counters: Counter[tuple[str, str, str]]
    watermark_predictions: int
    watermark_outcomes: int
    sightings: list[Sighting] = field(default_factory=list)
    """First sightings of predictions (numbered before the joined examples of the batch)."""


def label_type(value: object) -> str:
    """``number`` for int/float, ``string`` for str: the contract's two label families."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def check_prediction(record: Mapping[str, Any]) -> None:
    """Raise :class:`ContractError` when a decoded prediction breaks the contract."""
    if not record.get("prediction_id"):
        msg = "prediction_id is empty"
        raise ContractError(msg)
    if not record.get("model_name"):
        msg = "model_name is empty"
        raise ContractError(msg)
    pred = record.get("prediction")
    if isinstance(pred, float) and not math.isfinite(pred):
        msg = f"prediction is {pred}"
        raise ContractError(msg)
    score = record.get("score")
    if score is not None and not (math.isfinite(score) and 0.0 <= score <= 1.0):
        msg = f"score {score} is not a probability in [0, 1]"
        raise ContractError(msg)


def check_outcome(record: Mapping[str, Any]) -> None:
    """Raise :class:`ContractError` when a decoded outcome breaks the contract."""
    if not record.get("prediction_id"):
        msg = "prediction_id is empty"
        raise ContractError(msg)
    label = record.get("label")
    if label is None:
        msg = "label is missing"
        raise ContractError(msg)
    if isinstance(label, float) and not math.isfinite(label):
        msg = f"label is {label}"
        raise ContractError(msg)


@dataclass
class JoinBatch:
    """Join state changes for one batch of one partition pair (see module docstring)."""

    max_label_delay_ms: int
    grace_ms: int
    entries: dict[str, Entry | None]
    """Prefetched entries: every id in the batch and every entry that may expire in it."""
    watermark_predictions: int = NO_WATERMARK
    watermark_outcomes: int = NO_WATERMARK
    decode_prediction: Any = None
    """``bytes -> dict`` used to rebuild a stored prediction at join time."""
    decode_outcome: Any = None
    track_sightings: bool = False
    """Collect the first sighting of every prediction (see :class:`Sighting`)."""

    joined: list[JoinedExample] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    sightings: list[Sighting] = field(default_factory=list)
    _dirty: set[str] = field(default_factory=set)
    _decoded: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- inputs ------------------------------------------------------------------------------
    def add_prediction(self, pid: str, record: dict[str, Any], raw: bytes, offset: int) -> None:
        """A valid, decoded prediction message (check it with :func:`check_prediction`)."""
        ts = int(record["timestamp"])
        self.watermark_predictions = max(self.watermark_predictions, ts)
        model, version = record["model_name"], record["model_version"]
        entry = self.entries.get(pid)
        if entry is None:
            self._count(model, version, "predictions")
            self._sighted(model, raw, ts)
            self._set(pid, Entry(PENDING_PREDICTION, model, version, ts, raw, b"", offset))
            self._decoded[pid] = record
            return
        if entry.status in (PENDING_PREDICTION, JOINED):
            self._count(model, version, "duplicate_predictions")
            return
        # an outcome was waiting for this prediction
        self._count(model, version, "predictions")
        self._sighted(model, raw, ts)
        if entry.duplicates:
            self._count(model, version, "duplicate_outcomes", entry.duplicates)
        outcome = self._decode_outcome(entry.outcome)
        self._try_join(pid, record, raw, offset, outcome, entry.outcome, entry.offset)

    def add_outcome(self, pid: str, record: dict[str, Any], raw: bytes, offset: int) -> None:
        """A valid, decoded outcome message (check it with :func:`check_outcome`)."""
        ts = int(record["timestamp"])
        self.watermark_outcomes = max(self.watermark_outcomes, ts)
        entry = self.entries.get(pid)
        if entry is None:
            hint = record.get("model_name") or UNKNOWN_MODEL
            self._set(pid, Entry(PENDING_OUTCOME, hint, "", ts, b"", raw, offset))
            return
        if entry.status == PENDING_OUTCOME:
            entry.duplicates += 1
            self._dirty.add(pid)
            return
        if entry.status == JOINED:
            self._count(entry.model, entry.version, "duplicate_outcomes")
            return
        prediction = self._decoded.get(pid) or self._decode_prediction(entry.prediction)
        self._try_join(pid, prediction, entry.prediction, entry.offset, record, raw, offset)

    def add_dead_letter(
        self,
        topic: str,
        offset: int,
        raw: bytes,
        error: str,
        model: str = UNKNOWN_MODEL,
        version: str = "",
    ) -> None:
        """An undecodable or invalid message: routed to the dead-letter topic and counted."""
        self.dead_letters.append(DeadLetter(topic, offset, raw, error))
        self._count(model, version, f"dead_letter_{topic}")

    # -- outputs -----------------------------------------------------------------------------
    def finish(self, partition: int, first_sequence: int) -> JoinResult:
        """Expire what the final watermarks allow; number the joined examples from
        ``first_sequence`` (the caller's running output sequence of this partition)."""
        heap: list[tuple[int, str]] = []
        for pid, entry in self.entries.items():
            if entry is None:
                continue
            which, when = entry.deadline(self.max_label_delay_ms, self.grace_ms)
            mark = (
                self.watermark_outcomes
                if which == EXPIRY_BY_OUTCOMES
                else self.watermark_predictions
            )
            if when < mark:
                heapq.heappush(heap, (when, pid))
        while heap:
            _, pid = heapq.heappop(heap)
            entry = self.entries[pid]
            assert entry is not None
            if entry.status == PENDING_PREDICTION:
                self._count(entry.model, entry.version, "unlabeled")
            elif entry.status == PENDING_OUTCOME:
                self._count(entry.model, entry.version, "orphaned")
                if entry.duplicates:
                    self._count(entry.model, entry.version, "duplicate_outcomes", entry.duplicates)
            self.entries[pid] = None
            self._dirty.add(pid)
        for i, sighting in enumerate(self.sightings):
            sighting.sequence = first_sequence + i
        first_joined = first_sequence + len(self.sightings)
        for i, ex in enumerate(self.joined):
            ex.record["source_partition"] = partition
            ex.record["source_sequence"] = first_joined + i
        puts = {pid: e for pid in self._dirty if (e := self.entries.get(pid)) is not None}
        deletes = {pid for pid in self._dirty if self.entries.get(pid) is None}
        return JoinResult(
            self.joined,
            self.dead_letters,
            puts,
            deletes,
            self.counters,
            self.watermark_predictions,
            self.watermark_outcomes,
            self.sightings,
        )

    # -- internals ---------------------------------------------------------------------------
    def _try_join(
        self,
        pid: str,
        prediction: dict[str, Any],
        pred_raw: bytes,
        pred_offset: int,
        outcome: dict[str, Any],
        out_raw: bytes,
        out_offset: int,
    ) -> None:
        model, version = prediction["model_name"], prediction["model_version"]
        p_ts, o_ts = int(prediction["timestamp"]), int(outcome["timestamp"])
        pred_type, lab_type = label_type(prediction["prediction"]), label_type(outcome["label"])
        if pred_type != lab_type:
            error = (
                f"label {outcome['label']!r} ({lab_type}) does not match the type of "
                f"prediction {prediction['prediction']!r} ({pred_type}) for prediction_id {pid}"
            )
            self.add_dead_letter("outcomes", out_offset, out_raw, error, model, version)
            self._set(
                pid, Entry(PENDING_PREDICTION, model, version, p_ts, pred_raw, b"", pred_offset)
            )
            self._decoded[pid] = prediction
            return
        if o_ts - p_ts > self.max_label_delay_ms:
            # too late to count: the outcome is an orphan, the prediction waits (and expires)
            self._count(model, version, "late_outcomes")
            self._set(
                pid, Entry(PENDING_PREDICTION, model, version, p_ts, pred_raw, b"", pred_offset)
            )
            self._decoded[pid] = prediction
            return
        self._count(model, version, "joined")
        self._set(pid, Entry(JOINED, model, version, p_ts))
        self.joined.append(
            JoinedExample(
                key=model,
                record={
                    "prediction_id": pid,
                    "model_name": model,
                    "model_version": version,
                    "prediction_timestamp": p_ts,
                    "outcome_timestamp": o_ts,
                    "label_delay_ms": o_ts - p_ts,
                    "features": prediction.get("features") or {},
                    "prediction": prediction["prediction"],
                    "label": outcome["label"],
                    "score": prediction.get("score"),
                    "probabilities": prediction.get("probabilities"),
                    "tags": prediction.get("tags") or {},
                    "source_partition": -1,
                    "source_sequence": -1,
                },
            )
        )

    def _set(self, pid: str, entry: Entry) -> None:
        self.entries[pid] = entry
        self._dirty.add(pid)

    def _sighted(self, model: str, raw: bytes, ts: int) -> None:
        if self.track_sightings:
            self.sightings.append(Sighting(model, raw, ts))

    def _count(self, model: str, version: str, name: str, n: int = 1) -> None:
        self.counters[(model, version, name)] += n

    def _decode_prediction(self, raw: bytes) -> dict[str, Any]:
        if self.decode_prediction is None:
            msg = "JoinBatch needs decode_prediction to rebuild stored predictions"
            raise ContractError(msg)
        result: dict[str, Any] = self.decode_prediction(raw)
        return result

    def _decode_outcome(self, raw: bytes) -> dict[str, Any]:
        if self.decode_outcome is None:
            msg = "JoinBatch needs decode_outcome to rebuild stored outcomes"
            raise ContractError(msg)
        result: dict[str, Any] = self.decode_outcome(raw)
        return result
