"""Avro encoding and decoding of the event contracts in ``schemas/``.

The default wire format is Avro single-object encoding: ``C3 01``, the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
then the schemaless Avro body. With ``registry_url`` the Confluent Schema Registry
framing is written instead (``00`` + 4-byte big-endian schema id + body); a serde
with a registry still decodes single-object messages (dispatch on the first byte).

Python types, in both directions:

* ``timestamp-millis`` fields are ``int`` epoch milliseconds (UTC). ``encode`` also
  accepts timezone-aware :class:`datetime.datetime`; naive ones are refused. Other
  logical types are handled as their underlying Avro type.
* union values keep their branch type: ``int`` for ``long``, ``float`` for ``double``,
  ``str``, ``bool``, ``None``. An ``int`` in a union that lists ``double`` before
  ``long`` (the feature map) is still written as ``long``.
* maps are ``dict``; fields left out of a record get their schema default.

>>> serde = serde_for("OutcomeEvent")
>>> data = serde.encode({"prediction_id": "p-1", "timestamp": 1_700_000_000_000, "label": 1})
>>> data[:2].hex(), data[2:10] == fingerprint_of("OutcomeEvent")
('c301', True)
>>> serde.decode(data)
{'prediction_id': 'p-1', 'timestamp': 1700000000000, 'label': 1, 'model_name': None}
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import json
import os
import threading
from collections.abc import Iterable, Mapping
from io import BytesIO
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from streaming.errors import (
    ConfigError,
    SerializationError,
    ServiceUnavailableError,
    UnknownSchemaError,
)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "CONFLUENT_MAGIC",
    "NAMESPACE",
    "SCHEMAS_DIR_ENV",
    "SCHEMA_NAMES",
    "SINGLE_OBJECT_MAGIC",
    "AvroSerde",
    "fingerprint_of",
    "load_schema",
    "reload_schemas",
    "schemas_dir",
    "serde_for",
]

SCHEMA_NAMES: Final = (
    "PredictionEvent",
    "OutcomeEvent",
    "LabeledExample",
    "AlertEvent",
    "RetrainRequest",
    "ModelVersionEvent",
)
"""Names of the event contracts; each is ``schemas/<name>.avsc``."""

NAMESPACE: Final = "io.streammon.events"
SCHEMAS_DIR_ENV: Final = "STREAMMON_SCHEMAS_DIR"
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
CONFLUENT_MAGIC: Final = 0

_SO_HEADER_LEN: Final = 10
_CONFLUENT_HEADER_LEN: Final = 5
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS: Final = dt.timedelta(milliseconds=1)
_TIMESTAMP_MILLIS: Final = "timestamp-millis"


# ---------------------------------------------------------------------------------------
# Schema files


def schemas_dir() -> Traversable:
    """Directory holding the ``.avsc`` files.

    ``$STREAMMON_SCHEMAS_DIR`` if set, else the ``streaming/_schemas`` shipped in the
    wheel, else ``schemas/`` next to the package (source checkout, editable install).
    """
    env = os.environ.get(SCHEMAS_DIR_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            msg = f"{SCHEMAS_DIR_ENV}={env!r} is not a directory"
            raise ConfigError(msg)
        return path
    packaged = importlib.resources.files("streaming") / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


def _strip_logical_types(schema: Any) -> Any:
    """Copy of a schema (JSON form) without ``logicalType`` annotations."""
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


def _parse(schema: Any) -> dict[str, Any]:
    """fastavro ``parse_schema`` of a record schema (JSON form)."""
    return cast(dict[str, Any], parse_schema(schema))


def _fingerprint(parsed: dict[str, Any]) -> bytes:
    hexdigest = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    return bytes.fromhex(hexdigest)


def _full_name(schema: Mapping[str, Any]) -> str:
    name = str(schema.get("name", ""))
    namespace = schema.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name


def _type_name(schema: Any) -> str:
    """Short human-readable rendering of an Avro type for error messages."""
    if isinstance(schema, str):
        return schema.rsplit(".", 1)[-1]
    if isinstance(schema, list):
        return " | ".join(_type_name(s) for s in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "map":
            return f"map<{_type_name(schema['values'])}>"
        if kind == "array":
            return f"array<{_type_name(schema['items'])}>"
        if kind in ("record", "enum", "fixed", "error"):
            return str(schema.get("name", kind)).rsplit(".", 1)[-1]
        return _type_name(kind)
    return repr(schema)


def _is_timestamp_millis(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("logicalType") == _TIMESTAMP_MILLIS


def _long_after_double(union: Any) -> bool:
    """True for a union where fastavro would write an ``int`` as ``double``."""
    if not isinstance(union, list) or "long" not in union:
        return False
    floats = [union.index(t) for t in ("double", "float") if t in union]
    return bool(floats) and min(floats) < union.index("long")


class _Contract:
    """One schema, parsed once: what encode and decode need, precomputed."""

    __slots__ = (
        "field_names",
        "fingerprint",
        "full_name",
        "long_tag_maps",
        "long_tag_unions",
        "name",
        "parsed",
        "plain",
        "raw",
        "required",
        "schema_str",
        "timestamp_fields",
    )

    def __init__(self, name: str, raw: dict[str, Any]) -> None:
        self.name = name
        self.raw = raw
        self.schema_str = json.dumps(raw, separators=(",", ":"))
        self.full_name = _full_name(raw)
        self.parsed = _parse(raw)
        # Read and written without logical types: timestamps stay int millis.
        self.plain = _parse(_strip_logical_types(raw))
        self.fingerprint = _fingerprint(self.parsed)
        fields: list[dict[str, Any]] = raw.get("fields", [])
        self.field_names = frozenset(f["name"] for f in fields)
        self.required = tuple(f["name"] for f in fields if "default" not in f)
        ts: list[str] = []
        tag_maps: list[str] = []
        tag_unions: list[str] = []
        for field in fields:
            ftype = field["type"]
            if _is_timestamp_millis(ftype) or (
                isinstance(ftype, list) and any(_is_timestamp_millis(t) for t in ftype)
            ):
                ts.append(field["name"])
            if _long_after_double(ftype):
                tag_unions.append(field["name"])
            if (
                isinstance(ftype, dict)
                and ftype.get("type") == "map"
                and _long_after_double(ftype["values"])
            ):
                tag_maps.append(field["name"])
        self.timestamp_fields = tuple(ts)
        self.long_tag_maps = tuple(tag_maps)
        self.long_tag_unions = tuple(tag_unions)


@functools.cache
def _contract(name: str) -> _Contract:
    if name not in SCHEMA_NAMES:
        msg = f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}"
        raise UnknownSchemaError(msg)
    source = schemas_dir() / f"{name}.avsc"
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"{name}: cannot read schema file {name}.avsc: {exc}"
        raise SerializationError(msg) from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        msg = f"{name}.avsc: expected one record schema at the top level"
        raise SerializationError(msg)
    expected = f"{NAMESPACE}.{name}"
    if _full_name(raw) != expected:
        msg = f"{name}.avsc: record is named {_full_name(raw)!r}, expected {expected!r}"
        raise SerializationError(msg)
    try:
        return _Contract(name, raw)
    except SerializationError:
        raise
    except Exception as exc:  # fastavro raises several types for invalid schemas
        msg = f"{name}.avsc: invalid Avro schema: {exc}"
        raise SerializationError(msg) from exc


def load_schema(name: str) -> dict[str, Any]:
    """The fastavro-parsed schema (with logical types) of a contract; do not mutate it.

    >>> load_schema("PredictionEvent")["name"]
    'io.streammon.events.PredictionEvent'
    """
    return _contract(name).parsed


def fingerprint_of(name: str) -> bytes:
    """CRC-64-AVRO fingerprint (8 bytes, little-endian) of a contract's canonical form.

    >>> len(fingerprint_of("AlertEvent"))
    8
    """
    return _contract(name).fingerprint


def reload_schemas() -> None:
    """Forget every parsed schema and cached serde (after the schema files changed)."""
    _contract.cache_clear()
    serde_for.cache_clear()


# ---------------------------------------------------------------------------------------
# Encoding helpers


def _to_millis(value: dt.datetime) -> int:
    if value.utcoffset() is None:
        msg = "naive datetime (no tzinfo); pass an aware datetime or int epoch millis"
        raise ValueError(msg)
    return (value - _EPOCH) // _ONE_MS


def _tag_long(value: Any) -> Any:
    """Mark an integer for the ``long`` branch of a union (fastavro tuple notation)."""
    kind = type(value)
    if kind is int:
        return ("long", value)
    if kind is float or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, Integral) and not isinstance(value, bool):
        return ("long", int(value))
    return value


def _is_plain_non_long(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is str or kind is bool or value is None


# ---------------------------------------------------------------------------------------
# Schema Registry


_registry_clients: dict[tuple[str, str], Any] = {}
_registry_lock = threading.Lock()


def _registry_client(url: str, config: Mapping[str, Any] | None) -> Any:
    """One client per (url, config) in the process, so its schema cache is shared."""
    key = (url, json.dumps(dict(config or {}), sort_keys=True, default=str))
    with _registry_lock:
        client = _registry_clients.get(key)
        if client is None:
            try:
                from confluent_kafka.schema_registry import SchemaRegistryClient
            except ImportError as exc:
                msg = (
                    "registry_url is set but confluent_kafka.schema_registry cannot be "
                    f"imported ({exc}); install confluent-kafka[schemaregistry]"
                )
                raise ConfigError(msg) from exc
            conf = {**(config or {}), "url": url}
            try:
                client = SchemaRegistryClient.new_client(conf)
            except Exception as exc:
                msg = f"invalid schema registry configuration for {url!r}: {exc}"
                raise ConfigError(msg) from exc
            _registry_clients[key] = client
    return client


def _registry_failure(what: str, exc: Exception) -> Exception:
    """Map a registry client error to ours: 404 -> unknown schema, 5xx/network -> retry."""
    status = getattr(exc, "http_status_code", None)
    if status == 404:
        msg = f"{what}: not found in the schema registry ({exc})"
        return UnknownSchemaError(msg)
    if isinstance(status, int) and 400 <= status < 500:
        msg = f"{what}: refused by the schema registry ({exc})"
        return SerializationError(msg)
    msg = f"{what}: schema registry unavailable ({type(exc).__name__}: {exc})"
    return ServiceUnavailableError(msg)


class _Writer:
    """A writer schema this serde can decode, keyed by fingerprint or registry id."""

    __slots__ = ("description", "reader", "schema")

    def __init__(
        self, schema: dict[str, Any], reader: dict[str, Any] | None, description: str
    ) -> None:
        self.schema = schema
        self.reader = reader  # None when the writer schema is the reader schema
        self.description = description


# ---------------------------------------------------------------------------------------
# The serde


class AvroSerde:
    """Encode and decode one event contract.

    ``writer_schemas`` are older versions of the schema (JSON text or dict) whose
    messages must still decode; they are resolved to the current schema. With
    ``registry_url`` (``mock://...`` in tests), ``encode`` writes the Confluent framing
    and registers the schema under the subject ``io.streammon.events.<name>``;
    ``registry_config`` holds further client settings (e.g. ``basic.auth.user.info``).

    >>> serde = AvroSerde("PredictionEvent")
    >>> record = {"prediction_id": "p-7", "model_name": "churn", "model_version": "3",
    ...           "timestamp": 1_700_000_000_000, "features": {"age": 41, "ratio": 0.5},
    ...           "prediction": "yes"}
    >>> back = serde.decode(serde.encode(record))
    >>> back["features"], back["prediction"], back["score"], back["tags"]
    ({'age': 41, 'ratio': 0.5}, 'yes', None, {})
    >>> serde.decode(b"\\x00\\x00\\x00\\x00\\x01\\x02")
    Traceback (most recent call last):
    ...
    streaming.errors.SerializationError: PredictionEvent: message starts with 00 (Confluent \
Schema Registry framing, schema id 1) but this serde has no registry_url
    """

    def __init__(
        self,
        name: str,
        *,
        writer_schemas: Iterable[Mapping[str, Any] | str] = (),
        registry_url: str | None = None,
        registry_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._contract = contract = _contract(name)
        self.name = name
        self._header = SINGLE_OBJECT_MAGIC + contract.fingerprint
        self._by_fingerprint: dict[bytes, _Writer] = {
            contract.fingerprint: _Writer(contract.plain, None, "the current schema")
        }
        for old in writer_schemas:
            self._add_writer_schema(old)
        self._registry_url = registry_url
        self._registry: Any = None
        self._serializer: Any = None
        self._ctx: Any = None
        self._by_schema_id: dict[int, _Writer] = {}
        if registry_url is not None:
            self._registry = _registry_client(registry_url, registry_config)

    def __repr__(self) -> str:
        extra = f", registry_url={self._registry_url!r}" if self._registry_url else ""
        return f"AvroSerde({self.name!r}{extra})"

    @property
    def fingerprint(self) -> bytes:
        """Fingerprint of the current schema (the one ``encode`` writes)."""
        return self._contract.fingerprint

    @property
    def schema(self) -> dict[str, Any]:
        """The parsed current schema, with logical types; do not mutate it."""
        return self._contract.parsed

    @property
    def known_fingerprints(self) -> tuple[bytes, ...]:
        """Fingerprints of every writer schema that ``decode`` accepts."""
        return tuple(self._by_fingerprint)

    # -- writer schemas ------------------------------------------------------------------

    def _writer_for(self, schema: Mapping[str, Any] | str, what: str) -> tuple[bytes, _Writer]:
        contract = self._contract
        try:
            raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
            if not isinstance(raw, dict):
                msg = "not a record schema"
                raise TypeError(msg)
            raw = {k: v for k, v in raw.items() if not k.startswith("__fastavro")}
            plain = _parse(_strip_logical_types(raw))
            fp = _fingerprint(plain)
        except Exception as exc:  # json and fastavro raise several types
            msg = f"{self.name}: {what} is not a valid Avro schema: {exc}"
            raise SerializationError(msg) from exc
        writer_name = _full_name(raw)
        aliases = {
            _full_name({"name": alias, "namespace": NAMESPACE})
            for alias in contract.raw.get("aliases", ())
        }
        if writer_name != contract.full_name and writer_name not in aliases:
            msg = f"{self.name}: {what} is the record {writer_name!r}, not {contract.full_name!r}"
            raise UnknownSchemaError(msg)
        if fp == contract.fingerprint:
            return fp, self._by_fingerprint[fp]
        return fp, _Writer(plain, contract.plain, f"{what} (fingerprint {fp.hex()})")

    def _add_writer_schema(self, schema: Mapping[str, Any] | str) -> None:
        fp, writer = self._writer_for(schema, "writer schema")
        self._by_fingerprint.setdefault(fp, writer)

    def _registry_writer(self, schema_id: int) -> _Writer:
        writer = self._by_schema_id.get(schema_id)
        if writer is not None:
            return writer
        what = f"{self.name}: schema id {schema_id}"
        try:
            registered = self._registry.get_schema(schema_id)
        except Exception as exc:
            raise _registry_failure(what, exc) from exc
        schema_type = getattr(registered, "schema_type", None) or "AVRO"
        if schema_type != "AVRO":
            msg = f"{what} is a {schema_type} schema, not Avro"
            raise UnknownSchemaError(msg)
        if getattr(registered, "references", None):
            msg = f"{what} uses schema references, which this serde does not resolve"
            raise UnknownSchemaError(msg)
        _, writer = self._writer_for(registered.schema_str, f"schema id {schema_id}")
        self._by_schema_id[schema_id] = writer
        return writer

    # -- encode --------------------------------------------------------------------------

    def _prepare(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """Validate the shape cheaply and convert what fastavro would get wrong."""
        contract = self._contract
        if not isinstance(record, Mapping):
            msg = f"{self.name}: expected a mapping of field names, got {type(record).__name__}"
            raise SerializationError(msg)
        unknown = record.keys() - contract.field_names
        if unknown:
            msg = f"{self.name}: unknown field(s) {', '.join(sorted(map(str, unknown)))}"
            raise SerializationError(msg)
        out: dict[str, Any] | None = None
        for field in contract.timestamp_fields:
            value = record.get(field)
            if isinstance(value, dt.datetime):
                try:
                    millis = _to_millis(value)
                except ValueError as exc:
                    msg = f"{self.name}: field {field!r}: {exc}"
                    raise SerializationError(msg) from exc
                if out is None:
                    out = dict(record)
                out[field] = millis
        for field in contract.long_tag_maps:
            values = record.get(field)
            if isinstance(values, Mapping) and not all(
                _is_plain_non_long(v) for v in values.values()
            ):
                if out is None:
                    out = dict(record)
                out[field] = {k: _tag_long(v) for k, v in values.items()}
        for field in contract.long_tag_unions:
            value = record.get(field)
            if value is not None and not _is_plain_non_long(value):
                if out is None:
                    out = dict(record)
                out[field] = _tag_long(value)
        return record if out is None else out

    def _explain(self, record: Mapping[str, Any]) -> str:
        """Why a record does not validate, naming the fields (slow path only)."""
        contract = self._contract
        problems: list[str] = [
            f"field {f!r} is missing" for f in contract.required if f not in record
        ]
        try:
            validate(record, contract.plain, raise_errors=True)
        except ValidationError as exc:
            prefix = contract.full_name + "."
            seen: dict[tuple[str, str], list[str]] = {}
            for err in exc.errors:
                path = str(err.field or "")
                field = path[len(prefix) :] if path.startswith(prefix) else path
                if field in contract.required and field not in record:
                    continue
                datum = err.datum
                if isinstance(datum, tuple) and len(datum) == 2 and datum[0] == "long":
                    datum = datum[1]
                inside = field in record and record[field] is not err.datum
                shown = repr(datum)
                if len(shown) > 60:
                    shown = shown[:57] + "..."
                where = f"field {field!r} contains" if inside else f"field {field!r} is"
                key = (f"{where} {shown} ({type(datum).__name__})", field)
                seen.setdefault(key, []).append(_type_name(err.schema))
            for (text, field), expected in seen.items():
                hint = ""
                if field in contract.timestamp_fields:
                    hint = " (int epoch millis or aware datetime)"
                problems.append(f"{text}, expected {' or '.join(dict.fromkeys(expected))}{hint}")
        except Exception as exc:  # a datum that fastavro's validator cannot even inspect
            problems.append(f"record does not match the schema ({type(exc).__name__}: {exc})")
        if not problems:
            problems.append("record does not match the schema")
        return f"{self.name}: " + "; ".join(problems)

    def encode(self, record: Mapping[str, Any], *, trusted: bool = False) -> bytes:
        """Validate and encode a record; raises :class:`SerializationError` naming the field.

        ``trusted=True`` skips the up-front validation for records the caller built from
        already-validated inputs (the joiner's examples); an encoding failure still raises.

        >>> serde_for("OutcomeEvent").encode({"prediction_id": "p-1", "label": 1})
        Traceback (most recent call last):
        ...
        streaming.errors.SerializationError: OutcomeEvent: field 'timestamp' is missing
        """
        prepared = self._prepare(record)
        contract = self._contract
        if not trusted:
            try:
                valid = validate(prepared, contract.plain, raise_errors=False)
            except Exception:  # e.g. a key that is not a string deep inside a map
                valid = False
            if not valid:
                raise SerializationError(self._explain(prepared))
        if self._registry is not None:
            return self._encode_registry(prepared)
        buf = BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, contract.plain, prepared)
        except Exception as exc:
            msg = f"{self.name}: cannot encode record: {type(exc).__name__}: {exc}"
            raise SerializationError(msg) from exc
        return buf.getvalue()

    def _encode_registry(self, prepared: Mapping[str, Any]) -> bytes:
        if self._serializer is None:
            from confluent_kafka.schema_registry import record_subject_name_strategy
            from confluent_kafka.schema_registry.avro import AvroSerializer
            from confluent_kafka.serialization import MessageField, SerializationContext

            self._serializer = AvroSerializer(
                self._registry,
                self._contract.schema_str,
                conf={
                    "auto.register.schemas": True,
                    "subject.name.strategy": record_subject_name_strategy,
                },
            )
            self._ctx = SerializationContext("", MessageField.VALUE)
        try:
            data = self._serializer(prepared, self._ctx)
        except Exception as exc:
            status = getattr(exc, "http_status_code", None)
            if status is not None or type(exc).__module__.startswith(("httpx", "httpcore")):
                what = f"{self.name}: registering the schema"
                raise _registry_failure(what, exc) from exc
            msg = f"{self.name}: cannot encode record: {type(exc).__name__}: {exc}"
            raise SerializationError(msg) from exc
        return cast(bytes, data)

    # -- decode --------------------------------------------------------------------------

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode one message (single-object, or Confluent framing with a registry).

        >>> serde_for("OutcomeEvent").decode(b"\\xc3\\x01\\x00\\x01")
        Traceback (most recent call last):
        ...
        streaming.errors.SerializationError: OutcomeEvent: truncated header: 4 bytes, \
single-object encoding needs 10 (c3 01 + 8-byte fingerprint)
        """
        if not data:
            what = "None" if data is None else "0 bytes"
            msg = f"{self.name}: empty message ({what})"
            raise SerializationError(msg)
        size = len(data)
        first = data[0]
        if first == 0xC3 and (size < 2 or data[1] == 0x01):
            if size < _SO_HEADER_LEN:
                msg = (
                    f"{self.name}: truncated header: {size} bytes, single-object encoding "
                    f"needs {_SO_HEADER_LEN} (c3 01 + 8-byte fingerprint)"
                )
                raise SerializationError(msg)
            fp = bytes(data[2:_SO_HEADER_LEN])
            writer = self._by_fingerprint.get(fp)
            if writer is None:
                known = ", ".join(f.hex() for f in self._by_fingerprint)
                msg = (
                    f"{self.name}: unknown schema fingerprint {fp.hex()} (known: {known}); "
                    "pass the writer's schema version in writer_schemas"
                )
                raise UnknownSchemaError(msg)
            offset = _SO_HEADER_LEN
        elif first == CONFLUENT_MAGIC:
            if size < _CONFLUENT_HEADER_LEN:
                msg = (
                    f"{self.name}: truncated header: {size} bytes, Confluent framing needs "
                    f"{_CONFLUENT_HEADER_LEN} (00 + 4-byte schema id)"
                )
                raise SerializationError(msg)
            schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER_LEN], "big")
            if self._registry is None:
                msg = (
                    f"{self.name}: message starts with 00 (Confluent Schema Registry framing, "
                    f"schema id {schema_id}) but this serde has no registry_url"
                )
                raise SerializationError(msg)
            writer = self._registry_writer(schema_id)
            offset = _CONFLUENT_HEADER_LEN
        else:
            expected = "c3 01 (Avro single-object encoding)"
            if self._registry is not None:
                expected += " or 00 (Confluent framing)"
            msg = f"{self.name}: bad magic {bytes(data[:2]).hex(' ')}, expected {expected}"
            raise SerializationError(msg)
        buf = BytesIO(data)
        buf.seek(offset)
        try:
            record = schemaless_reader(buf, writer.schema, writer.reader)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            msg = (
                f"{self.name}: body does not decode with {writer.description}: "
                f"{type(exc).__name__}: {exc}"
            )
            raise SerializationError(msg) from exc
        end = buf.tell()
        if end != size:
            msg = (
                f"{self.name}: {size - end} trailing byte(s) after the record "
                f"(record ends at offset {end} of {size})"
            )
            raise SerializationError(msg)
        return cast(dict[str, Any], record)


@functools.cache
def serde_for(name: str) -> AvroSerde:
    """The shared single-object :class:`AvroSerde` of a contract (one per name).

    >>> serde_for("AlertEvent") is serde_for("AlertEvent")
    True
    """
    return AvroSerde(name)
