"""Label-free monitoring end to end: real ``streammon monitor`` on the real Kafka and Redis.

A model's feature distribution shifts at a known point while its labels lag far behind: no
outcome of the shifted period is ever produced. The drift alert must name exactly the shifted
features, and only after the shift; ``streammon status --json`` must show the drift verdicts
and the estimated accuracy beside the realized one for the labeled windows.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_checks import topics
from procs import EndOffsets, cleanup_prefix, create_topics, fleet, status
from streams import ApacheAvroWriter, Event, prediction_record, produce
from test_alerting_e2e import (
    alerts_of,
    by_status,
    stored_engine_alerts,
    unique_by,
    wait_evaluated,
    wait_for,
)

pytestmark = pytest.mark.integration

MODEL, VERSION = "shop", "1"
HOUR_MS = 3_600_000
T0_MS = (time.time_ns() // 1_000_000 // HOUR_MS - 6) * HOUR_MS
STEP_MS = 1_000
"""Event time between predictions: 3,600 per hour."""
STATIONARY, SHIFTED = 10_800, 3_000
LABELED = 7_200
"""Only the first two hours of predictions ever get an outcome."""


def features(rnd: random.Random, shifted: bool) -> dict[str, Any]:
    channel = rnd.choices(
        ["web", "app", "store"], weights=[0.2, 0.2, 0.6] if shifted else [0.5, 0.3, 0.2]
    )[0]
    return {
        "age": rnd.gauss(40, 10),
        "income": rnd.lognormvariate(10, 0.5) * (1.6 if shifted else 1.0),
        "clicks": rnd.randint(0, 6),
        "channel": channel,
        "premium": rnd.random() < 0.3,
    }


def events(writer: ApacheAvroWriter) -> tuple[list[Event], list[tuple[float, int]]]:
    """Predictions (and outcomes of the first ``LABELED``) on partition 0; the (score, label)
    of the labeled ones."""
    rnd = random.Random(7)
    out: list[Event] = []
    labeled: list[tuple[float, int]] = []
    for k in range(STATIONARY + SHIFTED):
        pid = f"{MODEL}-{k:06d}"
        ts = T0_MS + k * STEP_MS
        feats = features(rnd, shifted=k >= STATIONARY)
        z = (feats["age"] - 40) / 10
        score = 1 / (1 + math.exp(-2 * z))
        prediction = int(score > 0.5)
        pred = prediction_record(pid, MODEL, VERSION, ts, prediction, score, feats, {})
        out.append(Event("predictions", pid.encode(), writer.encode("PredictionEvent", pred), 0))
        if k < LABELED:
            label = int(rnd.random() < score)  # calibrated scores
            labeled.append((score, label))
            outcome = {"prediction_id": pid, "timestamp": ts + 500, "label": label}
            out.append(Event("outcomes", pid.encode(), writer.encode("OutcomeEvent", outcome), 0))
    return out, labeled


@pytest.fixture
def env(
    service_env: dict[str, str], stack: dict[str, str], unique_prefix: str
) -> Iterator[dict[str, str]]:
    yield {
        **service_env,
        "STREAMMON_PREDICTIONS_PARTITIONS": "1",
        "STREAMMON_LABELED_PARTITIONS": "1",
        "STREAMMON_DETECTORS": "{}",
        "STREAMMON_DRIFT_WINDOWS": json.dumps(["count:1000", "time:1h"]),
        "STREAMMON_DRIFT_LATENESS_MS": "0",
        "STREAMMON_JOIN_GRACE_MS": str(24 * HOUR_MS),
    }
    cleanup_prefix(stack["kafka"], stack["redis"], unique_prefix, f"streammon:{unique_prefix}")


def test_feature_shift_alerts_naming_the_features_before_any_label_of_it(
    env: dict[str, str], stack: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    create_topics(env)
    ends = EndOffsets(stack["kafka"])
    stream, labeled = events(ApacheAvroWriter())
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        produce(stack["kafka"], topics(unique_prefix), stream)
        wait_evaluated(stack["redis"], unique_prefix, ends, [monitor])
        assert monitor.alive
    ends.close()

    shift_ms = T0_MS + STATIONARY * STEP_MS
    last_label_ms = T0_MS + LABELED * STEP_MS
    assert last_label_ms < shift_ms  # no label of the shifted period exists at all
    firing = [a for a in by_status(alerts_of(stack["kafka"], unique_prefix), "firing")]
    drift = [a for a in firing if a["rule"] == "data_drift"]
    assert drift, f"no data_drift alert; alerts: {firing}"
    # no false alarm over the 10,800 undrifted predictions; the first alert comes after the
    # shift, from the first count window that is fully shifted
    assert all(a["starts_at"] >= shift_ms for a in drift), drift
    # one alert per drifted feature, labelled with it; the unshifted ones stay quiet
    first = {}
    for a in drift:
        first.setdefault(a["labels"]["feature"], a)
    assert {"income", "channel"} <= set(first), drift
    assert not set(first) & {"age", "clicks", "premium"}, drift
    for name in ("income", "channel"):
        alert = first[name]
        assert alert["starts_at"] <= shift_ms + 2_000 * STEP_MS, alert
        assert alert["labels"]["alertname"] == "data_drift"
        assert alert["labels"]["version"] == VERSION
        assert f"data drift in {name}" in alert["annotations"]["summary"]
        assert name in alert["annotations"]["drifted_features"]

    st = status(env)
    lf = st["models"][MODEL]["versions"][VERSION]["label_free"]
    assert lf["reference"]["source"] == "first_predictions"
    assert lf["predictions"] == STATIONARY + SHIFTED
    latest = lf["windows"]["count:1000"]["latest"]["drift"]
    assert {"income", "channel"} <= set(latest["drifted"])
    assert latest["features"]["income"]["statistics"]["ks"] > 0.1
    # estimated beside realized for the labeled hours (calibrated scores: a few points apart)
    rows = [r for r in lf["estimation"]["rows"] if r["error"]]
    assert len(rows) >= 1, lf["estimation"]
    for r in rows:
        assert r["labeled"] >= 1800
        assert abs(r["error"]["accuracy"]) < 0.05, r
    realized = sum((s > 0.5) == bool(y) for s, y in labeled[: len(labeled)]) / len(labeled)
    assert 0.5 < realized < 0.95


def test_kill_9_before_the_checkpoint_replays_the_same_drift_alerts(
    env: dict[str, str], stack: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    """A kill after drift alerts went out but before any checkpoint: the next owner replays
    labeled and predictions-by-model from the last checkpoint in the logged order (its log
    says so). Every alert comes again byte for byte (same alert_id), no episode is new twice,
    and every prediction is counted once."""
    create_topics(env)
    ends = EndOffsets(stack["kafka"])
    stream, _ = events(ApacheAvroWriter())
    with fleet(env, tmp_path) as f:
        first = f.service("monitor-1", env={"STREAMMON_CHECKPOINT_INTERVAL_MS": "600000"}).start()
        produce(stack["kafka"], topics(unique_prefix), stream)

        def drift_out() -> bool:
            fired = by_status(alerts_of(stack["kafka"], unique_prefix), "firing")
            return len({a["labels"].get("feature") for a in fired}) >= 2

        wait_for(drift_out, "drift alerts for two features", [first], 90, 0.2)
        first.kill()
        assert not stored_engine_alerts(stack["redis"], unique_prefix), "checkpointed already"
        before = [s.record for s in alerts_of(stack["kafka"], unique_prefix)]
        second = f.service("monitor-2", env={"STREAMMON_CHECKPOINT_INTERVAL_MS": "1000"}).start()
        wait_evaluated(stack["redis"], unique_prefix, ends, [second])
        assert "runs in their stored order" in second.log_text()
    ends.close()

    after = [s.record for s in alerts_of(stack["kafka"], unique_prefix)]
    by_id: dict[str, dict[str, Any]] = {}
    for rec in after:
        assert by_id.setdefault(rec["alert_id"], rec) == rec  # a copy is the same record
    # the replay re-produced every record of the first run: each is there twice
    for rec in before:
        assert after.count(rec) == 2, rec
    unique = unique_by(after, "alert_id")
    episodes = [(a["labels"]["feature"], a["status"], a["starts_at"]) for a in unique]
    assert len(episodes) == len(set(episodes))
    lf = status(env)["models"][MODEL]["versions"][VERSION]["label_free"]
    assert lf["predictions"] == STATIONARY + SHIFTED
