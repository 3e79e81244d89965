"""Incremental metric bundles for labeled prediction events.

A :class:`MetricBundle` keeps classification or regression metrics cumulatively and over
named windows (last N events, or the last T seconds of event time), plus label-delay
statistics. Updates are pure Python and O(1) amortised. Sums of floats are kept exactly
(an integer times a power of two), so reverting the events that leave a window never
drifts and results do not depend on arrival order. State is plain JSON data.

A count window keeps its events (exact ROC AUC and delay quantiles). A time window keeps
no events: it is cut into panes of event time (see :class:`WindowSpec`), each a mergeable
summary (confusion cells, exact sums, a sparse logit histogram for ROC AUC, label-delay
sketch buckets), and the window's running sum of them; a pane that leaves the window is
subtracted exactly. Its memory, state and snapshot cost depend on the number of panes and
distinct histogram bins, not on the event rate. Its ROC AUC is the histogram estimate (as
the cumulative one) and its delay quantiles the sketch's (within 1%).

Labels may be ``int``, ``float`` or ``str``. ``1`` and ``"1"`` are different labels, but
``1`` and ``1.0`` compare equal and are one label (as in Python and scikit-learn); the
first spelling seen is kept. ``bool`` is not supported (it compares equal to ``1``).

Metrics follow scikit-learn with ``zero_division=0.0``; a metric that is undefined
(no events, one class only for ROC AUC, ...) is ``None``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, Protocol, TypeAlias, TypeVar

from streaming.errors import ConfigError, ContractError, StateError

__all__ = [
    "ClassificationStats",
    "ConfusionMatrix",
    "DDSketch",
    "ExactSum",
    "Label",
    "LabelDelayStats",
    "LogitHistogramAUC",
    "MetricBundle",
    "RegressionStats",
    "WindowSpec",
    "error_of",
    "parse_window",
    "roc_auc_exact",
]

Label: TypeAlias = int | float | str
Task: TypeAlias = Literal["classification", "regression"]

_EPS: Final = 2.220446049250313e-16  # np.finfo(np.float64).eps, scikit-learn's log-loss clip
_ONE_MINUS_EPS: Final = 1.0 - _EPS
_MIN_EXP: Final = -2 * 1074  # exponent of the smallest double, squared
_STATE_FORMAT: Final = "streammon.metrics.bundle"
_STATE_VERSION: Final = 2


# --------------------------------------------------------------------------- labels


def _check_label(value: object, what: str) -> Label:
    """Return ``value`` as a plain int, float or str label, or raise ContractError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = f"{what} must be an int, float or str label, got {type(value).__name__}"
        raise ContractError(msg)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if not math.isfinite(value):
        msg = f"{what} must be a finite number, got {value!r}"
        raise ContractError(msg)
    return float(value)


def _label_sort_key(label: Label) -> tuple[int, float, str]:
    """Numbers by value first, then strings (scikit-learn refuses to mix them)."""
    if isinstance(label, str):
        return (1, 0.0, label)
    return (0, label, "")


def _sorted_labels(labels: Iterable[Label]) -> list[Label]:
    return sorted(labels, key=_label_sort_key)


def _tag(label: Label) -> list[Any]:
    """Encode a label as ``[type, value]`` so JSON keeps 1, 1.0 and "1" apart."""
    if isinstance(label, str):
        return ["s", label]
    if isinstance(label, int):
        return ["i", label]
    return ["f", label]


def _untag(data: object) -> Label:
    if isinstance(data, list) and len(data) == 2:
        kind, value = data
        if kind == "s" and isinstance(value, str):
            return value
        if kind == "i" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if (
            kind == "f"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            return float(value)
    msg = f"bad tagged label in metrics state: {data!r}"
    raise StateError(msg)


def _is_default_positive(label: Label) -> bool:
    """True for the labels taken as positive when none is configured (1, "1", "true", 1.0)."""
    if isinstance(label, str):
        return label == "1" or label.lower() == "true"
    return label == 1


def _default_positive(labels: Iterable[Label]) -> Label | None:
    """Pick the positive label among ``labels``: 1 (or 1.0), then "1", then "true"."""
    seen = list(labels)
    for label in seen:
        if not isinstance(label, str) and label == 1:
            return label
    if "1" in seen:
        return "1"
    for label in seen:
        if isinstance(label, str) and label.lower() == "true":
            return label
    return None


# --------------------------------------------------------------------------- exact sums


def _split(x: float) -> tuple[int, int]:
    """Return ``(m, e)`` with ``x == m * 2**e`` exactly."""
    num, den = x.as_integer_ratio()
    return num, 1 - den.bit_length()


def _div_exact(a: int, ea: int, b: int, eb: int) -> float:
    """``(a * 2**ea) / (b * 2**eb)`` correctly rounded (int true division is)."""
    k = ea - eb
    if k >= 0:
        return (a << k) / b
    return a / (b << -k)


def _sub_exact(a: int, ea: int, b: int, eb: int) -> tuple[int, int]:
    """``a * 2**ea - b * 2**eb`` exactly, as ``(n, e)``."""
    e = min(ea, eb)
    return (a << (ea - e)) - (b << (eb - e)), e


class ExactSum:
    """Exact running sum of floats: adding then removing a value restores it bit for bit.

    >>> s = ExactSum()
    >>> for x in (1e16, 1.0, -1e16):
    ...     s.add(x)
    >>> s.value()
    1.0
    >>> s.sub(1.0); s.value()
    0.0
    """

    __slots__ = ("_e", "_n")

    def __init__(self) -> None:
        self._n = 0
        self._e = 0

    def add_parts(self, m: int, e: int) -> None:
        """Add ``m * 2**e`` (see :func:`_split`)."""
        se = self._e
        if e >= se:
            self._n += m << (e - se)
        else:
            self._n = (self._n << (se - e)) + m
            self._e = e

    def add(self, x: float) -> None:
        """Add a finite float."""
        m, e = _split(x)
        self.add_parts(m, e)

    def sub(self, x: float) -> None:
        """Remove a float added before."""
        m, e = _split(x)
        self.add_parts(-m, e)

    @property
    def exact(self) -> tuple[int, int]:
        """The sum as ``(n, e)`` meaning ``n * 2**e``."""
        return self._n, self._e

    def value(self) -> float:
        """The sum, correctly rounded to a float."""
        return _div_exact(self._n, self._e, 1, 0)

    def mean(self, count: int) -> float:
        """The sum divided by ``count``, correctly rounded."""
        return _div_exact(self._n, self._e, count, 0)

    def to_state(self) -> list[Any]:
        """``[hex mantissa, exponent]`` (hex avoids int-string digit limits)."""
        return [format(self._n, "x"), self._e]

    @classmethod
    def from_state(cls, data: object) -> ExactSum:
        """Rebuild from :meth:`to_state` output."""
        if (
            isinstance(data, list)
            and len(data) == 2
            and isinstance(data[0], str)
            and isinstance(data[1], int)
            and not isinstance(data[1], bool)
            and _MIN_EXP <= data[1] <= 0
        ):
            try:
                n = int(data[0], 16)
            except ValueError:
                pass
            else:
                out = cls()
                out._n, out._e = n, data[1]
                return out
        msg = f"bad exact sum in metrics state: {data!r}"
        raise StateError(msg)


# --------------------------------------------------------------------------- classification


class ConfusionMatrix:
    """Counts per (true, predicted) label pair, with add and revert.

    Precision, recall and F1 match scikit-learn (``zero_division=0.0``) over the labels
    present, i.e. the union of those seen as true or predicted and not reverted since.

    >>> cm = ConfusionMatrix()
    >>> for t, p in [(0, 0), (0, 1), (1, 1), (2, 1)]:
    ...     cm.add(t, p)
    >>> cm.accuracy(), cm.binary_scores(1)
    (0.5, (0.3333333333333333, 1.0, 0.5))
    >>> cm.revert(2, 1); cm.as_dict()
    {'labels': [0, 1], 'matrix': [[1, 1], [0, 1]]}
    """

    __slots__ = ("_cells", "_correct", "_n", "_pred", "_true")

    def __init__(self) -> None:
        self._cells: dict[tuple[Label, Label], int] = {}
        self._true: dict[Label, int] = {}
        self._pred: dict[Label, int] = {}
        self._n = 0
        self._correct = 0

    @property
    def count(self) -> int:
        """Number of pairs counted."""
        return self._n

    def add(self, y_true: Label, y_pred: Label) -> None:
        """Count one pair."""
        cells = self._cells
        key = (y_true, y_pred)
        cells[key] = cells.get(key, 0) + 1
        self._true[y_true] = self._true.get(y_true, 0) + 1
        self._pred[y_pred] = self._pred.get(y_pred, 0) + 1
        self._n += 1
        if y_true == y_pred:
            self._correct += 1

    def revert(self, y_true: Label, y_pred: Label) -> None:
        """Remove one pair counted before; labels left with no count disappear."""
        key = (y_true, y_pred)
        c = self._cells.get(key, 0)
        if c <= 0:
            msg = f"cannot revert ({y_true!r}, {y_pred!r}): pair was not counted"
            raise StateError(msg)
        if c == 1:
            del self._cells[key]
        else:
            self._cells[key] = c - 1
        _decrement(self._true, y_true)
        _decrement(self._pred, y_pred)
        self._n -= 1
        if y_true == y_pred:
            self._correct -= 1

    def labels(self) -> list[Label]:
        """Labels present as true or predicted, sorted."""
        return _sorted_labels(set(self._true) | set(self._pred))

    def as_dict(self) -> dict[str, Any]:
        """``{"labels": [...], "matrix": [[...]]}``, rows true, columns predicted."""
        labels = self.labels()
        cells = self._cells
        matrix = [[cells.get((t, p), 0) for p in labels] for t in labels]
        return {"labels": labels, "matrix": matrix}

    def accuracy(self) -> float | None:
        """Fraction of pairs with ``y_true == y_pred``; None when empty."""
        return self._correct / self._n if self._n else None

    def binary_scores(self, positive: Label) -> tuple[float, float, float]:
        """Precision, recall and F1 of ``positive`` against the rest."""
        tp = self._cells.get((positive, positive), 0)
        pred = self._pred.get(positive, 0)
        true = self._true.get(positive, 0)
        return _prf(tp, pred, true)

    def macro_scores(self) -> tuple[float, float, float]:
        """Unweighted means of per-label precision, recall and F1 (``average='macro'``)."""
        labels = self.labels()
        if not labels:
            return 0.0, 0.0, 0.0
        ps: list[float] = []
        rs: list[float] = []
        fs: list[float] = []
        for label in labels:
            p, r, f = _prf(
                self._cells.get((label, label), 0),
                self._pred.get(label, 0),
                self._true.get(label, 0),
            )
            ps.append(p)
            rs.append(r)
            fs.append(f)
        n = len(labels)
        return math.fsum(ps) / n, math.fsum(rs) / n, math.fsum(fs) / n

    def to_state(self) -> list[list[Any]]:
        """``[[tagged true, tagged predicted, count], ...]``."""
        return [[_tag(t), _tag(p), c] for (t, p), c in self._cells.items()]

    @classmethod
    def from_state(cls, data: object) -> ConfusionMatrix:
        """Rebuild from :meth:`to_state` output."""
        out = cls()
        if not isinstance(data, list):
            msg = "confusion matrix state must be a list"
            raise StateError(msg)
        for row in data:
            if not isinstance(row, list) or len(row) != 3:
                msg = f"bad confusion matrix cell in state: {row!r}"
                raise StateError(msg)
            out.add_count(_untag(row[0]), _untag(row[1]), row[2])
        return out

    def add_count(self, y_true: Label, y_pred: Label, c: object) -> None:
        """Count a pair ``c`` (> 0) times."""
        if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
            msg = f"bad confusion matrix count: {c!r}"
            raise StateError(msg)
        key = (y_true, y_pred)
        self._cells[key] = self._cells.get(key, 0) + c
        self._true[y_true] = self._true.get(y_true, 0) + c
        self._pred[y_pred] = self._pred.get(y_pred, 0) + c
        self._n += c
        if y_true == y_pred:
            self._correct += c


def _decrement(counts: dict[Label, int], key: Label) -> None:
    c = counts[key]
    if c == 1:
        del counts[key]
    else:
        counts[key] = c - 1


def _prf(tp: int, pred: int, true: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts with scikit-learn's zero_division=0.0."""
    precision = tp / pred if pred else 0.0
    recall = tp / true if true else 0.0
    denom = true + pred
    f1 = 2.0 * tp / denom if denom else 0.0
    return precision, recall, f1


# A classification record: (event_time_ms, label_delay_ms, y_true, y_pred,
#                           loss mantissa, loss exponent, loss, score, is_positive)
_ClsRec: TypeAlias = tuple[int, int, Label, Label, int, int, float | None, float | None, bool]


class ClassificationStats(ConfusionMatrix):
    """Confusion matrix plus the exact log-loss sum of one scope (cumulative or a window)."""

    __slots__ = ("_loss", "_n_loss")

    def __init__(self) -> None:
        super().__init__()
        self._loss = ExactSum()
        self._n_loss = 0

    @property
    def scored_count(self) -> int:
        """Number of events that had a score or probabilities (the log-loss events)."""
        return self._n_loss

    def add_record(self, rec: _ClsRec) -> None:
        """Count one record (the confusion-matrix update is inlined: hot path)."""
        _, _, yt, yp, lm, le, loss, _, _ = rec
        cells = self._cells
        key = (yt, yp)
        cells[key] = cells.get(key, 0) + 1
        self._true[yt] = self._true.get(yt, 0) + 1
        self._pred[yp] = self._pred.get(yp, 0) + 1
        self._n += 1
        if yt == yp:
            self._correct += 1
        if loss is not None:
            self._loss.add_parts(lm, le)
            self._n_loss += 1

    def revert_record(self, rec: _ClsRec) -> None:
        """Remove one record counted before."""
        _, _, yt, yp, lm, le, loss, _, _ = rec
        self.revert(yt, yp)
        if loss is not None:
            self._loss.add_parts(-lm, le)
            self._n_loss -= 1

    def log_loss(self) -> float | None:
        """Mean log loss over scored events; None when there are none."""
        return self._loss.mean(self._n_loss) if self._n_loss else None

    def metrics(self, averaging: str, positive: Label | None) -> dict[str, Any]:
        """Snapshot metrics (without ROC AUC, which the owner adds)."""
        n = self._n
        precision: float | None
        recall: float | None
        f1: float | None
        if n == 0:
            precision = recall = f1 = None
        elif averaging == "binary" and positive is not None:
            precision, recall, f1 = self.binary_scores(positive)
        else:
            precision, recall, f1 = self.macro_scores()
        return {
            "count": n,
            "accuracy": self.accuracy(),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "log_loss": self.log_loss(),
            "roc_auc": None,
            "confusion_matrix": self.as_dict(),
            "averaging": averaging,
            "positive_label": positive,
            "scored_count": self._n_loss,
            "unscored_count": n - self._n_loss,
        }


def roc_auc_exact(pairs: Iterable[tuple[float, bool]]) -> float | None:
    """ROC AUC of ``(score, is_positive)`` pairs, ties counted half (as scikit-learn).

    None when either class is missing.

    >>> roc_auc_exact([(0.1, False), (0.4, False), (0.35, True), (0.8, True)])
    0.75
    """
    ordered = sorted(pairs, key=lambda pair: pair[0])
    num2 = 0  # twice the Mann-Whitney U statistic, exact
    neg_below = 0
    n_pos = 0
    i, n = 0, len(ordered)
    while i < n:
        score = ordered[i][0]
        pos = neg = 0
        while i < n and ordered[i][0] == score:
            if ordered[i][1]:
                pos += 1
            else:
                neg += 1
            i += 1
        num2 += pos * (2 * neg_below + neg)
        neg_below += neg
        n_pos += pos
    if n_pos == 0 or neg_below == 0:
        return None
    return num2 / (2 * n_pos * neg_below)


class LogitHistogramAUC:
    """Cumulative ROC AUC from per-class histograms of ``logit(score)``.

    Fixed memory; fine bins on the logit scale keep scores bunched near 0 or 1 apart
    (thresholds spread evenly on [0, 1] do not). Scores in the same bin count as ties.

    >>> auc = LogitHistogramAUC()
    >>> for s, y in [(0.1, False), (0.4, False), (0.35, True), (0.8, True)]:
    ...     auc.add(s, y)
    >>> auc.value()
    0.75
    """

    __slots__ = ("_bins", "_limit", "_n_neg", "_n_pos", "_neg", "_pos", "_scale")

    def __init__(self, bins: int = 2**14, limit: float = 25.0) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 2**20:
            msg = f"bins must be an int in [2, 2**20], got {bins!r}"
            raise ConfigError(msg)
        if not (math.isfinite(limit) and limit > 0):
            msg = f"limit must be a positive number, got {limit!r}"
            raise ConfigError(msg)
        self._bins = bins
        self._limit = float(limit)
        self._scale = bins / (2.0 * self._limit)
        self._pos = [0] * bins
        self._neg = [0] * bins
        self._n_pos = 0
        self._n_neg = 0

    @property
    def layout(self) -> tuple[int, float]:
        """``(bins, limit)``: histograms merge only with the same layout."""
        return self._bins, self._limit

    def bin(self, score: float) -> int:
        """Index of the bin of a score in [0, 1]."""
        if score <= 0.0:
            return 0
        if score >= 1.0:
            return self._bins - 1
        i = int((math.log(score / (1.0 - score)) + self._limit) * self._scale)
        if i < 0:
            return 0
        if i >= self._bins:
            return self._bins - 1
        return i

    def add(self, score: float, is_positive: bool) -> None:
        """Count one score in [0, 1]."""
        self.add_bin(self.bin(score), is_positive)

    def add_bin(self, i: int, is_positive: bool) -> None:
        """Count one score by its :meth:`bin`."""
        if is_positive:
            self._pos[i] += 1
            self._n_pos += 1
        else:
            self._neg[i] += 1
            self._n_neg += 1

    def merge(self, other: LogitHistogramAUC) -> None:
        """Add the counts of a histogram with the same bins."""
        if (other._bins, other._limit) != (self._bins, self._limit):
            msg = "cannot merge ROC AUC histograms with different bins"
            raise ConfigError(msg)
        self._pos = [a + b for a, b in zip(self._pos, other._pos, strict=True)]
        self._neg = [a + b for a, b in zip(self._neg, other._neg, strict=True)]
        self._n_pos += other._n_pos
        self._n_neg += other._n_neg

    def value(self) -> float | None:
        """AUC by the Mann-Whitney formula; None when either class is missing."""
        if self._n_pos == 0 or self._n_neg == 0:
            return None
        num2 = 0
        neg_below = 0
        for pos, neg in zip(self._pos, self._neg, strict=True):
            if pos:
                num2 += pos * (2 * neg_below + neg)
            neg_below += neg
        return num2 / (2 * self._n_pos * self._n_neg)

    def to_state(self) -> dict[str, Any]:
        """Sparse ``[[bin, positives, negatives], ...]`` plus the layout."""
        cells = [
            [i, p, q] for i, (p, q) in enumerate(zip(self._pos, self._neg, strict=True)) if p or q
        ]
        return {"bins": self._bins, "limit": self._limit, "cells": cells}

    @classmethod
    def from_state(cls, data: object) -> LogitHistogramAUC:
        """Rebuild from :meth:`to_state` output."""
        if not isinstance(data, dict):
            msg = "ROC AUC histogram state must be an object"
            raise StateError(msg)
        try:
            out = cls(data["bins"], data["limit"])
            for i, p, q in data["cells"]:
                for v in (i, p, q):
                    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                        raise ValueError(v)
                out._pos[i] += p
                out._neg[i] += q
                out._n_pos += p
                out._n_neg += q
        except (KeyError, TypeError, ValueError, IndexError, ConfigError) as exc:
            msg = f"bad ROC AUC histogram in metrics state: {exc!r}"
            raise StateError(msg) from exc
        return out


# --------------------------------------------------------------------------- regression

# A regression record: (event_time_ms, label_delay_ms, y_true, y_pred,
#                       y m, y e, y*y m, |err| m, |err| e, err**2 m, err**2 e)
_RegRec: TypeAlias = tuple[int, int, float, float, int, int, int, int, int, int, int]


class RegressionStats:
    """Exact sums behind MAE, RMSE and R2 of one scope, with add and revert."""

    __slots__ = ("_n", "_sabs", "_ssq", "_sy", "_syy")

    def __init__(self) -> None:
        self._n = 0
        self._sy = ExactSum()
        self._syy = ExactSum()
        self._sabs = ExactSum()
        self._ssq = ExactSum()

    @property
    def count(self) -> int:
        """Number of events."""
        return self._n

    def add_record(self, rec: _RegRec) -> None:
        """Count one record."""
        self._n += 1
        e = rec[5]
        self._sy.add_parts(rec[4], e)
        self._syy.add_parts(rec[6], 2 * e)
        self._sabs.add_parts(rec[7], rec[8])
        self._ssq.add_parts(rec[9], rec[10])

    def revert_record(self, rec: _RegRec) -> None:
        """Remove one record counted before."""
        if self._n <= 0:
            msg = "cannot revert a regression event: none counted"
            raise StateError(msg)
        self._n -= 1
        e = rec[5]
        self._sy.add_parts(-rec[4], e)
        self._syy.add_parts(-rec[6], 2 * e)
        self._sabs.add_parts(-rec[7], rec[8])
        self._ssq.add_parts(-rec[9], rec[10])

    def merge(self, other: RegressionStats, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) the sums of ``other``, exactly."""
        self._n += sign * other._n
        for mine, theirs in (
            (self._sy, other._sy),
            (self._syy, other._syy),
            (self._sabs, other._sabs),
            (self._ssq, other._ssq),
        ):
            n, e = theirs.exact
            mine.add_parts(sign * n, e)

    def to_state(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            "n": self._n,
            "sum_y": self._sy.to_state(),
            "sum_y2": self._syy.to_state(),
            "sum_abs": self._sabs.to_state(),
            "sum_sq": self._ssq.to_state(),
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> RegressionStats:
        """Rebuild from :meth:`to_state` output."""
        out = cls()
        out._n = _nonneg_int(data["n"])
        out._sy = ExactSum.from_state(data["sum_y"])
        out._syy = ExactSum.from_state(data["sum_y2"])
        out._sabs = ExactSum.from_state(data["sum_abs"])
        out._ssq = ExactSum.from_state(data["sum_sq"])
        return out

    def mae(self) -> float | None:
        """Mean absolute error."""
        return self._sabs.mean(self._n) if self._n else None

    def rmse(self) -> float | None:
        """Root mean squared error."""
        return math.sqrt(self._ssq.mean(self._n)) if self._n else None

    def r2(self) -> float | None:
        """``1 - SS_res / SS_tot`` as scikit-learn; None for < 2 events or zero variance."""
        n = self._n
        if n < 2:
            return None
        ny, ey = self._sy.exact
        nyy, eyy = self._syy.exact
        nss, ess = self._ssq.exact
        # n * SS_tot = n * sum(y**2) - sum(y)**2, exactly
        tn, te = _sub_exact(n * nyy, eyy, ny * ny, 2 * ey)
        if tn <= 0:
            return None
        num, ne = _sub_exact(tn, te, n * nss, ess)
        return _div_exact(num, ne, tn, te)

    def metrics(self) -> dict[str, Any]:
        """Snapshot metrics."""
        return {"count": self._n, "mae": self.mae(), "rmse": self.rmse(), "r2": self.r2()}


def _number(value: object) -> float:
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"regression values must be numbers, got {value!r}"
        raise ContractError(msg)
    try:
        return float(value)
    except OverflowError as exc:
        msg = f"regression value out of float range: {value!r}"
        raise ContractError(msg) from exc


def _reg_record(t: int, d: int, y: float, yhat: float) -> _RegRec:
    err = y - yhat
    sq = err * err
    if not math.isfinite(sq):
        msg = f"regression values must be finite with a finite squared error, got {y!r}, {yhat!r}"
        raise ContractError(msg)
    ym, ye = _split(y)
    am, ae = _split(abs(err))
    sm, se = _split(sq)
    return (t, d, y, yhat, ym, ye, ym * ym, am, ae, sm, se)


# --------------------------------------------------------------------------- label delay


class DDSketch:
    """Quantile sketch with relative accuracy ``alpha`` on positive values (DDSketch).

    Values fall in log-spaced buckets ``(gamma**(i-1), gamma**i]`` with
    ``gamma = (1+alpha)/(1-alpha)``; values below ``min_value`` count as zero. Memory is at
    most ``max_buckets`` buckets (the lowest are merged beyond that). Sketches merge.

    >>> s = DDSketch()
    >>> for v in range(1, 1001):
    ...     s.add(v)
    >>> abs(s.quantile(0.5) - 500) / 500 < 0.01
    True
    """

    __slots__ = ("_alpha", "_buckets", "_count", "_gamma", "_inv_ln_gamma", "_max", "_zero")

    min_value: Final = 1e-9

    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        if not (0.0 < relative_accuracy < 1.0):
            msg = f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}"
            raise ConfigError(msg)
        if isinstance(max_buckets, bool) or not isinstance(max_buckets, int) or max_buckets < 2:
            msg = f"max_buckets must be an int >= 2, got {max_buckets!r}"
            raise ConfigError(msg)
        self._alpha = float(relative_accuracy)
        self._gamma = (1.0 + self._alpha) / (1.0 - self._alpha)
        self._inv_ln_gamma = 1.0 / math.log(self._gamma)
        self._max = max_buckets
        self._buckets: dict[int, int] = {}
        self._zero = 0
        self._count = 0

    @property
    def count(self) -> int:
        """Number of values added."""
        return self._count

    def add(self, value: float) -> None:
        """Add one value (negative values count as zero)."""
        self._count += 1
        if value < self.min_value:
            self._zero += 1
            return
        i = math.ceil(math.log(value) * self._inv_ln_gamma)
        buckets = self._buckets
        c = buckets.get(i)
        if c is None:
            buckets[i] = 1
            if len(buckets) > self._max:
                self._collapse()
        else:
            buckets[i] = c + 1

    def _collapse(self) -> None:
        keys = sorted(self._buckets)
        while len(keys) > self._max:
            low = keys.pop(0)
            self._buckets[keys[0]] += self._buckets.pop(low)

    def merge(self, other: DDSketch) -> None:
        """Add the values of a sketch with the same accuracy."""
        if (other._alpha, other._max) != (self._alpha, self._max):
            msg = "cannot merge sketches with different relative accuracy or max_buckets"
            raise ConfigError(msg)
        for i, c in other._buckets.items():
            self._buckets[i] = self._buckets.get(i, 0) + c
        self._zero += other._zero
        self._count += other._count
        if len(self._buckets) > self._max:
            self._collapse()

    def quantile(self, q: float) -> float | None:
        """Estimate of the value at rank ``floor(q * (count - 1))``; None when empty."""
        if not 0.0 <= q <= 1.0:
            msg = f"quantile must be in [0, 1], got {q!r}"
            raise ConfigError(msg)
        if self._count == 0:
            return None
        rank = q * (self._count - 1)
        seen = self._zero
        if seen > rank:
            return 0.0
        for i in sorted(self._buckets):
            seen += self._buckets[i]
            if seen > rank:
                return 2.0 * self._gamma**i / (self._gamma + 1.0)
        return 2.0 * self._gamma ** max(self._buckets) / (self._gamma + 1.0)

    def to_state(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            "relative_accuracy": self._alpha,
            "max_buckets": self._max,
            "zero": self._zero,
            "count": self._count,
            "buckets": [[i, c] for i, c in sorted(self._buckets.items())],
        }

    @classmethod
    def from_state(cls, data: object) -> DDSketch:
        """Rebuild from :meth:`to_state` output."""
        if not isinstance(data, dict):
            msg = "quantile sketch state must be an object"
            raise StateError(msg)
        try:
            out = cls(data["relative_accuracy"], data["max_buckets"])
            out._zero = _nonneg_int(data["zero"])
            out._count = _nonneg_int(data["count"])
            for i, c in data["buckets"]:
                if not isinstance(i, int) or isinstance(i, bool):
                    raise ValueError(i)
                out._buckets[i] = _nonneg_int(c)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            msg = f"bad quantile sketch in metrics state: {exc!r}"
            raise StateError(msg) from exc
        if out._zero + sum(out._buckets.values()) != out._count:
            msg = "quantile sketch state counts do not add up"
            raise StateError(msg)
        return out


def _nonneg_int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(v)
    return v


class LabelDelayStats:
    """Cumulative label delays (ms): exact count, mean, max; sketched median and p95.

    Quantiles are the sketch's estimate of the lower-rank order statistic (within 1%),
    clamped to the exact min and max.

    >>> s = LabelDelayStats()
    >>> for d in (100, 200, 300, 400):
    ...     s.add(d)
    >>> s.summary()["count"], s.summary()["mean_ms"], s.summary()["max_ms"]
    (4, 250.0, 400)
    """

    __slots__ = ("_count", "_max", "_min", "_sketch", "_sum")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self._sketch = DDSketch(relative_accuracy)
        self._count = 0
        self._sum = 0
        self._min: int | None = None
        self._max: int | None = None

    @property
    def count(self) -> int:
        """Number of delays added."""
        return self._count

    def add(self, delay_ms: int) -> None:
        """Add one delay; a negative delay (clock skew) counts as 0."""
        if delay_ms < 0:
            delay_ms = 0
        self._count += 1
        self._sum += delay_ms
        if self._max is None or delay_ms > self._max:
            self._max = delay_ms
        if self._min is None or delay_ms < self._min:
            self._min = delay_ms
        self._sketch.add(delay_ms)

    def merge(self, other: LabelDelayStats) -> None:
        """Add the delays summarised by ``other``."""
        self._sketch.merge(other._sketch)
        self._count += other._count
        self._sum += other._sum
        for v in (other._min, other._max):
            if v is not None:
                self._max = v if self._max is None else max(self._max, v)
                self._min = v if self._min is None else min(self._min, v)

    def quantile(self, q: float) -> float | None:
        """Sketch estimate, clamped to the exact min and max."""
        est = self._sketch.quantile(q)
        if est is None or self._min is None or self._max is None:
            return None
        return float(min(max(est, self._min), self._max))

    def summary(self) -> dict[str, Any]:
        """``{"count", "median_ms", "p95_ms", "mean_ms", "max_ms"}``."""
        return {
            "count": self._count,
            "median_ms": self.quantile(0.5),
            "p95_ms": self.quantile(0.95),
            "mean_ms": self._sum / self._count if self._count else None,
            "max_ms": self._max,
        }

    def to_state(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            "sketch": self._sketch.to_state(),
            "count": self._count,
            "sum": self._sum,
            "min": self._min,
            "max": self._max,
        }

    @classmethod
    def from_state(cls, data: object) -> LabelDelayStats:
        """Rebuild from :meth:`to_state` output."""
        if not isinstance(data, dict):
            msg = "label delay state must be an object"
            raise StateError(msg)
        out = cls()
        out._sketch = DDSketch.from_state(data.get("sketch"))
        try:
            out._count = _nonneg_int(data["count"])
            out._sum = _nonneg_int(data["sum"])
            out._min = None if data["min"] is None else _nonneg_int(data["min"])
            out._max = None if data["max"] is None else _nonneg_int(data["max"])
        except (KeyError, ValueError) as exc:
            msg = f"bad label delay state: {exc!r}"
            raise StateError(msg) from exc
        if out._count != out._sketch.count:
            msg = "label delay state count disagrees with its sketch"
            raise StateError(msg)
        return out


def _quantile_sorted(xs: Sequence[float], q: float) -> float:
    """numpy's default (linear) quantile of sorted, non-empty ``xs``."""
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    a, b = xs[lo], xs[hi]
    t = pos - lo
    diff = b - a
    return float(b - diff * (1.0 - t)) if t >= 0.5 else float(a + diff * t)


def _exact_delay_summary(delays: Iterable[int]) -> dict[str, Any]:
    xs = sorted(delays)
    if not xs:
        return {"count": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "count": len(xs),
        "median_ms": _quantile_sorted(xs, 0.5),
        "p95_ms": _quantile_sorted(xs, 0.95),
        "mean_ms": sum(xs) / len(xs),
        "max_ms": xs[-1],
    }


# --------------------------------------------------------------------------- windows

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$", re.ASCII)
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DEFAULT_PANES: Final = 60
_MAX_PANES: Final = 10_000


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A named window: ``kind="count"`` with ``size`` events, or ``"time"`` with ``seconds``.

    A count window holds the last ``size`` events that arrived.

    A time window of ``seconds`` T is cut into ``panes`` P panes of width T/P aligned to
    event time: an event at ``t`` ms belongs to pane ``t * P // span_ms``. The window is
    the union of the P newest panes, ``top - P < pane <= top`` where ``top`` is the pane
    of the largest event time seen, so it covers between T - T/P and T of event time. An
    event whose pane has already left the window when it arrives is not added (it still
    counts in the cumulative metrics). ``panes`` defaults to 60 (or ``span_ms`` if that
    is smaller, so every pane is at least 1 ms wide).

    >>> WindowSpec(name="1h", kind="time", seconds=3600).span_ms
    3600000
    >>> WindowSpec(name="1h", kind="time", seconds=3600).panes
    60
    """

    name: str
    kind: Literal["count", "time"]
    size: int | None = None
    seconds: float | None = None
    panes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            msg = f"window name must be a non-empty string, got {self.name!r}"
            raise ConfigError(msg)
        if self.kind == "count":
            size = self.size
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                msg = f"window {self.name!r}: size must be an int >= 1, got {size!r}"
                raise ConfigError(msg)
            if self.seconds is not None:
                msg = f"window {self.name!r}: a count window takes no seconds"
                raise ConfigError(msg)
            if self.panes is not None:
                msg = f"window {self.name!r}: a count window takes no panes"
                raise ConfigError(msg)
        elif self.kind == "time":
            sec = self.seconds
            if (
                isinstance(sec, bool)
                or not isinstance(sec, int | float)
                or not math.isfinite(sec)
                or round(sec * 1000) < 1
            ):
                msg = f"window {self.name!r}: seconds must be a number >= 0.001, got {sec!r}"
                raise ConfigError(msg)
            if self.size is not None:
                msg = f"window {self.name!r}: a time window takes no size"
                raise ConfigError(msg)
            panes = self.panes
            if panes is None:
                object.__setattr__(self, "panes", min(_DEFAULT_PANES, self.span_ms))
            elif isinstance(panes, bool) or not isinstance(panes, int):
                msg = f"window {self.name!r}: panes must be an int, got {panes!r}"
                raise ConfigError(msg)
            else:
                _check_panes(panes, self.span_ms, f"window {self.name!r}")
        else:
            msg = f"window {self.name!r}: kind must be 'count' or 'time', got {self.kind!r}"
            raise ConfigError(msg)

    @property
    def span_ms(self) -> int:
        """Length of a time window in milliseconds."""
        return round((self.seconds or 0.0) * 1000)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        if self.kind == "count":
            return {"name": self.name, "kind": "count", "size": self.size}
        return {"name": self.name, "kind": "time", "seconds": self.seconds, "panes": self.panes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            size=data.get("size"),
            seconds=data.get("seconds"),
            panes=data.get("panes"),
        )


def _check_panes(panes: int, span_ms: int, where: str) -> None:
    if not 1 <= panes <= _MAX_PANES:
        msg = f"{where}: panes must be in [1, {_MAX_PANES}], got {panes!r}"
        raise ConfigError(msg)
    if panes > span_ms:
        msg = f"{where}: {panes} panes would be shorter than 1 ms in a {span_ms} ms window"
        raise ConfigError(msg)


def parse_window(text: str, name: str | None = None) -> WindowSpec:
    """Parse ``count:N`` or ``time:D[/P]`` (D with an s/m/h/d suffix), optionally ``NAME=...``.

    ``P`` is the number of panes of a time window (default 60). The default name is
    ``last_N`` for count windows and ``D`` (or ``D/P``) for time windows.

    >>> parse_window("count:1000")
    WindowSpec(name='last_1000', kind='count', size=1000, seconds=None, panes=None)
    >>> parse_window("time:1h")
    WindowSpec(name='1h', kind='time', size=None, seconds=3600.0, panes=60)
    >>> parse_window("time:1h/12").panes
    12
    >>> parse_window("day=time:1d").name
    'day'
    """
    raw = text.strip() if isinstance(text, str) else ""
    if "=" in raw:
        given, raw = (part.strip() for part in raw.split("=", 1))
        name = name or given
    kind, sep, value = raw.partition(":")
    kind, value = kind.strip().lower(), value.strip().lower()
    if not sep or not value:
        msg = f"invalid window spec {text!r}: expected 'count:N' or 'time:DURATION[/PANES]'"
        raise ConfigError(msg)
    if kind == "count":
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            msg = f"invalid window spec {text!r}: count must be a positive integer"
            raise ConfigError(msg)
        size = int(value)
        return WindowSpec(name=name or f"last_{size}", kind="count", size=size)
    if kind == "time":
        duration, slash, panes_text = (part.strip() for part in value.partition("/"))
        match = _DURATION.match(duration)
        if match is None:
            msg = f"invalid window spec {text!r}: duration must look like 90s, 15m, 1h or 7d"
            raise ConfigError(msg)
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        span_ms = round(seconds * 1000)
        if span_ms < 1:
            msg = f"invalid window spec {text!r}: duration must be at least 1 ms"
            raise ConfigError(msg)
        panes: int | None = None
        if slash:
            if not (panes_text.isascii() and panes_text.isdigit()):
                msg = (
                    f"invalid window spec {text!r}: panes must be a positive integer, "
                    f"got {panes_text!r}"
                )
                raise ConfigError(msg)
            panes = int(panes_text)
            _check_panes(panes, span_ms, f"invalid window spec {text!r}")
        return WindowSpec(name=name or value, kind="time", seconds=seconds, panes=panes)
    msg = f"invalid window spec {text!r}: kind must be 'count' or 'time'"
    raise ConfigError(msg)


R = TypeVar("R", _ClsRec, _RegRec)
R_contra = TypeVar("R_contra", contravariant=True)


class _Stats(Protocol[R_contra]):
    def add_record(self, rec: R_contra) -> None: ...
    def revert_record(self, rec: R_contra) -> None: ...


class _Window(Generic[R]):
    """Records of a count window with its stats: the last ``spec.size`` records."""

    __slots__ = ("_limit", "events", "spec", "stats")

    def __init__(self, spec: WindowSpec, stats: _Stats[R]) -> None:
        self.spec = spec
        self.stats: _Stats[R] = stats
        self.events: deque[R] = deque()
        self._limit = spec.size or 0

    def push(self, rec: R) -> None:
        """Add a record and evict the oldest beyond the size."""
        events = self.events
        self.stats.add_record(rec)
        events.append(rec)
        if len(events) > self._limit:
            self.stats.revert_record(events.popleft())

    def restore(self, records: Iterable[R]) -> None:
        """Load records saved from a window (no eviction)."""
        for rec in records:
            self.stats.add_record(rec)
            self.events.append(rec)


# --------------------------------------------------------------------------- time windows

# Label delays of a time window are kept in the buckets of the label-delay sketch
# (DDSketch with 1% relative accuracy): key ``ceil(log(d) / log(gamma))`` for d >= 1 ms,
# and _ZERO_DELAY for 0. Delays below 2**63 ms have keys below 2200.
_DELAY_ACCURACY: Final = 0.01
_DELAY_GAMMA: Final = (1.0 + _DELAY_ACCURACY) / (1.0 - _DELAY_ACCURACY)
_DELAY_INV_LN_GAMMA: Final = 1.0 / math.log(_DELAY_GAMMA)
_ZERO_DELAY: Final = -1

K = TypeVar("K")


def _delay_key(d: int) -> int:
    """Sketch bucket of a delay in ms (>= 0); the same bucket as :class:`LabelDelayStats`."""
    if d < 1:
        return _ZERO_DELAY
    return math.ceil(math.log(d) * _DELAY_INV_LN_GAMMA)


def _merge_counts(into: dict[K, int], other: Mapping[K, int], sign: int) -> None:
    """``into += sign * other``, dropping keys whose count becomes 0."""
    for key, c in other.items():
        left = into.get(key, 0) + sign * c
        if left:
            into[key] = left
        else:
            del into[key]


def _pack_counts(counts: Mapping[int, int]) -> list[int]:
    """``{key: count}`` as ``[key0, count0, key1 - key0, count1, ...]`` in key order."""
    out: list[int] = []
    prev = 0
    for key in sorted(counts):
        out.append(key - prev)
        out.append(counts[key])
        prev = key
    return out


def _unpack_counts(data: object, lowest: int, highest: int, what: str) -> dict[int, int]:
    """Inverse of :func:`_pack_counts`: keys in ``[lowest, highest]``, counts > 0."""
    if not isinstance(data, list) or len(data) % 2:
        msg = f"bad {what} counts in metrics state: a list of {type(data).__name__}"
        raise StateError(msg)
    out: dict[int, int] = {}
    key = 0
    for j in range(0, len(data), 2):
        step, c = data[j], data[j + 1]
        for v in (step, c):
            if isinstance(v, bool) or not isinstance(v, int):
                msg = f"bad {what} counts in metrics state: {v!r}"
                raise StateError(msg)
        key += step
        if (j and step < 1) or not lowest <= key <= highest or c < 1:
            msg = f"bad {what} counts in metrics state at key {key!r}: {c!r}"
            raise StateError(msg)
        out[key] = c
    return out


def _keyed_auc(counts: Mapping[int, int]) -> float | None:
    """ROC AUC of a sparse logit histogram keyed ``2 * bin + is_positive`` (ties: same bin).

    Equal to :meth:`LogitHistogramAUC.value` of the same scores.
    """
    num2 = 0
    neg_below = 0  # negatives in bins up to and including the current one
    n_pos = 0
    for key in sorted(counts):
        c = counts[key]
        if key & 1:
            num2 += c * (2 * neg_below - counts.get(key - 1, 0))
            n_pos += c
        else:
            neg_below += c
    if n_pos == 0 or neg_below == 0:
        return None
    return num2 / (2 * n_pos * neg_below)


def _delay_summary(
    buckets: Mapping[int, int], count: int, total: int, lo: int, hi: int
) -> dict[str, Any]:
    """Like :meth:`LabelDelayStats.summary`, from sketch buckets and exact count/sum/min/max."""
    if count == 0:
        return {"count": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "max_ms": None}
    keys = sorted(buckets)
    quantiles: list[float] = []
    for q in (0.5, 0.95):
        rank = q * (count - 1)
        seen = 0
        key = keys[-1]
        for key in keys:
            seen += buckets[key]
            if seen > rank:
                break
        est = 0.0 if key == _ZERO_DELAY else 2.0 * _DELAY_GAMMA**key / (_DELAY_GAMMA + 1.0)
        quantiles.append(float(min(max(est, lo), hi)))
    return {
        "count": count,
        "median_ms": quantiles[0],
        "p95_ms": quantiles[1],
        "mean_ms": total / count,
        "max_ms": hi,
    }


class _Summary:
    """Mergeable counts of one pane of a time window, or of a whole window (sum of its panes).

    ``delay_lo`` and ``delay_hi`` are the exact min and max delay of a pane (not kept for a
    window's sum, which takes them from its panes).
    """

    __slots__ = ("delay_hi", "delay_lo", "delay_sum", "delays", "n")

    def __init__(self) -> None:
        self.n = 0
        self.delays: dict[int, int] = {}
        self.delay_sum = 0
        self.delay_lo = 0
        self.delay_hi = 0

    def _bound_delay(self, d: int) -> None:
        """Widen the pane's delay bounds to ``d`` (after counting it)."""
        if self.n == 1:
            self.delay_lo = self.delay_hi = d
        elif d > self.delay_hi:
            self.delay_hi = d
        elif d < self.delay_lo:
            self.delay_lo = d

    def _merge_delays(self, other: _Summary, sign: int) -> None:
        _merge_counts(self.delays, other.delays, sign)
        self.delay_sum += sign * other.delay_sum
        self.n += sign * other.n

    def _delay_state(self) -> dict[str, Any]:
        return {
            "delays": _pack_counts(self.delays),
            "delay_sum": self.delay_sum,
            "delay_min": self.delay_lo,
            "delay_max": self.delay_hi,
        }

    def _restore_delays(self, data: Mapping[str, Any], n: int) -> None:
        self.delays = _unpack_counts(data["delays"], _ZERO_DELAY, 2**31, "label delay")
        self.delay_sum = _nonneg_int(data["delay_sum"])
        self.delay_lo = _nonneg_int(data["delay_min"])
        self.delay_hi = _nonneg_int(data["delay_max"])
        self.n = n
        if (
            n < 1
            or sum(self.delays.values()) != n
            or self.delay_lo > self.delay_hi
            or not n * self.delay_lo <= self.delay_sum <= n * self.delay_hi
        ):
            msg = "pane state: label delays do not add up"
            raise StateError(msg)


class _ClsSummary(_Summary):
    """Confusion cells, exact log-loss sum, scored count, sparse logit histogram, delays."""

    __slots__ = ("auc", "cells", "loss", "scored")

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[Label, Label], int] = {}
        self.loss = ExactSum()
        self.scored = 0
        self.auc: dict[int, int] = {}  # 2 * histogram bin + is_positive -> count

    def merge(self, other: _ClsSummary, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) the counts of ``other``."""
        _merge_counts(self.cells, other.cells, sign)
        ln, le = other.loss.exact
        self.loss.add_parts(sign * ln, le)
        self.scored += sign * other.scored
        _merge_counts(self.auc, other.auc, sign)
        self._merge_delays(other, sign)

    def stats(self) -> ClassificationStats:
        """The counts as a :class:`ClassificationStats` (O(cells))."""
        out = ClassificationStats()
        for (yt, yp), c in self.cells.items():
            out.add_count(yt, yp, c)
        out._loss.add_parts(*self.loss.exact)
        out._n_loss = self.scored
        return out

    def to_state(self, index: Mapping[Label, int]) -> dict[str, Any]:
        """Plain data, labels as indices into the bundle's label list."""
        return {
            "confusion": [[index[t], index[p], c] for (t, p), c in self.cells.items()],
            "loss": self.loss.to_state(),
            "scored": self.scored,
            "roc_auc": _pack_counts(self.auc),
            **self._delay_state(),
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any], labels: Sequence[Label], bins: int) -> _ClsSummary:
        """Rebuild from :meth:`to_state` output."""
        out = cls()
        for row in data["confusion"]:
            ti, pi, c = row
            key = (_at(labels, ti), _at(labels, pi))
            if key in out.cells or isinstance(c, bool) or not isinstance(c, int) or c < 1:
                msg = f"bad confusion cell in pane state: {row!r}"
                raise StateError(msg)
            out.cells[key] = c
        out.loss = ExactSum.from_state(data["loss"])
        out.scored = _nonneg_int(data["scored"])
        out.auc = _unpack_counts(data["roc_auc"], 0, 2 * bins - 1, "ROC AUC")
        n = sum(out.cells.values())
        if not sum(out.auc.values()) <= out.scored <= n:
            msg = "pane state: scored counts do not add up"
            raise StateError(msg)
        out._restore_delays(data, n)
        return out


class _RegSummary(_Summary):
    """Exact regression sums and delays."""

    __slots__ = ("reg",)

    def __init__(self) -> None:
        super().__init__()
        self.reg = RegressionStats()

    def merge(self, other: _RegSummary, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) the counts of ``other``."""
        self.reg.merge(other.reg, sign)
        self._merge_delays(other, sign)

    def to_state(self) -> dict[str, Any]:
        """Plain data."""
        return {**self.reg.to_state(), **self._delay_state()}

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> _RegSummary:
        """Rebuild from :meth:`to_state` output."""
        out = cls()
        out.reg = RegressionStats.from_state(data)
        out._restore_delays(data, out.reg.count)
        return out


S = TypeVar("S", _ClsSummary, _RegSummary)


class _PaneWindow(Generic[S]):
    """A time window as panes (see :class:`WindowSpec`), with the running sum of its panes.

    Adding an event touches its pane and ``total``; a pane that leaves the window is
    subtracted from ``total`` (exactly: every count and sum is an integer), so a snapshot
    costs O(histogram bins), whatever the event rate.
    """

    __slots__ = ("_make", "_p", "_span", "panes", "spec", "top", "total")

    def __init__(self, spec: WindowSpec, make: type[S]) -> None:
        self.spec = spec
        self._make: type[S] = make
        self._p = spec.panes or 1
        self._span = spec.span_ms
        self.panes: dict[int, S] = {}
        self.top: int | None = None  # pane of the largest event time seen
        self.total: S = make()

    def slot(self, t: int) -> S | None:
        """The pane to count an event at ``t`` in (panes that leave are evicted first).

        None when that pane has already left the window. The caller (``push``) adds the
        event to the pane and to ``total``.
        """
        idx = t * self._p // self._span
        top = self.top
        if top is None or idx > top:
            self._advance(idx)
        elif idx <= top - self._p:
            return None
        pane = self.panes.get(idx)
        if pane is None:
            pane = self.panes[idx] = self._make()
        return pane

    def _advance(self, idx: int) -> None:
        old = self.top
        self.top = idx
        if old is None:
            return
        floor = idx - self._p  # panes <= floor leave; every live pane is > old - P
        panes = self.panes
        if floor >= old:
            panes.clear()
            self.total = self._make()
            return
        if floor - (old - self._p) < len(panes):
            gone = [i for i in range(old - self._p + 1, floor + 1) if i in panes]
        else:
            gone = [i for i in panes if i <= floor]
        for i in gone:
            self.total.merge(panes.pop(i), -1)

    def delay_summary(self) -> dict[str, Any]:
        """Label-delay summary of the window: exact count, mean and max, sketched quantiles."""
        total = self.total
        panes = self.panes.values()
        lo = min((p.delay_lo for p in panes), default=0)
        hi = max((p.delay_hi for p in panes), default=0)
        return _delay_summary(total.delays, total.n, total.delay_sum, lo, hi)

    def restore(self, panes: Iterable[tuple[int, S]], top: int | None) -> None:
        """Load panes saved from a window and rebuild ``total``."""
        for idx, pane in panes:
            if top is None or not top - self._p < idx <= top or idx in self.panes:
                msg = f"pane window state: pane {idx!r} repeated or not in the window (top {top!r})"
                raise StateError(msg)
            self.panes[idx] = pane
            self.total.merge(pane)
        self.top = top


class _ClsPaneWindow(_PaneWindow[_ClsSummary]):
    """A classification time window."""

    __slots__ = ()

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__(spec, _ClsSummary)

    def push(self, rec: _ClsRec, akey: int, dkey: int) -> None:
        """Count a record (``akey``: its histogram key, < 0 without a score; ``dkey``: its
        delay bucket) in its pane and the window's sum, unless its pane has left."""
        pane = self.slot(rec[0])
        if pane is None:
            return
        _, d, yt, yp, lm, le, loss, _, _ = rec
        key = (yt, yp)
        for summary in (pane, self.total):
            cells = summary.cells
            cells[key] = cells.get(key, 0) + 1
            if loss is not None:
                summary.loss.add_parts(lm, le)
                summary.scored += 1
                if akey >= 0:
                    auc = summary.auc
                    auc[akey] = auc.get(akey, 0) + 1
            delays = summary.delays
            delays[dkey] = delays.get(dkey, 0) + 1
            summary.delay_sum += d
            summary.n += 1
        pane._bound_delay(d)


class _RegPaneWindow(_PaneWindow[_RegSummary]):
    """A regression time window."""

    __slots__ = ()

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__(spec, _RegSummary)

    def push(self, rec: _RegRec, dkey: int) -> None:
        """Count a record (``dkey``: its delay bucket) in its pane and the window's sum,
        unless its pane has left."""
        pane = self.slot(rec[0])
        if pane is None:
            return
        d = rec[1]
        for summary in (pane, self.total):
            summary.reg.add_record(rec)
            delays = summary.delays
            delays[dkey] = delays.get(dkey, 0) + 1
            summary.delay_sum += d
            summary.n += 1
        pane._bound_delay(d)


# --------------------------------------------------------------------------- bundle


def _check_positive_label(value: object) -> Label | None:
    if value is None:
        return None
    try:
        return _check_label(value, "positive_label")
    except ContractError as exc:
        raise ConfigError(str(exc)) from exc


def _at(labels: Sequence[Label], i: object) -> Label:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(labels):
        msg = f"bad label index in metrics state: {i!r}"
        raise StateError(msg)
    return labels[i]


def _pane_index(data: Mapping[str, Any]) -> int:
    return _int_field(data["pane"], "pane index") or 0


def _int_field(value: object, what: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"bad {what} in metrics state: {value!r}"
        raise StateError(msg)
    return value


class MetricBundle:
    """Classification or regression metrics, cumulative and per window, plus label delays.

    Not thread-safe. Classification averaging is ``"binary"`` for ``positive_label`` when
    one is configured (one-vs-rest if more labels appear). Without one it is ``"binary"``
    when at most two labels were ever seen and one is 1 (or 1.0), "1" or "true" (any case),
    else ``"macro"``. Log loss uses ``score`` (P(positive)) when given, else
    ``probabilities`` (keyed by ``str(label)``; a missing label has probability 0); ROC
    AUC uses ``score`` only. Negative label delays (clock skew) count as 0. A bundle
    pickles as its :meth:`to_state` data.

    >>> b = MetricBundle("classification", [parse_window("count:2")])
    >>> for yt, yp, s in [(1, 1, 0.9), (0, 1, 0.6), (0, 0, 0.2)]:
    ...     b.update(yt, yp, score=s, event_time_ms=1000, label_delay_ms=50)
    >>> snap = b.snapshot()
    >>> snap["cumulative"]["precision"], snap["cumulative"]["roc_auc"]
    (0.5, 1.0)
    >>> snap["windows"]["last_2"]["confusion_matrix"]
    {'labels': [0, 1], 'matrix': [[1, 1], [0, 0]]}
    >>> w = MetricBundle("regression", [parse_window("time:10s/10")])  # panes of 1 s
    >>> for t in (500, 4_000, 10_000, 10_999):
    ...     w.update(1.0, 0.0, event_time_ms=t, label_delay_ms=0)
    >>> w.snapshot()["windows"]["10s/10"]["count"]  # panes 1..10 are in: t=500 has left
    3
    """

    def __init__(
        self,
        task: Task,
        windows: Sequence[WindowSpec] = (),
        positive_label: Label | None = None,
    ) -> None:
        if task not in ("classification", "regression"):
            msg = f"task must be 'classification' or 'regression', got {task!r}"
            raise ConfigError(msg)
        specs = list(windows)
        if not all(isinstance(s, WindowSpec) for s in specs):
            msg = "windows must be WindowSpec instances (see parse_window)"
            raise ConfigError(msg)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            msg = f"window names must be unique, repeated: {dup}"
            raise ConfigError(msg)
        if task == "regression" and positive_label is not None:
            msg = "positive_label applies to classification only"
            raise ConfigError(msg)
        self.task: Task = task
        self.window_specs: tuple[WindowSpec, ...] = tuple(specs)
        self.positive_label = _check_positive_label(positive_label)
        self._classification = task == "classification"
        self._count = 0
        self._first: int | None = None
        self._last: int | None = None
        self._delay = LabelDelayStats()
        # classification
        self._labels: dict[Label, Label] = {}  # canonical label objects, first-seen order
        self._is_pos: dict[Label, bool] = {}
        self._prob_keys: dict[Label, tuple[str, ...]] = {}
        self._cls = ClassificationStats()
        self._auc = LogitHistogramAUC()
        self._cls_windows: list[tuple[_Window[_ClsRec], ClassificationStats]] = []
        self._cls_panes: list[_ClsPaneWindow] = []
        # regression
        self._reg = RegressionStats()
        self._reg_windows: list[tuple[_Window[_RegRec], RegressionStats]] = []
        self._reg_panes: list[_RegPaneWindow] = []
        for spec in specs:
            if spec.kind == "time":
                if self._classification:
                    self._cls_panes.append(_ClsPaneWindow(spec))
                else:
                    self._reg_panes.append(_RegPaneWindow(spec))
            elif self._classification:
                cs = ClassificationStats()
                self._cls_windows.append((_Window(spec, cs), cs))
            else:
                rs = RegressionStats()
                self._reg_windows.append((_Window(spec, rs), rs))

    @property
    def count(self) -> int:
        """Number of events seen."""
        return self._count

    # ---------------------------------------------------------------- update

    def _label(self, value: Label, what: str) -> Label:
        try:
            return self._labels[value]
        except KeyError:
            pass
        except TypeError as exc:
            msg = f"{what} must be an int, float or str label, got {type(value).__name__}"
            raise ContractError(msg) from exc
        label = _check_label(value, what)
        self._labels[label] = label
        if self.positive_label is not None:
            self._is_pos[label] = label == self.positive_label
        else:
            self._is_pos[label] = _is_default_positive(label)
        keys = [str(label)]
        if isinstance(label, float) and label.is_integer():
            keys.append(str(int(label)))
        self._prob_keys[label] = tuple(keys)
        return label

    def update(
        self,
        y_true: Label,
        y_pred: Label,
        *,
        score: float | None = None,
        probabilities: Mapping[str, float] | None = None,
        event_time_ms: int,
        label_delay_ms: int,
    ) -> None:
        """Add one labeled event; raises ContractError for a malformed one (nothing counted)."""
        t = event_time_ms
        d = label_delay_ms
        if type(t) is not int or type(d) is not int:
            msg = f"event_time_ms and label_delay_ms must be ints, got {t!r}, {d!r}"
            raise ContractError(msg)
        if d < 0:
            d = 0
        if self._classification:
            rec = self._cls_record(y_true, y_pred, score, probabilities, t, d)
            self._cls.add_record(rec)
            akey = -1  # histogram key of the score: 2 * bin + is_positive
            if rec[7] is not None:
                i = self._auc.bin(rec[7])
                self._auc.add_bin(i, rec[8])
                akey = 2 * i + rec[8]
            for cw, _ in self._cls_windows:
                cw.push(rec)
            if self._cls_panes:
                dkey = _delay_key(d)
                for pw in self._cls_panes:
                    pw.push(rec, akey, dkey)
        else:
            rrec = _reg_record(t, d, _number(y_true), _number(y_pred))
            self._reg.add_record(rrec)
            for rw, _ in self._reg_windows:
                rw.push(rrec)
            if self._reg_panes:
                dkey = _delay_key(d)
                for qw in self._reg_panes:
                    qw.push(rrec, dkey)
        self._count += 1
        if self._first is None or t < self._first:
            self._first = t
        if self._last is None or t > self._last:
            self._last = t
        self._delay.add(d)

    def _cls_record(
        self,
        y_true: Label,
        y_pred: Label,
        score: float | None,
        probabilities: Mapping[str, float] | None,
        t: int,
        d: int,
    ) -> _ClsRec:
        known = len(self._labels)
        try:
            yt = self._label(y_true, "y_true")
            yp = self._label(y_pred, "y_pred")
            is_pos = self._is_pos[yt]
            if score is None and probabilities is None:
                return (t, d, yt, yp, 0, 0, None, None, is_pos)
            loss, score = self._loss(yt, is_pos, score, probabilities)
        except ContractError:
            self._forget_labels(known)  # a rejected event leaves no trace
            raise
        m, e = _split(loss)
        return (t, d, yt, yp, m, e, loss, score, is_pos)

    def _loss(
        self,
        yt: Label,
        is_pos: bool,
        score: float | None,
        probabilities: Mapping[str, float] | None,
    ) -> tuple[float, float | None]:
        """Log loss of one event, clipped like scikit-learn, and the score as a float."""
        try:
            if score is not None:
                if not 0.0 <= score <= 1.0:
                    msg = f"score must be a probability in [0, 1], got {score!r}"
                    raise ContractError(msg)
                score = float(score)
                p = score if is_pos else 1.0 - score
            else:
                got: float | None = None
                for key in self._prob_keys[yt]:
                    got = probabilities.get(key) if probabilities is not None else None
                    if got is not None:
                        break
                p = 0.0 if got is None else got
                if not 0.0 <= p <= 1.0:
                    msg = f"probabilities[{yt!r}] must be in [0, 1], got {p!r}"
                    raise ContractError(msg)
                p = float(p)
        except TypeError as exc:
            msg = f"score and probabilities must be numbers: {exc}"
            raise ContractError(msg) from exc
        if p < _EPS:
            p = _EPS
        elif p > _ONE_MINUS_EPS:
            p = _ONE_MINUS_EPS
        return -math.log(p), score

    def _forget_labels(self, keep: int) -> None:
        while len(self._labels) > keep:
            label = next(reversed(self._labels))
            del self._labels[label], self._is_pos[label], self._prob_keys[label]

    # ---------------------------------------------------------------- snapshot

    def averaging(self) -> tuple[str, Label | None]:
        """``("binary", positive label)`` or ``("macro", None)`` (see the class docstring)."""
        if self.positive_label is not None:
            return "binary", self.positive_label
        if len(self._labels) <= 2:
            pos = _default_positive(self._labels)
            if pos is not None:
                return "binary", pos
        return "macro", None

    def samples(self, window: str) -> int:
        """Events in ``window`` (``"cumulative"`` or a window name); 0 for an unknown name."""
        if window == "cumulative":
            return self._count
        for cw, _ in self._cls_windows:
            if cw.spec.name == window:
                return len(cw.events)
        for rw, _ in self._reg_windows:
            if rw.spec.name == window:
                return len(rw.events)
        for pw in self._cls_panes:
            if pw.spec.name == window:
                return pw.total.n
        for qw in self._reg_panes:
            if qw.spec.name == window:
                return qw.total.n
        return 0

    def value(self, window: str, metric: str) -> float | None:
        """One metric of one window, without building a whole snapshot.

        Cheap (O(labels²) or O(1)) for every metric but ``roc_auc`` over a count window,
        which sorts the window. ``label_delay_p95_ms`` is also accepted. None when undefined
        or unknown.

        >>> b = MetricBundle("classification", [parse_window("count:2")], positive_label=1)
        >>> for yt, yp in [(1, 1), (0, 1), (0, 0)]:
        ...     b.update(yt, yp, event_time_ms=0, label_delay_ms=5)
        >>> b.value("cumulative", "precision"), b.value("last_2", "accuracy")
        (0.5, 0.5)
        >>> b.samples("last_2"), b.value("nope", "accuracy")
        (2, None)
        """
        if metric == "label_delay_p95_ms":
            if window == "cumulative":
                return self._delay.quantile(0.95)
            snap = self._window_snapshot(window)
            return None if snap is None else snap["label_delay"].get("p95_ms")
        if window == "cumulative":
            if self._classification:
                if metric == "roc_auc":
                    return self._auc.value()
                averaging, pos = self.averaging()
                out = self._cls.metrics(averaging, pos).get(metric)
            else:
                out = self._reg.metrics().get(metric)
            return out if isinstance(out, int | float) else None
        if metric == "roc_auc" or not self._classification:
            snap = self._window_snapshot(window)
            out = None if snap is None else snap.get(metric)
            return out if isinstance(out, int | float) else None
        averaging, pos = self.averaging()
        for cw, cs in self._cls_windows:
            if cw.spec.name == window:
                out = cs.metrics(averaging, pos).get(metric)
                return out if isinstance(out, int | float) else None
        for pw in self._cls_panes:
            if pw.spec.name == window:
                out = pw.total.stats().metrics(averaging, pos).get(metric)
                return out if isinstance(out, int | float) else None
        return None

    def _window_snapshot(self, window: str) -> dict[str, Any] | None:
        """The snapshot of one window (the part of :meth:`snapshot` for it)."""
        if self._classification:
            averaging, pos = self.averaging()
            for cw, cs in self._cls_windows:
                if cw.spec.name == window:
                    out = cs.metrics(averaging, pos)
                    out["roc_auc"] = roc_auc_exact(
                        (r[7], r[8]) for r in cw.events if r[7] is not None
                    )
                    out["label_delay"] = _exact_delay_summary(r[1] for r in cw.events)
                    return out
            for pw in self._cls_panes:
                if pw.spec.name == window:
                    out = pw.total.stats().metrics(averaging, pos)
                    out["roc_auc"] = _keyed_auc(pw.total.auc)
                    out["label_delay"] = pw.delay_summary()
                    return out
            return None
        for rw, rs in self._reg_windows:
            if rw.spec.name == window:
                out = rs.metrics()
                out["label_delay"] = _exact_delay_summary(r[1] for r in rw.events)
                return out
        for qw in self._reg_panes:
            if qw.spec.name == window:
                out = qw.total.reg.metrics()
                out["label_delay"] = qw.delay_summary()
                return out
        return None

    def snapshot(self) -> dict[str, Any]:
        """JSON-able metrics; undefined values are None."""
        outs: dict[str, dict[str, Any]] = {}
        cumulative: dict[str, Any]
        if self._classification:
            averaging, pos = self.averaging()
            cumulative = self._cls.metrics(averaging, pos)
            cumulative["roc_auc"] = self._auc.value()
            for cw, cs in self._cls_windows:
                out = cs.metrics(averaging, pos)
                out["roc_auc"] = roc_auc_exact((r[7], r[8]) for r in cw.events if r[7] is not None)
                out["label_delay"] = _exact_delay_summary(r[1] for r in cw.events)
                outs[cw.spec.name] = out
            for pw in self._cls_panes:
                out = pw.total.stats().metrics(averaging, pos)
                out["roc_auc"] = _keyed_auc(pw.total.auc)
                out["label_delay"] = pw.delay_summary()
                outs[pw.spec.name] = out
        else:
            cumulative = self._reg.metrics()
            for rw, rs in self._reg_windows:
                out = rs.metrics()
                out["label_delay"] = _exact_delay_summary(r[1] for r in rw.events)
                outs[rw.spec.name] = out
            for qw in self._reg_panes:
                out = qw.total.reg.metrics()
                out["label_delay"] = qw.delay_summary()
                outs[qw.spec.name] = out
        windows = {spec.name: outs[spec.name] for spec in self.window_specs}
        return {
            "task": self.task,
            "count": self._count,
            "cumulative": cumulative,
            "windows": windows,
            "label_delay": self._delay.summary(),
            "first_event_time_ms": self._first,
            "last_event_time_ms": self._last,
        }

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """Plain JSON data; :meth:`from_state` restores an object that behaves identically."""
        labels = list(self._labels)
        index = {label: i for i, label in enumerate(labels)}
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "task": self.task,
            "positive_label": None if self.positive_label is None else _tag(self.positive_label),
            "windows": [s.to_dict() for s in self.window_specs],
            "count": self._count,
            "first_event_time_ms": self._first,
            "last_event_time_ms": self._last,
            "label_delay": self._delay.to_state(),
        }
        saved: dict[str, dict[str, Any]] = {}
        if self._classification:
            state["labels"] = [_tag(label) for label in labels]
            state["cumulative"] = {
                "confusion": [[index[t], index[p], c] for (t, p), c in self._cls._cells.items()],
                "loss": self._cls._loss.to_state(),
                "scored": self._cls._n_loss,
                "roc_auc": self._auc.to_state(),
            }
            for cw, _ in self._cls_windows:
                saved[cw.spec.name] = {
                    "events": [
                        [r[0], r[1], index[r[2]], index[r[3]], r[6], r[7]] for r in cw.events
                    ]
                }
            for pw in self._cls_panes:
                saved[pw.spec.name] = {
                    "top_pane": pw.top,
                    "panes": [{"pane": i, **pw.panes[i].to_state(index)} for i in sorted(pw.panes)],
                }
        else:
            state["cumulative"] = self._reg.to_state()
            for rw, _ in self._reg_windows:
                saved[rw.spec.name] = {"events": [[r[0], r[1], r[2], r[3]] for r in rw.events]}
            for qw in self._reg_panes:
                saved[qw.spec.name] = {
                    "top_pane": qw.top,
                    "panes": [{"pane": i, **qw.panes[i].to_state()} for i in sorted(qw.panes)],
                }
        state["window_state"] = [saved[spec.name] for spec in self.window_specs]
        return state

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as :meth:`to_state` data, unpickle through :meth:`from_state`."""
        return (type(self).from_state, (self.to_state(),))

    def __setstate__(self, state: object) -> None:
        """Only reached by a pickle of an older layout (this class pickles as its state)."""
        msg = "metrics bundle pickled with an older layout; rebuild it from its events"
        raise StateError(msg)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MetricBundle:
        """Restore from :meth:`to_state` output (after a JSON round trip); StateError if bad."""
        try:
            return cls._from_state(state)
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, ConfigError, ContractError) as exc:
            msg = f"metrics state cannot be restored: {exc!r}"
            raise StateError(msg) from exc

    @classmethod
    def _from_state(cls, state: Mapping[str, Any]) -> MetricBundle:
        if not isinstance(state, Mapping):
            msg = "metrics state must be an object"
            raise StateError(msg)
        if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
            msg = (
                f"unknown metrics state format {state.get('format')!r} "
                f"version {state.get('version')!r}"
            )
            raise StateError(msg)
        pos = state["positive_label"]
        specs = [WindowSpec.from_dict(w) for w in state["windows"]]
        out = cls(state["task"], specs, None if pos is None else _untag(pos))
        out._count = _int_field(state["count"], "count") or 0
        out._first = _int_field(state["first_event_time_ms"], "first time", allow_none=True)
        out._last = _int_field(state["last_event_time_ms"], "last time", allow_none=True)
        out._delay = LabelDelayStats.from_state(state["label_delay"])
        saved = state["window_state"]
        if not isinstance(saved, list) or len(saved) != len(specs):
            msg = "metrics state has window state that does not match its windows"
            raise StateError(msg)
        by_name = {spec.name: data for spec, data in zip(specs, saved, strict=True)}
        cum = state["cumulative"]
        if out._classification:
            labels = [out._label(_untag(v), "label") for v in state["labels"]]
            if len(set(labels)) != len(labels):
                msg = "metrics state lists a label twice"
                raise StateError(msg)
            cm = out._cls
            for ti, pi, c in cum["confusion"]:
                cm.add_count(_at(labels, ti), _at(labels, pi), c)
            out._cls._loss = ExactSum.from_state(cum["loss"])
            out._cls._n_loss = _int_field(cum["scored"], "scored count") or 0
            layout = out._auc.layout
            out._auc = LogitHistogramAUC.from_state(cum["roc_auc"])
            if out._auc.layout != layout:
                msg = f"metrics state has a ROC AUC histogram layout {out._auc.layout!r}"
                raise StateError(msg)
            for cw, _ in out._cls_windows:
                recs = [
                    out._restore_cls(_at(labels, ti), _at(labels, pi), t, d, loss, score)
                    for t, d, ti, pi, loss, score in by_name[cw.spec.name]["events"]
                ]
                cw.restore(recs)
            for pw in out._cls_panes:
                data = by_name[pw.spec.name]
                pw.restore(
                    (
                        (_pane_index(p), _ClsSummary.from_state(p, labels, layout[0]))
                        for p in data["panes"]
                    ),
                    _int_field(data["top_pane"], "top pane", allow_none=True),
                )
        else:
            out._reg = RegressionStats.from_state(cum)
            for rw, _ in out._reg_windows:
                rrecs = [
                    _reg_record(
                        _int_field(t, "time") or 0,
                        _int_field(d, "delay") or 0,
                        _number(y),
                        _number(yh),
                    )
                    for t, d, y, yh in by_name[rw.spec.name]["events"]
                ]
                rw.restore(rrecs)
            for qw in out._reg_panes:
                data = by_name[qw.spec.name]
                qw.restore(
                    ((_pane_index(p), _RegSummary.from_state(p)) for p in data["panes"]),
                    _int_field(data["top_pane"], "top pane", allow_none=True),
                )
        out._check_restored()
        return out

    def _check_restored(self) -> None:
        counted = self._cls.count if self._classification else self._reg.count
        if not self._count == counted == self._delay.count:
            msg = "metrics state counts disagree"
            raise StateError(msg)
        windows: list[tuple[WindowSpec, int]] = [
            *((w.spec, len(w.events)) for w, _ in self._cls_windows),
            *((w.spec, len(w.events)) for w, _ in self._reg_windows),
            *((p.spec, p.total.n) for p in self._cls_panes),
            *((p.spec, p.total.n) for p in self._reg_panes),
        ]
        for spec, n in windows:
            if n > self._count or (spec.kind == "count" and n > (spec.size or 0)):
                msg = f"metrics state holds too many events for window {spec.name!r}"
                raise StateError(msg)

    def _restore_cls(
        self, yt: Label, yp: Label, t: object, d: object, loss: object, score: object
    ) -> _ClsRec:
        ti = _int_field(t, "time") or 0
        di = _int_field(d, "delay") or 0
        is_pos = self._is_pos[yt]
        if loss is None:
            return (ti, di, yt, yp, 0, 0, None, None, is_pos)
        if not isinstance(loss, float) or not math.isfinite(loss) or loss < 0:
            msg = f"bad loss in metrics state: {loss!r}"
            raise StateError(msg)
        if score is not None and (not isinstance(score, float) or not 0.0 <= score <= 1.0):
            msg = f"bad score in metrics state: {score!r}"
            raise StateError(msg)
        m, e = _split(loss)
        return (ti, di, yt, yp, m, e, loss, score, is_pos)


def error_of(task: Task, y_true: Label, y_pred: Label) -> float:
    """Per-event error for drift detectors: 0/1 mismatch, or absolute error.

    >>> error_of("classification", 1, "1"), error_of("regression", 2.5, 1)
    (1.0, 1.5)
    """
    if task == "classification":
        return 0.0 if y_true == y_pred else 1.0
    if task == "regression":
        return abs(_number(y_true) - _number(y_pred))
    msg = f"task must be 'classification' or 'regression', got {task!r}"
    raise ConfigError(msg)
