"""Checks of the Avro contracts in schemas/: shape, docs, defaults and evolution.

Evolution: every earlier version of a schema file, from git history
(``git log -- schemas/X.avsc``) and from ``tests/data/schema_versions/X/*.avsc`` when that
directory holds kept versions, must be readable by the working-tree version: records
written with the old version are read with the new one through Avro schema resolution,
and every field that the old version lacks must have a default.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import avro.schema
import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from streaming.serde import NAMESPACE, SCHEMA_NAMES, AvroSerde, load_schema

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
KEPT_VERSIONS = Path(__file__).resolve().parent / "data" / "schema_versions"

NAMED_TYPES = ("record", "error", "enum", "fixed")


def _raw(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))


def _walk(schema: Any) -> list[Any]:
    """Every type node below (not including) a schema."""
    found: list[Any] = []
    children: list[Any] = []
    if isinstance(schema, list):
        children = schema
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error"):
            children = [f["type"] for f in schema.get("fields", [])]
        elif kind == "map":
            children = [schema["values"]]
        elif kind == "array":
            children = [schema["items"]]
        elif isinstance(kind, dict | list):
            children = [kind]
    for child in children:
        found.append(child)
        found.extend(_walk(child))
    return found


# --- shape ----------------------------------------------------------------------------


def test_schema_files_are_exactly_the_contracts() -> None:
    assert sorted(p.stem for p in SCHEMAS.glob("*.avsc")) == sorted(SCHEMA_NAMES)
    assert sorted(p.name for p in SCHEMAS.iterdir() if p.is_file()) == sorted(
        f"{n}.avsc" for n in SCHEMA_NAMES
    )


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_parses_with_fastavro(name: str) -> None:
    parsed = fastavro.parse_schema(_raw(name))
    assert parsed["name"] == f"{NAMESPACE}.{name}"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_parses_with_apache_avro(name: str) -> None:
    schema = avro.schema.parse((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))
    assert isinstance(schema, avro.schema.RecordSchema)
    assert schema.fullname == f"{NAMESPACE}.{name}"
    assert [f.name for f in schema.fields] == [f["name"] for f in _raw(name)["fields"]]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_one_record_per_file_in_the_namespace(name: str) -> None:
    raw = _raw(name)
    assert raw["type"] == "record"
    assert raw["name"] == name
    assert raw["namespace"] == NAMESPACE
    nested = [t for t in _walk(raw) if isinstance(t, dict) and t.get("type") in NAMED_TYPES]
    assert nested == [], "a schema file defines exactly one named type"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_record_and_every_field_have_a_doc(name: str) -> None:
    raw = _raw(name)
    assert isinstance(raw.get("doc"), str)
    assert raw["doc"].strip()
    undocumented = [
        f["name"] for f in raw["fields"] if not (isinstance(f.get("doc"), str) and f["doc"].strip())
    ]
    assert undocumented == []


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_field_names_are_unique_snake_case(name: str) -> None:
    names = [f["name"] for f in _raw(name)["fields"]]
    assert len(names) == len(set(names))
    assert all(n.isidentifier() and n == n.lower() for n in names), names


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_defaults_match_their_type(name: str) -> None:
    """A union's default must be of its first branch (Avro spec), others of the type."""
    parsed = load_schema(name)
    for field in parsed["fields"]:
        if "default" not in field:
            continue
        ftype = field["type"]
        first = ftype[0] if isinstance(ftype, list) else ftype
        assert validate(field["default"], first, raise_errors=False), field["name"]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_timestamps_are_timestamp_millis(name: str) -> None:
    """Logical types do not reach the canonical form, so the fingerprint cannot guard them."""
    for field in _raw(name)["fields"]:
        ftype = field["type"]
        branches = ftype if isinstance(ftype, list) else [ftype]
        logical = [b for b in branches if isinstance(b, dict) and "logicalType" in b]
        looks_like_time = field["name"] in (
            "timestamp",
            "created_at",
            "emitted_at",
            "requested_at",
        ) or field["name"].endswith(("_timestamp", "_at", "window_start", "window_end"))
        if looks_like_time:
            assert logical == [{"type": "long", "logicalType": "timestamp-millis"}], field["name"]
        else:
            assert logical == [], field["name"]


# --- evolution -------------------------------------------------------------------------


class Version(NamedTuple):
    name: str
    label: str
    text: str


def _git_versions(name: str) -> list[Version]:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        return []
    rel = f"schemas/{name}.avsc"
    log = subprocess.run(
        [git, "log", "--format=%H", "--", rel],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if log.returncode != 0:  # e.g. a repository without commits
        return []
    versions = []
    for sha in log.stdout.split():
        show = subprocess.run(
            [git, "show", f"{sha}:{rel}"], cwd=REPO, capture_output=True, text=True, check=False
        )
        if show.returncode == 0:  # the commit may have deleted the file
            versions.append(Version(name, f"git-{sha[:12]}", show.stdout))
    return versions


def _kept_versions(name: str) -> list[Version]:
    folder = KEPT_VERSIONS / name
    if not folder.is_dir():
        return []
    return [
        Version(name, f"kept-{p.stem}", p.read_text(encoding="utf-8"))
        for p in sorted(folder.glob("*.avsc"))
    ]


def _earlier_versions() -> list[Any]:
    params = []
    for name in SCHEMA_NAMES:
        versions = _git_versions(name) + _kept_versions(name)
        if not versions:
            # Nothing earlier yet: the resolution path still runs, with the current
            # version as the writer.
            current = (SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8")
            versions = [Version(name, "no-earlier-versions-current-as-writer", current)]
        params.extend(pytest.param(v, id=f"{v.name}-{v.label}") for v in versions)
    return params


def _without_defaulted_fields(name: str) -> Version:
    """The current schema minus every field that has a default: an older-looking writer."""
    raw = _raw(name)
    raw["fields"] = [f for f in raw["fields"] if "default" not in f]
    return Version(name, "synthetic-without-defaulted-fields", json.dumps(raw))


def _field_names_with_aliases(raw: dict[str, Any]) -> dict[str, set[str]]:
    return {f["name"]: {f["name"], *f.get("aliases", ())} for f in raw["fields"]}


def _fields_without_default_missing_in(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old_names = {f["name"] for f in old["fields"]}
    return [
        f["name"]
        for f in new["fields"]
        if not ({f["name"], *f.get("aliases", ())} & old_names) and "default" not in f
    ]


def _sample(schema: Any, seed: int, named: dict[str, Any]) -> Any:
    """A value of an Avro type; union values use fastavro's (branch, value) notation."""
    if isinstance(schema, list):
        branch = schema[seed % len(schema)]
        value = _sample(branch, seed // len(schema), named)
        if isinstance(branch, dict):
            label = branch.get("name") or branch["type"]
            if branch["type"] in ("map", "array"):
                label = branch["type"]
        else:
            label = branch
        return (label, value)
    if isinstance(schema, str) and schema in named:
        return _sample(named[schema], seed, named)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "error"):
            return {
                f["name"]: _sample(f["type"], seed + i, named)
                for i, f in enumerate(schema["fields"])
            }
        if kind == "map":
            return {f"k{i}": _sample(schema["values"], seed + i, named) for i in range(seed % 3)}
        if kind == "array":
            return [_sample(schema["items"], seed + i, named) for i in range(seed % 3)]
        if kind == "enum":
            return schema["symbols"][seed % len(schema["symbols"])]
        if kind == "fixed":
            return bytes(seed % 256 for _ in range(schema["size"]))
        return _sample(kind, seed, named)
    primitives: dict[str, Any] = {
        "null": None,
        "boolean": seed % 2 == 0,
        "int": 1_000 + seed,
        "long": 1_733_011_200_000 + seed,
        "float": 0.5 + seed,
        "double": 0.25 + seed,
        "string": f"value-{seed}",
        "bytes": bytes([seed % 256]),
    }
    return primitives[schema]


def _untag(value: Any) -> Any:
    if isinstance(value, tuple):
        return _untag(value[1])
    if isinstance(value, dict):
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def _check_resolution(version: Version) -> None:
    old_raw = json.loads(version.text)
    new_raw = _raw(version.name)
    assert old_raw.get("name") == new_raw["name"] or old_raw.get("name") in new_raw.get(
        "aliases", ()
    )

    missing = _fields_without_default_missing_in(old_raw, new_raw)
    assert missing == [], f"fields added since {version.label} need a default: {missing}"

    # The writer is the old version's parsing canonical form (what its fingerprint
    # names); the reader is the working-tree file, with its defaults and aliases.
    old_full = fastavro.parse_schema(old_raw)
    writer = fastavro.parse_schema(json.loads(to_parsing_canonical_form(old_full)))
    reader = fastavro.parse_schema(new_raw)
    assert writer != reader, "fastavro must not skip resolution for equal schemas"
    named = {writer["name"]: writer}
    new_fields = {f["name"]: f for f in new_raw["fields"]}
    aliases = _field_names_with_aliases(new_raw)
    max_branches = max(
        [len(f["type"]) for f in old_raw["fields"] if isinstance(f["type"], list)] + [1]
    )
    serde = AvroSerde(version.name, writer_schemas=[version.text])
    for seed in range(max(3, max_branches)):
        tagged = _sample(writer, seed, named)
        written = _untag(tagged)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer, tagged)
        resolved = fastavro.schemaless_reader(io.BytesIO(body.getvalue()), writer, reader)

        expected: dict[str, Any] = {}
        for field_name, field in new_fields.items():
            sources = [n for n in aliases[field_name] if n in written]
            expected[field_name] = written[sources[0]] if sources else field["default"]
        assert resolved == expected

        # The serde takes the same path for a single-object message of the old version.
        fingerprint = bytes.fromhex(
            fastavro.schema.fingerprint(to_parsing_canonical_form(old_full), "CRC-64-AVRO")
        )
        assert serde.decode(b"\xc3\x01" + fingerprint + body.getvalue()) == expected


@pytest.mark.parametrize("version", _earlier_versions())
def test_earlier_versions_resolve_to_the_current_schema(version: Version) -> None:
    _check_resolution(version)


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(_without_defaulted_fields(n), id=f"{n}-without-defaulted-fields")
        for n in SCHEMA_NAMES
    ],
)
def test_writer_without_defaulted_fields_gets_the_defaults(version: Version) -> None:
    assert len(json.loads(version.text)["fields"]) < len(_raw(version.name)["fields"])
    _check_resolution(version)


def test_evolution_check_rejects_a_field_added_without_default() -> None:
    """The check above can fail: a new required field breaks old writers."""
    old = _raw("OutcomeEvent")
    new = _raw("OutcomeEvent")
    new["fields"].append({"name": "weight", "type": "double", "doc": "no default"})
    assert _fields_without_default_missing_in(old, new) == ["weight"]
    writer = fastavro.parse_schema(old)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, writer, {"prediction_id": "p", "timestamp": 1, "label": 1, "model_name": None}
    )
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(io.BytesIO(body.getvalue()), writer, fastavro.parse_schema(new))


def test_contracts_doc_is_up_to_date() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout
