"""Wire-format tests of streaming.serde.

Expected bytes are built here with a small Avro encoder of our own (zig-zag varints,
length-prefixed strings, little-endian doubles), not with fastavro; the schema
fingerprints are literals that were checked against the Java Avro library's
``SchemaNormalization.parsingFingerprint("CRC-64-AVRO", ...)`` (and are checked again
by the integration test below whenever Java and Maven are present).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import random
import shutil
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streaming import serde
from streaming.errors import (
    ConfigError,
    SerializationError,
    StreammonError,
    UnknownSchemaError,
)
from streaming.serde import (
    SCHEMA_NAMES,
    AvroSerde,
    fingerprint_of,
    load_schema,
    reload_schemas,
    serde_for,
)

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
JAVA_DIR = Path(__file__).resolve().parent / "java"

# CRC-64-AVRO of each schema's Parsing Canonical Form, little-endian, as Java computes it.
FINGERPRINTS = {
    "PredictionEvent": "4eacac07c83a63b7",
    "OutcomeEvent": "9828581c21cd2a4b",
    "LabeledExample": "252dbe585a2cef27",
    "AlertEvent": "d0b2ddb83e10477a",
    "RetrainRequest": "256ad628e1bc5b34",
    "ModelVersionEvent": "7b64e15269c52407",
}

# An OutcomeEvent as written by Java's BinaryMessageEncoder (tests/java/EncodeSingleObject.java)
# for {"prediction_id":"p-1","timestamp":1700000000000,"label":{"long":1},"model_name":null}.
JAVA_OUTCOME_HEX = "c3019828581c21cd2a4b06702d3180a0abfef962000200"

TS = 1_733_011_200_123  # 2024-12-01T00:00:00.123Z


# --- an independent Avro binary encoder, just enough for the literals ---------------------


def _long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode()
    return _long(len(raw)) + raw


def _double(x: float) -> bytes:
    return struct.pack("<d", x)


def _branch(index: int, body: bytes = b"") -> bytes:
    return _long(index) + body


def _map(entries: list[tuple[str, bytes]]) -> bytes:
    if not entries:
        return b"\x00"
    return _long(len(entries)) + b"".join(_str(k) + v for k, v in entries) + b"\x00"


def _header(name: str) -> bytes:
    return b"\xc3\x01" + bytes.fromhex(FINGERPRINTS[name])


# --- realistic records ----------------------------------------------------------------


def _prediction(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "prediction_id": "pred-2024-12-01-000042",
        "model_name": "churn",
        "model_version": "7",
        "timestamp": TS,
        "features": {
            "tenure_months": 14,
            "monthly_charges": 70.35,
            "contract": "month-to-month",
            "paperless_billing": True,
            "total_charges": None,
            "support_calls": 3,
            "avg_session_minutes": 12.5,
            "discount_rate": 0.1,
            "region_code": 47,
            "satisfaction": 3.5,
        },
        "prediction": 1,
        "score": 0.8731,
        "probabilities": {"0": 0.1269, "1": 0.8731},
        "tags": {"region": "eu-west", "channel": "web"},
    }
    record.update(overrides)
    return record


RECORDS: dict[str, dict[str, Any]] = {
    "PredictionEvent": _prediction(),
    "OutcomeEvent": {
        "prediction_id": "pred-2024-12-01-000042",
        "timestamp": TS + 86_400_000,
        "label": 0,
        "model_name": "churn",
    },
    "LabeledExample": {
        "prediction_id": "pred-2024-12-01-000042",
        "model_name": "churn",
        "model_version": "7",
        "prediction_timestamp": TS,
        "outcome_timestamp": TS + 86_400_000,
        "label_delay_ms": 86_400_000,
        "features": {"tenure_months": 14, "monthly_charges": 70.35, "contract": "annual"},
        "prediction": 1,
        "label": 0,
        "score": 0.8731,
        "probabilities": {"0": 0.1269, "1": 0.8731},
        "tags": {"region": "eu-west"},
        "source_partition": 5,
        "source_sequence": 12_345_678_901,
    },
    "AlertEvent": {
        "alert_id": "a1b2c3d4e5f60718",
        "fingerprint": "9f86d081884c7d65",
        "status": "firing",
        "rule": "accuracy_below_threshold",
        "model_name": "churn",
        "model_version": "7",
        "severity": "critical",
        "labels": {"alertname": "accuracy_below_threshold", "model": "churn"},
        "annotations": {"summary": "accuracy 0.71 < 0.80 over 1h"},
        "starts_at": TS,
        "ends_at": None,
        "value": 0.71,
        "threshold": 0.8,
        "generator_url": "http://localhost:8080/models/churn",
        "emitted_at": TS + 5_000,
    },
    "RetrainRequest": {
        "request_id": "rr-churn-7-9f86d081",
        "model_name": "churn",
        "model_version": "7",
        "reason": "accuracy_below_threshold fired",
        "alert_fingerprint": "9f86d081884c7d65",
        "window_start": TS - 7 * 86_400_000,
        "window_end": TS,
        "requested_at": TS + 6_000,
    },
    "ModelVersionEvent": {
        "event_id": "mv-churn-8-candidate",
        "model_name": "churn",
        "version": 8,
        "parent_version": 7,
        "status": "candidate",
        "artifact_uri": "file:///var/lib/streammon/models/churn/8.pkl",
        "artifact_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "estimator": "river.linear_model.LogisticRegression",
        "params": {"l2": "0.001", "optimizer": "SGD(lr=0.01)"},
        "metrics": {"accuracy": 0.83, "log_loss": 0.41},
        "champion_metrics": {"accuracy": 0.71, "log_loss": 0.58},
        "training_window_start": TS - 7 * 86_400_000,
        "training_window_end": TS,
        "training_rows": 120_000,
        "request_id": "rr-churn-7-9f86d081",
        "alert_fingerprint": "9f86d081884c7d65",
        "reason": None,
        "reference_profile": json.dumps({"tenure_months": {"mean": 21.3, "std": 9.8}}),
        "created_at": TS + 3_600_000,
    },
}


def _fresh_registry_url() -> str:
    return f"mock://streammon-test-{uuid.uuid4().hex}"


# --- schemas and fingerprints -----------------------------------------------------------


def test_fingerprint_literals_cover_every_schema() -> None:
    assert set(FINGERPRINTS) == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_fingerprint_matches_reference(name: str) -> None:
    assert fingerprint_of(name).hex() == FINGERPRINTS[name]
    assert serde_for(name).fingerprint == fingerprint_of(name)


def test_load_schema_is_parsed_once() -> None:
    assert load_schema("PredictionEvent") is load_schema("PredictionEvent")
    assert serde_for("PredictionEvent") is serde_for("PredictionEvent")


def test_unknown_schema_name() -> None:
    with pytest.raises(UnknownSchemaError, match="unknown schema 'Nope'; known: PredictionEvent"):
        AvroSerde("Nope")


@pytest.fixture
def schemas_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Point STREAMMON_SCHEMAS_DIR somewhere else; restore the caches afterwards."""

    def use(path: Path) -> None:
        monkeypatch.setenv(serde.SCHEMAS_DIR_ENV, str(path))
        reload_schemas()

    yield use
    monkeypatch.delenv(serde.SCHEMAS_DIR_ENV, raising=False)
    reload_schemas()


def test_schemas_dir_env_override(tmp_path: Path, schemas_env: Callable[[Path], None]) -> None:
    for path in SCHEMAS.glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    raw = json.loads((tmp_path / "OutcomeEvent.avsc").read_text())
    raw["fields"].append({"name": "note", "type": ["null", "string"], "default": None, "doc": "x"})
    (tmp_path / "OutcomeEvent.avsc").write_text(json.dumps(raw))
    schemas_env(tmp_path)
    assert str(serde.schemas_dir()) == str(tmp_path)
    assert fingerprint_of("OutcomeEvent").hex() != FINGERPRINTS["OutcomeEvent"]
    assert fingerprint_of("PredictionEvent").hex() == FINGERPRINTS["PredictionEvent"]
    decoded = serde_for("OutcomeEvent").decode(
        serde_for("OutcomeEvent").encode(RECORDS["OutcomeEvent"])
    )
    assert decoded["note"] is None


def test_schemas_dir_env_not_a_directory(
    tmp_path: Path, schemas_env: Callable[[Path], None]
) -> None:
    schemas_env(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"STREAMMON_SCHEMAS_DIR=.*missing.* is not a directory"):
        load_schema("PredictionEvent")


def test_schemas_dir_env_without_the_file(
    tmp_path: Path, schemas_env: Callable[[Path], None]
) -> None:
    schemas_env(tmp_path)
    with pytest.raises(SerializationError, match=r"cannot read schema file AlertEvent\.avsc"):
        load_schema("AlertEvent")


def test_schema_file_with_wrong_record_name(
    tmp_path: Path, schemas_env: Callable[[Path], None]
) -> None:
    raw = json.loads((SCHEMAS / "RetrainRequest.avsc").read_text())
    raw["name"] = "RetrainOrder"
    (tmp_path / "RetrainRequest.avsc").write_text(json.dumps(raw))
    schemas_env(tmp_path)
    with pytest.raises(SerializationError, match=r"named 'io\.streammon\.events\.RetrainOrder'"):
        load_schema("RetrainRequest")


# --- byte literals: encode gives exactly these bytes, decode gives back the record ------

OUTCOME_PREFIX = _str("p-1") + _long(1_700_000_000_000)

LITERAL_CASES = [
    pytest.param(
        "OutcomeEvent",
        {"prediction_id": "p-1", "timestamp": 1_700_000_000_000, "label": 1, "model_name": None},
        bytes.fromhex(JAVA_OUTCOME_HEX),
        id="outcome-long-label-java-literal",
    ),
    pytest.param(
        "OutcomeEvent",
        {"prediction_id": "p-1", "timestamp": 1_700_000_000_000, "label": 1, "model_name": None},
        _header("OutcomeEvent") + OUTCOME_PREFIX + _branch(0, _long(1)) + _branch(0),
        id="outcome-long-label",
    ),
    pytest.param(
        "OutcomeEvent",
        {"prediction_id": "p-1", "timestamp": 1_700_000_000_000, "label": 2.5, "model_name": None},
        _header("OutcomeEvent") + OUTCOME_PREFIX + _branch(1, _double(2.5)) + _branch(0),
        id="outcome-double-label",
    ),
    pytest.param(
        "OutcomeEvent",
        {"prediction_id": "p-1", "timestamp": 1_700_000_000_000, "label": 1.0, "model_name": None},
        _header("OutcomeEvent") + OUTCOME_PREFIX + _branch(1, _double(1.0)) + _branch(0),
        id="outcome-integral-float-label-stays-double",
    ),
    pytest.param(
        "OutcomeEvent",
        {
            "prediction_id": "p-1",
            "timestamp": 1_700_000_000_000,
            "label": "churned",
            "model_name": "churn",
        },
        _header("OutcomeEvent")
        + OUTCOME_PREFIX
        + _branch(2, _str("churned"))
        + _branch(1, _str("churn")),
        id="outcome-string-label-with-model",
    ),
    pytest.param(
        "OutcomeEvent",
        {"prediction_id": "", "timestamp": -1, "label": -(2**63), "model_name": None},
        _header("OutcomeEvent") + _str("") + _long(-1) + _branch(0, _long(-(2**63))) + _branch(0),
        id="outcome-extremes",
    ),
    pytest.param(
        "PredictionEvent",
        {
            "prediction_id": "p-9",
            "model_name": "m",
            "model_version": "1",
            "timestamp": 5,
            "features": {"age": 41, "ratio": 0.5, "city": "Oslo", "vip": False, "gap": None},
            "prediction": "yes",
            "score": 0.75,
            "probabilities": {"yes": 0.75},
            "tags": {"region": "eu"},
        },
        _header("PredictionEvent")
        + _str("p-9")
        + _str("m")
        + _str("1")
        + _long(5)
        + _map(
            [
                ("age", _branch(2, _long(41))),  # int -> the long branch, though double comes first
                ("ratio", _branch(1, _double(0.5))),
                ("city", _branch(3, _str("Oslo"))),
                ("vip", _branch(4, b"\x00")),
                ("gap", _branch(0)),
            ]
        )
        + _branch(2, _str("yes"))
        + _branch(1, _double(0.75))
        + _branch(1, _map([("yes", _double(0.75))]))
        + _map([("region", _str("eu"))]),
        id="prediction-every-feature-branch",
    ),
    pytest.param(
        "PredictionEvent",
        {
            "prediction_id": "p-0",
            "model_name": "m",
            "model_version": "1",
            "timestamp": 0,
            "features": {},
            "prediction": 3.25,
            "score": None,
            "probabilities": None,
            "tags": {},
        },
        _header("PredictionEvent")
        + _str("p-0")
        + _str("m")
        + _str("1")
        + _long(0)
        + _map([])
        + _branch(1, _double(3.25))
        + _branch(0)
        + _branch(0)
        + _map([]),
        id="prediction-regression-empty-maps",
    ),
]


@pytest.mark.parametrize(("name", "record", "expected"), LITERAL_CASES)
def test_encode_gives_the_literal_bytes(name: str, record: dict[str, Any], expected: bytes) -> None:
    assert serde_for(name).encode(record) == expected


@pytest.mark.parametrize(("name", "record", "expected"), LITERAL_CASES)
def test_decode_of_the_literal_bytes(name: str, record: dict[str, Any], expected: bytes) -> None:
    decoded = serde_for(name).decode(expected)
    assert decoded == record
    for key, value in record.items():
        assert type(decoded[key]) is type(value), key
    for key, value in record.get("features", {}).items():
        assert type(decoded["features"][key]) is type(value), key


def test_defaults_fill_fields_left_out_on_encode() -> None:
    record = {
        "prediction_id": "p-1",
        "model_name": "m",
        "model_version": "1",
        "timestamp": 5,
        "prediction": 0,
    }
    data = serde_for("PredictionEvent").encode(record)
    assert data == (
        _header("PredictionEvent")
        + _str("p-1")
        + _str("m")
        + _str("1")
        + _long(5)
        + _map([])
        + _branch(0, _long(0))
        + _branch(0)
        + _branch(0)
        + _map([])
    )
    assert serde_for("PredictionEvent").decode(data) == {
        **record,
        "features": {},
        "score": None,
        "probabilities": None,
        "tags": {},
    }


# --- round trips of realistic records ---------------------------------------------------


def test_realistic_records_cover_every_schema() -> None:
    assert set(RECORDS) == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_round_trip(name: str) -> None:
    record = RECORDS[name]
    data = serde_for(name).encode(record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(FINGERPRINTS[name])
    decoded = serde_for(name).decode(data)
    assert decoded == record
    assert list(decoded) == [f["name"] for f in load_schema(name)["fields"]]
    # The body is plain Avro: a generic reader with the schema file reads the same record.
    canonical = fastavro.schema.to_parsing_canonical_form(load_schema(name))
    plain = fastavro.parse_schema(json.loads(canonical))
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), plain, None) == record


@pytest.mark.parametrize(
    "value",
    [0, 1, -7, 2**62, 0.0, 1.0, -2.5, 1e300, "0", "1", "churned", ""],
    ids=repr,
)
@pytest.mark.parametrize("field", ["prediction", "label"])
def test_label_union_keeps_python_type(field: str, value: Any) -> None:
    name = "LabeledExample"
    record = {**RECORDS[name], field: value}
    decoded = serde_for(name).decode(serde_for(name).encode(record))
    assert decoded[field] == value
    assert type(decoded[field]) is type(value)


@pytest.mark.parametrize(
    "value", [0, 41, -3, 2**40, 41.0, 0.5, True, False, None, "41", ""], ids=repr
)
def test_feature_union_keeps_python_type(value: Any) -> None:
    record = _prediction(features={"x": value, "other": 1.5})
    decoded = serde_for("PredictionEvent").decode(serde_for("PredictionEvent").encode(record))
    assert decoded["features"] == {"x": value, "other": 1.5}
    assert type(decoded["features"]["x"]) is type(value)


def test_numpy_integers_in_features_are_written_as_long() -> None:
    np = pytest.importorskip("numpy")
    record = _prediction(features={"n": np.int64(7), "f": np.float64(0.25)})
    decoded = serde_for("PredictionEvent").decode(serde_for("PredictionEvent").encode(record))
    assert decoded["features"] == {"n": 7, "f": 0.25}
    assert type(decoded["features"]["n"]) is int


def test_encode_does_not_modify_the_record() -> None:
    record = _prediction(timestamp=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    snapshot = {**record, "features": dict(record["features"])}
    serde_for("PredictionEvent").encode(record)
    assert record == snapshot


@pytest.mark.parametrize(
    ("when", "millis"),
    [
        (dt.datetime(2024, 12, 1, 0, 0, 0, 123_000, tzinfo=dt.UTC), TS),
        (dt.datetime(2024, 12, 1, 1, 0, 0, 123_999, tzinfo=dt.timezone(dt.timedelta(hours=1))), TS),
        (dt.datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=dt.UTC), -1),
        (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), 0),
    ],
    ids=["utc", "utc+1-truncates-micros", "pre-epoch-floors", "epoch"],
)
def test_datetime_timestamps_encode_as_millis(when: dt.datetime, millis: int) -> None:
    data = serde_for("OutcomeEvent").encode({**RECORDS["OutcomeEvent"], "timestamp": when})
    assert data == serde_for("OutcomeEvent").encode(
        {**RECORDS["OutcomeEvent"], "timestamp": millis}
    )
    assert serde_for("OutcomeEvent").decode(data)["timestamp"] == millis


def test_nullable_timestamp_accepts_datetime() -> None:
    when = dt.datetime(2024, 12, 1, 0, 0, 0, 123_000, tzinfo=dt.UTC)
    record = {**RECORDS["AlertEvent"], "status": "resolved", "ends_at": when}
    assert serde_for("AlertEvent").decode(serde_for("AlertEvent").encode(record))["ends_at"] == TS


# --- encode failures -------------------------------------------------------------------


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


ENCODE_FAILURES = [
    pytest.param(
        "PredictionEvent",
        _prediction(prediction_id=42),
        "PredictionEvent: field 'prediction_id' is 42 (int), expected string",
        id="wrong-type",
    ),
    pytest.param(
        "PredictionEvent",
        _without(_prediction(), "prediction_id"),
        "PredictionEvent: field 'prediction_id' is missing",
        id="missing",
    ),
    pytest.param(
        "PredictionEvent",
        _without(_without(_prediction(), "model_name"), "prediction"),
        "field 'model_name' is missing; field 'prediction' is missing",
        id="two-missing",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(prediction=True),
        "field 'prediction' is True (bool), expected long or double or string",
        id="bool-label",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(prediction=None),
        "field 'prediction' is None (NoneType)",
        id="null-label",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(features={"ok": 1.0, "bad": [1, 2]}),
        "field 'features' contains [1, 2] (list), expected null or double",
        id="feature",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(features={1: 1.0}),
        "field 'features' is {1: 1.0} (dict)",
        id="feature-key-not-str",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(tags={"region": 3}),
        "field 'tags' contains 3 (int), expected string",
        id="tag-value",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(probabilities={"1": "high"}),
        "field 'probabilities' contains 'high' (str), expected double",
        id="proba",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(timestamp=1.7e12),
        "field 'timestamp' is 1700000000000.0 (float), expected long (int epoch millis",
        id="float-timestamp",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(timestamp="2024-12-01T00:00:00Z"),
        "field 'timestamp' is '2024-12-01T00:00:00Z' (str)",
        id="str-timestamp",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(timestamp=dt.datetime(2024, 12, 1)),
        "field 'timestamp': naive datetime",
        id="naive-datetime",
    ),
    pytest.param(
        "PredictionEvent",
        _prediction(timestamp=2**63),
        "field 'timestamp' is 9223372036854775808 (int)",
        id="long-overflow",
    ),
    pytest.param(
        "PredictionEvent",
        {**_prediction(), "modelname": "x", "extra": 1},
        "PredictionEvent: unknown field(s) extra, modelname",
        id="unknown-fields",
    ),
    pytest.param(
        "PredictionEvent",
        ["not", "a", "mapping"],
        "PredictionEvent: expected a mapping of field names, got list",
        id="not-mapping",
    ),
    pytest.param(
        "ModelVersionEvent",
        {**RECORDS["ModelVersionEvent"], "version": 2**31},
        "field 'version' is 2147483648 (int), expected int",
        id="int-overflow",
    ),
    pytest.param(
        "ModelVersionEvent",
        {**RECORDS["ModelVersionEvent"], "metrics": {"auc": None}},
        "field 'metrics' contains None (NoneType), expected double",
        id="map-null",
    ),
    pytest.param(
        "AlertEvent",
        _without(RECORDS["AlertEvent"], "labels"),
        "field 'labels' is missing",
        id="map-without-default",
    ),
    pytest.param(
        "AlertEvent",
        {**RECORDS["AlertEvent"], "ends_at": "never"},
        "field 'ends_at' is 'never' (str), expected null or long",
        id="nullable-ts",
    ),
    pytest.param(
        "LabeledExample",
        {**RECORDS["LabeledExample"], "source_partition": "5"},
        "field 'source_partition' is '5' (str), expected int",
        id="int-as-str",
    ),
]


@pytest.mark.parametrize(("name", "record", "message"), ENCODE_FAILURES)
def test_encode_failure_names_the_field(name: str, record: Any, message: str) -> None:
    with pytest.raises(SerializationError) as info:
        serde_for(name).encode(record)
    assert type(info.value) is SerializationError
    assert message in str(info.value)


# --- decode failures -------------------------------------------------------------------

GOOD_OUTCOME = bytes.fromhex(JAVA_OUTCOME_HEX)

DECODE_FAILURES = [
    pytest.param(b"", SerializationError, "OutcomeEvent: empty message (0 bytes)", id="empty"),
    pytest.param(None, SerializationError, "empty message (None)", id="none"),
    pytest.param(
        b"\x01\x02\x03",
        SerializationError,
        "bad magic 01 02, expected c3 01 (Avro single-object encoding)",
        id="magic",
    ),
    pytest.param(b'{"prediction_id": 1}', SerializationError, "bad magic 7b 22", id="json"),
    pytest.param(
        b"\xc3\x02" + GOOD_OUTCOME[2:],
        SerializationError,
        "bad magic c3 02",
        id="magic-second-byte",
    ),
    pytest.param(b"\xc3", SerializationError, "truncated header: 1 bytes", id="header-1"),
    pytest.param(
        GOOD_OUTCOME[:9],
        SerializationError,
        "truncated header: 9 bytes, single-object encoding needs 10",
        id="header-9",
    ),
    pytest.param(
        b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08" + GOOD_OUTCOME[10:],
        UnknownSchemaError,
        "unknown schema fingerprint 0102030405060708 (known: 9828581c21cd2a4b)",
        id="unknown-fingerprint",
    ),
    pytest.param(
        _header("PredictionEvent") + GOOD_OUTCOME[10:],
        UnknownSchemaError,
        "unknown schema fingerprint 4eacac07c83a63b7",
        id="other-schema-fingerprint",
    ),
    pytest.param(
        GOOD_OUTCOME[:10],
        SerializationError,
        "body does not decode with the current schema: EOFError",
        id="no-body",
    ),
    pytest.param(GOOD_OUTCOME[:-1], SerializationError, "body does not decode", id="cut-body"),
    pytest.param(
        GOOD_OUTCOME + b"\x00",
        SerializationError,
        "1 trailing byte(s) after the record (record ends at offset 23 of 24)",
        id="trailing-byte",
    ),
    pytest.param(
        GOOD_OUTCOME + GOOD_OUTCOME, SerializationError, "23 trailing byte(s)", id="two-messages"
    ),
    pytest.param(
        _header("OutcomeEvent") + OUTCOME_PREFIX + _branch(3, _long(1)) + _branch(0),
        SerializationError,
        "body does not decode",
        id="union-index-out-of-range",
    ),
    pytest.param(
        _header("OutcomeEvent")
        + _long(2)
        + b"\xff\xfe"
        + _long(1)
        + _branch(0, b"\x02")
        + _branch(0),
        SerializationError,
        "UnicodeDecodeError",
        id="bad-utf8",
    ),
    pytest.param(
        _header("OutcomeEvent") + _long(-5) + b"abc",
        SerializationError,
        "body does not decode",
        id="negative-length",
    ),
    pytest.param(
        b"\x00\x00\x00\x00\x07" + GOOD_OUTCOME[10:],
        SerializationError,
        "message starts with 00 (Confluent Schema Registry framing, schema id 7) but "
        "this serde has no registry_url",
        id="confluent-without-registry",
    ),
    pytest.param(
        b"\x00\x00\x01",
        SerializationError,
        "truncated header: 3 bytes, Confluent framing needs 5",
        id="confluent-header",
    ),
]


@pytest.mark.parametrize(("data", "error", "message"), DECODE_FAILURES)
def test_decode_failure_is_typed_and_explained(
    data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        serde_for("OutcomeEvent").decode(data)
    assert type(info.value) is error
    assert message in str(info.value)


def test_decode_never_leaks_foreign_exceptions() -> None:
    """Every truncation and many single-byte corruptions either decode or raise ours."""
    name = "PredictionEvent"
    good = serde_for(name).encode(RECORDS[name])
    rng = random.Random(20241201)
    candidates = [good[:i] for i in range(len(good))]
    for _ in range(3000):
        corrupted = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            corrupted[rng.randrange(10, len(good))] = rng.randrange(256)
        candidates.append(bytes(corrupted))
    outcomes = {"decoded": 0, "rejected": 0}
    for data in candidates:
        try:
            serde_for(name).decode(data)
        except SerializationError:
            outcomes["rejected"] += 1
        else:
            outcomes["decoded"] += 1
    assert outcomes["rejected"] >= len(good)  # at least every truncation


def test_errors_share_the_project_root() -> None:
    assert issubclass(SerializationError, StreammonError)
    assert issubclass(UnknownSchemaError, SerializationError)


# --- older writer schemas --------------------------------------------------------------


def _older_prediction_schema() -> dict[str, Any]:
    """PredictionEvent as it might have been before probabilities and tags were added."""
    raw = json.loads((SCHEMAS / "PredictionEvent.avsc").read_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] not in ("probabilities", "tags")]
    return raw


def test_older_writer_schema_resolves_to_current() -> None:
    old = _older_prediction_schema()
    old_parsed = fastavro.parse_schema(old)
    old_fp = serde._fingerprint(old_parsed)
    assert old_fp != fingerprint_of("PredictionEvent")
    record = _without(_without(_prediction(features={"x": 1.5}), "probabilities"), "tags")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old_parsed, record)
    data = b"\xc3\x01" + old_fp + body.getvalue()

    with pytest.raises(UnknownSchemaError, match=old_fp.hex()):
        serde_for("PredictionEvent").decode(data)
    reader = AvroSerde("PredictionEvent", writer_schemas=[json.dumps(old)])
    assert set(reader.known_fingerprints) == {old_fp, fingerprint_of("PredictionEvent")}
    assert reader.decode(data) == {**record, "probabilities": None, "tags": {}}
    # The current schema still decodes with the same serde.
    assert (
        reader.decode(serde_for("PredictionEvent").encode(RECORDS["PredictionEvent"]))
        == (RECORDS["PredictionEvent"])
    )


def test_writer_schema_of_another_record_is_refused() -> None:
    other = json.loads((SCHEMAS / "OutcomeEvent.avsc").read_text())
    with pytest.raises(
        UnknownSchemaError, match=r"is the record 'io\.streammon\.events\.OutcomeEvent'"
    ):
        AvroSerde("PredictionEvent", writer_schemas=[other])


def test_invalid_writer_schema_is_refused() -> None:
    with pytest.raises(SerializationError, match="writer schema is not a valid Avro schema"):
        AvroSerde("PredictionEvent", writer_schemas=["{not json"])


def test_unresolvable_writer_schema_fails_on_decode() -> None:
    old = json.loads((SCHEMAS / "OutcomeEvent.avsc").read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] != "label"]
    old["fields"].append({"name": "label", "type": "boolean", "doc": "incompatible"})
    old_parsed = fastavro.parse_schema(old)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, old_parsed, {"prediction_id": "p", "timestamp": 1, "model_name": None, "label": True}
    )
    data = b"\xc3\x01" + serde._fingerprint(old_parsed) + body.getvalue()
    with pytest.raises(SerializationError, match="body does not decode with writer schema"):
        AvroSerde("OutcomeEvent", writer_schemas=[old]).decode(data)


# --- Confluent Schema Registry framing ---------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_registry_round_trip(name: str) -> None:
    url = _fresh_registry_url()
    producer = AvroSerde(name, registry_url=url)
    consumer = AvroSerde(name, registry_url=url)
    data = producer.encode(RECORDS[name])
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    client = serde._registry_client(url, None)
    registered = client.get_latest_version(f"io.streammon.events.{name}")
    assert registered.schema_id == schema_id
    # Same Avro body as the single-object encoding, only the framing differs.
    assert data[5:] == serde_for(name).encode(RECORDS[name])[10:]
    assert consumer.decode(data) == RECORDS[name]


def test_registry_reader_still_decodes_single_object() -> None:
    consumer = AvroSerde("OutcomeEvent", registry_url=_fresh_registry_url())
    assert consumer.decode(GOOD_OUTCOME) == {
        "prediction_id": "p-1",
        "timestamp": 1_700_000_000_000,
        "label": 1,
        "model_name": None,
    }
    with pytest.raises(SerializationError, match=r"bad magic 01 02, expected c3 01 .* or 00"):
        consumer.decode(b"\x01\x02")


def test_registry_interoperates_with_confluent_serializers() -> None:
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    url = _fresh_registry_url()
    client = serde._registry_client(url, None)
    ctx = SerializationContext("outcomes", MessageField.VALUE)
    record = RECORDS["OutcomeEvent"]
    ours = AvroSerde("OutcomeEvent", registry_url=url)

    theirs = AvroSerializer(client, (SCHEMAS / "OutcomeEvent.avsc").read_text())(record, ctx)
    assert ours.decode(theirs) == record

    decoded = AvroDeserializer(client)(ours.encode(record), ctx)
    # Confluent's deserializer applies the logical type; ours keeps int millis.
    assert decoded == {
        **record,
        "timestamp": dt.datetime.fromtimestamp(record["timestamp"] / 1000, dt.UTC),
    }


def test_registry_unknown_schema_id() -> None:
    consumer = AvroSerde("OutcomeEvent", registry_url=_fresh_registry_url())
    with pytest.raises(
        UnknownSchemaError, match="schema id 4242: not found in the schema registry"
    ):
        consumer.decode(b"\x00" + (4242).to_bytes(4, "big") + GOOD_OUTCOME[10:])


def test_registry_schema_id_of_another_record() -> None:
    url = _fresh_registry_url()
    data = AvroSerde("RetrainRequest", registry_url=url).encode(RECORDS["RetrainRequest"])
    with pytest.raises(
        UnknownSchemaError, match=r"is the record 'io\.streammon\.events\.RetrainRequest'"
    ):
        AvroSerde("OutcomeEvent", registry_url=url).decode(data)


def test_registry_older_version_resolves() -> None:
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    url = _fresh_registry_url()
    old = _older_prediction_schema()
    record = _without(_without(_prediction(), "probabilities"), "tags")
    writer = AvroSerializer(serde._registry_client(url, None), json.dumps(old))
    data = writer(record, SerializationContext("predictions", MessageField.VALUE))
    decoded = AvroSerde("PredictionEvent", registry_url=url).decode(data)
    assert decoded == {**record, "probabilities": None, "tags": {}}


def test_registry_encode_failure_is_ours() -> None:
    producer = AvroSerde("OutcomeEvent", registry_url=_fresh_registry_url())
    with pytest.raises(SerializationError, match="field 'label' is missing"):
        producer.encode(_without(RECORDS["OutcomeEvent"], "label"))


# --- the Apache Python implementation writes the body ----------------------------------


def test_body_written_by_apache_avro_python_decodes() -> None:
    import avro.io
    import avro.schema

    name = "PredictionEvent"
    schema = avro.schema.parse((SCHEMAS / f"{name}.avsc").read_text())
    record = RECORDS[name]
    # The Apache library wants datetimes for timestamp-millis fields.
    when = dt.datetime.fromtimestamp(record["timestamp"] / 1000, dt.UTC)
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write({**record, "timestamp": when}, avro.io.BinaryEncoder(body))
    decoded = serde_for(name).decode(b"\xc3\x01" + fingerprint_of(name) + body.getvalue())
    assert decoded == record

    # And the other way: the Apache reader reads the body that we wrote.
    ours = serde_for(name).encode(record)
    back = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(ours[10:])))
    assert back == {**record, "timestamp": when}


# --- the Java implementation writes the whole message -----------------------------------


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def avro_java_classpath() -> str:
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        _need(f"needs java and mvn on PATH (java={java}, mvn={mvn})")
    cache = Path(os.environ.get("STREAMMON_CACHE_DIR") or Path.home() / ".cache" / "streammon")
    lib = cache / "avro-java" / "lib"
    if not any(lib.glob("avro-1.12.*.jar")):
        lib.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(JAVA_DIR / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={lib}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0 or not any(lib.glob("avro-1.12.*.jar")):
            _need(
                f"mvn could not fetch org.apache.avro:avro: {proc.stdout[-2000:]}"
                f"{proc.stderr[-2000:]}"
            )
    return str(lib / "*")


def _java_encode(classpath: str, name: str, avro_json: dict[str, Any]) -> tuple[str, bytes, bytes]:
    proc = subprocess.run(
        [
            "java",
            "-cp",
            classpath,
            str(JAVA_DIR / "EncodeSingleObject.java"),
            str(SCHEMAS / f"{name}.avsc"),
            json.dumps(avro_json),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    canonical, fp_hex, message_hex = proc.stdout.split()
    return canonical, bytes.fromhex(fp_hex), bytes.fromhex(message_hex)


JAVA_CASES = [
    pytest.param(
        "PredictionEvent",
        {
            "prediction_id": "pred-42",
            "model_name": "churn",
            "model_version": "7",
            "timestamp": TS,
            "features": {
                "tenure_months": {"long": 14},
                "monthly_charges": {"double": 70.35},
                "contract": {"string": "annual"},
                "vip": {"boolean": True},
                "total_charges": None,
            },
            "prediction": {"long": 1},
            "score": {"double": 0.87},
            "probabilities": {"map": {"0": 0.13, "1": 0.87}},
            "tags": {"region": "eu-west", "channel": "web"},
        },
        _prediction(
            prediction_id="pred-42",
            score=0.87,
            probabilities={"0": 0.13, "1": 0.87},
            features={
                "tenure_months": 14,
                "monthly_charges": 70.35,
                "contract": "annual",
                "vip": True,
                "total_charges": None,
            },
        ),
        False,  # Java writes maps in HashMap order, so only the decoded record must match
        id="prediction-classifier",
    ),
    pytest.param(
        "PredictionEvent",
        {
            "prediction_id": "pred-43",
            "model_name": "price",
            "model_version": "2",
            "timestamp": TS,
            "features": {"rooms": {"long": 3}},
            "prediction": {"double": 312000.5},
            "score": None,
            "probabilities": None,
            "tags": {"region": "eu"},
        },
        {
            "prediction_id": "pred-43",
            "model_name": "price",
            "model_version": "2",
            "timestamp": TS,
            "features": {"rooms": 3},
            "prediction": 312000.5,
            "score": None,
            "probabilities": None,
            "tags": {"region": "eu"},
        },
        True,
        id="prediction-regression",
    ),
    pytest.param(
        "OutcomeEvent",
        {
            "prediction_id": "pred-42",
            "timestamp": TS + 1,
            "label": {"string": "churned"},
            "model_name": {"string": "churn"},
        },
        {
            "prediction_id": "pred-42",
            "timestamp": TS + 1,
            "label": "churned",
            "model_name": "churn",
        },
        True,
        id="outcome-string-label",
    ),
    pytest.param(
        "OutcomeEvent",
        {
            "prediction_id": "p-1",
            "timestamp": 1_700_000_000_000,
            "label": {"long": 1},
            "model_name": None,
        },
        {"prediction_id": "p-1", "timestamp": 1_700_000_000_000, "label": 1, "model_name": None},
        True,
        id="outcome-long-label",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "avro_json", "expected", "same_bytes"), JAVA_CASES)
def test_java_single_object_message_decodes(
    avro_java_classpath: str,
    name: str,
    avro_json: dict[str, Any],
    expected: dict[str, Any],
    same_bytes: bool,
) -> None:
    canonical, java_fp, message = _java_encode(avro_java_classpath, name, avro_json)
    assert canonical == fastavro.schema.to_parsing_canonical_form(load_schema(name))
    assert java_fp == fingerprint_of(name)
    assert java_fp.hex() == FINGERPRINTS[name]
    assert message[:10] == b"\xc3\x01" + java_fp
    decoded = serde_for(name).decode(message)
    assert decoded == expected
    for key, value in expected.items():
        assert type(decoded[key]) is type(value), key
    for key, value in expected.get("features", {}).items():
        assert type(decoded["features"][key]) is type(value), key
    if same_bytes:
        assert serde_for(name).encode(expected) == message
