"""Monitoring before the labels come: data drift and estimated performance per model version.

Pure logic. A :class:`LabelFreeMonitor` is fed every prediction of one model version (the
joiner forwards the first sighting of each prediction to ``predictions-by-model``) and,
later, its labeled examples. It

1. takes the version's reference (from its training profile, or its first
   ``reference_events`` predictions),
2. bins each prediction into the open windows (tumbling ``count:N`` windows of predictions and
   ``time:D`` windows of prediction event time, closed once the event time passes their end
   by ``lateness_ms``),
3. on closing a window, tests every feature and output against the reference under the
   false-alarm budget (:func:`streaming.datadrift.compare_window`) and estimates accuracy,
   precision, recall and F1 from the scores (:mod:`streaming.estimation`),
4. files labeled examples under the time window of their prediction, so estimated and
   realized metrics of the same events sit side by side, with the estimation error.

Everything depends only on the order of the input, so a replay rebuilds the same state.

>>> import random
>>> from streaming.datadrift import DriftBudget
>>> from streaming.metrics import parse_window
>>> cfg = LabelFreeConfig(windows=[parse_window("count:500")], reference_events=500,
...                       budget=DriftBudget(window_false_alarm_rate=0.01), lateness_ms=0)
>>> mon = LabelFreeMonitor("m", "1", cfg)
>>> rnd = random.Random(1)
>>> def event(i, shift=0.0):
...     x = rnd.gauss(shift, 1.0)
...     return {"timestamp": i, "features": {"x": x, "y": rnd.gauss(0, 1)},
...             "prediction": int(x > 0), "score": 0.5, "probabilities": None}
>>> closed = [name for i in range(1000) for name in mon.observe(event(i))]
>>> closed, mon.latest["last_500"].drift.drifted
(['last_500'], [])
>>> closed = [name for i in range(1000, 1500) for name in mon.observe(event(i, 1.0))]
>>> mon.latest["last_500"].drift.drifted
['x', 'output:prediction']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streaming.datadrift import (
    DriftBudget,
    Reference,
    ReferenceBuilder,
    WindowCounts,
    WindowResult,
    compare_window,
)
from streaming.estimation import (
    ESTIMATED_METRICS,
    Calibration,
    RealizedCounts,
    ScoreHistogram,
    fit_calibration,
)
from streaming.metrics import WindowSpec, _is_default_positive

__all__ = ["ClosedWindow", "LabelFreeConfig", "LabelFreeMonitor"]


@dataclass
class LabelFreeConfig:
    """Settings of label-free monitoring for one model."""

    windows: list[WindowSpec]
    reference_events: int = 1000
    budget: DriftBudget = field(default_factory=lambda: DriftBudget(false_alarm_events=100_000))
    min_window_events: int = 100
    lateness_ms: int = 60_000
    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    positive_label: Any = None
    calibration_events: int = 1000
    history: int = 48
    """Closed windows kept per drift window (and time windows of estimation rows)."""


@dataclass
class ClosedWindow:
    """The outcome of one closed window."""

    name: str
    start: int
    end: int
    """Event-time bounds (time windows), or ordinals of the predictions counted from the end
    of the reference (count windows)."""
    drift: WindowResult | None
    """None when the window held fewer than ``min_window_events`` predictions."""
    estimated: dict[str, float | None]
    n: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.name,
            "start": self.start,
            "end": self.end,
            "n": self.n,
            "drift": None if self.drift is None else self.drift.as_dict(),
            "estimated": self.estimated,
        }


@dataclass
class _Open:
    counts: WindowCounts
    scores: ScoreHistogram
    start: int
    end: int
    """Exclusive end: an ordinal (count windows) or an event time (time windows)."""
    first_ms: int | None = None
    last_ms: int | None = None
    """Smallest and largest prediction event time in the window."""


@dataclass
class _Row:
    """Estimated and realized performance of the predictions of one time window."""

    scores: ScoreHistogram
    realized: RealizedCounts
    predictions: int = 0


class LabelFreeMonitor:
    """Drift and estimated performance of one model version (see module docstring)."""

    def __init__(
        self,
        model: str,
        version: str,
        config: LabelFreeConfig,
        reference: Reference | None = None,
    ) -> None:
        self.model, self.version = model, version
        self.configure(config)
        self.reference = reference
        self.builder: ReferenceBuilder | None = None
        if reference is None:
            self.builder = ReferenceBuilder(
                config.reference_events, categorical=config.categorical, features=config.features
            )
        self.calibration: Calibration | None = None
        self.calibration_source = "none"
        if reference is not None and reference.calibration is not None:
            self.calibration = Calibration(*map(tuple, reference.calibration))
            self.calibration_source = "reference"
        self._cal_scores: list[float] = []
        self._cal_labels: list[int] = []
        self.seen = 0
        self.late = 0
        self.watermark = -(2**62)
        self.multiclass: bool | None = None
        self._counting: dict[str, _Open] = {}
        """The open count window of each count spec."""
        self._timed: dict[tuple[str, int], _Open] = {}
        """Open time windows by (spec name, start)."""
        self._next_due = 2**62
        """Earliest event time at which an open time window closes."""
        self._closed_until: dict[str, int] = {}
        self.latest: dict[str, ClosedWindow] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.rows: OrderedDict[int, _Row] = OrderedDict()
        self._is_pos: dict[object, bool] = {}

    # ---------------------------------------------------------------- helpers

    def _positive(self, label: object) -> bool:
        try:
            return self._is_pos[label]
        except KeyError:
            pass
        except TypeError:
            return False
        pos = self.config.positive_label
        value = label == pos if pos is not None else _is_default_positive(label)  # type: ignore[arg-type]
        self._is_pos[label] = bool(value)
        return bool(value)

    def _confidence(self, record: Mapping[str, Any]) -> tuple[float, bool] | None:
        """``(score, predicted positive)`` for the estimate, or None without a score."""
        score = record.get("score")
        if score is not None:
            if self.multiclass is None:
                self.multiclass = False
            return float(score), self._positive(record["prediction"])
        probs = record.get("probabilities")
        if probs:
            p = probs.get(str(record["prediction"]))
            if p is None and isinstance(record["prediction"], float):
                p = probs.get(str(int(record["prediction"])))
            if p is not None:
                if self.multiclass is None:
                    self.multiclass = True
                return float(p), True
        return None

    def _new_scores(self) -> ScoreHistogram:
        return ScoreHistogram.empty(multiclass=bool(self.multiclass))

    def configure(self, config: LabelFreeConfig) -> None:
        """Use ``config`` from now on (the evaluator sets the current settings on a monitor
        it restores)."""
        self.config = config
        self.row_spec = next((w for w in config.windows if w.kind == "time"), None)
        """The time window whose instances pair estimated with realized metrics."""

    # ---------------------------------------------------------------- predictions

    def observe(self, record: Mapping[str, Any]) -> list[str]:
        """Take one prediction; return the names of the windows it closed (in order)."""
        self.seen += 1
        ts = int(record["timestamp"])
        features = record.get("features") or {}
        conf = self._confidence(record)
        row_spec = self.row_spec
        if row_spec is not None and conf is not None:
            # estimates need no reference: every scored prediction counts from the first
            span = _span_ms(row_spec)
            row = self._row(ts - ts % span)
            row.predictions += 1
            row.scores.add(*conf)
        if self.reference is None:
            assert self.builder is not None
            done = self.builder.add(
                features, prediction=record["prediction"], score=record.get("score")
            )
            if done:
                self.reference = self.builder.build()
                self.builder = None
            return []
        ref = self.reference
        closed: list[str] = []
        self.watermark = max(self.watermark, ts)
        bins = ref.bin_record(features, prediction=record["prediction"], score=record.get("score"))
        for spec in self.config.windows:
            if spec.kind == "count":
                w = self._counting.get(spec.name)
                if w is None:
                    start = self._closed_until.get(spec.name, 0)
                    w = self._counting[spec.name] = _Open(
                        WindowCounts.empty(ref), self._new_scores(), start, start + (spec.size or 1)
                    )
                self._add(w, bins, ts, conf)
                if w.start + w.counts.n >= w.end:
                    self._close(spec.name, w)
                    self._closed_until[spec.name] = w.end
                    del self._counting[spec.name]
                    closed.append(spec.name)
                continue
            span = _span_ms(spec)
            start = ts - ts % span
            key = (spec.name, start)
            w = self._timed.get(key)
            if start < self._closed_until.get(spec.name, -(2**62)) or (
                w is None and start + span + self.config.lateness_ms <= self.watermark
            ):
                self.late += 1  # its window has closed (or would close at once)
                continue
            if w is None:
                w = self._timed[key] = _Open(
                    WindowCounts.empty(ref), self._new_scores(), start, start + span
                )
                self._next_due = min(self._next_due, w.end + self.config.lateness_ms)
            self._add(w, bins, ts, conf)
        if self.watermark >= self._next_due:
            closed.extend(self._close_due())
        return closed

    def _add(
        self,
        w: _Open,
        bins: list[tuple[str, int, bool]],
        ts: int,
        conf: tuple[float, bool] | None,
    ) -> None:
        w.counts.add_bins(bins)
        if conf is not None:
            w.scores.add(*conf)
        w.first_ms = ts if w.first_ms is None else min(w.first_ms, ts)
        w.last_ms = ts if w.last_ms is None else max(w.last_ms, ts)

    def _close_due(self) -> list[str]:
        """Close every time window whose end + lateness event time has passed, oldest first;
        their names, in that order."""
        lateness = self.config.lateness_ms
        due = sorted(
            (w.start, name)
            for (name, _), w in self._timed.items()
            if w.end + lateness <= self.watermark
        )
        for start, name in due:
            w = self._timed.pop((name, start))
            self._close(name, w)
            self._closed_until[name] = max(self._closed_until.get(name, 0), w.end)
        self._next_due = min((w.end + lateness for w in self._timed.values()), default=2**62)
        return [name for _, name in due]

    def _close(self, name: str, w: _Open) -> None:
        assert self.reference is not None
        drift = None
        if w.counts.n >= self.config.min_window_events:
            drift = compare_window(
                self.reference, w.counts, self.config.budget, windows=len(self.config.windows)
            )
        estimated = {f"estimated_{k}": v for k, v in w.scores.estimate(self.calibration).items()}
        closed = ClosedWindow(name, w.start, w.end, drift, estimated, w.counts.n)
        self.latest[name] = closed
        hist = self.history.setdefault(name, [])
        hist.append(
            {
                "start": w.start,
                "end": w.end,
                "first_ms": w.first_ms,
                "last_ms": w.last_ms,
                "n": w.counts.n,
                "drifted": None if drift is None else list(drift.drifted),
                "p_values": None if drift is None else drift.min_p_values(),
                "level": None if drift is None else drift.alpha / max(1, drift.tests),
                "estimated_accuracy": estimated["estimated_accuracy"],
            }
        )
        del hist[: -self.config.history]

    def _row(self, start: int) -> _Row:
        row = self.rows.get(start)
        if row is None:
            row = self.rows[start] = _Row(
                self._new_scores(), RealizedCounts(multiclass=bool(self.multiclass))
            )
            while len(self.rows) > self.config.history:
                self.rows.popitem(last=False)
        return row

    # ---------------------------------------------------------------- labels

    def observe_label(self, example: Mapping[str, Any]) -> None:
        """Take one labeled example of this version (realized metrics, calibration data)."""
        y, p = example["label"], example["prediction"]
        actual = self._positive(y)
        predicted = self._positive(p)
        score = example.get("score")
        if (
            self.calibration_source == "none"
            and score is not None
            and not self.multiclass
            and len(self._cal_scores) < self.config.calibration_events
        ):
            self._cal_scores.append(float(score))
            self._cal_labels.append(int(actual))
            if len(self._cal_scores) >= self.config.calibration_events:
                self.calibration = fit_calibration(self._cal_scores, self._cal_labels)
                self.calibration_source = (
                    "labels" if self.calibration is not None else "calibrated_already"
                )
                self._cal_scores, self._cal_labels = [], []
        spec = self.row_spec
        if spec is None:
            return
        span = _span_ms(spec)
        ts = int(example["prediction_timestamp"])
        start = ts - ts % span
        row = self.rows.get(start)
        if row is None:
            return  # its window is older than the history kept, or had no scores
        row.realized.add(predicted_positive=predicted, actual_positive=actual, correct=y == p)

    # ---------------------------------------------------------------- reading

    def metric(self, window: str, name: str) -> float | None:
        """The value of an alert-rule metric in the window's latest closed instance."""
        closed = self.latest.get(window)
        if closed is None:
            return None
        if name in closed.estimated:
            return closed.estimated[name]
        return None if closed.drift is None else closed.drift.value(name)

    def samples(self, window: str) -> int:
        closed = self.latest.get(window)
        return 0 if closed is None or closed.drift is None else closed.n

    def estimation_rows(self) -> list[dict[str, Any]]:
        """Per time window: predictions, labeled, estimated and realized metrics, and the
        error (estimated - realized) once at least half the predictions are labeled."""
        spec = self.row_spec
        span = _span_ms(spec) if spec is not None else 0
        out = []
        for start, row in self.rows.items():
            est = row.scores.estimate(self.calibration)
            real = row.realized.metrics()
            comparable = row.realized.n >= max(30, row.predictions // 2)
            error = {
                k: (est[k] - real[k])  # type: ignore[operator]
                for k in ESTIMATED_METRICS
                if comparable and est[k] is not None and real[k] is not None
            }
            out.append(
                {
                    "start": start,
                    "end": start + span,
                    "predictions": row.predictions,
                    "labeled": row.realized.n,
                    "estimated": est,
                    "realized": real,
                    "error": error,
                }
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        rows = self.estimation_rows()
        errors: dict[str, list[float]] = {}
        for r in rows:
            for k, v in r["error"].items():
                errors.setdefault(k, []).append(abs(v))
        ref = self.reference
        return {
            "model": self.model,
            "version": self.version,
            "predictions": self.seen,
            "late_predictions": self.late,
            "reference": {
                "source": ref.source if ref is not None else "building",
                "rows": ref.rows if ref is not None else (self.builder.rows if self.builder else 0),
                "needed": self.config.reference_events if ref is None else None,
                "features": sorted(ref.features) if ref is not None else [],
            },
            "calibration": self.calibration_source,
            "windows": {
                name: {"latest": closed.as_dict(), "history": list(self.history.get(name, []))}
                for name, closed in sorted(self.latest.items())
            },
            "estimation": {
                "rows": rows,
                "mean_abs_error": {k: sum(v) / len(v) for k, v in sorted(errors.items())},
                "compared_windows": max((len(v) for v in errors.values()), default=0),
            },
        }


def _span_ms(spec: WindowSpec) -> int:
    return max(1, round(float(spec.seconds or 0) * 1000))
