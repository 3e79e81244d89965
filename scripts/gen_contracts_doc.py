"""Write docs/contracts.md from schemas/*.avsc (a test checks that it is up to date).

Usage: python scripts/gen_contracts_doc.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ORDER = [
    "PredictionEvent",
    "OutcomeEvent",
    "LabeledExample",
    "AlertEvent",
    "RetrainRequest",
    "ModelVersionEvent",
]


def type_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return " | ".join(type_name(x) for x in t)
    if t.get("logicalType"):
        return f"{t['type']} ({t['logicalType']})"
    if t["type"] == "map":
        return f"map<{type_name(t['values'])}>"
    if t["type"] == "array":
        return f"array<{type_name(t['items'])}>"
    return str(t.get("name", t["type"]))


def render() -> str:
    lines = [
        "# Event contracts",
        "",
        "Generated from `schemas/*.avsc` by `scripts/gen_contracts_doc.py`; do not edit by hand.",
        "Namespace `io.streammon.events`. Wire format: Avro single-object encoding",
        "(`C3 01` + 8-byte little-endian CRC-64-AVRO fingerprint of the Parsing Canonical Form +",
        "body), or the Confluent Schema Registry format when a registry URL is configured.",
        "Every field added after a schema's first version has a default.",
        "",
    ]
    for name in ORDER:
        schema = json.loads((ROOT / "schemas" / f"{name}.avsc").read_text())
        lines += [f"## {name}", "", schema.get("doc", ""), ""]
        lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        for f in schema["fields"]:
            default = json.dumps(f["default"]) if "default" in f else ""
            doc = f.get("doc", "").replace("|", "\\|")
            kind = type_name(f["type"]).replace("|", "\\|")
            lines.append(f"| `{f['name']}` | {kind} | {default} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    target = ROOT / "docs" / "contracts.md"
    text = render()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print("docs/contracts.md is out of date: run python scripts/gen_contracts_doc.py")
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
