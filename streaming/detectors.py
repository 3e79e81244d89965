"""Concept-drift detector bundles over a model's per-event error (river 0.26 detectors).

Kinds: ``adwin`` and ``page_hinkley`` take real-valued errors (absolute error for regression);
``ddm``, ``eddm``, ``hddm_a``, ``hddm_w`` and ``fhddm`` take a 0/1 error. River forgets an alarm
on the next update, so the bundle latches every alarm as an :class:`Alarm` with a direction:
``"decrease"`` means the error fell (the model got better), which alert rules may ignore.

``fhddm`` is wrapped: river 0.26's FHDDM alarms when the mean of its input *falls* (it expects
1 = correct), so the bundle feeds it ``1 - error`` and it alarms when the error rate rises.

``adwin`` defaults to ``delta=1e-4`` instead of river's 0.002: on stationary 0/1 errors river's
default raised about 0.2 false alarms per million events, 1e-4 about 0.02, while an abrupt
change of the error rate from 0.1 to 0.5 is still caught within about 100 events. ADWIN's bound
assumes values in [0, 1]: heavy-tailed absolute errors (log-normal) raised 1-3 false alarms per
100,000 events even with 1e-4, none once scaled into [0, 1].

>>> import random
>>> rng = random.Random(7)
>>> errors = [int(rng.random() < 0.1) for _ in range(3000)]
>>> errors += [int(rng.random() < 0.5) for _ in range(1000)]
>>> bundle = DetectorBundle(DEFAULT_DETECTORS)
>>> alarms = []
>>> for i, e in enumerate(errors):
...     alarms += bundle.update(e, position=i, event_time_ms=1_000 * i)
>>> [(a.detector, a.position, a.direction) for a in alarms]
[('adwin', 3071, 'increase')]
>>> bundle.snapshot()["adwin"]["alarms"]
1
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from river import drift
from river.drift import binary

from streaming.errors import ConfigError, ContractError

Direction = Literal["increase", "decrease", "unknown"]
State = Literal["stable", "warning", "drift"]

STATE_FORMAT = "detector_bundle"
"""Format name of a pickled :class:`DetectorBundle` in :mod:`streaming.state_codec`."""

RECENT_ALARMS = 10

_RIVER_CLASSES: Mapping[str, type] = MappingProxyType(
    {
        "adwin": drift.ADWIN,
        "ddm": binary.DDM,
        "eddm": binary.EDDM,
        "hddm_a": binary.HDDMA,
        "hddm_w": binary.HDDMW,
        "page_hinkley": drift.PageHinkley,
        "fhddm": binary.FHDDM,
    }
)
KINDS = tuple(_RIVER_CLASSES)
BINARY_KINDS = frozenset({"ddm", "eddm", "hddm_a", "hddm_w", "fhddm"})
"""Kinds that only accept a 0/1 error."""

_STREAMMON_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"adwin": MappingProxyType({"delta": 1e-4})}
)
"""Where streammon's default differs from river's (measured; see the module docstring)."""

Params = Mapping[str, Any]


def _open01(v: Any) -> bool:
    return bool(0 < v < 1)


_RULES: Mapping[str, tuple[tuple[Callable[[Params], bool], str], ...]] = MappingProxyType(
    {
        "adwin": (
            (lambda p: _open01(p["delta"]), "delta must be in (0, 1)"),
            (lambda p: p["clock"] >= 1, "clock must be >= 1"),
            (lambda p: p["max_buckets"] >= 1, "max_buckets must be >= 1"),
            (lambda p: p["min_window_length"] >= 1, "min_window_length must be >= 1"),
            (lambda p: p["grace_period"] >= 0, "grace_period must be >= 0"),
        ),
        "ddm": (
            (lambda p: p["warm_start"] >= 0, "warm_start must be >= 0"),
            (lambda p: p["warning_threshold"] > 0, "warning_threshold must be > 0"),
            (
                lambda p: p["drift_threshold"] >= p["warning_threshold"],
                "drift_threshold must be >= warning_threshold",
            ),
        ),
        "eddm": (
            (lambda p: p["warm_start"] >= 0, "warm_start must be >= 0"),
            (lambda p: 0 < p["beta"] <= p["alpha"] < 1, "need 0 < beta <= alpha < 1"),
        ),
        "hddm_a": (
            (lambda p: _open01(p["drift_confidence"]), "drift_confidence must be in (0, 1)"),
            (lambda p: _open01(p["warning_confidence"]), "warning_confidence must be in (0, 1)"),
        ),
        "hddm_w": (
            (lambda p: _open01(p["drift_confidence"]), "drift_confidence must be in (0, 1)"),
            (lambda p: _open01(p["warning_confidence"]), "warning_confidence must be in (0, 1)"),
            (lambda p: 0 < p["lambda_val"] <= 1, "lambda_val must be in (0, 1]"),
        ),
        "page_hinkley": (
            (lambda p: p["min_instances"] >= 1, "min_instances must be >= 1"),
            (lambda p: p["delta"] >= 0, "delta must be >= 0"),
            (lambda p: p["threshold"] > 0, "threshold must be > 0"),
            (lambda p: 0 < p["alpha"] <= 1, "alpha must be in (0, 1]"),
            (lambda p: p["mode"] in ("up", "down", "both"), "mode must be up, down or both"),
        ),
        "fhddm": (
            (lambda p: p["sliding_window_size"] >= 1, "sliding_window_size must be >= 1"),
            (lambda p: _open01(p["confidence_level"]), "confidence_level must be in (0, 1)"),
            (
                lambda p: (
                    p["short_window_size"] is None
                    or 1 <= p["short_window_size"] <= p["sliding_window_size"]
                ),
                "short_window_size must be None or in [1, sliding_window_size]",
            ),
        ),
    }
)


@dataclass(frozen=True)
class DetectorSpec:
    """A detector kind and its constructor parameters (resolved by :func:`parse_detector_spec`)."""

    kind: str = "adwin"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Alarm:
    """One latched drift alarm.

    ``mean_before``/``mean_after`` are the error means the detector compared: ADWIN's dropped
    (older) sub-window and the window it kept (which may still hold pre-change events), DDM's
    minimum and current error rate, HDDM's means before and after its cut point. ``None`` for
    EDDM, FHDDM and Page-Hinkley.
    """

    detector: str
    kind: str
    position: int
    event_time_ms: int
    direction: Direction
    mean_before: float | None
    mean_after: float | None

    def to_dict(self) -> dict[str, Any]:
        """The alarm as JSON-able plain data."""
        return asdict(self)


def _signature_defaults(kind: str) -> dict[str, Any]:
    sig = inspect.signature(_RIVER_CLASSES[kind])
    return {
        name: p.default for name, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD
    }


def _check_type(kind: str, name: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "a boolean"
    elif isinstance(default, int) or default is None:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            default is None and value is None
        )
        want = "an integer" if default is not None else "an integer or null"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        want = "a finite number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    else:  # pragma: no cover - every river 0.26 parameter has one of the defaults above
        ok, want = False, "a supported value"
    if not ok:
        msg = f"detector kind {kind!r}: parameter {name!r} must be {want}, got {value!r}"
        raise ConfigError(msg)


def parse_detector_spec(kind: str, params: Mapping[str, Any] | None = None) -> DetectorSpec:
    """Validate ``kind`` and ``params``; return a spec holding every resolved parameter.

    >>> parse_detector_spec("adwin", {"clock": 16}).params["delta"]
    0.0001
    >>> parse_detector_spec("adwin", {"window": 3})
    Traceback (most recent call last):
    ...
    streaming.errors.ConfigError: detector kind 'adwin' has no parameter 'window'; \
accepted: clock, delta, grace_period, max_buckets, min_window_length
    """
    if kind not in _RIVER_CLASSES:
        msg = f"unknown detector kind {kind!r}; known: {', '.join(KINDS)}"
        raise ConfigError(msg)
    given = dict(params or {})
    defaults = _signature_defaults(kind)
    for name, value in given.items():
        if name not in defaults:
            accepted = ", ".join(sorted(defaults))
            msg = f"detector kind {kind!r} has no parameter {name!r}; accepted: {accepted}"
            raise ConfigError(msg)
        _check_type(kind, name, value, defaults[name])
    resolved = {**defaults, **_STREAMMON_DEFAULTS.get(kind, {}), **given}
    for check, rule in _RULES[kind]:
        if not check(resolved):
            shown = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "defaults"
            msg = f"detector kind {kind!r}: {rule} (given {shown})"
            raise ConfigError(msg)
    try:
        probe = _RIVER_CLASSES[kind](**resolved)
        probe.update(0)
        probe.update(1)
    except (ValueError, TypeError, ArithmeticError) as exc:
        msg = f"detector kind {kind!r}: invalid parameters {given}: {exc}"
        raise ConfigError(msg) from exc
    return DetectorSpec(kind=kind, params=resolved)


DEFAULT_DETECTORS: Mapping[str, DetectorSpec] = MappingProxyType(
    {"adwin": parse_detector_spec("adwin")}
)
"""Detectors of a model without detector config: ADWIN with ``delta=1e-4``."""


class _Slot:
    """One named detector with its latched alarm history."""

    kind: ClassVar[str]
    has_warning: ClassVar[bool] = True

    def __init__(self, name: str, spec: DetectorSpec) -> None:
        self.name = name
        self.params = dict(spec.params)
        self.detector: Any = _RIVER_CLASSES[self.kind](**self.params)
        self.updates = 0
        self.alarm_count = 0
        self.last_alarm: Alarm | None = None
        self.recent: deque[Alarm] = deque(maxlen=RECENT_ALARMS)
        self.fired = False
        # errors seen since river last reset the detector (it resets on the update after an alarm)
        self.seg_n = 0
        self.seg_sum = 0.0

    def update(self, error: float, position: int, event_time_ms: int) -> Alarm | None:
        if self.fired:
            self.seg_n = 0
            self.seg_sum = 0.0
        self.seg_n += 1
        self.seg_sum += error
        self.feed(error)
        self.updates += 1
        self.fired = self.detector.drift_detected
        if not self.fired:
            return None
        direction, before, after = self.explain(error)
        alarm = Alarm(self.name, self.kind, position, event_time_ms, direction, before, after)
        self.alarm_count += 1
        self.last_alarm = alarm
        self.recent.append(alarm)
        return alarm

    def feed(self, error: float) -> None:
        self.detector.update(int(error))

    def explain(self, error: float) -> tuple[Direction, float | None, float | None]:
        return "increase", None, None

    def estimation(self) -> float | None:
        return self.seg_sum / self.seg_n if self.seg_n else None

    def state(self) -> State:
        if self.fired:
            return "drift"
        if self.has_warning and self.detector.warning_detected:
            return "warning"
        return "stable"

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": dict(self.params),
            "state": self.state(),
            "updates": self.updates,
            "alarms": self.alarm_count,
            "last_alarm": None if self.last_alarm is None else self.last_alarm.to_dict(),
            "recent_alarms": [a.to_dict() for a in self.recent],
            "estimation": self.estimation(),
        }


class _AdwinSlot(_Slot):
    """ADWIN: the alarm compares the dropped (older) part of the window with the kept part.

    River starts a fresh window on the update after an alarm; the kept part is then forgotten.
    """

    kind = "adwin"
    has_warning = False

    def __init__(self, name: str, spec: DetectorSpec) -> None:
        super().__init__(name, spec)
        self._width_before = 0.0
        self._total_before = 0.0

    def feed(self, error: float) -> None:
        det = self.detector
        if self.fired:  # river starts a new window on this update
            self._width_before, self._total_before = 0.0, 0.0
        else:
            self._width_before, self._total_before = det.width, det.total
        det.update(error)

    def explain(self, error: float) -> tuple[Direction, float | None, float | None]:
        kept_n, kept_sum = self.detector.width, self.detector.total
        dropped_n = self._width_before + 1 - kept_n
        if dropped_n <= 0 or kept_n <= 0:
            return "unknown", None, None
        before = (self._total_before + error - kept_sum) / dropped_n
        after = kept_sum / kept_n
        return _direction(before, after), before, after

    def estimation(self) -> float | None:
        return float(self.detector.estimation) if self.updates else None


class _PageHinkleySlot(_Slot):
    kind = "page_hinkley"
    has_warning = False

    def feed(self, error: float) -> None:
        self.detector.update(error)

    def explain(self, error: float) -> tuple[Direction, float | None, float | None]:
        det = self.detector
        mode = self.params["mode"]
        if mode == "up":
            return "increase", None, None
        if mode == "down":
            return "decrease", None, None
        rising = det._sum_increase - det._min_increase > det.threshold
        return ("increase" if rising else "decrease"), None, None


class _DDMSlot(_Slot):
    """DDM only detects increases; before = its minimum error rate, after = the current one."""

    kind = "ddm"

    def explain(self, error: float) -> tuple[Direction, float | None, float | None]:
        det = self.detector
        return "increase", float(det._p_min), float(det._p.get())


class _EDDMSlot(_Slot):
    kind = "eddm"  # detects shrinking distances between errors: increases only


class _HDDMASlot(_Slot):
    """HDDM_A: means before and after its cut point."""

    kind = "hddm_a"

    def explain(self, error: float) -> tuple[Direction, float | None, float | None]:
        det = self.detector
        if det._mean_incr(det.drift_confidence):
            direction: Direction = "increase"
            cut = det._x_min
        elif det._mean_decr(det.drift_confidence):
            direction, cut = "decrease", det._x_max
        else:  # pragma: no cover - river sets drift only when one of the tests holds
            return "unknown", None, None
        z = det._z
        after = (z.n * z.get() - cut.n * cut.get()) / (z.n - cut.n)
        return direction, float(cut.get()), float(after)


class _HDDMWSlot(_Slot):
    """HDDM_W: weighted means before and after its cut point."""

    kind = "hddm_w"

    def explain(self, error: float) -> tuple[Direction, float | None, float | None]:
        det = self.detector
        if det._detect_mean_incr(det.drift_confidence):
            return "increase", float(det._s1_incr.ewma), float(det._s2_incr.ewma)
        if det._detect_mean_decr(det.drift_confidence):
            return "decrease", float(det._s1_decr.ewma), float(det._s2_decr.ewma)
        return "unknown", None, None  # pragma: no cover - river sets drift only on a test


class _FHDDMSlot(_Slot):
    """FHDDM fed ``1 - error``: river's FHDDM alarms when its input mean falls."""

    kind = "fhddm"
    has_warning = False

    def feed(self, error: float) -> None:
        self.detector.update(1 - int(error))


_SLOTS: Mapping[str, type[_Slot]] = MappingProxyType(
    {
        cls.kind: cls
        for cls in (
            _AdwinSlot,
            _DDMSlot,
            _EDDMSlot,
            _HDDMASlot,
            _HDDMWSlot,
            _PageHinkleySlot,
            _FHDDMSlot,
        )
    }
)


def _direction(before: float, after: float) -> Direction:
    if after > before:
        return "increase"
    if after < before:
        return "decrease"
    return "unknown"


class DetectorBundle:
    """Named drift detectors fed the same per-event error; picklable as a whole.

    Binary kinds need every error to be 0 or 1; any error must be finite. An empty bundle
    (detectors switched off) accepts every finite error and never alarms.
    """

    def __init__(self, specs: Mapping[str, DetectorSpec]) -> None:
        slots = []
        for name, spec in specs.items():
            if not isinstance(name, str) or not name:
                msg = f"detector names must be non-empty strings, got {name!r}"
                raise ConfigError(msg)
            resolved = parse_detector_spec(spec.kind, spec.params)
            slots.append(_SLOTS[resolved.kind](name, resolved))
        self._slots = tuple(slots)
        self._binary = tuple(s.name for s in slots if s.kind in BINARY_KINDS)

    @property
    def specs(self) -> dict[str, DetectorSpec]:
        """The resolved spec of every detector, by name."""
        return {s.name: DetectorSpec(s.kind, dict(s.params)) for s in self._slots}

    @property
    def accepts_real_errors(self) -> bool:
        """False when a detector only takes 0/1 errors (unfit for regression)."""
        return not self._binary

    def update(self, error: float, *, position: int, event_time_ms: int) -> list[Alarm]:
        """Feed one labeled event's error to every detector; return the alarms it raised."""
        err = float(error)
        if not math.isfinite(err):
            msg = f"drift detectors need a finite error, got {error!r} at position {position}"
            raise ContractError(msg)
        if self._binary and err != 0.0 and err != 1.0:
            msg = (
                f"detector {self._binary[0]!r} takes a 0/1 error, got {error!r} at position "
                f"{position}; use adwin or page_hinkley for real-valued errors"
            )
            raise ContractError(msg)
        alarms = []
        for slot in self._slots:
            alarm = slot.update(err, position, event_time_ms)
            if alarm is not None:
                alarms.append(alarm)
        return alarms

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """JSON-able state of every detector, by name."""
        return {slot.name: slot.snapshot() for slot in self._slots}
