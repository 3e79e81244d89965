"""Status for people (a rich table) and the Kafka end offsets it needs for lag."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

from streaming.kafka_io import client_config
from streaming.settings import Settings

log = logging.getLogger(__name__)


def end_offset_reader(settings: Settings) -> Callable[[str, int], int | None]:
    """A function giving a partition's end offset, or None when Kafka does not answer."""
    consumer: Consumer | None = None
    cache: dict[tuple[str, int], int | None] = {}
    broken = False

    def read(topic: str, partition: int) -> int | None:
        nonlocal consumer, broken
        if broken:
            return None
        if (topic, partition) in cache:
            return cache[(topic, partition)]
        if consumer is None:
            conf = client_config(settings)
            conf.update({"group.id": "streammon-status", "enable.auto.commit": False})
            consumer = Consumer(conf)
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            cache[(topic, partition)] = int(high)
        except KafkaException as exc:
            log.warning("cannot read end offsets from Kafka (%s): lag unknown", exc)
            broken = True
            return None
        return cache[(topic, partition)]

    return read


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_status(console: Console, data: dict[str, Any]) -> None:
    """Print one table of models/versions and one of consumer groups."""
    if not data["models"]:
        console.print("no models seen yet")
    for name, model in data["models"].items():
        table = Table(title=f"model {name}", box=None, title_justify="left")
        for col in (
            "version",
            "labeled",
            "accuracy",
            "f1",
            "roc_auc",
            "mae",
            "window acc",
            "joined",
            "unlabeled",
            "pending",
            "dup",
            "dlq",
            "drift",
            "last event",
        ):
            table.add_column(col, justify="right" if col not in ("version", "drift") else "left")
        rows = list(model["versions"].items())
        if model.get("all_versions"):
            rows.append(("(all)", {**model["all_versions"], "counts": model["counts"]}))
        for version, v in rows:
            cum = (v.get("metrics") or {}).get("cumulative") or {}
            windows = (v.get("metrics") or {}).get("windows") or {}
            first_window: dict[str, Any] = next(iter(windows.values()), {}) if windows else {}
            counts = v.get("counts", {})
            alarms = v.get("alarms") or []
            drift = ", ".join(
                f"{d}:{s.get('state')}" for d, s in (v.get("detectors") or {}).items()
            )
            if alarms:
                drift += f" ({len(alarms)} alarms, last @{alarms[-1]['position']})"
            table.add_row(
                version,
                _fmt(v.get("labeled")),
                _fmt(cum.get("accuracy")),
                _fmt(cum.get("f1")),
                _fmt(cum.get("roc_auc")),
                _fmt(cum.get("mae")),
                _fmt(first_window.get("accuracy", first_window.get("mae"))),
                _fmt(counts.get("joined")),
                _fmt(counts.get("unlabeled")),
                _fmt(counts.get("pending")),
                _fmt(counts.get("duplicate_predictions", 0) + counts.get("duplicate_outcomes", 0)),
                _fmt(counts.get("dead_letter")),
                drift or "-",
                _time(v.get("last_event_time_ms")),
            )
        console.print(table)
    groups = Table(title="consumer groups", box=None, title_justify="left")
    for col in ("group", "partitions", "lag"):
        groups.add_column(col)
    for group, g in data["consumer_groups"].items():
        groups.add_row(group, str(len(g["partitions"])), _fmt(g["lag"]))
    console.print(groups)
    dead = data.get("dead_letter", {})
    console.print(
        "dead-lettered: "
        + ", ".join(f"{k} {v}" for k, v in dead.items())
        + f"; orphaned outcomes without a model: {data.get('orphaned_without_model', 0)}"
    )
