"""Evaluation of joined examples: metric and detector bundles per model, version and segment.

Pure logic. A :class:`PartitionEvaluator` owns every series of one ``labeled`` partition (the
single writer of each model on it). It applies examples in partition order, drops the
duplicates a joiner replay can produce (by ``source_partition`` + ``source_sequence``), and
keeps one :class:`Series` per key:

* ``(model, "*", "")``: every version of the model together;
* ``(model, version, "")``: one version;
* ``(model, version, "tag=value")``: one segment of a version, for each configured tag.

>>> from streaming.settings import ModelConfig
>>> cfg = ModelConfig(task="classification", positive_label=1, windows=["count:2"],
...                   detectors={}, segment_tags=[])
>>> ev = PartitionEvaluator(lambda model: cfg)
>>> base = {"model_name": "m", "model_version": "1", "prediction_timestamp": 0,
...         "outcome_timestamp": 10, "label_delay_ms": 10, "features": {}, "score": None,
...         "probabilities": None, "tags": {}, "source_partition": 0}
>>> for seq, (y, p) in enumerate([(1, 1), (0, 1), (1, 1)], start=1):
...     _ = ev.apply({**base, "prediction_id": f"p{seq}", "label": y, "prediction": p,
...                   "source_sequence": seq})
>>> ev.apply({**base, "prediction_id": "p3", "label": 1, "prediction": 1,
...           "source_sequence": 3}) is None  # a replayed duplicate
True
>>> ev.duplicates_dropped
1
>>> snap = ev.series[("m", "1", "")].snapshot()
>>> round(snap["metrics"]["cumulative"]["accuracy"], 4)
0.6667
>>> snap["metrics"]["windows"]["count:2"]["count"]
2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streaming.alerting import AlertEngine, Emission, Rule, RuleInput, rule_stream
from streaming.detectors import DetectorBundle, parse_detector_spec
from streaming.metrics import MetricBundle, error_of, parse_window
from streaming.settings import ModelConfig

if TYPE_CHECKING:
    from streaming.datadrift import Reference
    from streaming.labelfree import LabelFreeConfig, LabelFreeMonitor

SeriesKey = tuple[str, str, str]
Task = Literal["classification", "regression"]
ALL_VERSIONS = "*"


def infer_task(prediction: object) -> Task:
    """``regression`` for a float prediction, else ``classification``."""
    return "regression" if isinstance(prediction, float) else "classification"


@dataclass
class Series:
    """Metrics and drift detectors of one model/version/segment, and where it stands."""

    key: SeriesKey
    task: Task
    metrics: MetricBundle
    detectors: DetectorBundle
    position: int = 0
    """Number of labeled events applied (the detectors' x axis)."""
    last_event_time_ms: int | None = None
    alarms: list[dict[str, Any]] = field(default_factory=list)
    """Recent latched alarms (newest last, at most :attr:`MAX_ALARMS`)."""

    MAX_ALARMS = 20

    def update(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        y, p = example["label"], example["prediction"]
        t = int(example["outcome_timestamp"])
        self.metrics.update(
            y,
            p,
            score=example.get("score"),
            probabilities=example.get("probabilities"),
            event_time_ms=t,
            label_delay_ms=int(example["label_delay_ms"]),
        )
        self.position += 1
        self.last_event_time_ms = (
            t if self.last_event_time_ms is None else max(self.last_event_time_ms, t)
        )
        fired = []
        for alarm in self.detectors.update(
            error_of(self.task, y, p), position=self.position, event_time_ms=t
        ):
            record = alarm_dict(alarm)
            fired.append(record)
            self.alarms.append(record)
        del self.alarms[: -self.MAX_ALARMS]
        return fired

    def snapshot(self) -> dict[str, Any]:
        model, version, segment = self.key
        return {
            "model": model,
            "version": version,
            "segment": segment,
            "task": self.task,
            "labeled": self.position,
            "last_event_time_ms": self.last_event_time_ms,
            "metrics": self.metrics.snapshot(),
            "detectors": self.detectors.snapshot(),
            "alarms": list(self.alarms),
        }


def alarm_dict(alarm: Any) -> dict[str, Any]:
    return {
        "detector": alarm.detector,
        "kind": alarm.kind,
        "position": alarm.position,
        "event_time_ms": alarm.event_time_ms,
        "direction": alarm.direction,
        "mean_before": alarm.mean_before,
        "mean_after": alarm.mean_after,
    }


@dataclass
class Applied:
    """What one example caused: latched drift alarms and alert/retrain emissions."""

    alarms: list[tuple[SeriesKey, dict[str, Any]]]
    emissions: list[Emission]


class PartitionEvaluator:
    """Applies labeled examples of one partition to its series (see module docstring).

    With ``rules_for``, the alert ``engine`` evaluates the model's rules on the version series
    after every example; ``quality`` holds the latest data-quality values per
    ``(model, version)`` (supplied by the caller, e.g. from the joiner's counters).
    """

    def __init__(
        self,
        config_for: Callable[[str], ModelConfig],
        *,
        rules_for: Callable[[str], list[Rule]] | None = None,
        engine: AlertEngine | None = None,
        label_free_for: Callable[[str], LabelFreeConfig] | None = None,
        reference_for: Callable[[str, str], Reference | None] | None = None,
    ) -> None:
        self.config_for = config_for
        self.rules_for = rules_for
        # per-model lookups are fixed for the process: resolve them once, not per example
        self._configs: dict[str, ModelConfig] = {}
        self._rules: dict[str, list[Rule]] = {}
        self._labeled_rules: dict[str, bool] = {}
        self.engine = engine or AlertEngine()
        self.series: dict[SeriesKey, Series] = {}
        self.last_sequence: dict[int, int] = {}
        """Highest ``source_sequence`` applied per joiner partition (duplicate suppression)."""
        self.last_sighting: dict[int, int] = {}
        """The same for forwarded predictions (their own topic, so their own marks)."""
        self.dirty: set[SeriesKey] = set()
        self.duplicates_dropped = 0
        self.quality: dict[tuple[str, str], dict[str, float | None]] = {}
        self.label_free_for = label_free_for
        self.reference_for = reference_for
        self._label_free: dict[str, LabelFreeConfig] = {}
        self.monitors: dict[tuple[str, str], LabelFreeMonitor] = {}
        """Label-free monitors by (model, version) (see :mod:`streaming.labelfree`)."""
        self.monitors_dirty: set[tuple[str, str]] = set()

    def rule_input(self, series: Series, rules: list[Rule], **quality: float | None) -> RuleInput:
        """The alert engine's view of a version series right now."""
        model, version, _ = series.key
        delay = series.metrics.value("cumulative", "label_delay_p95_ms")
        merged = {
            **self.quality.get((model, version), {}),
            "label_delay_p95_ms": delay,
            "no_events_ms": 0.0,  # an example just arrived
        }
        merged.update(quality)
        return RuleInput(
            model=model,
            version=version,
            position=series.position,
            event_time_ms=series.last_event_time_ms or 0,
            metric=series.metrics.value,
            samples=series.metrics.samples,
            alarms=series.alarms,
            quality=merged,
            rules=rules,
        )

    def _fresh(self, marks: dict[int, int], src: int, seq: int) -> bool:
        if seq <= marks.get(src, 0):
            self.duplicates_dropped += 1
            return False
        marks[src] = seq
        return True

    def _model_rules(self, model: str) -> list[Rule]:
        rules = self._rules.get(model)
        if rules is None:
            rules = self._rules[model] = self.rules_for(model) if self.rules_for else []
        return rules

    def monitor_for(self, model: str, version: str) -> LabelFreeMonitor | None:
        """The version's label-free monitor, created on first use (None when off)."""
        key = (model, version)
        mon = self.monitors.get(key)
        if mon is None and self.label_free_for is not None:
            from streaming.labelfree import LabelFreeMonitor

            cfg = self._label_free.get(model)
            if cfg is None:
                cfg = self._label_free[model] = self.label_free_for(model)
            ref = self.reference_for(model, version) if self.reference_for else None
            mon = self.monitors[key] = LabelFreeMonitor(model, version, cfg, ref)
        return mon

    def apply_prediction(
        self, record: dict[str, Any], source_partition: int, source_sequence: int
    ) -> Applied | None:
        """Apply one forwarded prediction (label-free monitoring); None for a duplicate."""
        if not self._fresh(self.last_sighting, source_partition, source_sequence):
            return None
        model, version = record["model_name"], record["model_version"]
        mon = self.monitor_for(model, version)
        if mon is None:
            return Applied([], [])
        self.monitors_dirty.add((model, version))
        closed = mon.observe(record)
        emissions: list[Emission] = []
        rules = self._model_rules(model)
        if closed and any(rule_stream(r) == "predictions" for r in rules):
            series = self.series.get((model, version, ""))
            windows = [w.name for w in mon.config.windows]
            for name in closed:
                latest = mon.latest[name]
                emissions.extend(
                    self.engine.evaluate(
                        RuleInput(
                            model=model,
                            version=version,
                            position=mon.seen,
                            event_time_ms=int(record["timestamp"]),
                            metric=mon.metric,
                            samples=mon.samples,
                            rules=rules,
                            stream="predictions",
                            closed_window=name,
                            drifted={name: latest.drift.drifted if latest.drift else []},
                            drift_windows=windows,
                            labeled=series.position if series is not None else 0,
                        )
                    )
                )
        return Applied([], emissions)

    def apply(self, example: dict[str, Any]) -> Applied | None:
        """Apply one example; return the alarms and emissions it caused, or None for a
        duplicate."""
        src, seq = int(example["source_partition"]), int(example["source_sequence"])
        if not self._fresh(self.last_sequence, src, seq):
            return None
        model, version = example["model_name"], example["model_version"]
        mon = self.monitors.get((model, version))
        if mon is not None:
            mon.observe_label(example)
            self.monitors_dirty.add((model, version))
        cfg = self._configs.get(model)
        if cfg is None:
            cfg = self._configs[model] = self.config_for(model)
        keys: list[SeriesKey] = [(model, ALL_VERSIONS, ""), (model, version, "")]
        tags = example.get("tags") or {}
        for tag in cfg.segment_tags or []:
            if tag in tags:
                keys.append((model, version, f"{tag}={tags[tag]}"))
        fired: list[tuple[SeriesKey, dict[str, Any]]] = []
        for key in keys:
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = new_series(key, cfg, example["prediction"])
            fired.extend((key, a) for a in series.update(example))
            self.dirty.add(key)
        emissions: list[Emission] = []
        rules = self._model_rules(model)
        if self._labeled_rules.get(model) is None:
            self._labeled_rules[model] = any(rule_stream(r) == "labeled" for r in rules)
        if self._labeled_rules[model]:
            emissions = self.engine.evaluate(self.rule_input(self.series[keys[1]], rules))
        return Applied(fired, emissions)


def new_series(key: SeriesKey, cfg: ModelConfig, first_prediction: object) -> Series:
    """A fresh series for ``key`` under the model's effective config."""
    task: Task = cfg.task or infer_task(first_prediction)
    windows = [parse_window(w, name=w) for w in (cfg.windows or [])]
    detectors = DetectorBundle(
        {name: parse_detector_spec(d.kind, d.params) for name, d in (cfg.detectors or {}).items()}
    )
    return Series(
        key,
        task,
        MetricBundle(task, windows, positive_label=cfg.positive_label),
        detectors,
    )


def series_field(key: SeriesKey) -> str:
    """The Redis hash field of a series key."""
    return "\x1f".join(key)


def parse_series_field(fld: str) -> SeriesKey:
    model, version, segment = fld.split("\x1f")
    return model, version, segment
