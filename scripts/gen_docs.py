"""Write docs/contracts.md (from schemas/*.avsc) and docs/configuration.md (from the settings
model); with ``--check``, fail when either is out of date (a test runs that).

Usage: python scripts/gen_docs.py [--check]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streaming.settings import Settings  # noqa: E402

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


def render_contracts() -> str:
    lines = [
        "# Event contracts",
        "",
        "Generated from `schemas/*.avsc` by `scripts/gen_docs.py`; do not edit by hand.",
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


def render_configuration() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `streaming/settings.py` by `scripts/gen_docs.py`; do not edit.",
        "",
        "Precedence: CLI flag > environment variable > TOML config file (`--config` or",
        "`STREAMMON_CONFIG_FILE`; top-level keys are the field names below) > default.",
        "Mappings and lists are JSON in the environment. A bad value stops the command at",
        "start with exit code 2 and a message naming the field and its variable.",
        "`streammon config show` prints the effective values with secrets masked.",
        "",
        "| setting | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    defaults = Settings.model_construct()
    for name, field in Settings.model_fields.items():
        value = getattr(defaults, name, None)
        if hasattr(value, "get_secret_value"):
            shown = "(set it)" if name == "state_hmac_key" else "unset"
        else:
            try:
                shown = json.dumps(
                    value.model_dump() if hasattr(value, "model_dump") else value,
                    default=lambda v: v.model_dump() if hasattr(v, "model_dump") else str(v),
                )
            except TypeError:
                shown = str(value)
        doc = " ".join((field.description or "").split()).replace("``", "`").replace("|", "\\|")
        shown = shown.replace("|", "\\|")
        lines.append(f"| `{name}` | `STREAMMON_{name.upper()}` | `{shown}` | {doc} |")
    lines += [
        "",
        "## Per-model overrides",
        "",
        "`models.<name>` (TOML table, or `STREAMMON_MODELS` JSON) may set `task`,",
        "`positive_label`, `windows`, `detectors`, `segment_tags` and `alert_rules` for one",
        "model; unset fields fall back to the top-level values. A model's alert rule with the",
        "name of a top-level rule replaces it.",
        "",
        "```toml",
        'windows = ["count:1000", "time:1h"]',
        "",
        "[[alert_rules]]",
        'name = "low_accuracy"',
        'type = "threshold"',
        'metric = "accuracy"',
        'window = "count:1000"',
        'op = "<"',
        "threshold = 0.8",
        "min_samples = 500",
        "for_events = 200",
        "retrain = true",
        "",
        "[[alert_rules]]",
        'name = "concept_drift"',
        'type = "detector"',
        'detector = "adwin"',
        'severity = "page"',
        "",
        "[models.credit]",
        "positive_label = 1",
        'segment_tags = ["region"]',
        "```",
        "",
    ]
    return "\n".join(lines)


DOCS: dict[str, Callable[[], str]] = {
    "contracts.md": render_contracts,
    "configuration.md": render_configuration,
}


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for name, render in DOCS.items():
        target = ROOT / "docs" / name
        text = render()
        if not check:
            target.write_text(text)
        elif not target.exists() or target.read_text() != text:
            stale.append(name)
    if stale:
        print(f"out of date: {', '.join(stale)}: run python scripts/gen_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
