"""The read API behind ``streammon status``: what the joiner and evaluator stored, per model.

:func:`read_status` returns plain JSON-able data (its shape is documented in the README and
kept stable); it needs only a :class:`~streaming.state_store.StateStore` and, for consumer lag,
a function giving a partition's end offset.

>>> from streaming.state_store import InMemoryStateStore, Ops
>>> store = InMemoryStateStore()
>>> e = store.claim("joiner:0")
>>> store.commit("joiner:0", e, 1, Ops().hincrby("counts", "m\\x1f1\\x1fjoined", 3)
...              .hincrby("counts", "m\\x1f1\\x1fpredictions", 4).meta("offset:predictions", 9))
>>> status = read_status(store, end_offset=lambda topic, p: 10)
>>> status["models"]["m"]["versions"]["1"]["counts"]["pending"]
1
>>> status["consumer_groups"]["joiner"]["lag"]
1
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from streaming.state_store import StateStore

COUNT_NAMES = (
    "predictions",
    "joined",
    "unlabeled",
    "orphaned",
    "duplicate_predictions",
    "duplicate_outcomes",
    "late_outcomes",
    "dead_letter_predictions",
    "dead_letter_outcomes",
)

STATUS_FORMAT_VERSION = 1


def _empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_NAMES, 0)


def read_status(
    store: StateStore,
    *,
    end_offset: Callable[[str, int], int | None] | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Everything ``streammon status --json`` prints (see the README for the shape)."""
    models: dict[str, Any] = {}
    unattributed = _empty_counts()

    def model_entry(name: str) -> dict[str, Any]:
        entry: dict[str, Any] = models.setdefault(
            name,
            {
                "counts": _empty_counts(),
                "versions": {},
                "all_versions": None,
                "alerts": {"firing": [], "retrain_in_flight": None},
            },
        )
        return entry

    def version_entry(name: str, version: str) -> dict[str, Any]:
        versions = model_entry(name)["versions"]
        entry: dict[str, Any] = versions.setdefault(
            version,
            {
                "counts": _empty_counts(),
                "metrics": None,
                "detectors": {},
                "alarms": [],
                "label_delay": None,
                "labeled": 0,
                "last_event_time_ms": None,
                "segments": {},
                "label_free": None,
            },
        )
        return entry

    groups: dict[str, Any] = {}
    for kind in ("joiner", "evaluator"):
        parts = []
        for scope in store.scopes(kind):
            meta = store.meta(scope)
            partition = int(scope.split(":", 1)[1])
            for key, value in sorted(meta.items()):
                if not key.startswith("offset:"):
                    continue
                topic = key.split(":", 1)[1]
                stored = int(value)
                end = end_offset(topic, partition) if end_offset else None
                parts.append(
                    {
                        "topic": topic,
                        "partition": partition,
                        "stored_offset": stored,
                        "end_offset": end,
                        "lag": None if end is None else max(0, end - stored),
                    }
                )
            if kind == "joiner":
                for fld, raw in store.hgetall(scope, "counts").items():
                    m, v, name = fld.split("\x1f")
                    n = int(raw)
                    if m == "_unknown":
                        unattributed[name] = unattributed.get(name, 0) + n
                        continue
                    if model is not None and m != model:
                        continue
                    mc = model_entry(m)["counts"]
                    mc[name] = mc.get(name, 0) + n
                    if v:
                        vc = version_entry(m, v)["counts"]
                        vc[name] = vc.get(name, 0) + n
            else:
                summary = json.loads(meta.get("alerts_summary") or "{}")
                for m, alerts in summary.items():
                    if model is None or m == model:
                        model_entry(m)["alerts"] = alerts
                for fld, raw in store.hgetall(scope, "snapshots").items():
                    m, v, segment = fld.split("\x1f")
                    if model is not None and m != model:
                        continue
                    snap = json.loads(raw)
                    if v == "*":
                        model_entry(m)["all_versions"] = _series_view(snap)
                    elif segment:
                        version_entry(m, v)["segments"][segment] = _series_view(snap)
                    else:
                        version_entry(m, v).update(_series_view(snap))
                for fld, raw in store.hgetall(scope, "label_free_snapshots").items():
                    m, v, _ = fld.split("\x1f")
                    if model is None or m == model:
                        snap = json.loads(raw)
                        version_entry(m, v)["label_free"] = {
                            k: val for k, val in snap.items() if k not in ("model", "version")
                        }
        lags = [p["lag"] for p in parts if p["lag"] is not None]
        groups[kind] = {"partitions": parts, "lag": sum(lags) if lags else None}

    for entry in models.values():
        for counts in [entry["counts"], *(v["counts"] for v in entry["versions"].values())]:
            counts["pending"] = max(
                0, counts["predictions"] - counts["joined"] - counts["unlabeled"]
            )
            counts["dead_letter"] = (
                counts["dead_letter_predictions"] + counts["dead_letter_outcomes"]
            )
    dead = defaultdict(int)
    for name in ("predictions", "outcomes"):
        dead[name] = unattributed.get(f"dead_letter_{name}", 0) + sum(
            m["counts"][f"dead_letter_{name}"] for m in models.values()
        )
    dead["labeled"] = sum(
        int(store.meta(s).get("dead_letters", "0")) for s in store.scopes("evaluator")
    )
    return {
        "format_version": STATUS_FORMAT_VERSION,
        "generated_at_ms": int(time.time() * 1000),
        "models": dict(sorted(models.items())),
        "orphaned_without_model": unattributed.get("orphaned", 0),
        "duplicate_outcomes_without_model": unattributed.get("duplicate_outcomes", 0),
        "dead_letter": dict(dead),
        "consumer_groups": groups,
    }


def _series_view(snap: dict[str, Any]) -> dict[str, Any]:
    metrics = snap.get("metrics") or {}
    return {
        "task": snap.get("task"),
        "labeled": snap.get("labeled", 0),
        "last_event_time_ms": snap.get("last_event_time_ms"),
        "metrics": {"cumulative": metrics.get("cumulative"), "windows": metrics.get("windows")},
        "label_delay": metrics.get("label_delay"),
        "detectors": snap.get("detectors", {}),
        "alarms": snap.get("alarms", []),
    }
