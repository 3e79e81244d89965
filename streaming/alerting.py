"""Alert rules, their Prometheus-like lifecycle, and retrain requests. Pure logic.

The evaluator (single writer per model) calls :meth:`AlertEngine.evaluate` after each labeled
example of a model version, with the series' metric values, latched drift alarms and
data-quality values. The engine keeps one alert per (rule, model, version) and moves it through
``inactive -> pending -> firing -> resolved (-> inactive)`` as Prometheus does; it returns an
:class:`AlertTransition` (an ``AlertEvent`` record) for every transition into firing and every
resolution, and a :class:`RetrainEmission` (a ``RetrainRequest`` record) when a rule with
``retrain = true`` starts firing and the :class:`RetrainPolicy` allows it.

Decisions depend only on the inputs, never on the wall clock: "now" is the largest event time
seen for the model (so it never goes backwards; prediction-stream rules have a clock of their
own), and ids are digests of what they identify.
An engine restored with :meth:`AlertEngine.from_state` and fed the same inputs in the same
order re-emits identical records, so consumers can drop duplicates by id.

Semantics worth knowing:

* A threshold rule whose window has fewer than ``min_samples`` samples, a metric that is
  undefined (``None``, NaN, or not computed for the model's task) and a data-quality value
  that the caller does not supply are *unknown*: the alert keeps its state unchanged (a
  pending alert neither advances nor resets, a firing one neither resolves nor repeats).
* ``for_events`` counts evaluations after the one that made the alert pending and
  ``for_ms`` measures event time since then; both must be reached (as Prometheus' ``for``):
  with ``for_events = 2`` the third consecutive breaching evaluation fires.
* A detector rule counts the alarms of its detector with direction ``increase`` or
  ``unknown``; it fires when ``min_alarms`` of them lie within the last ``span_events``
  positions (``position - alarm position < span_events``) and ``span_ms`` of event time
  (``None`` = unbounded, i.e. since the last resolution), and resolves once
  ``resolve_after_events`` positions pass without a new counted alarm. Alarms counted before
  a resolution never count again.
* A firing alert whose rule disappears from the model's rules (removed, or its ``models``
  no longer lists the model) is resolved with ``value = null`` and the annotation
  ``resolved_reason``.
* ``version`` ``None`` or ``"*"`` is the all-versions series: records have
  ``model_version = null`` and the label ``version="*"``; it never requests a retrain (a
  request names the version to replace).
* ``alert_id`` digests the fingerprint, status, ``starts_at`` and the position at which the
  alert started firing, so two episodes starting at the same event time still differ.

>>> rule = ThresholdRule(name="low_acc", metric="accuracy", window="cumulative", op="<",
...                      threshold=0.8, min_samples=1)
>>> engine = AlertEngine()
>>> def step(position, accuracy):
...     return engine.evaluate(RuleInput(
...         model="credit", version="v3", position=position, event_time_ms=1000 * position,
...         metric=lambda window, name: accuracy, samples=lambda window: position,
...         rules=[rule]))
>>> [e.record["status"] for e in step(1, 0.71)]
['firing']
>>> step(2, 0.70)  # no repeat while firing
[]
>>> (resolved,) = step(3, 0.90)
>>> resolved.record["status"], resolved.record["starts_at"], resolved.record["ends_at"]
('resolved', 1000, 3000)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import re
import string
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, Self, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streaming.errors import ConfigError, StateError

__all__ = [
    "ALL_VERSIONS",
    "CLASSIFICATION_METRICS",
    "DATA_QUALITY_CHECKS",
    "PLACEHOLDERS",
    "REGRESSION_METRICS",
    "THRESHOLD_METRICS",
    "AlertEngine",
    "AlertRule",
    "AlertTransition",
    "DataDriftRule",
    "DataQualityRule",
    "DetectorRule",
    "Emission",
    "RetrainEmission",
    "RetrainPolicy",
    "RuleInput",
    "ThresholdRule",
    "rules_for",
    "validate_rules",
]

ALL_VERSIONS: Final = "*"
"""Version of the all-versions series (as in :mod:`streaming.evaluation`)."""

CLASSIFICATION_METRICS: Final = ("accuracy", "precision", "recall", "f1", "log_loss", "roc_auc")
REGRESSION_METRICS: Final = ("mae", "rmse", "r2")
PREDICTION_METRICS: Final = (
    "estimated_accuracy",
    "estimated_precision",
    "estimated_recall",
    "estimated_f1",
    "drifted_features",
)
"""Metrics computed from predictions alone, over a drift window (see
:mod:`streaming.labelfree`); ``<statistic>:<feature>`` names one feature's drift value."""
FEATURE_METRIC_PREFIXES: Final = (
    "psi",
    "jensen_shannon",
    "ks",
    "wasserstein",
    "chi2",
    "missing_rate",
    "out_of_range_rate",
)
THRESHOLD_METRICS: Final = (
    *CLASSIFICATION_METRICS,
    *REGRESSION_METRICS,
    "label_delay_p95_ms",
    *PREDICTION_METRICS,
)
"""Metric names a threshold rule may watch (plus ``<statistic>:<feature>``, e.g.
``psi:age``, with a statistic of :data:`FEATURE_METRIC_PREFIXES`)."""


def is_prediction_metric(name: str) -> bool:
    """Whether a threshold-rule metric comes from the prediction stream (a drift window).

    >>> is_prediction_metric("estimated_f1"), is_prediction_metric("psi:age")
    (True, True)
    >>> is_prediction_metric("accuracy"), is_prediction_metric("psi:")
    (False, False)
    """
    if name in PREDICTION_METRICS:
        return True
    prefix, sep, feature = name.partition(":")
    return bool(sep and feature) and prefix in FEATURE_METRIC_PREFIXES


DATA_QUALITY_CHECKS: Final = (
    "unlabeled_rate",
    "dead_letter_rate",
    "label_delay_p95_ms",
    "no_events_ms",
)

PLACEHOLDERS: Final = ("model", "version", "value", "threshold", "rule", "metric", "window")
"""Placeholders an annotation template may use (``{value:.3f}`` takes a format spec)."""

RESERVED_LABELS: Final = frozenset({"alertname", "model", "version", "severity", "feature"})
"""Labels the engine sets on every alert; rules cannot set them."""

RESERVED_ANNOTATIONS: Final = frozenset(
    {"inhibited_by", "retrain", "resolved_reason", "drifted_features"}
)
"""Annotations the engine sets; rules cannot set them."""

Op: TypeAlias = Literal["<", "<=", ">", ">="]
_OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NUMERIC_PLACEHOLDERS: Final = frozenset({"value", "threshold"})
_LABEL_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FEATURE_SEP: Final = "\x1f"
"""Separates rule name and feature in the key of a per-feature data-drift alert."""
_STATE_FORMAT: Final = "streammon.alerting.engine"
_STATE_VERSION: Final = 1
_HOUR_MS: Final = 3_600_000


# --------------------------------------------------------------------------- templates


def _check_template(text: str) -> str:
    """Reject a template that :func:`_render` could not fill safely."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        msg = f"bad template {text!r}: {exc}"
        raise ValueError(msg) from exc
    allowed = ", ".join(PLACEHOLDERS)
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            msg = f"unknown placeholder {{{name}}} in {text!r} (allowed: {allowed})"
            raise ValueError(msg)
        if conversion:
            msg = f"conversion !{conversion} in {text!r} is not supported"
            raise ValueError(msg)
        if spec:
            if "{" in spec or "}" in spec:
                msg = f"nested placeholder in the format spec of {{{name}}} in {text!r}"
                raise ValueError(msg)
            sample: object = 0.5 if name in _NUMERIC_PLACEHOLDERS else "x"
            try:
                format(sample, spec)
            except ValueError as exc:
                msg = f"format spec {spec!r} does not apply to {{{name}}} in {text!r}"
                raise ValueError(msg) from exc
    return text


def _check_label_name(key: str) -> str:
    if not _LABEL_NAME.match(key):
        msg = f"label name {key!r} must match [A-Za-z_][A-Za-z0-9_]*"
        raise ValueError(msg)
    if key in RESERVED_LABELS:
        msg = f"label {key!r} is set by the engine ({', '.join(sorted(RESERVED_LABELS))})"
        raise ValueError(msg)
    return key


def _check_annotation_name(key: str) -> str:
    if not key:
        msg = "annotation names must not be empty"
        raise ValueError(msg)
    if key in RESERVED_ANNOTATIONS:
        msg = f"annotation {key!r} is set by the engine ({', '.join(sorted(RESERVED_ANNOTATIONS))})"
        raise ValueError(msg)
    return key


def _num(value: float | None) -> str:
    """A number for people: up to 4 decimals, no trailing zeros; ``n/a`` for None."""
    if value is None:
        return "n/a"
    if value == 0 or abs(value) >= 1e-3:
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return f"{value:.3g}"


def _render(text: str, context: Mapping[str, str | float | None]) -> str:
    """Fill a template checked by :func:`_check_template`; never raises for such templates."""
    out: list[str] = []
    for literal, name, spec, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is None:
            continue
        value = context[name]
        shown = _num(value) if isinstance(value, float) or value is None else value
        if spec:
            with contextlib.suppress(ValueError, TypeError):
                shown = format(value if isinstance(value, float) else shown, spec)
        out.append(shown)
    return "".join(out)


# --------------------------------------------------------------------------- rules

Template = Annotated[str, AfterValidator(_check_template)]
LabelName = Annotated[str, AfterValidator(_check_label_name)]
AnnotationName = Annotated[str, AfterValidator(_check_annotation_name)]


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field path, message)`` for each error, without pydantic's ``Value error,`` prefix."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        if err["type"] == "alert_rule":
            out.extend((str(f), str(m)) for f, m in ctx.get("problems", []))
            continue
        msg = str(ctx["error"]) if err["type"] == "value_error" and "error" in ctx else err["msg"]
        loc = [str(p) for p in err["loc"] if p != "[key]"]  # "[key]": a dict key was bad
        out.append((".".join(loc), msg))
    return out


class _RuleBase(BaseModel):
    """Fields every alert rule has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^\S+$")
    """Unique among the rules of a model; the ``alertname`` label."""
    severity: str = Field(default="warning", pattern=r"^\S+$")
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[AnnotationName, Template] = Field(default_factory=dict)
    """Templates with placeholders from :data:`PLACEHOLDERS`; ``summary`` and ``description``
    default to texts of the engine when absent."""
    retrain: bool = False
    """Request a retrain when the alert starts firing (subject to the retrain policy)."""
    models: list[str] | None = None
    """Models the rule applies to; None means every model."""

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_rule(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Report every problem of a rule as one error that names the rule and the fields."""
        try:
            return handler(data)
        except ValidationError as exc:
            name = data.get("name") if isinstance(data, Mapping) else getattr(data, "name", None)
            problems = _problems(exc)
            shown = f"rule {name!r}" if isinstance(name, str) else "rule without a valid name"
            detail = "; ".join(f"{f}: {m}" if f else m for f, m in problems)
            kind, template = "alert_rule", "{detail}"
            raise PydanticCustomError(
                kind,
                template,
                {"detail": f"{shown}: {detail}", "problems": problems},
            ) from exc


class ThresholdRule(_RuleBase):
    """Compare a metric over a window with a threshold (``accuracy < 0.8`` over count:1000)."""

    type: Literal["threshold"] = "threshold"
    metric: str
    """One of :data:`THRESHOLD_METRICS`."""
    window: str = "cumulative"
    """``cumulative`` or a configured window name such as ``count:1000``."""
    op: Op
    threshold: float = Field(allow_inf_nan=False)
    min_samples: int = Field(default=100, ge=0)
    """Samples the window must hold for the value to count; fewer leave the state unchanged."""
    for_events: int = Field(default=0, ge=0)
    for_ms: int = Field(default=0, ge=0)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in THRESHOLD_METRICS and not is_prediction_metric(value):
            msg = (
                f"unknown metric {value!r} (known: {', '.join(THRESHOLD_METRICS)}, "
                f"or <statistic>:<feature> with a statistic of "
                f"{', '.join(FEATURE_METRIC_PREFIXES)})"
            )
            raise ValueError(msg)
        return value


class DetectorRule(_RuleBase):
    """Fire on ``min_alarms`` rising-error alarms of a configured drift detector in a span."""

    type: Literal["detector"] = "detector"
    detector: str
    """A configured detector name."""
    min_alarms: int = Field(default=1, ge=1)
    span_events: int | None = Field(default=None, ge=1)
    span_ms: int | None = Field(default=None, ge=1)
    resolve_after_events: int = Field(default=1000, ge=1)


class DataQualityRule(_RuleBase):
    """Compare a data-quality value supplied by the caller with a threshold."""

    type: Literal["data_quality"] = "data_quality"
    check: Literal["unlabeled_rate", "dead_letter_rate", "label_delay_p95_ms", "no_events_ms"]
    op: Op
    threshold: float = Field(allow_inf_nan=False)
    for_events: int = Field(default=0, ge=0)
    for_ms: int = Field(default=0, ge=0)


class DataDriftRule(_RuleBase):
    """Fire when a closed drift window finds at least ``min_features`` drifted features (or
    outputs: ``output:prediction``, ``output:score``), judged under the false-alarm budget
    (see :mod:`streaming.datadrift`). Needs no labels."""

    type: Literal["data_drift"] = "data_drift"
    window: str | None = None
    """A configured drift window (``drift_windows``); None: the first one."""
    min_features: int = Field(default=1, ge=1)
    features: list[str] | None = None
    """Only these features (and outputs) count; None: all."""
    for_windows: int = Field(default=0, ge=0)
    """Further consecutive drifted windows needed before firing."""
    resolve_after_windows: int = Field(default=1, ge=1)
    """Consecutive windows without drift that resolve a firing alert."""


AlertRule = Annotated[
    ThresholdRule | DetectorRule | DataQualityRule | DataDriftRule, Field(discriminator="type")
]
"""One alert rule of any type, chosen by its ``type`` field."""

Rule: TypeAlias = ThresholdRule | DetectorRule | DataQualityRule | DataDriftRule
_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(AlertRule)
_RULE_TYPES: Final = ("threshold", "detector", "data_quality", "data_drift")


def rule_stream(rule: Rule) -> Literal["labeled", "predictions"]:
    """Which stream a rule is evaluated on: data-drift rules and threshold rules on
    :func:`is_prediction_metric` metrics run when a drift window closes; the rest after each
    labeled example."""
    if isinstance(rule, DataDriftRule):
        return "predictions"
    if isinstance(rule, ThresholdRule) and is_prediction_metric(rule.metric):
        return "predictions"
    return "labeled"


def rule_window(rule: Rule, drift_windows: Sequence[str]) -> str | None:
    """The drift window a prediction-stream rule reads (None for labeled-stream rules)."""
    if isinstance(rule, DataDriftRule):
        return rule.window or (drift_windows[0] if drift_windows else None)
    if isinstance(rule, ThresholdRule) and is_prediction_metric(rule.metric):
        return rule.window
    return None


def validate_rules(
    rules: Iterable[Rule | Mapping[str, Any]],
    *,
    windows: Collection[str],
    detectors: Collection[str],
    drift_windows: Sequence[str] = (),
    where: str = "alert_rules",
) -> list[Rule]:
    """Check rules against the configured windows and detectors; return them parsed.

    Mappings are parsed first. Every problem is a :class:`ConfigError` naming the rule and
    the field. ``cumulative`` is always a valid window.

    >>> validate_rules([{"type": "threshold", "name": "low_acc", "metric": "accuracy",
    ...                  "window": "count:999", "op": "<", "threshold": 0.8}],
    ...                windows={"count:1000", "time:1h"}, detectors={"adwin"})
    Traceback (most recent call last):
    ...
    streaming.errors.ConfigError: alert_rules[low_acc].window: unknown window 'count:999' \
(configured: cumulative, count:1000, time:1h)
    """
    parsed: list[Rule] = []
    problems: list[str] = []
    for i, raw in enumerate(rules):
        if isinstance(raw, ThresholdRule | DetectorRule | DataQualityRule | DataDriftRule):
            parsed.append(raw)
            continue
        name = raw.get("name") if isinstance(raw, Mapping) else None
        label = f"{where}[{name}]" if isinstance(name, str) and name else f"{where}[#{i}]"
        try:
            parsed.append(_RULE_ADAPTER.validate_python(raw))
        except ValidationError as exc:
            for err in exc.errors():
                if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    got = raw.get("type") if isinstance(raw, Mapping) else None
                    problems.append(
                        f"{label}.type: must be one of {', '.join(_RULE_TYPES)}, got {got!r}"
                    )
                elif err["type"] == "alert_rule":
                    for fld, msg in (err.get("ctx") or {}).get("problems", []):
                        problems.append(f"{label}.{fld}: {msg}" if fld else f"{label}: {msg}")
                else:
                    problems.append(f"{label}: {err['msg']}")
    known_windows = ["cumulative", *sorted(set(windows) - {"cumulative"})]
    known_detectors = sorted(detectors)
    seen: set[str] = set()
    for rule in parsed:
        label = f"{where}[{rule.name}]"
        if rule.name in seen:
            problems.append(f"{label}.name: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        if rule_stream(rule) == "predictions":
            window = rule_window(rule, drift_windows)
            if window not in drift_windows:
                shown = ", ".join(drift_windows) or "none"
                problems.append(
                    f"{label}.window: {window!r} is not a drift window (drift_windows: {shown})"
                )
        elif isinstance(rule, ThresholdRule) and rule.window not in known_windows:
            problems.append(
                f"{label}.window: unknown window {rule.window!r} "
                f"(configured: {', '.join(known_windows)})"
            )
        if isinstance(rule, DetectorRule) and rule.detector not in known_detectors:
            problems.append(
                f"{label}.detector: unknown detector {rule.detector!r} "
                f"(configured: {', '.join(known_detectors) or 'none'})"
            )
    if problems:
        raise ConfigError("; ".join(problems))
    return parsed


def rules_for(model: str, shared: Iterable[Rule], own: Iterable[Rule] = ()) -> list[Rule]:
    """Effective rules of a model: its own rules, then shared ones it does not override.

    A model's rule replaces a shared rule of the same name; rules whose ``models`` does not
    list the model are left out.

    >>> shared = [DataQualityRule(name="dq", check="unlabeled_rate", op=">", threshold=0.5),
    ...           DataQualityRule(name="other", check="no_events_ms", op=">", threshold=1,
    ...                           models=["fraud"])]
    >>> own = [DataQualityRule(name="dq", check="unlabeled_rate", op=">", threshold=0.9)]
    >>> [(r.name, r.threshold) for r in rules_for("credit", shared, own)]
    [('dq', 0.9)]
    """
    own = list(own)
    names = {r.name for r in own}
    picked = [*own, *(r for r in shared if r.name not in names)]
    return [r for r in picked if r.models is None or model in r.models]


# --------------------------------------------------------------------------- inputs, outputs


def _no_metric(window: str, metric: str) -> float | None:
    return None


def _no_samples(window: str) -> int:
    return 0


@dataclass(frozen=True, kw_only=True)
class RuleInput:
    """What the engine sees of one (model, version) series after one labeled example."""

    model: str
    version: str | None
    """The model version; None or ``"*"`` for the all-versions series."""
    position: int
    """Labeled events seen by this series (increases by one per example)."""
    event_time_ms: int
    """Event time of the example just applied."""
    metric: Callable[[str, str], float | None] = _no_metric
    """(window, metric) -> value, None when undefined."""
    samples: Callable[[str], int] = _no_samples
    """window -> number of samples in it."""
    alarms: Sequence[Mapping[str, Any]] = ()
    """The series' recent latched alarms: ``detector, position, event_time_ms, direction``."""
    quality: Mapping[str, float | None] = field(default_factory=dict)
    """Data-quality values by check name; a missing or None value is unknown."""
    rules: Sequence[Rule] = ()
    """The effective rules of the model (see :func:`rules_for`)."""
    stream: Literal["labeled", "predictions"] = "labeled"
    """Only rules of this stream are stepped (see :func:`rule_stream`); the rest keep their
    state."""
    closed_window: str | None = None
    """For the prediction stream: the drift window that just closed (only its rules step)."""
    drifted: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """For the prediction stream: drifted features per drift window, most significant first."""
    drift_windows: Sequence[str] = ()
    labeled: int | None = None
    """Labeled events of the version, for the retrain policy's ``min_labeled`` (default:
    ``position``)."""

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Mapping[str, Any],
        *,
        rules: Sequence[Rule],
        event_time_ms: int | None = None,
        quality: Mapping[str, float | None] | None = None,
    ) -> RuleInput:
        """Input from a :meth:`streaming.evaluation.Series.snapshot` (default time: its last).

        >>> snap = {"model": "m", "version": "1", "labeled": 3, "last_event_time_ms": 30,
        ...         "alarms": [], "metrics": {"count": 3, "cumulative": {"accuracy": 0.5},
        ...         "label_delay": {"p95_ms": 12.0},
        ...         "windows": {"count:2": {"count": 2, "accuracy": 1.0,
        ...                                 "label_delay": {"p95_ms": 9.0}}}}}
        >>> inp = RuleInput.from_snapshot(snap, rules=[])
        >>> inp.metric("count:2", "accuracy"), inp.metric("cumulative", "label_delay_p95_ms")
        (1.0, 12.0)
        >>> inp.samples("count:2"), inp.samples("cumulative"), inp.metric("time:1h", "f1")
        (2, 3, None)
        """
        metrics = snapshot["metrics"]

        def scope(window: str) -> Mapping[str, Any] | None:
            if window == "cumulative":
                return {**metrics["cumulative"], "label_delay": metrics.get("label_delay")}
            found = metrics.get("windows", {}).get(window)
            return found if isinstance(found, Mapping) else None

        def metric(window: str, name: str) -> float | None:
            s = scope(window)
            if s is None:
                return None
            if name == "label_delay_p95_ms":
                delay = s.get("label_delay")
                value = delay.get("p95_ms") if isinstance(delay, Mapping) else None
            else:
                value = s.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value)

        def samples(window: str) -> int:
            if window == "cumulative":
                return int(metrics.get("count") or 0)
            s = scope(window)
            return int(s.get("count") or 0) if s is not None else 0

        last = snapshot.get("last_event_time_ms")
        return cls(
            model=snapshot["model"],
            version=snapshot["version"],
            position=int(snapshot["labeled"]),
            event_time_ms=int(event_time_ms if event_time_ms is not None else last or 0),
            metric=metric,
            samples=samples,
            alarms=list(snapshot.get("alarms") or []),
            quality=dict(quality or {}),
            rules=rules,
        )


@dataclass(frozen=True)
class AlertTransition:
    """An alert started firing or resolved: ``record`` is an ``AlertEvent``."""

    record: dict[str, Any]
    topic: str = "alerts"
    """Logical topic (see :meth:`streaming.settings.Settings.topic`)."""

    @property
    def key(self) -> str:
        """The Kafka key: the alert's fingerprint."""
        return str(self.record["fingerprint"])

    @property
    def id(self) -> str:
        return str(self.record["alert_id"])


@dataclass(frozen=True)
class RetrainEmission:
    """A retrain was requested: ``record`` is a ``RetrainRequest``."""

    record: dict[str, Any]
    topic: str = "retrain-requests"

    @property
    def key(self) -> str:
        """The Kafka key: the model name."""
        return str(self.record["model_name"])

    @property
    def id(self) -> str:
        return str(self.record["request_id"])


Emission: TypeAlias = AlertTransition | RetrainEmission


@dataclass(frozen=True)
class RetrainPolicy:
    """When a firing ``retrain = true`` rule may request a retrain of its model.

    A request needs ``position >= min_labeled`` in the version series, no request for the
    model within the last ``cooldown_ms`` of event time and none in flight. A request stays
    in flight until :meth:`AlertEngine.retrain_finished` or ``max_in_flight_ms`` of event time.
    The suggested training window is the last ``window_ms`` of event time.
    """

    cooldown_ms: int = 6 * _HOUR_MS
    min_labeled: int = 1000
    max_in_flight_ms: int = 24 * _HOUR_MS
    window_ms: int = 7 * 24 * _HOUR_MS

    def __post_init__(self) -> None:
        for name, low in (
            ("cooldown_ms", 0),
            ("min_labeled", 0),
            ("max_in_flight_ms", 1),
            ("window_ms", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                msg = f"retrain policy {name}: must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)


# --------------------------------------------------------------------------- state


def _digest(*parts: object) -> str:
    """128-bit hex digest of JSON-able parts (stable across processes and versions)."""
    text = json.dumps(parts, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class _Alert:
    """One alert: a rule on one model version."""

    rule: str
    model: str
    version: str
    kind: str
    status: str = "inactive"  # inactive | pending | firing
    since_ms: int = 0
    """Event time the alert became pending."""
    held: int = 0
    """Breaching evaluations since the one that made it pending."""
    starts_at: int = 0
    start_position: int = 0
    fingerprint: str = ""
    severity: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    threshold: float | None = None
    alarm_mark: int = 0
    """Highest position of an alarm of the rule's detector already looked at."""
    alarms: list[list[int]] = field(default_factory=list)
    """Counted alarms ``[position, event_time_ms]`` that may still count, oldest first."""
    last_alarm: int | None = None
    """Position of the newest counted alarm."""
    feature: str | None = None
    """Data-drift alerts: the feature (or output) the alert is about."""

    @property
    def key(self) -> tuple[str, str, str]:
        """Its key in the engine: one alert per rule, or per rule and feature."""
        name = self.rule if self.feature is None else f"{self.rule}{FEATURE_SEP}{self.feature}"
        return (self.model, self.version, name)

    def to_state(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "model": self.model,
            "version": self.version,
            "kind": self.kind,
            "status": self.status,
            "since_ms": self.since_ms,
            "held": self.held,
            "starts_at": self.starts_at,
            "start_position": self.start_position,
            "fingerprint": self.fingerprint,
            "severity": self.severity,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "threshold": self.threshold,
            "alarm_mark": self.alarm_mark,
            "alarms": [list(a) for a in self.alarms],
            "last_alarm": self.last_alarm,
            "feature": self.feature,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> _Alert:
        out = cls(
            rule=_str(data["rule"]),
            model=_str(data["model"]),
            version=_str(data["version"]),
            kind=_str(data["kind"]),
            status=_str(data["status"]),
            since_ms=_int(data["since_ms"]),
            held=_int(data["held"]),
            starts_at=_int(data["starts_at"]),
            start_position=_int(data["start_position"]),
            fingerprint=_str(data["fingerprint"]),
            severity=_str(data["severity"]),
            labels=_str_map(data["labels"]),
            annotations=_str_map(data["annotations"]),
            threshold=None if data["threshold"] is None else _float(data["threshold"]),
            alarm_mark=_int(data["alarm_mark"]),
            alarms=[[_int(p), _int(t)] for p, t in data["alarms"]],
            last_alarm=None if data["last_alarm"] is None else _int(data["last_alarm"]),
            feature=None if data.get("feature") is None else _str(data["feature"]),
        )
        if out.status not in ("inactive", "pending", "firing") or out.kind not in _RULE_TYPES:
            msg = f"bad alert status {out.status!r} or kind {out.kind!r} in alerting state"
            raise StateError(msg)
        return out


@dataclass
class _ModelState:
    clock: int
    """Largest event time of the labeled stream seen for the model: the engine's "now"."""
    prediction_clock: int | None = None
    """Largest prediction event time seen at a closed drift window: "now" of the
    prediction-stream rules."""
    last_request_id: str | None = None
    last_request_at: int | None = None
    in_flight_id: str | None = None
    in_flight_at: int | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "clock": self.clock,
            "prediction_clock": self.prediction_clock,
            "last_request_id": self.last_request_id,
            "last_request_at": self.last_request_at,
            "in_flight_id": self.in_flight_id,
            "in_flight_at": self.in_flight_at,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> _ModelState:
        def opt_int(v: object) -> int | None:
            return None if v is None else _int(v)

        def opt_str(v: object) -> str | None:
            return None if v is None else _str(v)

        return cls(
            clock=_int(data["clock"]),
            prediction_clock=opt_int(data.get("prediction_clock")),
            last_request_id=opt_str(data["last_request_id"]),
            last_request_at=opt_int(data["last_request_at"]),
            in_flight_id=opt_str(data["in_flight_id"]),
            in_flight_at=opt_int(data["in_flight_at"]),
        )


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        msg = f"expected an integer in alerting state, got {v!r}"
        raise StateError(msg)
    return v


def _float(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        msg = f"expected a finite number in alerting state, got {v!r}"
        raise StateError(msg)
    return float(v)


def _str(v: object) -> str:
    if not isinstance(v, str):
        msg = f"expected a string in alerting state, got {v!r}"
        raise StateError(msg)
    return v


def _str_map(v: object) -> dict[str, str]:
    if not isinstance(v, Mapping):
        msg = f"expected an object in alerting state, got {v!r}"
        raise StateError(msg)
    return {_str(k): _str(x) for k, x in v.items()}


@dataclass
class _Transition:
    alert: _Alert
    status: Literal["firing", "resolved"]
    value: float | None
    rule: Rule | None  # None: the rule is gone, or the version no longer serves
    request: dict[str, Any] | None = None
    gone_reason: str = "the rule no longer applies to this model"
    retrain_note: str | None = None
    inhibited_by: str | None = None
    features: list[str] | None = None
    """Data-drift rules: the drifted features of the window that caused the transition."""


# --------------------------------------------------------------------------- engine


class AlertEngine:
    """Alert lifecycle and retrain requests for the models of one evaluator (see module doc).

    ``policy`` is one :class:`RetrainPolicy` for every model, or a function of the model name.
    """

    def __init__(
        self, policy: RetrainPolicy | Callable[[str], RetrainPolicy] | None = None
    ) -> None:
        self._policy = policy if policy is not None else RetrainPolicy()
        self._models: dict[str, _ModelState] = {}
        self._alerts: dict[tuple[str, str, str], _Alert] = {}
        self._retired: set[tuple[str, str]] = set()
        """Versions that stopped serving: their late examples and predictions raise nothing."""

    def policy_for(self, model: str) -> RetrainPolicy:
        return self._policy if isinstance(self._policy, RetrainPolicy) else self._policy(model)

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, inp: RuleInput) -> list[Emission]:
        """Apply the rules to one series after one example; return the transitions it caused.

        Emissions come in rule order (then resolutions of vanished rules by name), each
        retrain request right after the firing transition that caused it.
        """
        model = inp.model
        version = ALL_VERSIONS if inp.version in (None, ALL_VERSIONS) else str(inp.version)
        ms = self._models.get(model)
        if ms is None:
            first = inp.event_time_ms if inp.stream == "labeled" else 0
            ms = self._models[model] = _ModelState(clock=first)
        if inp.stream == "labeled":
            ms.clock = max(ms.clock, inp.event_time_ms)
            now = ms.clock
        else:  # prediction times run ahead of outcome times: a clock of their own
            ms.prediction_clock = max(ms.prediction_clock or inp.event_time_ms, inp.event_time_ms)
            now = ms.prediction_clock
        self._expire(ms, self.policy_for(model), now)
        if (model, version) in self._retired:
            return []

        rules = [r for r in inp.rules if r.models is None or model in r.models]
        names: set[str] = set()
        for rule in rules:
            if rule.name in names:
                msg = f"alert_rules[{rule.name}].name: duplicate rule name for model {model!r}"
                raise ConfigError(msg)
            names.add(rule.name)

        transitions: list[_Transition] = []
        for rule in rules:
            if rule_stream(rule) != inp.stream:
                continue
            if inp.stream == "predictions" and (
                rule_window(rule, inp.drift_windows) != inp.closed_window
            ):
                continue
            if isinstance(rule, DataDriftRule):
                transitions.extend(self._step_drift_rule(rule, model, version, inp, now))
                continue
            key = (model, version, rule.name)
            alert = self._alerts.get(key)
            if alert is None or alert.kind != rule.type:
                if alert is not None and alert.status == "firing":  # rule changed type
                    transitions.append(_Transition(alert, "resolved", None, None))
                alert = _Alert(rule=rule.name, model=model, version=version, kind=rule.type)
                self._alerts[key] = alert
            t = self._step(rule, alert, inp, now)
            if t is not None:
                transitions.append(t)
            if alert.status == "inactive" and alert.kind != "detector":
                del self._alerts[key]
        for key in sorted(k for k in self._alerts if k[:2] == (model, version)):
            if self._alerts[key].rule not in names:
                gone = self._alerts.pop(key)
                if gone.status == "firing":
                    transitions.append(_Transition(gone, "resolved", None, None))

        labeled = inp.position if inp.labeled is None else inp.labeled
        for t in transitions:
            if t.status == "firing" and t.rule is not None and t.rule.retrain:
                self._retrain(t, ms, labeled, now)
        for t in transitions:
            if t.status == "firing" and t.alert.kind == "detector" and ms.in_flight_id:
                own = t.request is not None and t.request["request_id"] == ms.in_flight_id
                if not own:
                    t.inhibited_by = f"retrain {ms.in_flight_id} in flight"

        out: list[Emission] = []
        for t in transitions:
            out.append(AlertTransition(self._record(t, now)))
            if t.request is not None:
                out.append(RetrainEmission(t.request))
        return out

    def _step(self, rule: Rule, alert: _Alert, inp: RuleInput, now: int) -> _Transition | None:
        if isinstance(rule, DetectorRule):
            return self._step_detector(rule, alert, inp, now)
        assert not isinstance(rule, DataDriftRule)  # stepped per feature, by _step_drift_rule
        value = self._value(rule, inp)
        if value is None:
            return None  # unknown: state unchanged
        if not _OPS[rule.op](value, rule.threshold):
            if alert.status == "firing":
                alert.status = "inactive"
                return _Transition(alert, "resolved", value, rule)
            alert.status = "inactive"
            return None
        if alert.status == "inactive":
            alert.status, alert.since_ms, alert.held = "pending", now, 0
        elif alert.status == "pending":
            alert.held += 1
        if (
            alert.status == "pending"
            and alert.held >= rule.for_events
            and now - alert.since_ms >= rule.for_ms
        ):
            self._fire(alert, rule, inp.position, now, float(rule.threshold))
            return _Transition(alert, "firing", value, rule)
        return None

    @staticmethod
    def _value(rule: ThresholdRule | DataQualityRule, inp: RuleInput) -> float | None:
        if isinstance(rule, ThresholdRule):
            if inp.samples(rule.window) < rule.min_samples:
                return None
            raw = inp.metric(rule.window, rule.metric)
        else:
            raw = inp.quality.get(rule.check)
        if raw is None or isinstance(raw, bool) or not math.isfinite(raw):
            return None
        return float(raw)

    def _step_detector(
        self, rule: DetectorRule, alert: _Alert, inp: RuleInput, now: int
    ) -> _Transition | None:
        fresh = sorted(
            (int(a["position"]), int(a["event_time_ms"]), str(a["direction"]))
            for a in inp.alarms
            if a["detector"] == rule.detector and int(a["position"]) > alert.alarm_mark
        )
        for position, t, direction in fresh:
            alert.alarm_mark = max(alert.alarm_mark, position)
            if direction in ("increase", "unknown"):
                alert.alarms.append([position, t])
                alert.last_alarm = position
        new_alarm = any(d in ("increase", "unknown") for _, _, d in fresh)
        alert.alarms = [
            [p, t]
            for p, t in alert.alarms
            if (rule.span_events is None or inp.position - p < rule.span_events)
            and (rule.span_ms is None or now - t < rule.span_ms)
        ][-rule.min_alarms :]
        count = float(len(alert.alarms))
        if alert.status != "firing":
            if len(alert.alarms) >= rule.min_alarms:
                self._fire(alert, rule, inp.position, now, float(rule.min_alarms))
                return _Transition(alert, "firing", count, rule)
            return None
        quiet = alert.last_alarm is None or inp.position - alert.last_alarm >= (
            rule.resolve_after_events
        )
        if not new_alarm and quiet:
            alert.status = "inactive"
            alert.alarms = []
            return _Transition(alert, "resolved", count, rule)
        return None

    def _step_drift_rule(
        self, rule: DataDriftRule, model: str, version: str, inp: RuleInput, now: int
    ) -> list[_Transition]:
        """One alert per drifted feature (label ``feature``), so each shifted feature fires
        and resolves on its own; ``min_features`` gates them all."""
        out: list[_Transition] = []
        old = self._alerts.get((model, version, rule.name))
        if old is not None:  # the rule had another type before
            del self._alerts[(model, version, rule.name)]
            if old.status == "firing":
                out.append(_Transition(old, "resolved", None, None))
        window = rule_window(rule, inp.drift_windows) or ""
        if inp.metric(window, "drifted_features") is None:
            return out  # too few events in the window: unknown
        drifted = [
            f for f in inp.drifted.get(window, ()) if rule.features is None or f in rule.features
        ]
        gate = len(drifted) >= rule.min_features
        tracked = sorted(
            a.feature
            for k, a in self._alerts.items()
            if k[:2] == (model, version) and a.rule == rule.name and a.feature is not None
        )
        for feature in [*drifted, *(f for f in tracked if f not in drifted)]:
            new = _Alert(
                rule=rule.name, model=model, version=version, kind=rule.type, feature=feature
            )
            key = new.key
            alert = self._alerts.setdefault(key, new)
            t = self._step_drift(rule, alert, gate and feature in drifted, drifted, inp, now)
            if t is not None:
                out.append(t)
            if alert.status == "inactive":
                del self._alerts[key]
        return out

    def _step_drift(
        self,
        rule: DataDriftRule,
        alert: _Alert,
        is_drifted: bool,
        drifted: list[str],
        inp: RuleInput,
        now: int,
    ) -> _Transition | None:
        value = float(len(drifted))
        if is_drifted:
            if alert.status == "firing":
                alert.held = 0
                return None
            if alert.status == "inactive":
                alert.status, alert.since_ms, alert.held = "pending", now, 0
            else:
                alert.held += 1
            if alert.held >= rule.for_windows:
                self._fire(alert, rule, inp.position, now, float(rule.min_features))
                alert.held = 0
                return _Transition(alert, "firing", value, rule, features=drifted)
            return None
        if alert.status == "firing":
            alert.held += 1
            if alert.held >= rule.resolve_after_windows:
                alert.status, alert.held = "inactive", 0
                return _Transition(alert, "resolved", value, rule, features=drifted)
            return None
        alert.status, alert.held = "inactive", 0
        return None

    def _fire(self, alert: _Alert, rule: Rule, position: int, now: int, threshold: float) -> None:
        version = alert.version
        labels = {
            **rule.labels,
            "alertname": rule.name,
            "model": alert.model,
            "version": version,
            "severity": rule.severity,
        }
        if alert.feature is not None:
            labels["feature"] = alert.feature
        alert.status = "firing"
        alert.starts_at = now
        alert.start_position = position
        alert.severity = rule.severity
        alert.labels = dict(sorted(labels.items()))
        alert.threshold = threshold
        alert.fingerprint = _digest(
            "streammon.alert.fingerprint", rule.name, alert.model, version, sorted(labels.items())
        )

    # ---------------------------------------------------------------- retrain

    def _expire(self, ms: _ModelState, policy: RetrainPolicy, now: int) -> None:
        if ms.in_flight_at is not None and now - ms.in_flight_at >= policy.max_in_flight_ms:
            ms.in_flight_id = ms.in_flight_at = None

    def _retrain(self, t: _Transition, ms: _ModelState, position: int, now: int) -> None:
        alert = t.alert
        policy = self.policy_for(alert.model)
        if alert.version == ALL_VERSIONS:
            t.retrain_note = "not requested: the alert covers all versions"
            return
        if position < policy.min_labeled:
            t.retrain_note = (
                f"not requested: {position} labeled events, min_labeled is {policy.min_labeled}"
            )
            return
        if ms.in_flight_id is not None:
            t.retrain_note = f"not requested: retrain {ms.in_flight_id} in flight"
            return
        if ms.last_request_at is not None and now - ms.last_request_at < policy.cooldown_ms:
            t.retrain_note = (
                f"not requested: cooldown after {ms.last_request_id} at {ms.last_request_at}"
            )
            return
        request_id = _digest(
            "streammon.retrain",
            alert.model,
            alert.version,
            alert.fingerprint,
            alert.starts_at,
            alert.start_position,
        )
        rule_desc = (
            _describe_value(t.rule, alert, t.value, t.features) if t.rule is not None else ""
        )
        t.request = {
            "request_id": request_id,
            "model_name": alert.model,
            "model_version": alert.version,
            "reason": f"alert {alert.rule} firing: {rule_desc}",
            "alert_fingerprint": alert.fingerprint,
            "window_start": now - policy.window_ms,
            "window_end": now,
            "requested_at": now,
        }
        t.retrain_note = f"requested {request_id}"
        ms.last_request_id = ms.in_flight_id = request_id
        ms.last_request_at = ms.in_flight_at = now

    def retrain_finished(self, model: str, request_id: str | None = None) -> bool:
        """End the model's in-flight retrain (``request_id`` None: whichever is in flight).

        Returns whether one was ended; an id that is not the one in flight changes nothing.
        The call changes later decisions, so it must come at the same point of the input
        sequence on a replay as in the original run.
        """
        ms = self._models.get(model)
        if ms is None or ms.in_flight_id is None:
            return False
        if request_id is not None and request_id != ms.in_flight_id:
            return False
        ms.in_flight_id = ms.in_flight_at = None
        return True

    def retire_version(self, model: str, version: str, reason: str) -> list[Emission]:
        """Resolve the firing alerts of a version that no longer serves (retired or rolled
        back): it gets no more examples, so its alerts would otherwise never resolve.

        Like :meth:`retrain_finished`, the call comes from outside the labeled stream.

        >>> rule = ThresholdRule(name="low", metric="accuracy", op="<", threshold=0.8,
        ...                      min_samples=1)
        >>> engine = AlertEngine()
        >>> _ = engine.evaluate(RuleInput(model="m", version="1", position=1,
        ...     event_time_ms=5, metric=lambda w, n: 0.5, samples=lambda w: 1, rules=[rule]))
        >>> [e.record["annotations"]["resolved_reason"] for e in
        ...  engine.retire_version("m", "1", "version 1 retired")]
        ['version 1 retired']
        >>> engine.retire_version("m", "1", "again")
        []
        >>> engine.evaluate(RuleInput(model="m", version="1", position=2,  # no longer serves
        ...     event_time_ms=6, metric=lambda w, n: 0.5, samples=lambda w: 1, rules=[rule]))
        []
        """
        ms = self._models.get(model)
        now = ms.clock if ms is not None else 0
        self._retired.add((model, version))
        out: list[Emission] = []
        for key in sorted(k for k in self._alerts if k[:2] == (model, version)):
            alert = self._alerts.pop(key)
            if alert.status == "firing":
                t = _Transition(alert, "resolved", None, None, gone_reason=reason)
                out.append(AlertTransition(self._record(t, now)))
        return out

    def reinstate_version(self, model: str, version: str) -> None:
        """A version serves again (e.g. restored by a rollback): its alerts may fire again."""
        self._retired.discard((model, version))

    def in_flight(self, model: str) -> str | None:
        """Id of the model's retrain request in flight, if any (as of its last evaluation)."""
        ms = self._models.get(model)
        return None if ms is None else ms.in_flight_id

    def firing(self, model: str | None = None) -> list[dict[str, Any]]:
        """The alerts firing now (all models, or one), sorted: for status displays."""
        return [
            {
                "rule": a.rule,
                "model": a.model,
                "version": a.version,
                "fingerprint": a.fingerprint,
                "severity": a.severity,
                "starts_at": a.starts_at,
                **({"feature": a.feature} if a.feature is not None else {}),
            }
            for _, a in sorted(self._alerts.items())
            if a.status == "firing" and (model is None or a.model == model)
        ]

    # ---------------------------------------------------------------- records

    def _record(self, t: _Transition, now: int) -> dict[str, Any]:
        alert = t.alert
        if t.rule is None:
            annotations = {
                **alert.annotations,
                "resolved_reason": t.gone_reason,
            }
        else:
            annotations = _annotations(t.rule, alert, t.status, t.value, t.features)
            if t.features is not None:
                annotations["drifted_features"] = ", ".join(t.features) or "none"
            if t.retrain_note is not None:
                annotations["retrain"] = t.retrain_note
            if t.inhibited_by is not None:
                annotations["inhibited_by"] = t.inhibited_by
        annotations = dict(sorted(annotations.items()))
        if t.status == "firing":
            alert.annotations = annotations
        return {
            "alert_id": _digest(
                "streammon.alert",
                alert.fingerprint,
                t.status,
                alert.starts_at,
                alert.start_position,
            ),
            "fingerprint": alert.fingerprint,
            "status": t.status,
            "rule": alert.rule,
            "model_name": alert.model,
            "model_version": None if alert.version == ALL_VERSIONS else alert.version,
            "severity": alert.severity,
            "labels": dict(alert.labels),
            "annotations": annotations,
            "starts_at": alert.starts_at,
            "ends_at": now if t.status == "resolved" else None,
            "value": t.value,
            "threshold": alert.threshold,
            "generator_url": None,
            "emitted_at": now,
        }

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """Plain JSON data; :meth:`from_state` restores an engine that behaves identically."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "models": {name: ms.to_state() for name, ms in sorted(self._models.items())},
            "alerts": [a.to_state() for _, a in sorted(self._alerts.items())],
            "retired": [list(k) for k in sorted(self._retired)],
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        policy: RetrainPolicy | Callable[[str], RetrainPolicy] | None = None,
    ) -> AlertEngine:
        """Restore from :meth:`to_state` output (after a JSON round trip); StateError if bad."""
        if not isinstance(state, Mapping):
            msg = "alerting state must be an object"
            raise StateError(msg)
        if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
            msg = (
                f"unknown alerting state format {state.get('format')!r} "
                f"version {state.get('version')!r}"
            )
            raise StateError(msg)
        out = cls(policy)
        try:
            for name, data in state["models"].items():
                out._models[_str(name)] = _ModelState.from_state(data)
            for data in state["alerts"]:
                alert = _Alert.from_state(data)
                out._alerts[alert.key] = alert
            for model, version in state.get("retired", []):
                out._retired.add((_str(model), _str(version)))
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"alerting state cannot be restored: {exc!r}"
            raise StateError(msg) from exc
        return out


# --------------------------------------------------------------------------- texts


def _shown_version(version: str) -> str:
    return "all versions" if version == ALL_VERSIONS else version


def _span(rule: DetectorRule) -> str:
    parts = []
    if rule.span_events is not None:
        parts.append(f"{rule.span_events} events")
    if rule.span_ms is not None:
        parts.append(f"{rule.span_ms} ms")
    return " and ".join(parts) if parts else "unbounded"


def _context(rule: Rule, alert: _Alert, value: float | None) -> dict[str, str | float | None]:
    if isinstance(rule, ThresholdRule):
        metric, window, threshold = rule.metric, rule.window, rule.threshold
    elif isinstance(rule, DataDriftRule):
        metric, window, threshold = "drifted_features", rule.window or "drift", rule.min_features
    elif isinstance(rule, DetectorRule):
        metric, window, threshold = rule.detector, _span(rule), float(rule.min_alarms)
    else:
        metric, window, threshold = rule.check, "current", rule.threshold
    return {
        "model": alert.model,
        "version": alert.version,
        "value": value,
        "threshold": float(threshold),
        "rule": rule.name,
        "metric": metric,
        "window": window,
    }


def _describe_value(
    rule: Rule, alert: _Alert, value: float | None, features: Sequence[str] | None = None
) -> str:
    if isinstance(rule, DataDriftRule):
        names = ", ".join(features or []) or "none"
        return (
            f"data drift in {alert.feature} over {rule.window or 'the drift window'} "
            f"(drifted in the window: {names})"
        )
    if isinstance(rule, ThresholdRule):
        return f"{rule.metric} over {rule.window} is {_num(value)} {rule.op} {_num(rule.threshold)}"
    if isinstance(rule, DataQualityRule):
        return f"{rule.check} is {_num(value)} {rule.op} {_num(rule.threshold)}"
    return (
        f"{_num(value)} rising-error alarms of detector {rule.detector} within "
        f"{_span(rule)} (min_alarms {rule.min_alarms})"
    )


def _annotations(
    rule: Rule,
    alert: _Alert,
    status: str,
    value: float | None,
    features: Sequence[str] | None = None,
) -> dict[str, str]:
    context = _context(rule, alert, value)
    out = {k: _render(v, context) for k, v in rule.annotations.items()}
    who = f"{alert.model} {_shown_version(alert.version)}"
    if status == "firing":
        summary = f"{who}: {_describe_value(rule, alert, value, features)}"
    elif isinstance(rule, DataDriftRule):
        summary = (
            f"{who}: no data drift in {alert.feature} over {rule.window or 'the drift window'} "
            f"for {rule.resolve_after_windows} windows"
        )
    elif isinstance(rule, DetectorRule):
        summary = (
            f"{who}: no rising-error alarm of detector {rule.detector} "
            f"for {rule.resolve_after_events} events"
        )
    elif isinstance(rule, ThresholdRule):
        summary = (
            f"{who}: {rule.metric} over {rule.window} is {_num(value)}, "
            f"no longer {rule.op} {_num(rule.threshold)}"
        )
    else:
        summary = (
            f"{who}: {rule.check} is {_num(value)}, no longer {rule.op} {_num(rule.threshold)}"
        )
    if isinstance(rule, ThresholdRule):
        description = (
            f"Rule {rule.name} fires when {rule.metric} over window {rule.window} is "
            f"{rule.op} {_num(rule.threshold)} (with at least {rule.min_samples} samples) for "
            f"{rule.for_events} more evaluations and {rule.for_ms} ms of event time."
        )
    elif isinstance(rule, DataDriftRule):
        description = (
            f"Rule {rule.name} fires for a feature when {rule.for_windows + 1} consecutive "
            f"windows of {rule.window or 'the first drift window'} find it drifted (with at "
            f"least {rule.min_features} drifted features in the window) under the false-alarm "
            f"budget, and resolves after {rule.resolve_after_windows} windows without."
        )
    elif isinstance(rule, DataQualityRule):
        description = (
            f"Rule {rule.name} fires when {rule.check} is {rule.op} {_num(rule.threshold)} for "
            f"{rule.for_events} more evaluations and {rule.for_ms} ms of event time."
        )
    else:
        description = (
            f"Rule {rule.name} fires on {rule.min_alarms} rising-error alarms of detector "
            f"{rule.detector} within {_span(rule)} and resolves after "
            f"{rule.resolve_after_events} events without one."
        )
    out.setdefault("summary", summary)
    out.setdefault("description", description)
    return out
