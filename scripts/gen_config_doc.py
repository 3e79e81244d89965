"""Write docs/configuration.md from the Settings model (a test checks that it is up to date).

Usage: python scripts/gen_config_doc.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streaming.settings import Settings  # noqa: E402


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `streaming/settings.py` by `scripts/gen_config_doc.py`; do not edit.",
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


def main() -> int:
    target = ROOT / "docs" / "configuration.md"
    text = render()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print("docs/configuration.md is out of date: run python scripts/gen_config_doc.py")
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
