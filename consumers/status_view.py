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


def _duration(ms: float | None) -> str:
    """850 ms, 60.0 s, 1.5 h."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 3_600_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 3_600_000:.1f} h"


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _metric_rows(views: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Rows (label, value per column) for the metric part of a model's table."""
    tasks = {v.get("task") for v in views}
    names = (
        ["mae", "rmse", "r2"]
        if tasks == {"regression"}
        else ["accuracy", "precision", "recall", "f1", "log_loss", "roc_auc"]
    )
    rows: list[tuple[str, list[str]]] = []
    for name in names:
        rows.append(
            (
                name,
                [_fmt(((v.get("metrics") or {}).get("cumulative") or {}).get(name)) for v in views],
            )
        )
    windows: list[str] = []
    for v in views:
        for w in (v.get("metrics") or {}).get("windows") or {}:
            if w not in windows:
                windows.append(w)
    main = names[0]
    for w in windows:
        rows.append(
            (
                f"{main} {w}",
                [
                    _fmt((((v.get("metrics") or {}).get("windows") or {}).get(w) or {}).get(main))
                    for v in views
                ],
            )
        )
    return rows


def _label_free_rows(views: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Rows of the label-free figures: reference, latest drift verdicts, estimated accuracy
    beside realized, and the mean estimation error."""
    lfs = [v.get("label_free") or {} for v in views]
    if not any(lfs):
        return []
    rows: list[tuple[str, list[str]]] = []
    rows.append(
        (
            "drift reference",
            [
                f"{lf['reference']['source']} ({lf['reference']['rows']})" if lf else "-"
                for lf in lfs
            ],
        )
    )
    names: list[str] = []
    for lf in lfs:
        for w in (lf.get("windows") or {}) if lf else {}:
            if w not in names:
                names.append(w)
    for w in names:
        cells, est = [], []
        for lf in lfs:
            latest = ((lf.get("windows") or {}).get(w) or {}).get("latest") if lf else None
            if not latest:
                cells.append("-")
                est.append("-")
                continue
            drift = latest.get("drift")
            cells.append(
                "too few"
                if drift is None
                else (", ".join(drift["drifted"]) if drift["drifted"] else "none")
            )
            est.append(_fmt((latest.get("estimated") or {}).get("estimated_accuracy")))
        rows.append((f"drifted features ({w})", cells))
        rows.append((f"estimated accuracy ({w})", est))
    cells = []
    for lf in lfs:
        mae = ((lf.get("estimation") or {}).get("mean_abs_error") or {}).get("accuracy")
        n = (lf.get("estimation") or {}).get("compared_windows", 0)
        cells.append(f"{_fmt(mae)} over {n}" if lf and mae is not None else "-")
    rows.append(("estimation error |acc| (windows)", cells))
    return rows


def _print_drift(console: Console, version: str, lf: dict[str, Any] | None) -> None:
    """Per feature of the latest verdict of the first drift window (the rest: ``--json``):
    its scores, p-value and verdict; and the drifted features of the other windows."""
    windows = list(((lf or {}).get("windows") or {}).items())
    for w, entry in windows[1:]:
        drift = (entry.get("latest") or {}).get("drift")
        if drift and drift["drifted"]:
            console.print(f"  v{version} drifted over {w}: {', '.join(drift['drifted'])}")
    for w, entry in windows[:1]:
        drift = (entry.get("latest") or {}).get("drift")
        if not drift:
            continue
        table = Table(
            title=f"  v{version} drift over {w} ({drift['n']} predictions, level "
            f"{drift['alpha'] / max(1, drift['tests']):.2g} per test)",
            box=None,
            title_justify="left",
        )
        for col in ("feature", "psi", "js", "ks / chi2", "missing", "out of range", "p", ""):
            table.add_column(col, justify="left" if col == "feature" else "right")
        for name, fr in drift["features"].items():
            st = fr["statistics"]
            third = st.get("ks") if fr["kind"] == "numeric" else st.get("chi2")
            p = min(fr["p_values"].values()) if fr["p_values"] else None
            table.add_row(
                name,
                _fmt(st.get("psi")),
                _fmt(st.get("jensen_shannon")),
                _fmt(third),
                _fmt(fr["missing_rate"]),
                _fmt(fr["out_of_range_rate"]),
                "-" if p is None else f"{p:.2g}",
                "[yellow]DRIFT[/yellow]" if fr["drifted"] else "",
            )
        console.print(table)


def render_status(console: Console, data: dict[str, Any]) -> None:
    """Per model: one table, a column per version (and all versions), a row per figure."""
    if not data["models"]:
        console.print("no models seen yet")
    for name, model in data["models"].items():
        columns = list(model["versions"].items())
        if model.get("all_versions"):
            columns.append(("all", {**model["all_versions"], "counts": model["counts"]}))
        views = [v for _, v in columns]
        table = Table(title=f"model {name}", box=None, title_justify="left")
        table.add_column("")
        for version, _ in columns:
            table.add_column(f"v{version}" if version != "all" else "all", justify="right")
        table.add_row("labeled", *[_fmt(v.get("labeled")) for v in views])
        for label, values in _metric_rows(views):
            table.add_row(label, *values)
        delay = [v.get("label_delay") or {} for v in views]
        table.add_row(
            "label delay p50 / p95",
            *[
                f"{_duration(d.get('median_ms'))} / {_duration(d.get('p95_ms'))}" if d else "-"
                for d in delay
            ],
        )
        for count in ("joined", "unlabeled", "pending", "dead_letter"):
            table.add_row(count, *[_fmt((v.get("counts") or {}).get(count)) for v in views])
        table.add_row(
            "duplicates",
            *[
                _fmt(
                    (v.get("counts") or {}).get("duplicate_predictions", 0)
                    + (v.get("counts") or {}).get("duplicate_outcomes", 0)
                )
                for v in views
            ],
        )
        detectors: list[str] = []
        for v in views:
            for d in v.get("detectors") or {}:
                if d not in detectors:
                    detectors.append(d)
        for d in detectors:
            cells = []
            for v in views:
                det = (v.get("detectors") or {}).get(d)
                if det is None:
                    cells.append("-")
                    continue
                last = det.get("last_alarm")
                where = f" @{last['position']}" if last else ""
                cells.append(f"{det.get('state')} {det.get('alarms', 0)}{where}")
            table.add_row(f"{d} (state alarms @last)", *cells)
        table.add_row("last event (UTC)", *[_time(v.get("last_event_time_ms")) for v in views])
        for label, values in _label_free_rows(views):
            table.add_row(label, *values)
        console.print(table)
        for version, v in columns:
            _print_drift(console, version, v.get("label_free"))
        alerts = model.get("alerts") or {}
        for a in alerts.get("firing") or []:
            about = f" {a['feature']}" if a.get("feature") else ""
            console.print(
                f"  [red]FIRING[/red] {a['rule']}{about} v{a['version']} ({a['severity']})"
            )
        if alerts.get("retrain_in_flight"):
            console.print(f"  retrain in flight: {alerts['retrain_in_flight']}")
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
