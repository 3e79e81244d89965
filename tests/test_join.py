"""Join semantics on the pure JoinBatch (no Kafka, no Redis)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from streaming.errors import ContractError
from streaming.join import (
    JOINED,
    PENDING_OUTCOME,
    PENDING_PREDICTION,
    UNKNOWN_MODEL,
    Entry,
    JoinBatch,
    JoinResult,
    check_outcome,
    check_prediction,
)
from streaming.serde import serde_for

PRED = serde_for("PredictionEvent")
OUT = serde_for("OutcomeEvent")


def pred(pid: str, ts: int, prediction: Any = 1, model: str = "m", version: str = "1") -> dict:
    return {
        "prediction_id": pid,
        "model_name": model,
        "model_version": version,
        "timestamp": ts,
        "features": {"x": 1.5, "c": "a"},
        "prediction": prediction,
        "score": 0.75,
        "probabilities": None,
        "tags": {"region": "eu"},
    }


def outcome(pid: str, ts: int, label: Any = 1, model: str | None = None) -> dict:
    return {"prediction_id": pid, "timestamp": ts, "label": label, "model_name": model}


class Harness:
    """Runs batches against a dict of entries, as the joiner does with Redis."""

    def __init__(self, delay: int = 1000, grace: int = 100, sightings: bool = False) -> None:
        self.delay, self.grace, self.sightings = delay, grace, sightings
        self.entries: dict[str, bytes] = {}
        self.wm = (-(2**62), -(2**62))
        self.seq = 0
        self.results: list[JoinResult] = []

    def run(self, events: list[tuple[str, dict]]) -> JoinResult:
        batch = JoinBatch(
            self.delay,
            self.grace,
            {pid: Entry.decode(b) for pid, b in self.entries.items()},
            self.wm[0],
            self.wm[1],
            decode_prediction=PRED.decode,
            decode_outcome=OUT.decode,
            track_sightings=self.sightings,
        )
        for i, (kind, rec) in enumerate(events):
            if kind == "p":
                batch.add_prediction(rec["prediction_id"], rec, PRED.encode(rec), i)
            else:
                batch.add_outcome(rec["prediction_id"], rec, OUT.encode(rec), i)
        result = batch.finish(partition=0, first_sequence=self.seq + 1)
        for pid, entry in result.puts.items():
            self.entries[pid] = entry.encode()
        for pid in result.deletes:
            self.entries.pop(pid, None)
        self.seq += len(result.sightings) + len(result.joined)
        self.wm = (result.watermark_predictions, result.watermark_outcomes)
        self.results.append(result)
        return result

    def total(self, name: str) -> int:
        return sum(n for r in self.results for (_, _, k), n in r.counters.items() if k == name)


def test_prediction_then_outcome_joins_with_delay() -> None:
    h = Harness()
    r = h.run([("p", pred("a", 100)), ("o", outcome("a", 400, 0))])
    assert [ex.record["label_delay_ms"] for ex in r.joined] == [300]
    rec = r.joined[0].record
    assert (rec["prediction"], rec["label"], rec["features"]) == (1, 0, {"x": 1.5, "c": "a"})
    assert r.joined[0].key == "m"
    assert rec["source_sequence"] == 1 and rec["source_partition"] == 0


def test_outcome_before_prediction_waits_across_batches() -> None:
    h = Harness()
    r1 = h.run([("o", outcome("a", 400))])
    assert r1.joined == []
    assert Entry.decode(h.entries["a"]).status == PENDING_OUTCOME
    r2 = h.run([("p", pred("a", 100))])
    assert [ex.record["prediction_id"] for ex in r2.joined] == ["a"]
    assert Entry.decode(h.entries["a"]).status == JOINED


def test_duplicates_are_counted_once() -> None:
    h = Harness()
    h.run([("p", pred("a", 100)), ("p", pred("a", 100)), ("o", outcome("a", 150))])
    h.run([("o", outcome("a", 160)), ("p", pred("a", 100))])
    assert h.total("joined") == 1
    assert h.total("predictions") == 1
    assert h.total("duplicate_predictions") == 2
    assert h.total("duplicate_outcomes") == 1


def test_duplicate_outcomes_before_prediction_are_attributed_on_join() -> None:
    h = Harness()
    h.run([("o", outcome("a", 150)), ("o", outcome("a", 151))])
    h.run([("p", pred("a", 100, model="credit"))])
    assert h.total("duplicate_outcomes") == 1
    assert any(m == "credit" for r in h.results for (m, _, k) in r.counters if k == "joined")


def test_unlabeled_expiry_follows_the_outcomes_stream() -> None:
    h = Harness(delay=1000, grace=100)
    h.run([("p", pred("a", 0))])
    # predictions moving on does not expire a prediction: labels may still come
    h.run([("p", pred("b", 50_000))])
    assert h.total("unlabeled") == 0
    # the outcomes stream passing 0 + 1000 + 100 does
    h.run([("o", outcome("zzz", 1101))])
    assert h.total("unlabeled") == 1
    assert "a" not in h.entries


def test_orphan_expiry_follows_the_predictions_stream() -> None:
    h = Harness(delay=1000, grace=100)
    h.run([("o", outcome("a", 500, model="credit"))])
    h.run([("o", outcome("b", 90_000))])
    assert h.total("orphaned") == 0
    h.run([("p", pred("c", 601))])
    orphans = [(m, n) for r in h.results for (m, _, k), n in r.counters.items() if k == "orphaned"]
    assert orphans == [("credit", 1)]


def test_orphan_without_model_hint_is_unattributed() -> None:
    h = Harness(delay=1000, grace=0)
    h.run([("o", outcome("a", 500))])
    h.run([("p", pred("c", 501))])
    assert [(m, k) for r in h.results for (m, _, k) in r.counters if k == "orphaned"] == [
        (UNKNOWN_MODEL, "orphaned")
    ]


def test_outcome_later_than_window_is_not_joined() -> None:
    h = Harness(delay=1000, grace=100)
    r = h.run([("p", pred("a", 0)), ("o", outcome("a", 1001))])
    assert r.joined == []
    assert h.total("late_outcomes") == 1


def test_label_type_mismatch_is_dead_lettered_and_prediction_keeps_waiting() -> None:
    h = Harness()
    r = h.run([("p", pred("a", 0, prediction="approve")), ("o", outcome("a", 10, label=1))])
    assert r.joined == []
    assert len(r.dead_letters) == 1
    dl = r.dead_letters[0]
    assert dl.topic == "outcomes" and "does not match" in dl.error
    assert OUT.decode(dl.raw)["label"] == 1
    assert Entry.decode(h.entries["a"]).status == PENDING_PREDICTION
    r2 = h.run([("o", outcome("a", 20, label="deny"))])
    assert [ex.record["label"] for ex in r2.joined] == ["deny"]


def test_int_and_float_labels_are_compatible() -> None:
    h = Harness()
    r = h.run([("p", pred("a", 0, prediction=2.5)), ("o", outcome("a", 10, label=3))])
    assert [ex.record["label"] for ex in r.joined] == [3]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({**pred("", 0)}, "prediction_id"),
        ({**pred("a", 0), "model_name": ""}, "model_name"),
        ({**pred("a", 0), "score": 1.5}, "score"),
        ({**pred("a", 0), "score": float("nan")}, "score"),
        ({**pred("a", 0), "prediction": float("inf")}, "prediction"),
    ],
)
def test_bad_predictions_are_contract_errors(record: dict, error: str) -> None:
    with pytest.raises(ContractError, match=error):
        check_prediction(record)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (outcome("", 0), "prediction_id"),
        (outcome("a", 0, label=float("nan")), "label"),
        ({**outcome("a", 0), "label": None}, "label"),
    ],
)
def test_bad_outcomes_are_contract_errors(record: dict, error: str) -> None:
    with pytest.raises(ContractError, match=error):
        check_outcome(record)


def test_entry_round_trip() -> None:
    e = Entry(PENDING_OUTCOME, "m", "", 123, b"", b"\x00\x01raw", 7, 2)
    assert Entry.decode(e.encode()) == e


@pytest.mark.parametrize("seed", range(5))
def test_random_streams_join_exactly_the_expected_pairs(seed: int) -> None:
    """Shuffled arrival, random batch sizes, duplicates, missing outcomes: every prediction
    with an outcome inside the window joins exactly once; every other one is unlabeled."""
    rng = random.Random(seed)
    n, delay = 600, 10_000
    events: list[tuple[str, dict]] = []
    expected: dict[str, Any] = {}
    for i in range(n):
        pid = f"p{i}"
        ts = i * 10
        events.append(("p", pred(pid, ts, prediction=i % 2)))
        if rng.random() < 0.8:
            label = rng.choice([0, 1])
            events.append(("o", outcome(pid, ts + rng.randint(0, 3000), label)))
            expected[pid] = label
            if rng.random() < 0.1:
                events.append(("o", outcome(pid, ts + 3500, label)))
        if rng.random() < 0.05:
            events.append(("p", pred(pid, ts, prediction=i % 2)))
    # arrival order: roughly by event time with local shuffling (outcomes before predictions)
    events.sort(key=lambda e: e[1]["timestamp"] + rng.randint(-2000, 2000))
    # a final outcome far in the future flushes every window
    events.append(("o", outcome("flush", 10**9)))
    events.append(("p", pred("flush2", 10**9)))
    h = Harness(delay=delay, grace=4500)  # grace covers the 4000 ms of arrival disorder
    i = 0
    while i < len(events):
        size = rng.randint(1, 80)
        h.run(events[i : i + size])
        i += size
    joined = {ex.record["prediction_id"]: ex.record["label"] for r in h.results for ex in r.joined}
    assert joined == expected
    seqs = [ex.record["source_sequence"] for r in h.results for ex in r.joined]
    assert seqs == list(range(1, len(expected) + 1))
    assert h.total("unlabeled") == n - len(expected)
    assert h.total("joined") == len(expected)


def test_first_sightings_are_forwarded_once_and_numbered_before_the_joins() -> None:
    h = Harness(sightings=True)
    r1 = h.run([("p", pred("a", 100)), ("p", pred("a", 100)), ("o", outcome("b", 120))])
    # "a" once (its duplicate is not a sighting); the waiting outcome "b" is no prediction
    assert [(s.key, s.sequence, s.timestamp_ms) for s in r1.sightings] == [("m", 1, 100)]
    assert PRED.decode(r1.sightings[0].raw)["prediction_id"] == "a"
    r2 = h.run([("p", pred("b", 110, model="other")), ("o", outcome("a", 150))])
    # "b" joins its waiting outcome in this batch: sighted too, and numbered first
    assert [(s.key, s.sequence) for s in r2.sightings] == [("other", 2)]
    assert sorted(ex.record["source_sequence"] for ex in r2.joined) == [3, 4]
    r3 = h.run([("p", pred("a", 100)), ("p", pred("c", 130))])
    assert [PRED.decode(s.raw)["prediction_id"] for s in r3.sightings] == ["c"]
    assert r3.sightings[0].sequence == 5


def test_sightings_are_off_by_default() -> None:
    h = Harness()
    assert h.run([("p", pred("a", 100))]).sightings == []
