"""The demo report: rolling metrics, the summary numbers, PNG plots and one HTML page.

Pure: everything is computed from a :class:`DemoRun` (scored events of the live loop and of
the baselines, alert spans, retrain and version markers); :func:`write_report` renders it with
matplotlib's Agg canvas (no display, no global pyplot state) into a directory holding
``index.html``, ``accuracy.png``, ``f1.png``, ``timeline.png``, ``drift.png`` and
``estimation.png``.

Definitions used by :func:`summarize` (``K`` = ``DemoRun.window`` labeled events):

* **accuracy before the change**: over the last ``K`` labeled events before ``drift_at``;
  **right after**: over the first ``K`` labeled events from ``drift_at`` on;
* **recovery**: the first run of ``K`` consecutive post-change labeled events whose accuracy
  is within ``recovery_tolerance`` of the accuracy before the change; events (and event-time
  seconds) to recovery count from the change to the first event of that run;
* **after recovery**: accuracy from the live loop's recovery point to the end, computed on
  the same events for every system (the last ``K`` labeled events when the loop never
  recovered);
* **detection**: the first alert that starts firing at or after the change (event time);
  its delay in events is the number of stream events between the two, in seconds the event
  time between them, and "as seen" the wall-clock time from the change to the alert record;
* **false alarms**: alerts that started firing before the change;
* **data-drift detection**: the same for the ``data_drift`` alerts (which need no label), kept
  apart from the label-based detection above.

The label-free panels (``drift.png``, ``estimation.png``) come from each version's
``label_free`` status: per drift window the smallest p-value of every feature against the
budget's per-test level, and per event-time window the estimated accuracy beside the realized
one.

>>> events = [ScoredEvent(i, 1000 * i, 1, 1 if i < 6 else 0, "1") for i in range(10)]
>>> r = rolling(events, window=2)
>>> r.accuracy.round(2).tolist()
[nan, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
>>> accuracy_of(events[4:8])
0.5
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = [
    "AlertSpan",
    "DemoRun",
    "Marker",
    "Rolling",
    "ScoredEvent",
    "Summary",
    "System",
    "SystemSummary",
    "VersionInfo",
    "accuracy_of",
    "f1_of",
    "recovery_point",
    "render_html",
    "rolling",
    "summarize",
    "write_report",
]

PLOTS: Final = ("accuracy.png", "f1.png", "timeline.png", "drift.png", "estimation.png")
_LIVE_COLORS: Final = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#8c564b")
_BASELINE_STYLES: Final = {
    "no_retrain": ("#7f7f7f", "--"),
    "periodic": ("#ff7f0e", ":"),
}
_ALERT_COLORS: Final = ("#d62728", "#e377c2", "#ff9896", "#c5b0d5")


# ---- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredEvent:
    """One labeled prediction: stream position, event time, truth, prediction, version."""

    index: int
    event_time_ms: int
    label: int | str
    prediction: int | str
    version: str


@dataclass(frozen=True)
class System:
    """The predictions one way of running the model made on the stream."""

    key: str
    """``live``, ``no_retrain``, ``periodic`` (picks the plot style)."""
    name: str
    events: Sequence[ScoredEvent]
    retrains: int = 0
    promotions: int = 0
    note: str = ""


@dataclass(frozen=True)
class AlertSpan:
    """One alert episode: from firing to resolved (``ends_at_ms`` None: still firing)."""

    rule: str
    kind: str
    """Rule type: ``detector``, ``threshold`` or ``data_quality``."""
    version: str | None
    starts_at_ms: int
    ends_at_ms: int | None = None
    emitted_wall_ms: int | None = None
    """Wall-clock time the firing record was written (its Kafka timestamp)."""
    summary: str = ""
    retrain: str = ""
    """The ``retrain`` annotation: whether a retrain was requested."""
    feature: str | None = None
    """Data-drift alerts: the drifted feature."""


@dataclass(frozen=True)
class Marker:
    """A point event on the timeline: a retrain request, a candidate, a promotion, a refit."""

    kind: str
    """``retrain_request``, ``candidate``, ``promotion``, ``rejection`` or ``refit``."""
    at_ms: int
    version: str | None = None
    text: str = ""


@dataclass(frozen=True)
class VersionInfo:
    """A model version as the registry announced it (its latest event)."""

    version: int
    status: str
    estimator: str | None = None
    training_rows: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    promoted: bool = False
    """Was champion at some point."""


@dataclass(frozen=True)
class DemoRun:
    """Everything one demo run produced, as the report needs it."""

    title: str
    seed: int
    events: int
    drift_at: int
    rate: float
    start_ms: int
    live: System
    baselines: Sequence[System] = ()
    alerts: Sequence[AlertSpan] = ()
    markers: Sequence[Marker] = ()
    versions: Sequence[VersionInfo] = ()
    initial_version: int = 1
    window: int = 500
    recovery_tolerance: float = 0.05
    wall_seconds: float | None = None
    completed: bool = True
    """False when the run stopped before every labeled event was evaluated."""
    config: dict[str, str] = field(default_factory=dict)
    """Settings worth showing (name -> value)."""
    notes: Sequence[str] = ()
    label_free: Mapping[str, Any] = field(default_factory=dict)
    """Per version, its ``label_free`` view of ``streammon status --json``."""

    @property
    def change_time_ms(self) -> int:
        return self.start_ms + round(self.drift_at * 1000.0 / self.rate)

    def seconds(self, ms: int) -> float:
        """Event time ``ms`` as seconds since the start of the stream."""
        return (ms - self.start_ms) / 1000.0


# ---- metrics ---------------------------------------------------------------------------------


def _positive(events: Sequence[ScoredEvent]) -> int | str:
    labels = {e.label for e in events} | {e.prediction for e in events}
    if 1 in labels or not labels:
        return 1
    return sorted(labels, key=str)[-1]


def accuracy_of(events: Sequence[ScoredEvent]) -> float | None:
    """Share of correct predictions, None for no events."""
    if not events:
        return None
    return sum(e.label == e.prediction for e in events) / len(events)


def f1_of(events: Sequence[ScoredEvent], positive: int | str = 1) -> float | None:
    """Binary F1 of ``positive``, None for no events (0.0 when there is no positive at all)."""
    if not events:
        return None
    tp = sum(e.label == positive and e.prediction == positive for e in events)
    fp = sum(e.label != positive and e.prediction == positive for e in events)
    fn = sum(e.label == positive and e.prediction != positive for e in events)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


@dataclass(frozen=True)
class Rolling:
    """Rolling accuracy and F1 after each event (events in stream order)."""

    index: np.ndarray[Any, Any]
    time_ms: np.ndarray[Any, Any]
    accuracy: np.ndarray[Any, Any]
    f1: np.ndarray[Any, Any]


def rolling(
    events: Sequence[ScoredEvent],
    *,
    window: int,
    min_periods: int | None = None,
    positive: int | str | None = None,
) -> Rolling:
    """Metrics over the last ``window`` events at each event; NaN before ``min_periods``."""
    ordered = sorted(events, key=lambda e: (e.index, e.event_time_ms))
    n = len(ordered)
    pos = _positive(ordered) if positive is None else positive
    correct = np.fromiter((e.label == e.prediction for e in ordered), dtype=np.float64, count=n)
    tp = np.fromiter(
        (e.label == pos and e.prediction == pos for e in ordered), dtype=np.float64, count=n
    )
    wrong = 1.0 - correct  # fp + fn
    window = max(1, window)
    need = window if min_periods is None else max(1, min(min_periods, window))

    def sums(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        c = np.concatenate([[0.0], np.cumsum(values)])
        hi = np.arange(1, n + 1)
        lo = np.maximum(0, hi - window)
        return np.asarray(c[hi] - c[lo])

    count = np.minimum(np.arange(1, n + 1), window).astype(np.float64)
    acc = sums(correct) / np.maximum(count, 1.0)
    tps, wrongs = sums(tp), sums(wrong)
    denom = 2 * tps + wrongs
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tps / np.where(denom > 0, denom, 1.0), 0.0)
    acc[count < need] = np.nan
    f1[count < need] = np.nan
    return Rolling(
        index=np.fromiter((e.index for e in ordered), dtype=np.int64, count=n),
        time_ms=np.fromiter((e.event_time_ms for e in ordered), dtype=np.int64, count=n),
        accuracy=acc,
        f1=f1,
    )


def recovery_point(
    events: Sequence[ScoredEvent], *, drift_at: int, window: int, target: float
) -> ScoredEvent | None:
    """First event of the first ``window`` post-change events with accuracy >= ``target``.

    >>> evs = [ScoredEvent(i, i, 1, 0 if 10 <= i < 14 else 1, "v") for i in range(20)]
    >>> recovery_point(evs, drift_at=10, window=4, target=0.75).index
    13
    """
    after = sorted((e for e in events if e.index >= drift_at), key=lambda e: e.index)
    if len(after) < window or window < 1:
        return None
    correct = np.fromiter((e.label == e.prediction for e in after), dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(correct)])
    acc = (c[window:] - c[:-window]) / window
    hits = np.nonzero(acc >= target - 1e-12)[0]
    return after[int(hits[0])] if len(hits) else None


# ---- summary ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemSummary:
    """The summary numbers of one system."""

    key: str
    name: str
    labeled: int
    accuracy_before: float | None
    accuracy_after_change: float | None
    accuracy_after_recovery: float | None
    f1_before: float | None
    f1_after_recovery: float | None
    recovered_at_index: int | None
    events_to_recovery: int | None
    seconds_to_recovery: float | None
    retrains: int
    promotions: int


@dataclass(frozen=True)
class Summary:
    """What the demo showed, in numbers."""

    detected: bool
    detection_rule: str | None
    detection_version: str | None
    detection_time_ms: int | None
    detection_delay_events: int | None
    detection_delay_s: float | None
    detection_seen_after_s: float | None
    """Wall-clock seconds from the change to the alert record (includes label delays)."""
    false_alarms: int
    alerts_after_change: int
    drift_detected_features: list[str]
    """Features named by data-drift alerts that fired after the change, first one first."""
    drift_detection_delay_events: int | None
    """Stream events from the change to the first data-drift alert (no label needed)."""
    drift_detection_seen_after_s: float | None
    drift_false_alarms: int
    promoted_versions: list[int]
    """Versions after the initial one that became champion."""
    recovery_from_index: int | None
    """Start of the range "after recovery" is computed on (the loop's recovery point)."""
    recovered: bool
    systems: list[SystemSummary]

    def system(self, key: str) -> SystemSummary:
        for s in self.systems:
            if s.key == key:
                return s
        raise KeyError(key)

    @property
    def gain_over_no_retrain(self) -> float | None:
        """Live minus no-retrain accuracy after recovery (None when either is unknown)."""
        try:
            live, base = self.system("live"), self.system("no_retrain")
        except KeyError:
            return None
        if live.accuracy_after_recovery is None or base.accuracy_after_recovery is None:
            return None
        return live.accuracy_after_recovery - base.accuracy_after_recovery


def _by_index(events: Sequence[ScoredEvent]) -> list[ScoredEvent]:
    return sorted(events, key=lambda e: e.index)


def summarize(run: DemoRun) -> Summary:
    """The summary numbers of a run (definitions in the module docstring)."""
    k = max(1, run.window)
    change_ms = run.change_time_ms
    firing = sorted(run.alerts, key=lambda a: (a.starts_at_ms, a.rule))
    false_alarms = sum(1 for a in firing if a.starts_at_ms < change_ms)
    after = [a for a in firing if a.starts_at_ms >= change_ms]
    labeled_after = [a for a in after if a.kind != "data_drift"]
    detection = labeled_after[0] if labeled_after else None
    drift_after = [a for a in after if a.kind == "data_drift"]
    drift_features = list(dict.fromkeys(a.feature or "?" for a in drift_after))
    drift_delay = drift_seen = None
    if drift_after:
        first = drift_after[0]
        drift_delay = math.ceil((first.starts_at_ms - change_ms) * run.rate / 1000.0 - 1e-9)
        if first.emitted_wall_ms is not None:
            drift_seen = (first.emitted_wall_ms - change_ms) / 1000.0
    delay_events = delay_s = seen_s = None
    if detection is not None:
        delay_ms = detection.starts_at_ms - change_ms
        delay_s = delay_ms / 1000.0
        delay_events = math.ceil(delay_ms * run.rate / 1000.0 - 1e-9)
        if detection.emitted_wall_ms is not None:
            seen_s = (detection.emitted_wall_ms - change_ms) / 1000.0
    promoted = sorted(v.version for v in run.versions if v.promoted and v.version > 1)

    live = _by_index(run.live.events)
    before = [e for e in live if e.index < run.drift_at][-k:]
    target = (accuracy_of(before) or 0.0) - run.recovery_tolerance
    live_rec = recovery_point(live, drift_at=run.drift_at, window=k, target=target)
    tail_from = live_rec.index if live_rec is not None else (live[-k].index if live else None)

    systems = []
    for system in (run.live, *run.baselines):
        evs = _by_index(system.events)
        pre = [e for e in evs if e.index < run.drift_at][-k:]
        post = [e for e in evs if e.index >= run.drift_at]
        own_target = (accuracy_of(pre) or 0.0) - run.recovery_tolerance
        rec = recovery_point(evs, drift_at=run.drift_at, window=k, target=own_target)
        tail = [e for e in evs if tail_from is not None and e.index >= tail_from]
        pos = _positive(evs)
        systems.append(
            SystemSummary(
                key=system.key,
                name=system.name,
                labeled=len(evs),
                accuracy_before=accuracy_of(pre),
                accuracy_after_change=accuracy_of(post[:k]),
                accuracy_after_recovery=accuracy_of(tail),
                f1_before=f1_of(pre, pos),
                f1_after_recovery=f1_of(tail, pos),
                recovered_at_index=None if rec is None else rec.index,
                events_to_recovery=None if rec is None else rec.index - run.drift_at,
                seconds_to_recovery=(
                    None if rec is None else (rec.event_time_ms - change_ms) / 1000.0
                ),
                retrains=system.retrains,
                promotions=system.promotions,
            )
        )
    return Summary(
        detected=detection is not None,
        detection_rule=None if detection is None else detection.rule,
        detection_version=None if detection is None else detection.version,
        detection_time_ms=None if detection is None else detection.starts_at_ms,
        detection_delay_events=delay_events,
        detection_delay_s=delay_s,
        detection_seen_after_s=seen_s,
        false_alarms=false_alarms,
        alerts_after_change=len(after),
        drift_detected_features=drift_features,
        drift_detection_delay_events=drift_delay,
        drift_detection_seen_after_s=drift_seen,
        drift_false_alarms=sum(
            1 for a in firing if a.starts_at_ms < change_ms and a.kind == "data_drift"
        ),
        promoted_versions=promoted,
        recovery_from_index=tail_from,
        recovered=live_rec is not None,
        systems=systems,
    )


# ---- plots -----------------------------------------------------------------------------------


def _figure(height: float = 4.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _version_colors(run: DemoRun) -> dict[str, str]:
    versions = sorted({e.version for e in run.live.events}, key=_version_key)
    return {v: _LIVE_COLORS[i % len(_LIVE_COLORS)] for i, v in enumerate(versions)}


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (10**9, version)


def _decorate(ax: Any, run: DemoRun, summary: Summary, *, spans: bool) -> None:
    ax.axvline(run.seconds(run.change_time_ms), color="black", lw=1.6, label="true change")
    if summary.detection_time_ms is not None:
        ax.axvline(
            run.seconds(summary.detection_time_ms),
            color="#d62728",
            lw=1.4,
            ls="-.",
            label=f"detection ({summary.detection_rule})",
        )
    if spans:
        rules = sorted({a.rule for a in run.alerts})
        end = run.seconds(run.start_ms + round(run.events * 1000.0 / run.rate))
        for a in run.alerts:
            if a.kind == "data_drift":
                continue  # input drift has its own panel
            color = _ALERT_COLORS[rules.index(a.rule) % len(_ALERT_COLORS)]
            stop = run.seconds(a.ends_at_ms) if a.ends_at_ms is not None else end
            ax.axvspan(run.seconds(a.starts_at_ms), stop, color=color, alpha=0.10, lw=0)
    first = {"retrain_request": True, "promotion": True, "rejection": True, "refit": True}
    for m in run.markers:
        x = run.seconds(m.at_ms)
        if m.kind == "retrain_request":
            ax.axvline(
                x,
                color="#8c564b",
                lw=1.0,
                ls=":",
                alpha=0.9,
                label="retrain request" if first[m.kind] else None,
            )
        elif m.kind == "promotion":
            ax.axvline(
                x, color="#2ca02c", lw=1.6, ls="--", label="promotion" if first[m.kind] else None
            )
            ax.annotate(
                f"v{m.version}",
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                color="#2ca02c",
            )
        elif m.kind == "rejection":
            ax.plot(
                [x],
                [0.02],
                marker="x",
                color="#d62728",
                transform=ax.get_xaxis_transform(),
                ls="none",
                label="rejected candidate" if first[m.kind] else None,
            )
        elif m.kind == "refit":
            ax.plot(
                [x],
                [0.02],
                marker="|",
                color="#ff7f0e",
                ms=10,
                transform=ax.get_xaxis_transform(),
                ls="none",
                label="periodic refit" if first[m.kind] else None,
            )
        else:
            continue
        first[m.kind] = False


def _metric_plot(run: DemoRun, summary: Summary, metric: str, path: Path) -> None:
    fig = _figure(height=5.6)
    ax = fig.add_subplot(1, 1, 1)
    k = max(1, run.window)
    minp = max(1, k // 5)
    colors = _version_colors(run)
    by_version: dict[str, list[ScoredEvent]] = {}
    for e in run.live.events:
        by_version.setdefault(e.version, []).append(e)
    for version in sorted(by_version, key=_version_key):
        r = rolling(by_version[version], window=k, min_periods=minp)
        x = (r.time_ms - run.start_ms) / 1000.0
        ax.plot(
            x,
            getattr(r, metric),
            color=colors[version],
            lw=1.8,
            zorder=3,
            label=f"{run.live.name}: v{version}",
        )
    for system in run.baselines:
        color, style = _BASELINE_STYLES.get(system.key, ("#444444", "-."))
        r = rolling(system.events, window=k, min_periods=minp)
        x = (r.time_ms - run.start_ms) / 1000.0
        ax.plot(x, getattr(r, metric), color=color, ls=style, lw=1.4, label=system.name)
    _decorate(ax, run, summary, spans=True)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("event time (s since the start of the stream)")
    shown = {"accuracy": "accuracy", "f1": "F1"}.get(metric, metric)
    ax.set_ylabel(f"rolling {shown} (last {k} labeled)")
    ax.set_title(f"Rolling {shown} per model version, with the baselines on the same stream")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def _timeline_plot(run: DemoRun, summary: Summary, path: Path) -> None:
    lanes = sorted(
        {
            (a.rule if a.feature is None else f"{a.rule}:{a.feature}", a.version or "*")
            for a in run.alerts
        },
        key=lambda r: (r[0], r[1]),
    )
    fig = _figure(height=max(3.0, 1.8 + 0.45 * (len(lanes) + 1)))
    ax = fig.add_subplot(1, 1, 1)
    end = run.seconds(run.start_ms + round(run.events * 1000.0 / run.rate))
    rules = sorted({r for r, _ in lanes})
    for i, (rule, version) in enumerate(lanes):
        color = _ALERT_COLORS[rules.index(rule) % len(_ALERT_COLORS)]
        bars = [
            (
                run.seconds(a.starts_at_ms),
                (run.seconds(a.ends_at_ms) if a.ends_at_ms is not None else end)
                - run.seconds(a.starts_at_ms),
            )
            for a in run.alerts
            if (a.rule if a.feature is None else f"{a.rule}:{a.feature}") == rule
            and (a.version or "*") == version
        ]
        ax.broken_barh(bars, (i - 0.35, 0.7), facecolors=color, alpha=0.8)
    _decorate(ax, run, summary, spans=False)
    ax.set_yticks(range(len(lanes)), [f"{r} (v{v})" for r, v in lanes] or [])
    ax.set_ylim(-0.8, max(0.8, len(lanes) - 0.2))
    ax.set_xlim(0, max(end, 1.0))
    ax.set_xlabel("event time (s since the start of the stream)")
    ax.set_title("Alerts firing (bars), retrain requests and promotions")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=8, ncol=5, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def _drift_plot(run: DemoRun, summary: Summary, path: Path) -> None:
    """Per drift window of the first kind: -log10 of each feature's smallest p-value, with the
    per-test level of the false-alarm budget."""
    fig = _figure(height=5.0)
    ax = fig.add_subplot(1, 1, 1)
    colors = _version_colors(run)
    levels: list[float] = []
    named = set(summary.drift_detected_features)
    cmap = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22"]
    feature_color: dict[str, str] = {}
    for version in sorted(run.label_free, key=_version_key):
        windows = (run.label_free[version] or {}).get("windows") or {}
        if not windows:
            continue
        name = next(iter(windows))
        history = windows[name].get("history") or []
        points: dict[str, list[tuple[float, float]]] = {}
        for h in history:
            if not h.get("p_values") or h.get("last_ms") is None:
                continue
            x = run.seconds(int(h["last_ms"]))
            if h.get("level"):
                levels.append(float(h["level"]))
            for f, p in h["p_values"].items():
                points.setdefault(f, []).append((x, -math.log10(max(float(p), 1e-300))))
        for f, pts in sorted(points.items()):
            xs, ys = zip(*pts, strict=True)
            if f in named or max(ys) > 2:
                color = feature_color.setdefault(f, cmap[len(feature_color) % len(cmap)])
                ax.plot(xs, ys, marker="o", ms=3, lw=1.6, color=color, label=f"{f} (v{version})")
            else:
                ax.plot(xs, ys, lw=0.8, color=colors[version], alpha=0.35)
    if levels:
        level = -math.log10(min(levels))
        ax.axhline(level, color="#d62728", ls="--", lw=1.2, label="drift level (budget)")
    _decorate(ax, run, summary, spans=False)
    ax.set_xlabel("event time (s since the start of the stream)")
    ax.set_ylabel("-log10 p-value (per feature, per window)")
    ax.set_title("Input drift per feature, before any label (faint: features that never drifted)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def _estimation_plot(run: DemoRun, summary: Summary, path: Path) -> None:
    """Estimated (from scores, no labels) beside realized accuracy per event-time window."""
    fig = _figure(height=5.0)
    ax = fig.add_subplot(1, 1, 1)
    colors = _version_colors(run)
    for version in sorted(run.label_free, key=_version_key):
        rows = ((run.label_free[version] or {}).get("estimation") or {}).get("rows") or []
        est = [
            (run.seconds((r["start"] + r["end"]) // 2), r["estimated"]["accuracy"])
            for r in rows
            if r["estimated"].get("accuracy") is not None and r["predictions"] >= 20
        ]
        real = [
            (run.seconds((r["start"] + r["end"]) // 2), r["realized"]["accuracy"])
            for r in rows
            if r["realized"].get("accuracy") is not None and r["labeled"] >= 20
        ]
        color = colors[version]
        if est:
            xs, ys = zip(*est, strict=True)
            ax.plot(xs, ys, ls="--", marker="o", ms=3, color=color, label=f"v{version} estimated")
        if real:
            xs, ys = zip(*real, strict=True)
            ax.plot(xs, ys, ls="-", marker="s", ms=3, color=color, label=f"v{version} realized")
    _decorate(ax, run, summary, spans=False)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("event time of the predictions (s since the start of the stream)")
    ax.set_ylabel("accuracy per event-time window")
    ax.set_title(
        "Estimated accuracy (scores only) beside realized accuracy (labels);\n"
        "estimates assume P(label | inputs) unchanged, so a concept change leaves them high"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


# ---- html ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _e(value: object) -> str:
    return html.escape(str(value))


def _verdict(run: DemoRun, s: Summary) -> list[str]:
    lines = []
    if s.detected:
        seen = (
            f", seen {_num(s.detection_seen_after_s)} s after it in wall-clock time"
            if s.detection_seen_after_s is not None
            else ""
        )
        lines.append(
            f"Change detected: yes, by <b>{_e(s.detection_rule)}</b> on version "
            f"{_e(s.detection_version or '*')}, {s.detection_delay_events} events "
            f"({_num(s.detection_delay_s)} s of event time) after the change{seen}."
        )
    else:
        lines.append("Change detected: <b>no</b>.")
    if s.drift_detected_features:
        seen = (
            f", seen {_num(s.drift_detection_seen_after_s)} s after it in wall-clock time"
            if s.drift_detection_seen_after_s is not None
            else ""
        )
        lines.append(
            "Input drift flagged without labels: "
            f"<b>{_e(', '.join(s.drift_detected_features))}</b>, "
            f"{s.drift_detection_delay_events} events after the change{seen}."
        )
    if s.promoted_versions:
        shown = ", ".join(f"v{v}" for v in s.promoted_versions)
        lines.append(f"Retrained version promoted: yes ({shown}).")
    else:
        lines.append("Retrained version promoted: <b>no</b>.")
    gain = s.gain_over_no_retrain
    if gain is not None:
        live, base = s.system("live"), s.system("no_retrain")
        lines.append(
            f"Accuracy after recovery: {_pct(live.accuracy_after_recovery)} with the loop vs "
            f"{_pct(base.accuracy_after_recovery)} without retraining "
            f"({100 * gain:+.1f} points)."
        )
    if not s.recovered:
        lines.append(
            f"The loop did not get back within {100 * run.recovery_tolerance:.0f} points of its "
            "accuracy before the change; the after-recovery column covers the last "
            f"{run.window} labeled events."
        )
    if not run.completed:
        lines.append("<b>The run stopped before every labeled event was evaluated.</b>")
    return lines


def _summary_table(run: DemoRun, s: Summary) -> str:
    heads = "".join(f"<th>{_e(x.name)}</th>" for x in s.systems)

    def row(label: str, cells: list[str]) -> str:
        return (
            f"<tr><th scope='row'>{label}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )

    def rec_events(x: SystemSummary) -> str:
        return "not recovered" if x.events_to_recovery is None else str(x.events_to_recovery)

    live_only = ["" for _ in s.systems[1:]]
    det_events = "-" if s.detection_delay_events is None else str(s.detection_delay_events)
    rows = [
        row(
            f"accuracy before the change (last {run.window})",
            [_pct(x.accuracy_before) for x in s.systems],
        ),
        row(
            f"accuracy right after the change (first {run.window})",
            [_pct(x.accuracy_after_change) for x in s.systems],
        ),
        row("accuracy after recovery", [_pct(x.accuracy_after_recovery) for x in s.systems]),
        row("F1 before the change", [_num(x.f1_before, 3) for x in s.systems]),
        row("F1 after recovery", [_num(x.f1_after_recovery, 3) for x in s.systems]),
        row("events to recovery", [rec_events(x) for x in s.systems]),
        row("time to recovery (s, event time)", [_num(x.seconds_to_recovery) for x in s.systems]),
        row("detection delay (events)", [det_events, *live_only]),
        row("detection delay (s, event time)", [_num(s.detection_delay_s), *live_only]),
        row("detection seen after (s, wall clock)", [_num(s.detection_seen_after_s), *live_only]),
        row("false alarms (alerts before the change)", [str(s.false_alarms), *live_only]),
        row("retrains", [str(x.retrains) for x in s.systems]),
        row("promotions", [str(x.promotions) for x in s.systems]),
        row("labeled events scored", [str(x.labeled) for x in s.systems]),
    ]
    return f"<table><tr><th></th>{heads}</tr>{''.join(rows)}</table>"


def _alerts_table(run: DemoRun) -> str:
    if not run.alerts:
        return "<p>No alert fired.</p>"
    rows = []
    last = max(run.live.events, key=lambda e: e.index, default=None)
    last_served = None if last is None else last.version
    for a in sorted(run.alerts, key=lambda a: a.starts_at_ms):
        ends = "firing at the end" if a.ends_at_ms is None else f"{run.seconds(a.ends_at_ms):.1f}"
        if a.ends_at_ms is None and a.version is not None and a.version != last_served:
            ends += f" (v{a.version} no longer serving)"
        rows.append(
            f"<tr><td>{_e(a.rule)}</td><td>{_e(a.kind)}</td><td>v{_e(a.version or '*')}</td>"
            f"<td>{run.seconds(a.starts_at_ms):.1f}</td><td>{_e(ends)}</td>"
            f"<td>{_e(a.summary)}</td><td>{_e(a.retrain)}</td></tr>"
        )
    head = (
        "<tr><th>rule</th><th>type</th><th>version</th><th>fired at (s)</th>"
        "<th>resolved at (s)</th><th>summary</th><th>retrain</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _versions_table(run: DemoRun) -> str:
    if not run.versions:
        return "<p>No model version was announced.</p>"
    rows = []
    for v in sorted(run.versions, key=lambda v: v.version):
        acc = v.metrics.get("accuracy")
        champ = v.champion_metrics.get("accuracy")
        rows.append(
            f"<tr><td>v{v.version}</td><td>{_e(v.status)}</td>"
            f"<td>{'yes' if v.promoted else 'no'}</td><td>{_e(v.estimator or '-')}</td>"
            f"<td>{_e(v.training_rows if v.training_rows is not None else '-')}</td>"
            f"<td>{_pct(acc)}</td><td>{_pct(champ)}</td><td>{_e(v.reason or '')}</td></tr>"
        )
    head = (
        "<tr><th>version</th><th>last status</th><th>was champion</th><th>estimator</th>"
        "<th>training rows</th><th>holdout accuracy</th><th>champion on the same holdout</th>"
        "<th>reason</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; font-size: 0.92em; }
th[scope=row] { font-weight: normal; background: #f6f6f6; }
.verdict li { margin: 0.2em 0; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def render_html(run: DemoRun, summary: Summary, plots: Sequence[str] = PLOTS) -> str:
    """The report page (plots referenced by their file names next to it)."""
    verdict = "".join(f"<li>{line}</li>" for line in _verdict(run, summary))
    config = "".join(
        f"<tr><th scope='row'>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>"
        for k, v in sorted(run.config.items())
    )
    images = "".join(f"<img src='{_e(p)}' alt='{_e(p)}'>" for p in plots)
    wall = "" if run.wall_seconds is None else f", ran for {run.wall_seconds:.0f} s"
    notes = "".join(f"<li>{_e(n)}</li>" for n in run.notes)
    baselines = ", ".join(b.name + (f" ({b.note})" if b.note else "") for b in run.baselines)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(run.title)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(run.title)}</h1>
<p>{run.events} events at {run.rate:g} events/s of event time, concept change at event
{run.drift_at} ({run.seconds(run.change_time_ms):.1f} s), seed {run.seed}{wall}.
Rolling metrics over the last {run.window} labeled events.</p>
<ul class="verdict">{verdict}</ul>
<h2>Summary</h2>
{_summary_table(run, summary)}
<p>Baselines, replayed offline on the same stream and the same labels: {_e(baselines)}.</p>
<h2>Plots</h2>
{images}
<h2>Alerts</h2>
{_alerts_table(run)}
<h2>Model versions</h2>
{_versions_table(run)}
<h2>Configuration</h2>
<table>{config}</table>
<ul>{notes}</ul>
</body></html>
"""


def write_report(run: DemoRun, out_dir: str | Path) -> Path:
    """Write ``index.html`` and the PNG plots into ``out_dir``; the path of ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    _metric_plot(run, summary, "accuracy", out / "accuracy.png")
    _metric_plot(run, summary, "f1", out / "f1.png")
    _timeline_plot(run, summary, out / "timeline.png")
    _drift_plot(run, summary, out / "drift.png")
    _estimation_plot(run, summary, out / "estimation.png")
    page = out / "index.html"
    page.write_text(render_html(run, summary), encoding="utf-8")
    return page
