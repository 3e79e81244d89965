"""Data drift without labels: reference profiles, drift statistics and a false-alarm budget.

Pure logic (numpy and scipy only). A :class:`Reference` describes a model version's inputs and
outputs: per feature a set of bins (quantile bins for numeric features, the most frequent
values plus ``__other__`` for categorical ones), each with one extra bin for missing values;
the same for the predicted class and the score. It comes from the version's training data
(:meth:`Reference.from_profile`, the profile the trainer stores) or, for a version registered
without one, from its first N predictions (:class:`ReferenceBuilder`).

A window of production events is binned the same way and compared with the reference:

* numeric: PSI, Jensen-Shannon distance (base 2), Kolmogorov-Smirnov and Wasserstein
  (in reference standard deviations; both on the bins, so they approximate the exact ones),
* categorical: chi-square (2 x bins contingency) and Jensen-Shannon distance,
* both: missing-value rate; numeric also the out-of-range rate (outside the reference's
  minimum and maximum).

**The false-alarm budget.** The user states how often a false alarm may happen on undrifted
data: on average once per ``false_alarm_events`` events, or with probability
``window_false_alarm_rate`` per window. A window of n events may then alarm with probability
``alpha = n / false_alarm_events`` (split evenly over the configured drift windows). The
``alarm_statistics`` of every monitored feature are the tests; :func:`calibrate` finds each
test's null distribution by a two-sample parametric bootstrap on the reference (a reference
sample of the reference's size and a window of size n, both drawn from the reference bins), so
p-values include the noise of a small reference. Bonferroni (``p <= alpha / tests``) or
Benjamini-Hochberg at ``alpha`` then decides which features drifted; under no drift either
keeps the chance that a window alarms at all at most ``alpha``. Tail p-values beyond the
bootstrap's resolution come from a gamma fitted to the bootstrap by moments.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> builder = ReferenceBuilder(500, categorical=())
>>> for x in rng.normal(size=500):
...     _ = builder.add({"x": float(x), "c": "a" if x > 0 else "b"}, prediction=int(x > 0),
...                     score=None)
>>> ref = builder.build()
>>> ref.features["x"].kind, ref.features["c"].kind, ref.rows
('numeric', 'categorical', 500)
>>> win = WindowCounts.empty(ref)
>>> for x in rng.normal(loc=1.0, size=300):
...     win.add(ref, {"x": float(x), "c": "a"}, prediction=1, score=None)
>>> result = compare_window(ref, win, DriftBudget(window_false_alarm_rate=0.01), seed=1)
>>> result.drifted
['c', 'x', 'output:prediction']
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
from scipy import stats as sps

from streaming.errors import ConfigError

__all__ = [
    "ALARM_STATISTICS",
    "OTHER",
    "DriftBudget",
    "FeatureReference",
    "FeatureResult",
    "Reference",
    "ReferenceBuilder",
    "WindowCounts",
    "WindowResult",
    "calibrate",
    "compare_window",
]

Kind = Literal["numeric", "categorical"]
OTHER: Final = "__other__"
"""The categorical bin of every value the reference did not list."""
PREDICTION: Final = "output:prediction"
SCORE: Final = "output:score"
"""Names of the output distributions among the monitored "features"."""

NUMERIC_STATISTICS: Final = ("psi", "jensen_shannon", "ks", "wasserstein")
CATEGORICAL_STATISTICS: Final = ("psi", "jensen_shannon", "chi2")
ALARM_STATISTICS: Final = ("psi", "jensen_shannon", "ks", "wasserstein", "chi2")
"""Statistics that may drive alarms (each applies to the feature kinds that have it)."""

NUMERIC_BINS: Final = 20
"""Quantile bins of a numeric feature (fewer when values repeat)."""
TOP_CATEGORIES: Final = 100
"""Categories a reference built from predictions keeps (the rest is ``__other__``)."""
_PSEUDO: Final = 0.5
"""Pseudo-count per bin for PSI and for the bootstrap's reference distribution."""


# --------------------------------------------------------------------------- reference


@dataclass
class FeatureReference:
    """The bins of one feature and the reference's counts in them (last bin: missing)."""

    name: str
    kind: Kind
    counts: list[float]
    """Reference count per bin; ``len(edges) + 2`` bins for numeric (below the first edge,
    between edges, above the last, missing), ``len(categories) + 1`` for categorical."""
    edges: list[float] = field(default_factory=list)
    """Numeric: sorted inner bin edges; a value ``v`` falls in bin ``bisect_right(edges, v)``."""
    categories: list[str] = field(default_factory=list)
    """Categorical: the listed values, :data:`OTHER` last."""
    low: float | None = None
    high: float | None = None
    """Numeric: the reference's minimum and maximum (for the out-of-range rate)."""
    scale: float | None = None
    """Numeric: the reference's standard deviation (the unit of the Wasserstein distance)."""

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.categories)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = {c: i for i, c in enumerate(self.categories)}

    @property
    def missing_bin(self) -> int:
        return len(self.counts) - 1

    def bin_of(self, value: object) -> tuple[int, bool]:
        """``(bin, out_of_range)`` of one value; None (and, for numeric features, anything
        that is not a finite number) goes to the missing bin."""
        if value is None:
            return self.missing_bin, False
        if self.kind == "categorical":
            return self._index.get(category_key(value), self._index[OTHER]), False
        if type(value) is float and value - value == 0:  # the common case: a finite float
            out = (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            )
            return bisect.bisect_right(self.edges, value), out
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            return self.missing_bin, False
        v = float(value)
        if not math.isfinite(v):
            return self.missing_bin, False
        out = (self.low is not None and v < self.low) or (self.high is not None and v > self.high)
        return bisect.bisect_right(self.edges, v), bool(out)

    def centers(self) -> np.ndarray[Any, Any]:
        """Representative positions of the numeric (non-missing) bins."""
        low = self.low if self.low is not None else (self.edges[0] if self.edges else 0.0)
        high = self.high if self.high is not None else (self.edges[-1] if self.edges else 0.0)
        points = [min(low, self.edges[0]) if self.edges else low, *self.edges]
        points.append(max(high, self.edges[-1]) if self.edges else high)
        return np.array([(a + b) / 2 for a, b in itertools.pairwise(points)])


def category_key(value: object) -> str:
    """The bin key of a categorical value: its text, with integral floats written as integers
    (2.0 and 2 are the same category, however a pipeline typed them).

    >>> category_key(2.0), category_key(2), category_key("a"), category_key(True)
    ('2', '2', 'a', 'True')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Reference:
    """Bins and counts of every monitored feature and output of one model version."""

    features: dict[str, FeatureReference]
    """Keyed by feature name; the outputs are :data:`PREDICTION` and :data:`SCORE`."""
    rows: int
    source: Literal["training", "first_predictions"]
    calibration: tuple[list[float], list[float]] | None = None
    """Score calibration learnt on labeled reference data, as isotonic thresholds ``(x, y)``."""

    def bin_record(
        self, features: Mapping[str, object], *, prediction: object, score: float | None
    ) -> list[tuple[str, int, bool]]:
        """``(feature, bin, out of range)`` of one event for every monitored feature (bin it
        once, count it in every open window)."""
        out = []
        for name, fref in self.features.items():
            if name == PREDICTION:
                value: object = prediction
            elif name == SCORE:
                value = score
            else:
                value = features.get(name)
            b, off = fref.bin_of(value)
            out.append((name, b, off))
        return out

    @property
    def fingerprint(self) -> str:
        """A digest of the bins and counts (seeds the bootstrap, keys its cache)."""
        h = hashlib.sha256()
        for name in sorted(self.features):
            f = self.features[name]
            h.update(
                repr(
                    (name, f.kind, f.counts, f.edges, f.categories, f.low, f.high, f.scale)
                ).encode()
            )
        return h.hexdigest()[:16]

    @classmethod
    def from_profile(
        cls,
        profile: Mapping[str, Any],
        *,
        only: Iterable[str] | None = None,
    ) -> Reference:
        """From a profile of :func:`streaming.training.reference_profile` (JSON-decoded).

        Numeric features use the profile's quantile ``bins`` when present, else its
        equal-width ``histogram``; features without values are left out.
        """
        rows = int(profile.get("rows") or 0)
        wanted = set(only) if only is not None else None
        features: dict[str, FeatureReference] = {}
        for name, fp in (profile.get("features") or {}).items():
            if wanted is not None and name not in wanted:
                continue
            ref = _feature_from_profile(str(name), fp, rows)
            if ref is not None:
                features[ref.name] = ref
        for key, name in (("predictions", PREDICTION), ("scores", SCORE)):
            fp = profile.get(key)
            if isinstance(fp, Mapping):
                ref = _feature_from_profile(name, fp, int(fp.get("count") or 0))
                if ref is not None:
                    features[name] = ref
        cal = profile.get("calibration")
        calibration = None
        if isinstance(cal, Mapping) and cal.get("x") and cal.get("y"):
            calibration = ([float(v) for v in cal["x"]], [float(v) for v in cal["y"]])
        return cls(features, rows, "training", calibration)


def _feature_from_profile(name: str, fp: Mapping[str, Any], rows: int) -> FeatureReference | None:
    count = int(fp.get("count") or 0)
    rate = fp.get("missing_rate")
    if isinstance(rate, int | float) and 0 <= rate < 1:
        missing = round(count * rate / (1 - rate))
    else:
        missing = max(0, rows - count)
    if fp.get("kind") == "categorical":
        freqs = {str(k): float(v) for k, v in (fp.get("frequencies") or {}).items()}
        if not freqs:
            return None
        other = freqs.pop(OTHER, 0.0)
        cats = sorted(freqs, key=lambda c: (-freqs[c], c))
        return FeatureReference(
            name,
            "categorical",
            [freqs[c] for c in cats] + [other, float(missing)],
            categories=[*cats, OTHER],
        )
    bins = fp.get("bins") or fp.get("histogram")
    if not bins or fp.get("min") is None:
        return None
    edges = [float(e) for e in bins["edges"]]
    counts = [float(c) for c in bins["counts"]]
    if "bins" not in fp:  # equal-width histogram: its outer edges are the min and the max
        edges = edges[1:-1]
    return FeatureReference(
        name,
        "numeric",
        [*counts, float(missing)],
        edges=edges,
        low=float(fp["min"]),
        high=float(fp["max"]),
        scale=float(fp["std"]) if fp.get("std") else None,
    )


def quantile_bins(values: Sequence[float], bins: int = NUMERIC_BINS) -> dict[str, Any]:
    """Inner edges at the quantiles of ``values`` (deduplicated) and the exact counts.

    >>> quantile_bins([0, 0, 0, 1, 1, 2], bins=4)
    {'edges': [0.0, 1.0, 2.0], 'counts': [0, 3, 2, 1]}
    """
    arr = np.sort(np.asarray(values, dtype=np.float64))
    qs = (
        np.quantile(arr, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
        if len(arr)
        else np.array([])
    )
    edges = sorted({float(q) for q in qs} | ({float(arr[-1])} if len(arr) else set()))
    idx = np.searchsorted(np.asarray(edges), arr, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return {"edges": edges, "counts": [int(c) for c in counts]}


class ReferenceBuilder:
    """Collects the first ``size`` predictions of a version and builds its reference.

    Features whose values are all numbers (not booleans) are numeric unless named in
    ``categorical``; the rest are categorical. ``features`` limits which are kept.
    """

    def __init__(
        self,
        size: int,
        *,
        categorical: Iterable[str] = (),
        features: Iterable[str] | None = None,
    ) -> None:
        self.size = size
        self.categorical = set(categorical)
        self.only = set(features) if features is not None else None
        self.rows = 0
        self.values: dict[str, list[object]] = {}
        self.predictions: list[object] = []
        self.scores: list[float | None] = []

    def add(
        self, features: Mapping[str, object], *, prediction: object, score: float | None
    ) -> bool:
        """Take one prediction; True once the reference is complete."""
        for name, value in features.items():
            if self.only is not None and name not in self.only:
                continue
            column = self.values.get(name)
            if column is None:
                column = self.values[name] = [None] * self.rows
            column.append(value)
        self.rows += 1
        for column in self.values.values():
            if len(column) < self.rows:
                column.append(None)
        self.predictions.append(prediction)
        self.scores.append(score)
        return self.rows >= self.size

    def build(self) -> Reference:
        features: dict[str, FeatureReference] = {}
        for name, column in self.values.items():
            ref = _feature_from_values(name, column, name in self.categorical)
            if ref is not None:
                features[name] = ref
        pred = _feature_from_values(PREDICTION, self.predictions, True)
        if pred is not None:
            features[PREDICTION] = pred
        if any(s is not None for s in self.scores):
            score = _feature_from_values(SCORE, list(self.scores), False)
            if score is not None:
                features[SCORE] = score
        return Reference(features, self.rows, "first_predictions")


def _feature_from_values(
    name: str, values: Sequence[object], categorical: bool
) -> FeatureReference | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    missing = float(len(values) - len(present))
    numeric = not categorical and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        for v in present
    )
    if not numeric:
        counts = Counter(category_key(v) for v in present)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        cats = [c for c, _ in ranked[:TOP_CATEGORIES]]
        other = float(sum(n for _, n in ranked[TOP_CATEGORIES:]))
        return FeatureReference(
            name,
            "categorical",
            [float(counts[c]) for c in cats] + [other, missing],
            categories=[*cats, OTHER],
        )
    arr = [float(v) for v in present]  # type: ignore[arg-type]
    bins = quantile_bins(arr)
    return FeatureReference(
        name,
        "numeric",
        [float(c) for c in bins["counts"]] + [missing],
        edges=bins["edges"],
        low=min(arr),
        high=max(arr),
        scale=float(np.std(arr)) or None,
    )


# --------------------------------------------------------------------------- windows


@dataclass
class WindowCounts:
    """Bin counts of one window of production events, feature by feature."""

    counts: dict[str, list[int]]
    out_of_range: dict[str, int]
    n: int = 0

    @classmethod
    def empty(cls, ref: Reference) -> WindowCounts:
        return cls(
            {name: [0] * len(f.counts) for name, f in ref.features.items()},
            {name: 0 for name, f in ref.features.items() if f.kind == "numeric"},
        )

    def add(
        self,
        ref: Reference,
        features: Mapping[str, object],
        *,
        prediction: object,
        score: float | None,
    ) -> None:
        self.add_bins(ref.bin_record(features, prediction=prediction, score=score))

    def add_bins(self, bins: Sequence[tuple[str, int, bool]]) -> None:
        """Count one event already binned by :meth:`Reference.bin_record`."""
        counts, out_of_range = self.counts, self.out_of_range
        for name, b, out in bins:
            counts[name][b] += 1
            if out:
                out_of_range[name] += 1
        self.n += 1


# --------------------------------------------------------------------------- statistics


def _statistics(
    ref: np.ndarray[Any, Any],
    win: np.ndarray[Any, Any],
    fref: FeatureReference,
    only: Collection[str] | None = None,
) -> dict[str, np.ndarray[Any, Any]]:
    """The statistics of ``fref``'s kind (all, or those in ``only``), row by row (``ref`` and
    ``win``: draws x bins)."""
    names = NUMERIC_STATISTICS if fref.kind == "numeric" else CATEGORICAL_STATISTICS
    wanted = [k for k in names if only is None or k in only]
    ref = ref.astype(np.float64)
    win = win.astype(np.float64)
    m = ref.sum(axis=1, keepdims=True)
    n = win.sum(axis=1, keepdims=True)
    bins = ref.shape[1]
    out: dict[str, np.ndarray[Any, Any]] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if "jensen_shannon" in wanted:
            p, q = ref / m, win / n
            mid = (p + q) / 2
            js = 0.5 * np.where(p > 0, p * np.log2(p / mid), 0).sum(axis=1)
            js += 0.5 * np.where(q > 0, q * np.log2(q / mid), 0).sum(axis=1)
            out["jensen_shannon"] = np.sqrt(np.clip(js, 0, 1))
        if "psi" in wanted:
            ps = (ref + _PSEUDO) / (m + _PSEUDO * bins)
            qs = (win + _PSEUDO) / (n + _PSEUDO * bins)
            out["psi"] = ((qs - ps) * np.log(qs / ps)).sum(axis=1)
        if "chi2" in wanted:
            tot = ref + win
            e_r, e_w = tot * m / (m + n), tot * n / (m + n)
            chi = np.where(tot > 0, (ref - e_r) ** 2 / e_r + (win - e_w) ** 2 / e_w, 0)
            out["chi2"] = chi.sum(axis=1)
        if "ks" in wanted or "wasserstein" in wanted:
            rp, wp = ref[:, :-1], win[:, :-1]
            cdf_r = np.cumsum(rp, axis=1) / rp.sum(axis=1, keepdims=True)
            cdf_w = np.cumsum(wp, axis=1) / wp.sum(axis=1, keepdims=True)
            diff = np.abs(cdf_r - cdf_w)
            out["ks"] = diff.max(axis=1)
            gaps = np.diff(fref.centers())
            scale = fref.scale or 1.0
            out["wasserstein"] = (diff[:, :-1] * gaps).sum(axis=1) / scale
    return {k: np.nan_to_num(out[k], nan=0.0, posinf=0.0) for k in wanted}


# --------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class DriftBudget:
    """How often a drift alarm may be false, and how tests are corrected across features.

    Give ``false_alarm_events`` (expected events between false alarms on undrifted data) or
    ``window_false_alarm_rate`` (probability that an undrifted window alarms).

    >>> DriftBudget(false_alarm_events=100_000).window_alpha(1000, windows=2)
    0.005
    >>> DriftBudget(window_false_alarm_rate=0.01).window_alpha(1000, windows=2)
    0.01
    """

    false_alarm_events: int | None = None
    window_false_alarm_rate: float | None = None
    correction: Literal["bonferroni", "benjamini_hochberg"] = "bonferroni"
    alarm_statistics: tuple[str, ...] = ("jensen_shannon",)

    def __post_init__(self) -> None:
        if (self.false_alarm_events is None) == (self.window_false_alarm_rate is None):
            msg = "drift budget: set exactly one of false_alarm_events, window_false_alarm_rate"
            raise ConfigError(msg)
        if self.correction not in ("bonferroni", "benjamini_hochberg"):
            msg = f"drift_correction: bonferroni or benjamini_hochberg, got {self.correction!r}"
            raise ConfigError(msg)
        rate = self.window_false_alarm_rate
        if rate is not None and not 0 < rate < 1:
            msg = f"drift_window_false_alarm_rate: must be in (0, 1), got {rate}"
            raise ConfigError(msg)
        if self.false_alarm_events is not None and self.false_alarm_events < 1:
            msg = f"drift_false_alarm_events: must be at least 1, got {self.false_alarm_events}"
            raise ConfigError(msg)
        unknown = [s for s in self.alarm_statistics if s not in ALARM_STATISTICS]
        if unknown or not self.alarm_statistics:
            msg = (
                f"drift_alarm_statistics: unknown {unknown} (known: {', '.join(ALARM_STATISTICS)})"
                if unknown
                else "drift_alarm_statistics: name at least one statistic"
            )
            raise ConfigError(msg)

    def window_alpha(self, n: int, *, windows: int = 1) -> float:
        """Allowed probability that an undrifted window of ``n`` events alarms, when
        ``windows`` drift windows share the budget."""
        if self.window_false_alarm_rate is not None:
            return self.window_false_alarm_rate
        assert self.false_alarm_events is not None
        return min(0.5, n / self.false_alarm_events / max(1, windows))

    def tests_of(self, fref: FeatureReference) -> list[str]:
        allowed = NUMERIC_STATISTICS if fref.kind == "numeric" else CATEGORICAL_STATISTICS
        return [s for s in self.alarm_statistics if s in allowed]


@dataclass
class NullDistribution:
    """Sorted bootstrap values of one test, with a gamma fitted for the far tail."""

    values: np.ndarray[Any, Any]
    shape: float
    scale: float

    def p_value(self, observed: float) -> float:
        draws = len(self.values)
        above = draws - int(np.searchsorted(self.values, observed, side="left"))
        empirical = (1 + above) / (draws + 1)
        if above >= 10 or self.scale <= 0:
            return empirical
        return float(min(empirical, sps.gamma.sf(observed, self.shape, scale=self.scale)))

    def quantile(self, level: float) -> float:
        """Value exceeded with probability ``1 - level`` (gamma beyond the bootstrap)."""
        if 1 - level >= 10 / len(self.values) or self.scale <= 0:
            return float(np.quantile(self.values, level))
        return float(sps.gamma.isf(1 - level, self.shape, scale=self.scale))


def draws_for(alpha_test: float) -> int:
    """Bootstrap draws: enough for about 10 exceedances at the test level, within bounds."""
    return int(min(50_000, max(2_000, math.ceil(10 / alpha_test))))


_CALIBRATIONS: OrderedDict[tuple[str, int, int, tuple[str, ...]], dict[str, NullDistribution]] = (
    OrderedDict()
)
_CACHE_SIZE: Final = 32


def calibrate(
    ref: Reference, n: int, draws: int, statistics: tuple[str, ...], *, seed: int
) -> dict[str, NullDistribution]:
    """Null distributions of every ``feature|statistic`` test for windows of ``n`` events.

    Deterministic for the same inputs; kept in a small in-process cache (never stored).
    """
    key = (ref.fingerprint, n, draws, statistics)
    cached = _CALIBRATIONS.get(key)
    if cached is not None:
        _CALIBRATIONS.move_to_end(key)
        return cached
    rng = np.random.default_rng(seed)
    out: dict[str, NullDistribution] = {}
    for name in sorted(ref.features):
        fref = ref.features[name]
        allowed = NUMERIC_STATISTICS if fref.kind == "numeric" else CATEGORICAL_STATISTICS
        if not set(statistics) & set(allowed):
            continue  # nothing of this kind decides alarms: no draws
        counts = np.asarray(fref.counts, dtype=np.float64)
        p = (counts + _PSEUDO) / (counts.sum() + _PSEUDO * len(counts))
        m = max(1, round(counts.sum()))
        r = rng.multinomial(m, p, size=draws)
        w = rng.multinomial(n, p, size=draws)
        values = _statistics(r, w, fref, only=statistics)  # only what decides alarms
        for stat, drawn in values.items():
            v = np.sort(drawn)
            mean, var = float(v.mean()), float(v.var())
            shape, scale = (mean**2 / var, var / mean) if var > 0 and mean > 0 else (1.0, 0.0)
            out[f"{name}|{stat}"] = NullDistribution(v, shape, scale)
    _CALIBRATIONS[key] = out
    while len(_CALIBRATIONS) > _CACHE_SIZE:
        _CALIBRATIONS.popitem(last=False)
    return out


def calibration_size(n: int) -> int:
    """The window size thresholds are calibrated at: ``n`` rounded down to a grid of about
    ten steps per decade. Statistics shrink as windows grow, so this is conservative.

    >>> [calibration_size(n) for n in (1000, 1234, 99, 7)]
    [1000, 1200, 90, 7]
    """
    if n < 10:
        return max(1, n)
    decade: int = 10 ** math.floor(math.log10(n))
    steps = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 9.0)
    best = decade
    for step in steps:
        if step * decade <= n:
            best = round(step * decade)
    return best


# --------------------------------------------------------------------------- results


@dataclass
class FeatureResult:
    """One feature (or output) in one closed window."""

    kind: Kind
    statistics: dict[str, float]
    p_values: dict[str, float]
    """Bootstrap p-value of each alarm statistic."""
    thresholds: dict[str, float]
    """Per alarm statistic, the value above which it counts as drift under Bonferroni."""
    missing_rate: float
    out_of_range_rate: float | None
    drifted: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "statistics": {k: round(v, 6) for k, v in self.statistics.items()},
            "p_values": {k: float(f"{v:.4g}") for k, v in self.p_values.items()},
            "thresholds": {k: round(v, 6) for k, v in self.thresholds.items()},
            "missing_rate": round(self.missing_rate, 6),
            "out_of_range_rate": (
                None if self.out_of_range_rate is None else round(self.out_of_range_rate, 6)
            ),
            "drifted": self.drifted,
        }


@dataclass
class WindowResult:
    """The drift tests of one closed window."""

    n: int
    alpha: float
    tests: int
    features: dict[str, FeatureResult]
    drifted: list[str]
    """Drifted features in order of significance (smallest p-value first), then outputs."""

    def value(self, name: str) -> float | None:
        """A metric for alert rules: ``drifted_features`` or ``<statistic>:<feature>``
        (also ``missing_rate:`` and ``out_of_range_rate:``)."""
        if name == "drifted_features":
            return float(len(self.drifted))
        stat, _, feature = name.partition(":")
        fr = self.features.get(feature)
        if fr is None:
            return None
        if stat == "missing_rate":
            return fr.missing_rate
        if stat == "out_of_range_rate":
            return fr.out_of_range_rate
        return fr.statistics.get(stat)

    def min_p_values(self) -> dict[str, float]:
        """Per feature, its smallest p-value over the alarm statistics (4 significant digits)."""
        return {
            name: float(f"{min(fr.p_values.values()):.4g}")
            for name, fr in sorted(self.features.items())
            if fr.p_values
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "alpha": self.alpha,
            "tests": self.tests,
            "drifted": list(self.drifted),
            "features": {k: v.as_dict() for k, v in sorted(self.features.items())},
        }


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return sum(b << (8 * i) for i, b in enumerate(digest[:8]))


def compare_window(
    ref: Reference,
    win: WindowCounts,
    budget: DriftBudget,
    *,
    windows: int = 1,
    seed: int = 0,
) -> WindowResult:
    """Compare one window with the reference under ``budget`` (see the module docstring)."""
    # calibrated at n rounded down (see calibration_size): conservative, and the bootstrap of
    # a size is reused by every window of about that size
    size = calibration_size(win.n)
    alpha = budget.window_alpha(size, windows=windows)
    tests = sum(len(budget.tests_of(f)) for f in ref.features.values())
    alpha_test = alpha / max(1, tests)
    nulls = calibrate(
        ref,
        size,
        draws_for(alpha_test),
        tuple(budget.alarm_statistics),
        seed=_seed(ref.fingerprint, size, seed),
    )
    results: dict[str, FeatureResult] = {}
    pvals: list[tuple[float, str]] = []
    for name, fref in ref.features.items():
        counts = np.asarray([win.counts[name]], dtype=np.float64)
        values = _statistics(np.asarray([fref.counts]), counts, fref)
        statistics = {k: float(v[0]) for k, v in values.items()}
        if fref.kind == "categorical":
            dof = max(1, int((np.asarray(fref.counts) + counts[0] > 0).sum()) - 1)
            statistics["chi2_p_value"] = float(sps.chi2.sf(statistics["chi2"], dof))
        p_values, thresholds = {}, {}
        for stat in budget.tests_of(fref):
            null = nulls[f"{name}|{stat}"]
            p_values[stat] = null.p_value(statistics[stat])
            thresholds[stat] = null.quantile(1 - alpha_test)
            pvals.append((p_values[stat], name))
        n = max(1, win.n)
        results[name] = FeatureResult(
            fref.kind,
            statistics,
            p_values,
            thresholds,
            win.counts[name][fref.missing_bin] / n,
            win.out_of_range[name] / n if fref.kind == "numeric" else None,
            False,
        )
    rejected = _rejected(pvals, alpha, budget.correction)
    for name in rejected:
        results[name].drifted = True
    order = {name: min(p for p, f in pvals if f == name) for name in rejected}
    drifted = sorted(rejected, key=lambda f: (f.startswith("output:"), order[f], f))
    return WindowResult(win.n, alpha, tests, results, drifted)


def _rejected(pvals: list[tuple[float, str]], alpha: float, correction: str) -> set[str]:
    m = len(pvals)
    if m == 0:
        return set()
    if correction == "bonferroni":
        return {name for p, name in pvals if p <= alpha / m}
    ranked = sorted(pvals)
    cut = 0
    for i, (p, _) in enumerate(ranked, start=1):
        if p <= alpha * i / m:
            cut = i
    return {name for _, name in ranked[:cut]}
