"""Signed state blobs: every check happens before anything is unpickled."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from river import drift
from river.__version__ import __version__ as river_version

from streaming.errors import ConfigError, StateError
from streaming.state_codec import STATE_FORMATS, SignedStateCodec

KEY = b"k" * 16 + b"-test-key"
OTHER_KEY = b"o" * 16 + b"-other-key"
FMT = "detector_bundle"
PREFIX = struct.Struct(">4sBIQ")
TAG = 32


def craft(key: bytes, header: dict[str, Any], payload: bytes) -> bytes:
    """Build a blob by hand from the documented layout, signed with ``key``."""
    head = json.dumps(header).encode()
    body = PREFIX.pack(b"SMST", 1, len(head), len(payload)) + head + payload
    return body + hmac.new(key, body, hashlib.sha256).digest()


def genuine_header(**changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "format": FMT,
        "format_version": STATE_FORMATS[FMT],
        "encoding": "pickle",
        "river": river_version,
        "python": "3.11",
        "created_ms": 1_700_000_000_000,
    }
    header.update(changes)
    return header


def payload_span(blob: bytes) -> tuple[int, int]:
    _, _, head_len, payload_len = PREFIX.unpack_from(blob)
    start = PREFIX.size + head_len
    return start, start + payload_len


class FileDropper:
    """Unpickling this creates a file: proof that a payload was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def codec() -> SignedStateCodec:
    return SignedStateCodec(KEY)


def test_round_trip_restores_a_river_detector_exactly(codec: SignedStateCodec) -> None:
    rng = random.Random(3)
    adwin = drift.ADWIN()
    for _ in range(2000):
        adwin.update(int(rng.random() < 0.2))
    restored = codec.decode(codec.encode(adwin, FMT), FMT)
    assert isinstance(restored, drift.ADWIN)
    alarms = 0
    for i in range(3000):
        x = int(rng.random() < (0.2 if i < 1000 else 0.6))
        adwin.update(x)
        restored.update(x)
        assert (restored.width, restored.total, restored.drift_detected) == (
            adwin.width,
            adwin.total,
            adwin.drift_detected,
        )
        alarms += adwin.drift_detected
    assert alarms >= 1


def test_header_records_versions_and_time(codec: SignedStateCodec) -> None:
    before = time.time_ns() // 1_000_000
    blob = codec.encode([1, 2], FMT)
    after = time.time_ns() // 1_000_000
    header = codec.header(blob)
    assert header["format"] == FMT
    assert header["format_version"] == STATE_FORMATS[FMT]
    assert header["encoding"] == "pickle"
    assert header["river"] == river_version
    assert header["python"] == "3.11"
    assert before <= header["created_ms"] <= after
    assert blob[:4] == b"SMST"
    assert blob[4] == 1


def test_json_round_trip_and_no_pickle(codec: SignedStateCodec) -> None:
    data = {"offsets": {"0": 17, "3": 4}, "name": "m\u00e9trique", "ratio": 0.25}
    blob = codec.encode_json(data, FMT)
    start, end = payload_span(blob)
    assert json.loads(blob[start:end]) == data
    assert codec.decode_json(blob, FMT) == data
    assert codec.header(blob)["encoding"] == "json"


def test_json_and_pickle_blobs_are_not_interchangeable(codec: SignedStateCodec) -> None:
    with pytest.raises(StateError, match="decode_json"):
        codec.decode(codec.encode_json({"a": 1}, FMT), FMT)
    with pytest.raises(StateError, match=r"read it with decode$"):
        codec.decode_json(codec.encode({"a": 1}, FMT), FMT)


def test_json_rejects_nan_and_non_dicts(codec: SignedStateCodec) -> None:
    with pytest.raises(StateError, match="not JSON-serialisable"):
        codec.encode_json({"x": float("nan")}, FMT)
    with pytest.raises(StateError, match="must be a dict"):
        codec.encode_json([1, 2], FMT)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["payload", "header", "prefix_lengths", "tag"])
def test_any_tampered_byte_is_a_signature_mismatch(codec: SignedStateCodec, where: str) -> None:
    blob = codec.encode({"errors": list(range(50))}, FMT)
    start, end = payload_span(blob)
    spans = {
        "payload": range(start, end),
        "header": range(PREFIX.size, start),
        "prefix_lengths": range(5, PREFIX.size),
        "tag": range(len(blob) - TAG, len(blob)),
    }
    for index in list(spans[where])[:: max(1, len(spans[where]) // 8)]:
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(StateError, match=r"signature mismatch|truncated|trailing"):
            codec.decode(bytes(tampered), FMT)
    assert codec.decode(blob, FMT) == {"errors": list(range(50))}


def test_tampered_header_cannot_fake_the_river_version(codec: SignedStateCodec) -> None:
    blob = codec.encode({"a": 1}, FMT)
    fake = blob.replace(river_version.encode(), b"9.9.999"[: len(river_version)])
    assert fake != blob
    with pytest.raises(StateError, match="signature mismatch"):
        codec.decode(fake, FMT)


def test_wrong_key(codec: SignedStateCodec) -> None:
    blob = SignedStateCodec(OTHER_KEY).encode({"a": 1}, FMT)
    with pytest.raises(
        StateError, match="signature mismatch: written with another key or tampered"
    ):
        codec.decode(blob, FMT)
    with pytest.raises(StateError, match="signature mismatch"):
        codec.header(blob)


def test_unknown_format_is_refused_by_name(codec: SignedStateCodec) -> None:
    other = SignedStateCodec(KEY, formats={"join_buffer": 1})
    blob = other.encode({"a": 1}, "join_buffer")
    with pytest.raises(StateError, match="unknown state format 'join_buffer'"):
        codec.decode(blob, "join_buffer")
    with pytest.raises(ConfigError, match="unknown state format 'join_buffer'"):
        codec.encode({"a": 1}, "join_buffer")
    assert other.decode(blob, "join_buffer") == {"a": 1}


def test_format_must_match_the_requested_one() -> None:
    codec = SignedStateCodec(KEY, formats={FMT: 1, "metrics": 1})
    with pytest.raises(StateError, match="has format 'metrics', expected 'detector_bundle'"):
        codec.decode(codec.encode({"a": 1}, "metrics"), FMT)


def test_unknown_format_version_is_refused(codec: SignedStateCodec) -> None:
    newer = SignedStateCodec(KEY, formats={FMT: 7})
    with pytest.raises(StateError, match=r"'detector_bundle' version 7 is not supported"):
        codec.decode(newer.encode({"a": 1}, FMT), FMT)


def test_crafted_header_matches_the_codec_layout(codec: SignedStateCodec) -> None:
    # control for the tests below: a hand-made genuine blob decodes
    assert codec.decode(craft(KEY, genuine_header(), pickle.dumps({"a": 1})), FMT) == {"a": 1}


def test_river_version_mismatch_names_both_versions(
    codec: SignedStateCodec, tmp_path: Path
) -> None:
    marker = tmp_path / "loaded"
    blob = craft(KEY, genuine_header(river="0.19.0"), pickle.dumps(FileDropper(marker)))
    with pytest.raises(StateError) as info:
        codec.decode(blob, FMT)
    message = str(info.value)
    assert "0.19.0" in message
    assert river_version in message
    assert "replay from the topic or reset state" in message
    assert not marker.exists()


def test_json_blobs_do_not_depend_on_the_river_version(codec: SignedStateCodec) -> None:
    header = genuine_header(river="0.19.0", encoding="json")
    assert codec.decode_json(craft(KEY, header, b'{"n": 2}'), FMT) == {"n": 2}


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"format": FMT}, "header field 'format_version'"),
        (genuine_header(created_ms="yesterday"), "header field 'created_ms'"),
    ],
)
def test_malformed_signed_header(
    codec: SignedStateCodec, header: dict[str, Any], match: str
) -> None:
    with pytest.raises(StateError, match=match):
        codec.decode(craft(KEY, header, pickle.dumps(1)), FMT)


def test_truncated_blob_at_every_length(codec: SignedStateCodec) -> None:
    blob = codec.encode({"a": list(range(10))}, FMT)
    for cut in range(len(blob)):
        with pytest.raises(StateError, match="truncated"):
            codec.decode(blob[:cut], FMT)
    with pytest.raises(StateError, match="trailing bytes"):
        codec.decode(blob + b"\x00", FMT)


def test_bad_magic_and_envelope_version(codec: SignedStateCodec) -> None:
    blob = codec.encode({"a": 1}, FMT)
    with pytest.raises(StateError, match="not a streammon state blob"):
        codec.decode(b"PK\x03\x04" + blob[4:], FMT)
    with pytest.raises(StateError, match="envelope version 2 is not supported"):
        codec.decode(blob[:4] + b"\x02" + blob[5:], FMT)
    with pytest.raises(StateError, match="must be bytes"):
        codec.decode("SMST", FMT)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15])
def test_short_key_is_a_config_error(key: bytes) -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        SignedStateCodec(key)


def test_key_must_be_bytes() -> None:
    with pytest.raises(ConfigError, match="must be bytes"):
        SignedStateCodec("a" * 32)  # type: ignore[arg-type]
    SignedStateCodec(b"x" * 16)


def test_file_dropper_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # control for the next test: the payload is genuinely malicious
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(FileDropper(marker))).close()
    assert marker.exists()


def test_malicious_pickle_with_bad_signature_is_never_loaded(
    codec: SignedStateCodec, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(FileDropper(marker), protocol=5)
    # 1. an attacker without the key signs it with their own key
    with pytest.raises(StateError, match="signature mismatch"):
        codec.decode(SignedStateCodec(OTHER_KEY).encode(FileDropper(marker), FMT), FMT)
    # 2. an attacker splices it into a genuine blob, keeping the genuine signature
    genuine = codec.encode({"a": 1}, FMT)
    start, end = payload_span(genuine)
    _, _, head_len, _ = PREFIX.unpack_from(genuine)
    spliced = (
        PREFIX.pack(b"SMST", 1, head_len, len(evil))
        + genuine[PREFIX.size : start]
        + evil
        + genuine[end:]
    )
    with pytest.raises(StateError, match="signature mismatch"):
        codec.decode(spliced, FMT)
    # 3. the same malicious bytes with no valid envelope at all
    with pytest.raises(StateError):
        codec.decode(evil, FMT)
    assert not marker.exists()


def test_signed_but_unloadable_payload(codec: SignedStateCodec) -> None:
    with pytest.raises(StateError, match="cannot be unpickled"):
        codec.decode(craft(KEY, genuine_header(), b"\x80\x05not a pickle"), FMT)
