"""Event streams for integration tests and benchmarks, written the way a foreign producer would.

Nothing here uses streammon's own serde or Kafka adapter to *write*:

* record bodies are encoded by the official Apache ``avro`` package
  (``avro.io.DatumWriter`` + ``BinaryEncoder``, schemas parsed with ``avro.schema.parse``);
* messages are framed as Avro single-object encoding, ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form + body. The canonical form
  comes from fastavro (the Apache Python library 1.12 keeps ``{"type": "long"}`` for
  logical types, which is not canonical) and the CRC-64-AVRO is computed here;
* events are produced with a plain ``confluent_kafka.Producer``, key = ``prediction_id``,
  default partitioner (the same for both topics, so they are co-partitioned).

:func:`generate_monitor_stream` builds a stream of predictions and outcomes with the untidy
parts of production (outcomes before their predictions, duplicates, outcomes that never
arrive, orphans, undecodable and invalid messages) and records, for every event, what the
monitor must make of it: :class:`Expectation` holds the exact counts and the joined pairs,
from which the tests compute the expected metrics with scikit-learn.

Event times are chosen so that **nothing expires before the flush**: the whole stream spans
less event time than ``max_label_delay + grace``, so results cannot depend on how the joiner
interleaves the two topics or cuts batches. :meth:`GeneratedStream.flush_events`, produced
once everything else is consumed, moves both watermarks of every partition far ahead so that
every pending entry expires and ``unlabeled``/``orphaned`` become exact.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro.schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"

FLUSH_MODEL = "flush"
"""Model name of the flush predictions (one per partition, they stay pending)."""

# ---- CRC-64-AVRO -----------------------------------------------------------------------------

_EMPTY64 = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint of the Avro specification ("CRC-64-AVRO")."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def schema_json(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))
    return result


def canonical_form(name: str) -> str:
    """Parsing Canonical Form of ``schemas/<name>.avsc`` (fastavro's implementation)."""
    result: str = fastavro.schema.to_parsing_canonical_form(schema_json(name))
    return result


def single_object_fingerprint(name: str) -> bytes:
    """8-byte little-endian CRC-64-AVRO of the canonical form, as the header carries it."""
    return crc64_avro(canonical_form(name).encode()).to_bytes(8, "little")


# ---- the Apache avro writer ------------------------------------------------------------------

_BRANCH_TYPES: Mapping[type, tuple[str, ...]] = {
    type(None): ("null",),
    bool: ("boolean",),
    int: ("long", "int"),
    float: ("double", "float"),
    str: ("string",),
    bytes: ("bytes",),
    dict: ("map", "record"),
}


class _ExactBranchWriter(avro.io.DatumWriter):  # type: ignore[misc]
    """Apache's DatumWriter with Java's union resolution (by the datum's type).

    The Apache Python writer takes the *last* union branch that validates, and its ``double``
    accepts ints, so ``1`` in ``["long", "double", "string"]`` would be written as ``1.0``.
    Java picks the branch of the datum's own type; so does this writer. The encoding of every
    value is still Apache's; only the first record of each writer is validated up front (the
    validation costs as much as the encoding, and ``write_data`` refuses wrong types anyway).
    """

    def __init__(self, schema: Any) -> None:
        super().__init__(schema)
        self._validated = False

    def write(self, datum: object, encoder: Any) -> None:
        if not self._validated:
            avro.io.validate(self.writers_schema, datum, raise_on_error=True)
            self._validated = True
        self.write_data(self.writers_schema, datum, encoder)

    def write_union(self, writers_schema: Any, datum: object, encoder: Any) -> None:
        wanted = _BRANCH_TYPES.get(type(datum), ())
        if isinstance(datum, dt.datetime):
            wanted = ("long",)
        for i, branch in enumerate(writers_schema.schemas):
            if branch.type in wanted:
                encoder.write_long(i)
                self.write_data(branch, datum, encoder)
                return
        super().write_union(writers_schema, datum, encoder)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ApacheAvroWriter:
    """Single-object messages whose body the Apache ``avro`` library writes."""

    def __init__(self) -> None:
        self._schemas: dict[str, Any] = {}
        self._writers: dict[str, _ExactBranchWriter] = {}
        self._headers: dict[str, bytes] = {}
        self._timestamps: dict[str, tuple[str, ...]] = {}

    def _load(self, name: str) -> None:
        if name in self._schemas:
            return
        raw = schema_json(name)
        schema = avro.schema.parse(json.dumps(raw))
        self._schemas[name] = schema
        self._writers[name] = _ExactBranchWriter(schema)
        self._headers[name] = SINGLE_OBJECT_MAGIC + single_object_fingerprint(name)
        self._timestamps[name] = tuple(
            f["name"]
            for f in raw["fields"]
            if isinstance(f["type"], dict) and f["type"].get("logicalType") == "timestamp-millis"
        )

    def body(self, name: str, record: Mapping[str, Any]) -> bytes:
        """The schemaless Avro body; int millis in timestamp fields become datetimes."""
        self._load(name)
        datum = dict(record)
        for fld in self._timestamps[name]:
            value = datum.get(fld)
            if isinstance(value, int):
                datum[fld] = _EPOCH + dt.timedelta(milliseconds=value)
        buf = io.BytesIO()
        self._writers[name].write(datum, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    def header(self, name: str) -> bytes:
        self._load(name)
        return self._headers[name]

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        return self.header(name) + self.body(name, record)


# ---- the generated stream --------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One message to produce. ``topic`` is logical (``predictions`` or ``outcomes``)."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    """Explicit partition (flush events only); None = default partitioner on the key."""
    dead_letter: str | None = None
    """For a message that must be dead-lettered: a substring of the expected error."""


@dataclass(frozen=True)
class Pair:
    """One example the joiner must produce: the prediction and the label that joins it."""

    prediction_id: str
    model: str
    version: str
    prediction: Any
    label: Any
    score: float | None
    tags: Mapping[str, str]


COUNT_NAMES = (
    "predictions",
    "joined",
    "unlabeled",
    "orphaned",
    "duplicate_predictions",
    "duplicate_outcomes",
    "late_outcomes",
    "dead_letter_predictions",
    "dead_letter_outcomes",
)


@dataclass
class Expectation:
    """What the monitor must report once every event (and the flush) is consumed."""

    counts: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    """Per (model, version); version ``""`` holds model-level counts (hinted orphans)."""
    pairs: list[Pair] = field(default_factory=list)
    orphaned_without_model: int = 0
    duplicate_outcomes_without_model: int = 0
    dead_letter: Counter[str] = field(default_factory=Counter)
    """Dead letters by logical source topic (``predictions``, ``outcomes``)."""
    orphan_duplicates: Counter[str] = field(default_factory=Counter)
    """Duplicates of hinted orphans, per model: counted only when the orphan expires."""
    expire_mid_stream: bool = False
    """Entries expire while the stream flows: before the flush, ``unlabeled``, ``orphaned``
    and ``pending`` are unknown (the counts leave them out)."""

    def count(self, model: str, version: str, name: str, n: int = 1) -> None:
        self.counts.setdefault((model, version), Counter())[name] += n

    def version_counts(self, model: str, version: str, *, flushed: bool = True) -> dict[str, int]:
        """The ``counts`` of one version in ``streammon status --json``."""
        c = self.counts.get((model, version), Counter())
        return _complete(c, flushed, 0, self.expire_mid_stream)

    def model_counts(self, model: str, *, flushed: bool = True) -> dict[str, int]:
        """The ``counts`` of one model (every version, plus model-level orphans)."""
        total: Counter[str] = Counter()
        for (m, _), c in self.counts.items():
            if m == model:
                total.update(c)
        return _complete(total, flushed, self.orphan_duplicates[model], self.expire_mid_stream)

    def models(self) -> list[str]:
        return sorted({m for m, _ in self.counts})

    def versions(self, model: str) -> list[str]:
        return sorted({v for m, v in self.counts if m == model and v})

    def select(
        self, model: str, version: str | None = None, tag: tuple[str, str] | None = None
    ) -> list[Pair]:
        return [
            p
            for p in self.pairs
            if p.model == model
            and (version is None or p.version == version)
            and (tag is None or p.tags.get(tag[0]) == tag[1])
        ]


def _complete(
    c: Counter[str], flushed: bool, orphan_duplicates: int, mid_stream: bool
) -> dict[str, int]:
    out = {name: c.get(name, 0) for name in COUNT_NAMES}
    if not flushed:  # before the flush nothing has expired, or what has is unknown
        out["unlabeled"] = 0
        out["orphaned"] = 0
        out["duplicate_outcomes"] -= orphan_duplicates
    out["pending"] = max(0, out["predictions"] - out["joined"] - out["unlabeled"])
    out["dead_letter"] = out["dead_letter_predictions"] + out["dead_letter_outcomes"]
    if mid_stream and not flushed:
        for name in ("unlabeled", "orphaned", "pending"):
            del out[name]
    return out


@dataclass
class GeneratedStream:
    """The events in produce order, and what the monitor must make of them."""

    events: list[Event]
    expected: Expectation
    t0_ms: int
    last_event_ms: int
    writer: ApacheAvroWriter

    def flush_events(self, partitions: int) -> list[Event]:
        """One far-future prediction and outcome per partition (explicit partition numbers).

        They join nothing: the flush predictions stay pending under :data:`FLUSH_MODEL` (the
        expectation counts them), the flush outcomes stay pending without a model.
        """
        far = self.last_event_ms + 30 * 24 * 3600 * 1000
        events = []
        for p in range(partitions):
            pid, oid = f"flush-p{p}", f"flush-o{p}"
            pred = prediction_record(pid, FLUSH_MODEL, "0", far, 0, 0.5, {}, {})
            out = {"prediction_id": oid, "timestamp": far, "label": 0, "model_name": None}
            events.append(
                Event("predictions", pid.encode(), self.writer.encode("PredictionEvent", pred), p)
            )
            events.append(
                Event("outcomes", oid.encode(), self.writer.encode("OutcomeEvent", out), p)
            )
            self.expected.count(FLUSH_MODEL, "0", "predictions")
        return events


def prediction_record(
    pid: str,
    model: str,
    version: str,
    ts: int,
    prediction: Any,
    score: float | None,
    features: Mapping[str, Any],
    tags: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "prediction_id": pid,
        "model_name": model,
        "model_version": version,
        "timestamp": ts,
        "features": dict(features),
        "prediction": prediction,
        "score": score,
        "probabilities": None,
        "tags": dict(tags),
    }


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


REGIONS = ("eu", "us", "apac")


def generate_monitor_stream(
    n_predictions: int,
    *,
    seed: int,
    t0_ms: int = 1_700_000_000_000,
    step_ms: int = 10,
    max_outcome_delay_ms: int = 60_000,
    missing_rate: float = 0.10,
    early_rate: float = 0.15,
    early_max_delay_ms: int = 2000,
    duplicate_outcome_rate: float = 0.03,
    duplicate_prediction_rate: float = 0.01,
    mismatch_rate: float = 0.005,
    orphans: int = 12,
    bad_messages: bool = True,
    expire_mid_stream: bool = False,
    max_label_delay_ms: int | None = None,
    grace_ms: int | None = None,
    late_rate: float = 0.0,
) -> GeneratedStream:
    """Predictions of a binary classifier ``credit`` (versions 1 and 2, with scores) and a
    regression model ``demand``, with tags ``region``, and their outcomes.

    * ``missing_rate`` of the predictions never get an outcome (unlabeled after the flush);
    * ``early_rate`` of the outcomes are produced before their prediction (with a label delay
      of at most ``early_max_delay_ms``);
    * duplicated outcomes (the duplicate carries another label: the first one must win) and
      duplicated predictions (identical bytes, re-sent);
    * ``mismatch_rate`` of the credit predictions get only an outcome with a *string* label
      (dead-lettered at join time, the prediction stays unlabeled);
    * ``orphans`` outcomes whose prediction never comes, half with a model hint;
    * with ``bad_messages``: garbage bytes, a valid body behind a wrong fingerprint, a
      prediction with an empty id, outcomes with a NaN label (all dead-lettered).

    Two regimes keep the expectation exact whatever the interleaving of the two topics, the
    batch boundaries, crashes and rebalances:

    * default: nothing expires before :meth:`GeneratedStream.flush_events`. Keep
      ``n_predictions * step_ms + max_outcome_delay_ms + 2000`` under the monitor's
      ``max_label_delay + grace``. Two orphans are duplicated (their event time is after
      every prediction, so the duplicate always finds the orphan pending);
    * ``expire_mid_stream``: the stream is longer than the join window, so entries expire
      while it flows. Each topic's event time is then kept in order (up to
      :func:`outcome_lead_ms`, below the grace) so that an entry can only expire after every
      event that refers to it; duplicated predictions and orphans are not allowed (a copy
      consumed after the original expired would count again). ``late_rate`` of the outcomes
      come after ``max_label_delay`` (counted ``late_outcomes``, the prediction unlabeled).
    """
    lead = outcome_lead_ms(step_ms, early_max_delay_ms)
    if expire_mid_stream:
        assert max_label_delay_ms is not None and grace_ms is not None
        assert duplicate_prediction_rate == 0.0, "re-sent predictions may find their entry gone"
        assert max_outcome_delay_ms <= max_label_delay_ms
        assert max_outcome_delay_ms + lead < max_label_delay_ms + grace_ms
        assert late_rate == 0.0 or grace_ms > 2 * lead + 2
    else:
        assert late_rate == 0.0, "late outcomes would move the outcomes watermark too far"
    rng = random.Random(seed)
    w = ApacheAvroWriter()
    exp = Expectation(expire_mid_stream=expire_mid_stream)
    placed: list[tuple[float, int, Event]] = []
    seq = 0

    def put(pos: float, event: Event) -> None:
        nonlocal seq
        placed.append((pos, seq, event))
        seq += 1

    def outcome_event(pid: str, ts: int, label: Any, hint: str | None = None) -> Event:
        rec = {"prediction_id": pid, "timestamp": ts, "label": label, "model_name": hint}
        return Event("outcomes", pid.encode(), w.encode("OutcomeEvent", rec))

    last_ts = t0_ms
    for i in range(n_predictions):
        pid = f"p{seed}-{i:07d}"
        ts = t0_ms + i * step_ms
        region = rng.choice(REGIONS)
        tags = {"region": region}
        if rng.random() < 0.7:
            model = "credit"
            version = "1" if rng.random() < 0.6 else "2"
            income, age = rng.gauss(0.0, 1.0), rng.uniform(18.0, 80.0)
            z = 1.2 * income - 0.03 * (age - 45.0) + (0.4 if region == "eu" else -0.2)
            score = _sigmoid(z + (0.3 if version == "2" else 0.0))
            threshold = 0.5 if version == "1" else 0.4
            prediction: Any = int(score >= threshold)
            label: Any = int(rng.random() < _sigmoid(z + rng.gauss(0.0, 0.8)))
            features: dict[str, Any] = {"income": income, "age": age}
            if rng.random() < 0.05:
                features["employer"] = None
            score_out: float | None = score
        else:
            model, version = "demand", "1"
            temp = rng.uniform(-5.0, 35.0)
            base = 40.0 + 2.5 * temp + (10.0 if region == "us" else 0.0)
            prediction = base + rng.gauss(0.0, 1.0)
            label = base + rng.gauss(0.0, 6.0)
            features = {"temp": temp, "store": f"s{rng.randrange(20)}"}
            score_out = None
        pred = prediction_record(pid, model, version, ts, prediction, score_out, features, tags)
        pred_event = Event("predictions", pid.encode(), w.encode("PredictionEvent", pred))
        put(i, pred_event)
        exp.count(model, version, "predictions")
        if rng.random() < duplicate_prediction_rate:
            put(i + rng.uniform(0.0, 5.0), pred_event)
            exp.count(model, version, "duplicate_predictions")

        r = rng.random()
        if rng.random() < early_rate:
            delay = rng.randint(100, min(early_max_delay_ms, max_outcome_delay_ms))
            pos = i - rng.uniform(1.0, 40.0)
        else:
            delay = rng.randint(100, max_outcome_delay_ms)
            pos = i + delay / step_ms
        o_ts = ts + delay
        if r < missing_rate:
            exp.count(model, version, "unlabeled")
            last_ts = max(last_ts, ts)
            continue
        if r < missing_rate + late_rate:
            assert max_label_delay_ms is not None and grace_ms is not None
            late = max_label_delay_ms + rng.randint(1, (grace_ms - 2 * lead) // 2)
            put(i + late / step_ms, outcome_event(pid, ts + late, label))
            exp.count(model, version, "late_outcomes")
            exp.count(model, version, "unlabeled")
            last_ts = max(last_ts, ts + late)
            continue
        if model == "credit" and r < missing_rate + late_rate + mismatch_rate:
            event = outcome_event(pid, o_ts, str(label))
            put(pos, Event(event.topic, event.key, event.value, None, "does not match the type"))
            exp.count(model, version, "dead_letter_outcomes")
            exp.dead_letter["outcomes"] += 1
            exp.count(model, version, "unlabeled")
            last_ts = max(last_ts, o_ts)
            continue
        put(pos, outcome_event(pid, o_ts, label))
        exp.count(model, version, "joined")
        exp.pairs.append(Pair(pid, model, version, prediction, label, score_out, tags))
        last_ts = max(last_ts, o_ts)
        if rng.random() < duplicate_outcome_rate:
            other = (1 - label) if model == "credit" else label + 1.0
            dup_ts = o_ts + rng.randint(0, 1000)
            put(pos + rng.uniform(0.0, 5.0), outcome_event(pid, dup_ts, other))
            exp.count(model, version, "duplicate_outcomes")
            last_ts = max(last_ts, dup_ts)

    span = float(n_predictions)
    for k in range(orphans):
        oid = f"orphan{seed}-{k}"
        hint = "credit" if k % 2 == 0 else None
        pos = rng.uniform(0.0, span)
        if expire_mid_stream:  # in event-time order with the rest of the stream
            o_ts = t0_ms + int(pos * step_ms)
        else:  # after every prediction: pending until the flush, its duplicate finds it
            o_ts = t0_ms + n_predictions * step_ms + rng.randrange(1000)
        put(pos, outcome_event(oid, o_ts, rng.randint(0, 1), hint))
        duplicated = k < 2 and not expire_mid_stream
        if duplicated:
            put(pos + 1.0, outcome_event(oid, o_ts + 5, rng.randint(0, 1), hint))
        if hint is None:
            exp.orphaned_without_model += 1
            exp.duplicate_outcomes_without_model += int(duplicated)
        else:
            exp.count(hint, "", "orphaned")
            if duplicated:
                exp.count(hint, "", "duplicate_outcomes")
                exp.orphan_duplicates[hint] += 1
        last_ts = max(last_ts, o_ts + 5)

    if bad_messages:
        body = w.body(
            "PredictionEvent", prediction_record("x", "credit", "1", t0_ms, 1, 0.5, {}, {})
        )
        bad: list[Event] = [
            Event("predictions", b"garbage-1", b"\xff\xfegarbage", None, "SerializationError"),
            Event("predictions", b"garbage-2", b"not avro at all", None, "SerializationError"),
            Event(
                "predictions",
                b"wrong-fp-1",
                SINGLE_OBJECT_MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08" + body,
                None,
                "UnknownSchemaError",
            ),
            Event(
                "predictions",
                b"wrong-fp-2",
                w.header("OutcomeEvent") + body,
                None,
                "UnknownSchemaError",
            ),
            Event(
                "outcomes",
                b"garbage-3",
                b"\xc3\x01\x00",
                None,
                "SerializationError",
            ),
        ]
        for k in range(2):
            rec = prediction_record("", "credit", "1", t0_ms + k, 1, 0.5, {}, {"region": "eu"})
            bad.append(
                Event(
                    "predictions",
                    f"empty-id-{k}".encode(),
                    w.encode("PredictionEvent", rec),
                    None,
                    "ContractError",
                )
            )
        for _ in range(2):
            target = exp.pairs[rng.randrange(len(exp.pairs))].prediction_id if exp.pairs else "x"
            rec = {"prediction_id": target, "timestamp": t0_ms, "label": math.nan}
            bad.append(
                Event(
                    "outcomes",
                    target.encode(),
                    w.encode("OutcomeEvent", {**rec, "model_name": None}),
                    None,
                    "ContractError",
                )
            )
        for event in bad:
            put(rng.uniform(0.0, span), event)
            exp.dead_letter[event.topic] += 1

    placed.sort(key=lambda t: (t[0], t[1]))
    return GeneratedStream([e for _, _, e in placed], exp, t0_ms, last_ts, w)


def outcome_lead_ms(step_ms: int, early_max_delay_ms: int) -> int:
    """How far the outcomes watermark can run ahead of an outcome's own event time: early
    outcomes (label delay up to ``early_max_delay_ms``, 40 positions early), duplicates (up to
    1 s later, 5 positions)."""
    return early_max_delay_ms + 1000 + 50 * step_ms


# ---- producing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """Where a produced event landed."""

    topic: str
    partition: int
    offset: int


def producer_for(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "queue.buffering.max.messages": 200_000,
        }
    )


def produce(
    bootstrap: str,
    topics: Mapping[str, str],
    events: Sequence[Event],
    *,
    rate_per_s: float | None = None,
    producer: Any = None,
) -> list[Delivered]:
    """Produce ``events`` in order (``topics`` maps logical to physical names); wait for every
    acknowledgement and return where each event landed (same order)."""
    p = producer or producer_for(bootstrap)
    delivered: list[Delivered | None] = [None] * len(events)
    errors: list[str] = []

    def report(i: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                delivered[i] = Delivered(msg.topic(), msg.partition(), msg.offset())

        return cb

    start = time.monotonic()
    for i, ev in enumerate(events):
        kwargs: dict[str, Any] = {"key": ev.key, "value": ev.value, "on_delivery": report(i)}
        if ev.partition is not None:
            kwargs["partition"] = ev.partition
        while True:
            try:
                p.produce(topics[ev.topic], **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        if rate_per_s is not None and i % 200 == 0:
            p.poll(0)
            ahead = i / rate_per_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    remaining = p.flush(120)
    assert remaining == 0, f"{remaining} events not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert all(d is not None for d in delivered)
    return [d for d in delivered if d is not None]


class BackgroundProducer(threading.Thread):
    """Produces a stream in a thread (at ``rate_per_s``) while services run."""

    def __init__(
        self,
        bootstrap: str,
        topics: Mapping[str, str],
        events: Sequence[Event],
        rate_per_s: float | None = None,
    ) -> None:
        super().__init__(name="background-producer", daemon=True)
        self.args = (bootstrap, topics, events, rate_per_s)
        self.delivered: list[Delivered] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        bootstrap, topics, events, rate = self.args
        try:
            self.delivered = produce(bootstrap, topics, events, rate_per_s=rate)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = 300.0) -> list[Delivered]:
        self.join(timeout)
        assert not self.is_alive(), "the background producer did not finish"
        if self.error is not None:
            raise self.error
        return self.delivered


# ---- expected metrics (scikit-learn on the generated pairs) ----------------------------------


def classification_metrics(pairs: Iterable[Pair], positive: Any = 1) -> dict[str, Any]:
    from sklearn import metrics as skm

    pairs = list(pairs)
    y = [p.label for p in pairs]
    yhat = [p.prediction for p in pairs]
    labels = sorted(set(y) | set(yhat))
    out: dict[str, Any] = {
        "count": len(pairs),
        "accuracy": skm.accuracy_score(y, yhat),
        "precision": skm.precision_score(y, yhat, pos_label=positive, zero_division=0.0),
        "recall": skm.recall_score(y, yhat, pos_label=positive, zero_division=0.0),
        "f1": skm.f1_score(y, yhat, pos_label=positive, zero_division=0.0),
        "labels": labels,
        "confusion_matrix": skm.confusion_matrix(y, yhat, labels=labels).tolist(),
    }
    scored = [p for p in pairs if p.score is not None]
    if scored and len({p.label for p in scored}) == 2:
        ys = [int(p.label == positive) for p in scored]
        out["log_loss"] = skm.log_loss(ys, [p.score for p in scored], labels=[0, 1])
    return out


def regression_metrics(pairs: Iterable[Pair]) -> dict[str, Any]:
    from sklearn import metrics as skm

    pairs = list(pairs)
    y = [p.label for p in pairs]
    yhat = [p.prediction for p in pairs]
    return {
        "count": len(pairs),
        "mae": skm.mean_absolute_error(y, yhat),
        "rmse": math.sqrt(skm.mean_squared_error(y, yhat)),
        "r2": skm.r2_score(y, yhat),
    }
