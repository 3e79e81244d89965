"""Versioned, HMAC-signed state blobs (river detectors need pickle; never unpickle strangers).

A blob is laid out as::

    b"SMST" | envelope version (1 byte) | header length (4 bytes) | payload length (8 bytes)
    | JSON header | payload | HMAC-SHA256 of everything before it (32 bytes)

The header records ``format``, ``format_version``, ``encoding`` (``pickle`` or ``json``), the
``river`` and ``python`` versions of the writer and ``created_ms``. :meth:`SignedStateCodec.decode`
checks lengths and magic, then the signature, then format, format version and river version, and
only then unpickles. River pickles are not portable across river versions: after an upgrade,
replay from the topic or reset state.

>>> codec = SignedStateCodec(b"0123456789abcdef")
>>> blob = codec.encode({"window": [1, 0, 1]}, "detector_bundle")
>>> blob[:4]
b'SMST'
>>> codec.decode(blob, "detector_bundle")
{'window': [1, 0, 1]}
>>> SignedStateCodec(b"another key, 16+").decode(blob, "detector_bundle")
Traceback (most recent call last):
...
streaming.errors.StateError: state blob signature mismatch: written with another key or tampered
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import struct
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from river.__version__ import __version__ as river_version

from streaming.errors import ConfigError, StateError

MAGIC = b"SMST"
ENVELOPE_VERSION = 1
MIN_KEY_BYTES = 16
PICKLE_PROTOCOL = 5

STATE_FORMATS: Mapping[str, int] = MappingProxyType({"detector_bundle": 1})
"""Every state format streammon writes, with the one version this build reads and writes."""

_PREFIX = struct.Struct(">4sBIQ")  # magic, envelope version, header length, payload length
_TAG_BYTES = hashlib.sha256().digest_size
_MIN_BLOB = _PREFIX.size + _TAG_BYTES
_HEADER_FIELDS: Mapping[str, type] = MappingProxyType(
    {
        "format": str,
        "format_version": int,
        "encoding": str,
        "river": str,
        "python": str,
        "created_ms": int,
    }
)
_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class SignedStateCodec:
    """Encode and decode signed state blobs with one HMAC key (at least 16 bytes).

    ``formats`` maps each accepted format name to its version; defaults to
    :data:`STATE_FORMATS`.
    """

    def __init__(self, key: bytes, *, formats: Mapping[str, int] | None = None) -> None:
        if not isinstance(key, bytes | bytearray):
            msg = f"state HMAC key must be bytes, got {type(key).__name__}"
            raise ConfigError(msg)
        if len(key) < MIN_KEY_BYTES:
            msg = f"state HMAC key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}"
            raise ConfigError(msg)
        self._key = bytes(key)
        self._formats = dict(STATE_FORMATS if formats is None else formats)
        for name, version in self._formats.items():
            if not isinstance(name, str) or not name or type(version) is not int or version < 1:
                msg = f"state format {name!r} needs a non-empty name and a version >= 1"
                raise ConfigError(msg)

    def __repr__(self) -> str:
        return f"SignedStateCodec(formats={sorted(self._formats)})"

    # ---- encoding ------------------------------------------------------------------------
    def encode(self, obj: object, fmt: str) -> bytes:
        """Pickle ``obj`` (protocol 5) into a signed blob of format ``fmt``."""
        try:
            payload = pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            msg = f"state {fmt!r} cannot be pickled: {exc}"
            raise StateError(msg) from exc
        return self._seal(payload, fmt, "pickle")

    def encode_json(self, data: dict[str, Any], fmt: str) -> bytes:
        """Serialise plain ``data`` as JSON (no pickle) into a signed blob of format ``fmt``."""
        if not isinstance(data, dict):
            msg = f"state {fmt!r} must be a dict for JSON encoding, got {type(data).__name__}"
            raise StateError(msg)
        try:
            payload = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            msg = f"state {fmt!r} is not JSON-serialisable: {exc}"
            raise StateError(msg) from exc
        return self._seal(payload, fmt, "json")

    def _seal(self, payload: bytes, fmt: str, encoding: str) -> bytes:
        version = self._format_version(fmt)
        header = {
            "format": fmt,
            "format_version": version,
            "encoding": encoding,
            "river": river_version,
            "python": _PYTHON,
            "created_ms": time.time_ns() // 1_000_000,
        }
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        body = (
            _PREFIX.pack(MAGIC, ENVELOPE_VERSION, len(header_bytes), len(payload))
            + header_bytes
            + payload
        )
        return body + self._tag(body)

    # ---- decoding ------------------------------------------------------------------------
    def decode(self, blob: bytes, fmt: str) -> object:
        """Verify ``blob`` completely, then unpickle it; any doubt raises :class:`StateError`."""
        header, payload = self._open(blob, fmt, "pickle")
        if header["river"] != river_version:
            msg = (
                f"state blob {fmt!r} was written with river {header['river']} but this process "
                f"runs river {river_version}; river pickles do not survive a river upgrade: "
                "replay from the topic or reset state"
            )
            raise StateError(msg)
        try:
            return pickle.loads(payload)
        except Exception as exc:
            msg = f"state blob {fmt!r} is signed but cannot be unpickled: {exc}"
            raise StateError(msg) from exc

    def decode_json(self, blob: bytes, fmt: str) -> dict[str, Any]:
        """Verify ``blob`` completely, then parse its JSON payload (any river version)."""
        _, payload = self._open(blob, fmt, "json")
        try:
            data = json.loads(payload)
        except ValueError as exc:
            msg = f"state blob {fmt!r} is signed but its JSON payload is invalid: {exc}"
            raise StateError(msg) from exc
        if not isinstance(data, dict):
            msg = f"state blob {fmt!r} holds JSON {type(data).__name__}, expected an object"
            raise StateError(msg)
        return data

    def header(self, blob: bytes) -> dict[str, Any]:
        """The verified header of ``blob`` (signature checked, payload never loaded)."""
        body = self._verify(blob)
        header, _ = self._split(body)
        return header

    def _open(self, blob: bytes, fmt: str, encoding: str) -> tuple[dict[str, Any], bytes]:
        body = self._verify(blob)
        header, payload = self._split(body)
        found = header["format"]
        if found not in self._formats:
            msg = f"unknown state format {found!r} (this build knows {sorted(self._formats)})"
            raise StateError(msg)
        if found != fmt:
            msg = f"state blob has format {found!r}, expected {fmt!r}"
            raise StateError(msg)
        expected = self._formats[fmt]
        if header["format_version"] != expected:
            msg = (
                f"state format {fmt!r} version {header['format_version']} is not supported "
                f"(this build reads version {expected}); replay from the topic or reset state"
            )
            raise StateError(msg)
        if header["encoding"] != encoding:
            reader = "decode_json" if header["encoding"] == "json" else "decode"
            msg = f"state blob {fmt!r} holds {header['encoding']} data; read it with {reader}"
            raise StateError(msg)
        return header, payload

    def _verify(self, blob: bytes) -> bytes:
        """Check lengths, magic and envelope version, then the HMAC; return the signed body."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            msg = f"state blob must be bytes, got {type(blob).__name__}"
            raise StateError(msg)
        data = bytes(blob)
        if len(data) < _MIN_BLOB:
            msg = f"state blob truncated: {len(data)} bytes, a blob has at least {_MIN_BLOB}"
            raise StateError(msg)
        magic, version, header_len, payload_len = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            msg = f"not a streammon state blob: starts with {magic!r}, expected {MAGIC!r}"
            raise StateError(msg)
        if version != ENVELOPE_VERSION:
            msg = (
                f"state blob envelope version {version} is not supported "
                f"(this build reads version {ENVELOPE_VERSION})"
            )
            raise StateError(msg)
        expected = _PREFIX.size + header_len + payload_len + _TAG_BYTES
        if len(data) < expected:
            msg = f"state blob truncated: {len(data)} bytes, its lengths announce {expected}"
            raise StateError(msg)
        if len(data) > expected:
            msg = f"state blob has {len(data) - expected} trailing bytes after its signature"
            raise StateError(msg)
        body, tag = data[:-_TAG_BYTES], data[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            msg = "state blob signature mismatch: written with another key or tampered"
            raise StateError(msg)
        return body

    def _split(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        _, _, header_len, _ = _PREFIX.unpack_from(body)
        start = _PREFIX.size
        try:
            header = json.loads(body[start : start + header_len])
        except ValueError as exc:
            msg = f"state blob header is not valid JSON: {exc}"
            raise StateError(msg) from exc
        if not isinstance(header, dict):
            msg = "state blob header is not a JSON object"
            raise StateError(msg)
        for name, kind in _HEADER_FIELDS.items():
            value = header.get(name)
            if type(value) is not kind:
                msg = f"state blob header field {name!r} is missing or not {kind.__name__}"
                raise StateError(msg)
        return header, body[start + header_len :]

    def _format_version(self, fmt: str) -> int:
        try:
            return self._formats[fmt]
        except KeyError:
            msg = f"unknown state format {fmt!r} (this build knows {sorted(self._formats)})"
            raise ConfigError(msg) from None

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()
