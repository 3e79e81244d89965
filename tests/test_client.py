"""The producer SDK against the real broker: PredictionProducer and ChampionModel."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from test_registry import ROW, closed_port, model_bytes, small_pipeline

from streaming.artifacts import dump_model
from streaming.client import ChampionModel, DeliveryFailure, Prediction, PredictionProducer
from streaming.errors import DeliveryError, ModelNotReadyError, SerializationError
from streaming.kafka_io import client_config
from streaming.registry import Registry, registry_from_settings
from streaming.serde import serde_for
from streaming.settings import Settings, load_settings


def consume_all(settings: Settings, logical: str, *, expect: int, timeout_s: float = 20.0) -> Any:
    """(key, value bytes) of every message of a topic, once ``expect`` of them arrived."""
    topic = settings.topic(logical)
    conf = client_config(settings)
    conf.update({"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append((msg.key().decode(), msg.value()))
    finally:
        consumer.close()
    return out


# ---- PredictionProducer ----------------------------------------------------------------------


@pytest.mark.integration
def test_predictions_and_outcomes_round_trip(registry_settings: Settings) -> None:
    with PredictionProducer(registry_settings, config={"linger.ms": 20}) as producer:
        producer.send_prediction(
            "p-1",
            "churn",
            3,
            {"age": 41, "ratio": 0.5, "plan": "pro", "vip": True, "missing": None},
            1,
            score=0.83,
            probabilities={0: 0.17, 1: 0.83},
            tags={"region": "eu"},
            timestamp_ms=1_700_000_000_000,
        )
        producer.send_prediction("p-2", "churn", "3", {"age": 7}, "no", timestamp_ms=5)
        producer.send_outcome("p-1", 1, timestamp_ms=1_700_000_100_000, model_name="churn")
        # nothing flushed explicitly: leaving the block flushes
    predictions = consume_all(registry_settings, "predictions", expect=2)
    outcomes = consume_all(registry_settings, "outcomes", expect=1)
    decoded = {k: serde_for("PredictionEvent").decode(v) for k, v in predictions}
    assert sorted(decoded) == ["p-1", "p-2"]
    assert decoded["p-1"] == {
        "prediction_id": "p-1",
        "model_name": "churn",
        "model_version": "3",
        "timestamp": 1_700_000_000_000,
        "features": {"age": 41, "ratio": 0.5, "plan": "pro", "vip": True, "missing": None},
        "prediction": 1,
        "score": 0.83,
        "probabilities": {"0": 0.17, "1": 0.83},
        "tags": {"region": "eu"},
    }
    assert decoded["p-2"]["prediction"] == "no" and decoded["p-2"]["score"] is None
    assert [(k, serde_for("OutcomeEvent").decode(v)) for k, v in outcomes] == [
        (
            "p-1",
            {
                "prediction_id": "p-1",
                "timestamp": 1_700_000_100_000,
                "label": 1,
                "model_name": "churn",
            },
        )
    ]
    assert predictions[0][1][:2] == b"\xc3\x01"  # single-object encoding


def test_a_record_breaking_the_contract_fails_at_once() -> None:
    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{closed_port()}")
    producer = PredictionProducer(settings)
    with pytest.raises(SerializationError, match="features"):
        producer.send_prediction("p-1", "m", 1, {"bad": [1, 2]}, 1)
    producer.close(timeout=1)  # nothing was enqueued: nothing to fail


@pytest.mark.integration
def test_delivery_errors_reach_the_caller() -> None:
    seen: list[DeliveryFailure] = []
    producer = PredictionProducer(
        bootstrap_servers=f"127.0.0.1:{closed_port()}",
        topic_prefix="nowhere.",
        on_error=seen.append,
        **{"message.timeout.ms": 500, "log_level": 0},
    )
    producer.send_prediction("p-1", "m", 1, {"x": 1.0}, 0)
    producer.send_outcome("p-1", 0)
    with pytest.raises(DeliveryError) as err:
        producer.flush(timeout=10)
    assert len(err.value.errors) == 2
    assert "nowhere.predictions key=p-1" in str(err.value)
    assert "nowhere.outcomes key=p-1" in str(err.value)
    assert sorted(f.topic for f in seen) == ["nowhere.outcomes", "nowhere.predictions"]
    assert all("timed out" in f.error.lower() for f in seen)
    producer.flush(timeout=1)  # failures are reported once
    producer.send_prediction("p-2", "m", 1, {"x": 1.0}, 0)
    with pytest.raises(DeliveryError, match="key=p-2"):
        producer.close(timeout=10)  # close flushes, and so surfaces the failure
    with pytest.raises(RuntimeError, match="closed"):
        producer.send_prediction("p-3", "m", 1, {"x": 1.0}, 0)


# ---- ChampionModel in this process -----------------------------------------------------------


@pytest.fixture
def sdk_registry(registry_settings: Settings) -> Registry:
    return registry_from_settings(registry_settings)


@pytest.mark.integration
def test_champion_model_predicts_with_the_champion(
    registry_settings: Settings, sdk_registry: Registry
) -> None:
    pipe = small_pipeline()
    with ChampionModel("churn", registry_settings, poll_interval_s=0.1) as model:
        assert not model.wait_until_ready(0.5)
        with pytest.raises(ModelNotReadyError):
            model.predict(ROW)
        sdk_registry.register("fraud", model_bytes(0.3), status="champion")  # another model
        v1 = sdk_registry.register("churn", dump_model(pipe), status="champion")
        assert model.wait_until_ready(15)
        assert model.version == v1.version == 1
        assert model.event is not None and model.event["artifact_sha256"] == v1.artifact_sha256

        import pandas as pd

        expected = pipe.predict_proba(pd.DataFrame([ROW]))[0]
        p = model.predict_proba(ROW)
        assert isinstance(p, Prediction) and p.version == 1
        assert p.probabilities == pytest.approx({"0": expected[0], "1": expected[1]})
        assert p.score == pytest.approx(expected[1])
        assert p.value == int(expected.argmax())
        assert model.predict(ROW) == Prediction(p.value, 1)
        rows = [ROW, {"a": -3.0, "b": -3.0, "c": "z"}, {"b": 0.0}]  # a missing feature too
        many = model.predict_many(rows)
        assert [m.value for m in many] == pipe.predict(
            pd.DataFrame.from_records(rows).reindex(columns=["a", "b", "c"])
        ).tolist()
        assert {m.version for m in many} == {1}
        assert model.last_error is None


# ---- ChampionModel in another process --------------------------------------------------------

SERVER = """
import json, sys, time
from streaming.client import ChampionModel

model = ChampionModel(sys.argv[1], poll_interval_s=0.2, reload_backoff_s=1.0)
row = {"a": 1.0, "b": 2.0, "c": "x"}
while True:
    try:
        p = model.predict(row)
        out = {"version": p.version, "value": p.value}
    except Exception as exc:
        out = {"version": None, "exception": type(exc).__name__}
    out["error"] = model.last_error
    print(json.dumps(out), flush=True)
    time.sleep(0.2)
"""


class Server:
    """The SERVER script in a subprocess; its lines (with arrival times) in a queue."""

    def __init__(self, script: Path, env: dict[str, str], model: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), model],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), json.loads(line)))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_for(
        self, what: str, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            try:
                at, line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "server died:\n" + "".join(self.stderr[-30:])
                continue
            last = line
            if pred(line):
                return at, line
        tail = "".join(self.stderr[-30:])
        pytest.fail(f"server never printed {what} within {timeout_s}s (last: {last})\n{tail}")

    def lines_for(self, seconds: float) -> list[dict[str, Any]]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                out.append(self.lines.get(timeout=0.3)[1])
            except queue.Empty:
                continue
        return out

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.integration
def test_champion_model_in_another_process_follows_promote_rollback_and_refuses_tampering(
    registry_settings: Settings,
    sdk_registry: Registry,
    service_env: dict[str, str],
    tmp_path: Path,
) -> None:
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    env = {**service_env, "STREAMMON_ARTIFACT_DIR": registry_settings.artifact_dir}
    server = Server(script, env, "churn")
    try:
        server.wait_for("a not-ready line", lambda line: line["version"] is None)
        sdk_registry.register("churn", model_bytes(1.0), status="champion")
        server.wait_for("version 1", lambda line: line["version"] == 1)

        sdk_registry.register("churn", dump_model(small_pipeline(seed=1)))
        assert {line["version"] for line in server.lines_for(1.5)} == {1}  # a candidate only
        promoted_at = time.monotonic()
        sdk_registry.promote("churn", 2)
        at, _ = server.wait_for("version 2", lambda line: line["version"] == 2)
        assert at - promoted_at < 5.0, f"hot swap took {at - promoted_at:.1f}s"

        rolled_at = time.monotonic()
        assert sdk_registry.rollback("churn").version == 1
        at, _ = server.wait_for("version 1 again", lambda line: line["version"] == 1)
        assert at - rolled_at < 5.0, f"rollback took {at - rolled_at:.1f}s"

        v3 = sdk_registry.register("churn", model_bytes(0.01))
        path = Path(registry_settings.artifact_dir) / "churn" / f"{v3.artifact_sha256}.skops"
        good = path.read_bytes()
        tampered = bytearray(good)
        tampered[len(tampered) // 2] ^= 0xFF
        path.write_bytes(bytes(tampered))
        sdk_registry.promote("churn", 3)
        _, line = server.wait_for("the refusal", lambda line: line["error"] is not None)
        assert "version 3 refused" in line["error"] and "sha256 mismatch" in line["error"]
        assert line["version"] == 1
        later = server.lines_for(2.5)  # retried every second, refused every time
        assert later and {x["version"] for x in later} == {1}
        assert all("sha256 mismatch" in (x["error"] or "") for x in later)

        path.write_bytes(good)  # repaired: the next retry loads it
        _, line = server.wait_for("version 3", lambda line: line["version"] == 3)
        assert line["error"] is None
        assert server.proc.poll() is None
    finally:
        server.stop()


@pytest.mark.integration
def test_champion_model_builds_the_trainers_input_frame(
    registry_settings: Settings, sdk_registry: Registry
) -> None:
    from streaming import training

    rows = [{"amount": float(i % 7), "plan": str(i % 3)} for i in range(120)]
    labels = [int(r["plan"] == "1") for r in rows]  # digits, but a categorical feature
    frame = training.features_frame(rows, ["amount", "plan"], categorical=["plan"])
    pipe = training.make_pipeline("logistic_regression", "classification", ["amount"], ["plan"], 0)
    pipe.fit(frame, labels)
    sdk_registry.register("plans", dump_model(pipe), status="champion")
    with ChampionModel("plans", registry_settings, poll_interval_s=0.1) as model:
        assert model.wait_until_ready(15)
        # ints where training saw strings, a missing feature, an unknown key
        got = [p.value for p in model.predict_many([{"plan": 1}, {"plan": 2, "x": 1}])]
        assert got == [1, 0]
