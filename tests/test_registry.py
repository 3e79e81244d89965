"""Artifacts (integrity, allowlist) and the model registry against the real Redis and Kafka."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from streaming.artifacts import (
    LocalArtifactStore,
    dump_model,
    load_model,
    sha256_of,
    untrusted_types,
)
from streaming.errors import (
    ArtifactIntegrityError,
    DeliveryError,
    RegistryError,
    UntrustedArtifactError,
)
from streaming.kafka_io import admin_client, client_config, describe_configs
from streaming.registry import ModelVersion, Registry, event_id_of, registry_from_settings
from streaming.serde import serde_for
from streaming.settings import Settings

# ---- small models ----------------------------------------------------------------------------

ROW = {"a": 1.0, "b": 2.0, "c": "x"}


def training_frame(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.choice(["x", "y", "z"], size=n),
        }
    )
    frame.loc[::9, "a"] = np.nan
    y = ((frame["a"].fillna(0) + frame["b"] + (frame["c"] == "x")) > 0.5).astype(int)
    return frame, y


def small_pipeline(estimator: Any | None = None, seed: int = 0) -> Pipeline:
    """A fitted ColumnTransformer pipeline like the trainer's (numeric + one-hot)."""
    pre = ColumnTransformer(
        [
            ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), ["a", "b"]),
            (
                "cat",
                Pipeline(
                    [
                        ("imp", SimpleImputer(strategy="most_frequent")),
                        ("oh", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                ["c"],
            ),
        ]
    )
    x, y = training_frame(seed=seed)
    pipe = Pipeline(
        [("pre", pre), ("model", LogisticRegression() if estimator is None else estimator)]
    )
    return pipe.fit(x, y)


def model_bytes(c: float = 1.0) -> bytes:
    return dump_model(small_pipeline(LogisticRegression(C=c)))


# ---- artifacts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(),
        RandomForestClassifier(n_estimators=4, random_state=0),
        HistGradientBoostingClassifier(max_iter=5, random_state=0),
    ],
    ids=["logistic", "forest", "hgb"],
)
def test_trainer_pipelines_load_with_the_allowlist(estimator: Any) -> None:
    pipe = small_pipeline(estimator)
    data = dump_model(pipe)
    trusted, refused = untrusted_types(data)
    assert refused == []
    assert "numpy.dtype" in trusted
    loaded = load_model(data, expected_sha256=sha256_of(data))
    frame = pd.DataFrame([ROW])
    assert loaded.predict(frame).tolist() == pipe.predict(frame).tolist()


def test_altered_bytes_are_refused_before_deserializing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = model_bytes()
    recorded = sha256_of(data)
    altered = bytearray(data)
    altered[len(altered) // 2] ^= 0xFF
    calls: list[str] = []
    monkeypatch.setattr(sio, "loads", lambda *a, **k: calls.append("loads"))
    monkeypatch.setattr(sio, "get_untrusted_types", lambda *a, **k: calls.append("types"))
    with pytest.raises(ArtifactIntegrityError) as err:
        load_model(bytes(altered), expected_sha256=recorded)
    assert recorded in str(err.value)
    assert sha256_of(bytes(altered)) in str(err.value)
    assert calls == []  # skops never saw the bytes


def test_a_type_outside_the_allowlist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = Pipeline([("f", FunctionTransformer(os.system)), ("m", LogisticRegression())])
    data = sio.dumps(pipe)
    loads_called: list[bool] = []
    real_loads = sio.loads
    monkeypatch.setattr(
        sio, "loads", lambda *a, **k: loads_called.append(True) or real_loads(*a, **k)
    )
    with pytest.raises(UntrustedArtifactError) as err:
        load_model(data, expected_sha256=sha256_of(data))
    assert os.system.__module__ + ".system" in str(err.value)
    assert loads_called == []


def test_builtins_are_not_trusted_wholesale() -> None:
    data = sio.dumps(Pipeline([("f", FunctionTransformer(eval)), ("m", LogisticRegression())]))
    _, refused = untrusted_types(data)
    assert refused == ["builtins.eval"]
    with pytest.raises(UntrustedArtifactError, match=r"builtins\.eval"):
        load_model(data, expected_sha256=sha256_of(data))


class CustomScaler(StandardScaler):
    pass


def test_a_project_class_needs_an_explicit_allowance() -> None:
    data = dump_model(Pipeline([("s", CustomScaler()), ("m", LogisticRegression())]))
    name = f"{CustomScaler.__module__}.CustomScaler"
    with pytest.raises(UntrustedArtifactError, match=name):
        load_model(data, expected_sha256=sha256_of(data))
    loaded = load_model(data, expected_sha256=sha256_of(data), extra_allowed=[name])
    assert type(loaded.steps[0][1]).__name__ == "CustomScaler"


def test_not_a_skops_file_is_an_integrity_error() -> None:
    data = b"definitely not a zip"
    with pytest.raises(ArtifactIntegrityError, match="not a readable skops file"):
        load_model(data, expected_sha256=sha256_of(data))


def test_local_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    data = model_bytes()
    art = store.put("churn", data)
    path = tmp_path / "root" / "churn" / f"{art.sha256}.skops"
    assert art.uri == path.as_uri()
    assert art.sha256 == sha256_of(data) and art.size == len(data)
    assert store.get(art.uri) == data
    # a damaged file at the content address is rewritten by the next put
    path.write_bytes(b"damaged")
    assert store.put("churn", data) == art
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    with pytest.raises(Exception, match="cannot be used as a directory"):
        store.put("../escape", data)


def test_store_root_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = LocalArtifactStore("~/artifacts")
    assert store.root == (tmp_path / "artifacts").resolve()


def test_model_version_record_matches_the_schema() -> None:
    v = ModelVersion(model_name="m", version=1, status="champion", created_at=5)
    schema_fields = [f["name"] for f in serde_for("ModelVersionEvent").schema["fields"]]
    assert sorted(v.to_record()) == sorted(schema_fields)
    data = serde_for("ModelVersionEvent").encode(v.to_record())
    assert ModelVersion.from_record(serde_for("ModelVersionEvent").decode(data)) == v
    with pytest.raises(RegistryError, match="unknown status"):
        ModelVersion(model_name="m", version=1, status="live", created_at=5)


# ---- the registry on the real stack ------------------------------------------------------------


def read_events(settings: Settings, *, expect: int, timeout_s: float = 20.0) -> list[Any]:
    """Every (key, record) on model-versions, once at least ``expect`` arrived and it is quiet."""
    conf = client_config(settings)
    conf.update({"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(settings.topic("model-versions"), 0, OFFSET_BEGINNING)])
    serde = serde_for("ModelVersionEvent")
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(out) >= expect and time.monotonic() - quiet_since > 1.0:
                    break
                continue
            if msg.error() is not None:
                continue
            quiet_since = time.monotonic()
            out.append((msg.key().decode(), serde.decode(msg.value())))
    finally:
        consumer.close()
    return out


@pytest.fixture
def registry(registry_settings: Settings) -> Registry:
    return registry_from_settings(registry_settings)


def statuses(events: list[Any], model: str) -> list[tuple[int, str]]:
    return [(r["version"], r["status"]) for k, r in events if k == model]


@pytest.mark.integration
def test_register_is_idempotent_by_sha_and_by_request(
    registry: Registry, registry_settings: Settings
) -> None:
    first = model_bytes(1.0)
    v1 = registry.register(
        "churn",
        first,
        status="champion",
        estimator="LogisticRegression",
        params={"C": 1.0},
        metrics={"accuracy": 0.9},
        request_id="req-1",
        training_window=(1_000, 2_000),
        training_rows=240,
        reference_profile={"a": {"mean": 0.0}},
    )
    assert (v1.version, v1.status, v1.announced, v1.parent_version) == (1, "champion", True, None)
    assert v1.params == {"C": "1.0"} and v1.metrics == {"accuracy": 0.9}
    assert v1.artifact_sha256 == sha256_of(first)
    assert LocalArtifactStore(registry_settings.artifact_dir).get(v1.artifact_uri or "") == first
    assert v1.reference_profile == '{"a":{"mean":0.0}}'

    again = registry.register("churn", first, status="champion")
    assert again == v1  # same sha: the same version, nothing new
    same_request = registry.register("churn", model_bytes(0.5), request_id="req-1")
    assert same_request == v1
    v2 = registry.register("churn", model_bytes(0.1), request_id="req-2")
    assert (v2.version, v2.status, v2.parent_version) == (2, "candidate", 1)
    other = registry.register("fraud", first)  # sha idempotency is per model
    assert (other.model_name, other.version) == ("fraud", 1)

    events = read_events(registry_settings, expect=4)
    # v1; v2 then the champion trailer; fraud's first version (no champion, no trailer)
    assert statuses(events, "churn") == [(1, "champion"), (2, "candidate"), (1, "champion")]
    assert statuses(events, "fraud") == [(1, "candidate")]
    assert next(r["event_id"] for k, r in events if k == "churn") == v1.event_id


@pytest.mark.integration
def test_concurrent_registers_of_one_artifact_make_one_version(registry: Registry) -> None:
    data = model_bytes(2.0)
    results: list[ModelVersion] = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.register("churn", data)))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.version for r in results} == {1}
    assert [v.version for v in registry.list("churn")] == [1]


@pytest.mark.integration
def test_list_get_champion_promote_reject(registry: Registry, registry_settings: Settings) -> None:
    assert registry.champion("churn") is None
    assert registry.list() == []
    v1 = registry.register("churn", model_bytes(1.0), status="champion")
    v2 = registry.register("churn", model_bytes(0.1), metrics={"accuracy": 0.8})
    v3 = registry.register("churn", model_bytes(0.01), metrics={"accuracy": 0.95})
    f1 = registry.register("fraud", model_bytes(1.0), status="champion")

    assert [(v.model_name, v.version) for v in registry.list()] == [
        ("churn", 1),
        ("churn", 2),
        ("churn", 3),
        ("fraud", 1),
    ]
    assert registry.get("churn", 2) == v2
    with pytest.raises(RegistryError, match="no version 9"):
        registry.get("churn", 9)

    rejected = registry.reject(
        "churn", 2, "accuracy 0.80 < champion 0.90", champion_metrics={"accuracy": 0.9}
    )
    assert (rejected.status, rejected.reason) == ("rejected", "accuracy 0.80 < champion 0.90")
    assert rejected.champion_metrics == {"accuracy": 0.9}
    assert rejected.metrics == {"accuracy": 0.8}
    assert registry.reject("churn", 2, "again") == rejected  # idempotent
    with pytest.raises(RegistryError, match="rejected"):
        registry.promote("churn", 2)
    with pytest.raises(RegistryError, match="only a candidate"):
        registry.reject("churn", 1, "the champion cannot be rejected")

    promoted = registry.promote("churn", 3, reason="beats the champion")
    assert (promoted.status, promoted.reason) == ("champion", "beats the champion")
    assert registry.champion("churn") == promoted
    assert registry.get("churn", 1).status == "retired"
    assert registry.promote("churn", 3) == promoted  # promoting the champion: no change
    assert registry.champion("fraud") == f1
    assert all(v.announced for v in registry.list())

    events = read_events(registry_settings, expect=10)
    assert statuses(events, "churn") == [
        (1, "champion"),
        (2, "candidate"),
        (1, "champion"),  # trailer: the champion stays the last record of the key
        (3, "candidate"),
        (1, "champion"),
        (2, "rejected"),
        (1, "champion"),
        (1, "retired"),
        (3, "champion"),
    ]
    rejected_event = next(r for k, r in events if k == "churn" and r["status"] == "rejected")
    assert rejected_event["champion_metrics"] == {"accuracy": 0.9}
    assert rejected_event["reason"] == "accuracy 0.80 < champion 0.90"
    assert rejected_event["event_id"] == event_id_of(
        "churn", 2, "rejected", rejected_event["created_at"]
    )
    assert v3.parent_version == 1 and v1.version == 1


@pytest.mark.integration
def test_rollback_restores_the_previous_champion(
    registry: Registry, registry_settings: Settings
) -> None:
    registry.register("churn", model_bytes(1.0), status="champion")
    registry.register("churn", model_bytes(0.1), status="champion")
    registry.register("churn", model_bytes(0.01))
    registry.promote("churn", 3)
    assert [v.status for v in registry.list("churn")] == ["retired", "retired", "champion"]

    restored = registry.rollback("churn", reason="accuracy dropped")
    assert (restored.version, restored.status) == (2, "champion")
    assert registry.champion("churn") == restored
    demoted = registry.get("churn", 3)
    assert (demoted.status, demoted.reason) == ("rolled_back", "accuracy dropped")

    assert registry.rollback("churn").version == 1
    assert [v.status for v in registry.list("churn")] == ["champion", "rolled_back", "rolled_back"]
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("churn")
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback("fraud")

    events = read_events(registry_settings, expect=11)
    assert statuses(events, "churn")[-4:] == [
        (3, "rolled_back"),
        (2, "champion"),
        (2, "rolled_back"),
        (1, "champion"),
    ]
    # apart from champion trailers (re-sent events), every event is a newer change
    firsts: dict[str, int] = {}
    for _, r in events:
        firsts.setdefault(r["event_id"], r["created_at"])
    created = list(firsts.values())
    assert created == sorted(created) and len(set(created)) == len(created) == 10


@pytest.mark.integration
def test_model_versions_is_compacted_and_keyed_by_model(
    registry: Registry, registry_settings: Settings
) -> None:
    topic = registry_settings.topic("model-versions")
    config = describe_configs(admin_client(registry_settings), [topic])[topic]
    assert config["cleanup.policy"] == "compact"
    registry.register("churn", model_bytes(1.0), status="champion")
    registry.register("fraud", model_bytes(1.0), status="champion")
    registry.register("churn", model_bytes(0.1))
    events = read_events(registry_settings, expect=4)
    assert [k for k, _ in events] == ["churn", "fraud", "churn", "churn"]
    assert all(k == r["model_name"] for k, r in events)
    # what compaction keeps (the last record of each key) is each model's champion
    last = {k: r for k, r in events}
    assert {k: (r["version"], r["status"]) for k, r in last.items()} == {
        "churn": (1, "champion"),
        "fraud": (1, "champion"),
    }


class CrashingProducer:
    """A producer that dies before sending anything, like a process killed after the commit."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        msg = "simulated crash between metadata and publish"
        raise RuntimeError(msg)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


@pytest.mark.integration
def test_crash_between_metadata_and_publish_is_fixed_by_reconcile(
    registry_settings: Settings,
) -> None:
    crashing = registry_from_settings(registry_settings, producer=CrashingProducer())
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.register("churn", model_bytes(1.0), status="champion", request_id="r-1")
    # the version is fully there (committed in one transaction) but not announced
    v1 = crashing.get("churn", 1)
    assert (v1.status, v1.announced) == ("champion", False)
    assert crashing.champion("churn") == v1
    assert read_events(registry_settings, expect=0, timeout_s=3) == []

    # registering the same artifact again does not make a second version
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.register("churn", model_bytes(1.0), status="champion", request_id="r-1")
    assert [v.version for v in crashing.list("churn")] == [1]

    restarted = registry_from_settings(registry_settings)  # the trainer starting again
    assert restarted.reconcile() == {"churn": [1]}
    assert restarted.get("churn", 1).announced
    assert restarted.reconcile() == {}
    events = read_events(registry_settings, expect=1)
    assert [(k, r["version"], r["status"], r["event_id"]) for k, r in events] == [
        ("churn", 1, "champion", v1.event_id)
    ]
    assert events[0][1]["request_id"] == "r-1"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.integration
def test_an_undelivered_event_raises_and_stays_pending(registry_settings: Settings) -> None:
    dead = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{closed_port()}",
            "message.timeout.ms": 500,
            "log_level": 0,
        }
    )
    failing = registry_from_settings(registry_settings, producer=dead)
    with pytest.raises(DeliveryError, match="stay pending"):
        failing.register("churn", model_bytes(1.0), status="champion")
    assert not failing.get("churn", 1).announced
    assert registry_from_settings(registry_settings).reconcile() == {"churn": [1]}
    assert statuses(read_events(registry_settings, expect=1), "churn") == [(1, "champion")]
