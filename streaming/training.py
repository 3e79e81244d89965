"""Retraining: labeled examples to a table, a time-ordered model search, the promotion gate.

Pure logic; the trainer service reads the examples and writes the results. A retrain is

1. :func:`build_table`: the window's ``LabeledExample`` records as a feature frame, labels and
   event times, ordered by ``prediction_timestamp`` and cut to the most recent ``max_rows``;
2. :func:`fit_best`: the most recent ``holdout_fraction`` of the rows is held out (never
   shuffled), and each candidate family is searched with ``RandomizedSearchCV`` over
   time-ordered folds (``TimeSeriesSplit``) on the rest, until the time budget is spent;
3. :func:`evaluate` the best candidate and the champion on the same holdout, then
   :func:`gate`: promote only when the candidate beats the champion by more than the margin;
4. :func:`reference_profile` of the training data, stored with the version for drift checks.

Every candidate shares one preprocessing (:func:`make_pipeline`): numeric columns are
median-imputed (with missing-value indicators) and standardized, categorical ones are filled
with ``"__missing__"`` and one-hot encoded (rare and unseen values share one column). A fitted
pipeline takes a DataFrame with its training columns; :func:`frame_for` builds one from
feature maps (missing features become NaN, extra ones are ignored).

>>> examples = [
...     {"prediction_id": "b", "prediction_timestamp": 2_000, "label": 1,
...      "features": {"age": 41, "plan": "pro"}},
...     {"prediction_id": "a", "prediction_timestamp": 1_000, "label": 0,
...      "features": {"age": 23.5, "plan": None, "vip": True}},
... ]
>>> table = build_table(examples, max_rows=100)
>>> table.task, table.numeric, table.categorical
('classification', ['age', 'vip'], ['plan'])
>>> table.times.tolist(), table.y.tolist()
([1000, 2000], [0, 1])
>>> table.X["vip"].tolist()
[1.0, nan]
>>> (table.window_start_ms, table.window_end_ms)
(1000, 2001)
>>> features_frame([{"age": 30, "other": 1}], ["age", "plan"], categorical=["plan"])
    age plan
0  30.0  NaN
>>> d = gate({"accuracy": 0.91}, {"accuracy": 0.90}, task="classification",
...          primary_metric=None, margin=0.02)
>>> d.promote, d.reason
(False, 'candidate accuracy 0.9100 does not beat champion 0.9000 by more than 0.02')
>>> gate({"rmse": 1.2}, {"rmse": 1.5}, task="regression", primary_metric="rmse",
...      margin=0.1).promote
True
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]
from scipy.stats import loguniform, randint
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import RandomizedSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]

from streaming.datadrift import category_key, quantile_bins
from streaming.errors import ConfigError, ContractError, TrainingError
from streaming.estimation import fit_calibration

__all__ = [
    "CANDIDATE_KINDS",
    "CandidateReport",
    "GateDecision",
    "SearchResult",
    "TrainingConfig",
    "TrainingTable",
    "build_table",
    "categorical_columns",
    "evaluate",
    "feature_columns",
    "features_frame",
    "fit_best",
    "frame_for",
    "gate",
    "make_pipeline",
    "not_enough_data",
    "param_distributions",
    "reference_profile",
]

Task = Literal["classification", "regression"]

CANDIDATE_KINDS: Final = ("logistic_regression", "random_forest", "hist_gradient_boosting")
"""Estimator families a retrain can try (each has a classifier and a regressor twin)."""

MISSING_CATEGORY: Final = "__missing__"
"""Value a missing categorical feature is imputed with."""
OTHER_CATEGORY: Final = "__other__"
"""Bucket of the categories outside a profile's top ``k``."""

HIGHER_IS_BETTER: Final = frozenset({"accuracy", "f1", "roc_auc", "r2"})
LOWER_IS_BETTER: Final = frozenset({"log_loss", "mae", "rmse"})
TASK_METRICS: Final[dict[str, frozenset[str]]] = {
    "classification": frozenset({"accuracy", "f1", "log_loss", "roc_auc"}),
    "regression": frozenset({"mae", "rmse", "r2"}),
}
DEFAULT_PRIMARY_METRIC: Final[dict[str, str]] = {"classification": "accuracy", "regression": "rmse"}
CV_SCORING: Final[dict[str, str]] = {
    "classification": "accuracy",
    "regression": "neg_root_mean_squared_error",
}
"""Scorer of the search per task (higher is better for both)."""

PROFILE_QUANTILES: Final = (0.01, *(i / 20 for i in range(1, 20)), 0.99)
"""The 21 quantiles of a numeric profile: p01, p05, p10, ..., p95, p99."""
PROFILE_BINS: Final = 20
PROFILE_TOP_K: Final = 50
PROFILE_VERSION: Final = 1

_ONE_HOT_MIN_FREQUENCY: Final = 5
"""Categories seen fewer times than this in a fit share the "infrequent" column."""
_ONE_HOT_MAX_CATEGORIES: Final = 50
"""At most this many columns per categorical feature (the infrequent column included)."""


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingConfig:
    """The ``trainer_*`` settings a retrain uses; invalid values raise :class:`ConfigError`.

    >>> TrainingConfig(candidates=("random_forest", "svm"))
    Traceback (most recent call last):
    ...
    streaming.errors.ConfigError: trainer_candidates: unknown candidate 'svm'; known: \
logistic_regression, random_forest, hist_gradient_boosting
    """

    candidates: tuple[str, ...] = CANDIDATE_KINDS
    n_iter: int = 6
    time_budget_s: float = 120.0
    cv_folds: int = 3
    holdout_fraction: float = 0.2
    min_rows: int = 500
    max_rows: int = 50_000
    primary_metric: str | None = None
    """None: accuracy for classification, rmse for regression."""
    promotion_margin: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not self.candidates:
            _config_error("trainer_candidates", "needs at least one candidate")
        for name in self.candidates:
            if name not in CANDIDATE_KINDS:
                _config_error(
                    "trainer_candidates",
                    f"unknown candidate {name!r}; known: {', '.join(CANDIDATE_KINDS)}",
                )
        dupes = sorted({c for c in self.candidates if self.candidates.count(c) > 1})
        if dupes:
            _config_error("trainer_candidates", f"listed more than once: {', '.join(dupes)}")
        if self.n_iter < 1:
            _config_error("trainer_n_iter", f"must be >= 1, got {self.n_iter}")
        if not self.time_budget_s > 0:
            _config_error("trainer_time_budget_s", f"must be > 0, got {self.time_budget_s}")
        if self.cv_folds < 2:
            _config_error("trainer_cv_folds", f"must be >= 2, got {self.cv_folds}")
        if not 0 < self.holdout_fraction < 1:
            _config_error(
                "trainer_holdout_fraction", f"must be in (0, 1), got {self.holdout_fraction}"
            )
        if self.min_rows < 1:
            _config_error("trainer_min_rows", f"must be >= 1, got {self.min_rows}")
        if self.max_rows < 1:
            _config_error("trainer_max_rows", f"must be >= 1, got {self.max_rows}")
        if self.primary_metric is not None and self.primary_metric not in (
            HIGHER_IS_BETTER | LOWER_IS_BETTER
        ):
            known = ", ".join(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))
            _config_error(
                "trainer_primary_metric",
                f"unknown metric {self.primary_metric!r}; known: {known}",
            )
        if not self.promotion_margin >= 0:
            _config_error("trainer_promotion_margin", f"must be >= 0, got {self.promotion_margin}")

    @classmethod
    def from_settings(cls, settings: Any) -> TrainingConfig:
        """The config of a :class:`~streaming.settings.Settings` (its ``trainer_*`` fields)."""
        return cls(
            candidates=tuple(settings.trainer_candidates),
            n_iter=settings.trainer_n_iter,
            time_budget_s=settings.trainer_time_budget_s,
            cv_folds=settings.trainer_cv_folds,
            holdout_fraction=settings.trainer_holdout_fraction,
            min_rows=settings.trainer_min_rows,
            max_rows=settings.trainer_max_rows,
            primary_metric=settings.trainer_primary_metric,
            promotion_margin=settings.trainer_promotion_margin,
            seed=settings.trainer_seed,
        )

    def metric_for(self, task: Task) -> str:
        """The gate metric for ``task``; ConfigError when the configured one does not apply."""
        return primary_metric_for(task, self.primary_metric)


def _config_error(setting: str, problem: str) -> None:
    msg = f"{setting}: {problem}"
    raise ConfigError(msg)


def primary_metric_for(task: Task, primary_metric: str | None) -> str:
    """``primary_metric``, or the task's default, checked against the task's metrics."""
    metric = primary_metric or DEFAULT_PRIMARY_METRIC[task]
    if metric not in TASK_METRICS[task]:
        known = ", ".join(sorted(TASK_METRICS[task]))
        msg = f"trainer_primary_metric: {metric!r} is not a {task} metric; known: {known}"
        raise ConfigError(msg)
    return metric


# ---- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingTable:
    """Rows of a training window in event-time order: features ``X``, labels ``y``, times."""

    X: Any
    """pandas DataFrame, one column per feature (sorted by name); numeric columns are float64
    with NaN for missing, categorical ones are object dtype holding str or NaN."""
    y: np.ndarray[Any, Any]
    """Labels: int64 or str (object) for classification, float64 for regression."""
    times: np.ndarray[Any, Any]
    """``prediction_timestamp`` of each row, int64 milliseconds, non-decreasing."""
    numeric: list[str]
    categorical: list[str]
    task: Task
    dropped_rows: int = 0
    """Examples left out because their label was missing (None or NaN)."""

    def __len__(self) -> int:
        return len(self.y)

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.X.columns]

    @property
    def window_start_ms(self) -> int | None:
        """Earliest prediction time (inclusive); None for an empty table."""
        return int(self.times[0]) if len(self.times) else None

    @property
    def window_end_ms(self) -> int | None:
        """Latest prediction time + 1 (exclusive, like ``training_window_end``)."""
        return int(self.times[-1]) + 1 if len(self.times) else None

    def rows(self, start: int, stop: int | None = None) -> TrainingTable:
        """Rows ``start:stop`` (positions in time order) as a table of their own."""
        return TrainingTable(
            X=self.X.iloc[start:stop].reset_index(drop=True),
            y=self.y[start:stop],
            times=self.times[start:stop],
            numeric=list(self.numeric),
            categorical=list(self.categorical),
            task=self.task,
        )

    def split(self, holdout_fraction: float) -> tuple[TrainingTable, TrainingTable]:
        """``(train, holdout)``: the holdout is the most recent ``holdout_fraction`` of rows.

        Both parts get at least one row (a table of fewer than 2 rows cannot be split).
        """
        n = len(self)
        if n < 2:
            msg = f"cannot hold out rows from a table of {n} row(s)"
            raise TrainingError(msg)
        n_holdout = min(n - 1, max(1, round(n * holdout_fraction)))
        cut = n - n_holdout
        return self.rows(0, cut), self.rows(cut)


def _is_number(value: object) -> bool:
    """int, float, bool and their numpy twins."""
    return isinstance(value, numbers.Real | np.bool_)


def _is_missing(value: object) -> bool:
    """None, pandas' NA, NaN or an infinite float."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return not math.isfinite(value)
    return False


def _column_kind(values: Iterable[object]) -> Literal["numeric", "categorical"]:
    """Categorical when any present value is not a number (str, or a mix), else numeric."""
    for v in values:
        if not _is_missing(v) and not _is_number(v):
            return "categorical"
    return "numeric"


def _numeric_values(values: Iterable[object]) -> np.ndarray[Any, Any]:
    out = []
    for v in values:
        if _is_missing(v):
            out.append(math.nan)
        else:
            try:
                out.append(float(v))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def _categorical_values(values: Iterable[object]) -> Any:
    # explicit object dtype: pandas 3 would otherwise infer its own string dtype
    return pd.Series(
        [math.nan if _is_missing(v) else str(v) for v in values],
        dtype=object,
    )


def _labels(raw: list[object], task: Task | None) -> tuple[np.ndarray[Any, Any], Task]:
    has_str = any(isinstance(v, str) for v in raw)
    has_float = any(_is_number(v) and not isinstance(v, numbers.Integral | np.bool_) for v in raw)
    if task is None:
        task = "classification" if has_str or not has_float else "regression"
    if task == "regression":
        if has_str:
            msg = "regression needs numeric labels, got strings"
            raise TrainingError(msg)
        return np.asarray([float(v) for v in raw], dtype=np.float64), task  # type: ignore[arg-type]
    if has_str:
        return np.asarray([str(v) for v in raw], dtype=object), task
    ints = []
    for v in raw:
        f = float(v)  # type: ignore[arg-type]
        if not f.is_integer():
            msg = f"classification labels must be integers or strings, got {v!r}"
            raise TrainingError(msg)
        ints.append(int(f))
    return np.asarray(ints, dtype=np.int64), task


def build_table(
    examples: Sequence[Mapping[str, Any]], *, max_rows: int, task: Task | None = None
) -> TrainingTable:
    """The training table of a window of ``LabeledExample`` records.

    Rows are ordered by ``prediction_timestamp`` (ties by ``prediction_id``) and only the
    most recent ``max_rows`` are kept. Examples without a label (None or NaN) are dropped.
    Columns are the union of the kept rows' feature names, sorted; a feature is numeric when
    every present value is a number (bools become 0.0/1.0), else categorical (values as str).
    A missing feature, None, NaN or an infinite float is a missing value. ``task`` is
    inferred when None: a float label means regression, int or str labels classification.
    """
    if max_rows < 1:
        _config_error("max_rows", f"must be >= 1, got {max_rows}")
    keyed = []
    dropped = 0
    for ex in examples:
        label = ex.get("label")
        if _is_missing(label):
            dropped += 1
            continue
        try:
            ts = int(ex["prediction_timestamp"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"example {ex.get('prediction_id')!r} has no valid prediction_timestamp"
            raise ContractError(msg) from exc
        keyed.append((ts, str(ex.get("prediction_id", "")), ex))
    keyed.sort(key=lambda item: (item[0], item[1]))
    keyed = keyed[-max_rows:]
    feature_maps: list[Mapping[str, Any]] = [item[2].get("features") or {} for item in keyed]
    names = sorted({str(k) for f in feature_maps for k in f})
    frame, numeric, categorical = _build_frame(feature_maps, names, None)
    y, task = _labels([item[2]["label"] for item in keyed], task)
    times = np.asarray([item[0] for item in keyed], dtype=np.int64)
    return TrainingTable(
        X=frame,
        y=y,
        times=times,
        numeric=numeric,
        categorical=categorical,
        task=task,
        dropped_rows=dropped,
    )


def _build_frame(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], categorical: Iterable[str] | None
) -> tuple[Any, list[str], list[str]]:
    forced = None if categorical is None else set(categorical)
    data: dict[str, Any] = {}
    numeric: list[str] = []
    cats: list[str] = []
    for name in columns:
        values = [row.get(name) for row in rows]
        is_cat = (_column_kind(values) == "categorical") if forced is None else name in forced
        if is_cat:
            data[name] = _categorical_values(values)
            cats.append(name)
        else:
            data[name] = pd.Series(_numeric_values(values), dtype=np.float64)
            numeric.append(name)
    frame = pd.DataFrame(data, columns=list(columns), index=pd.RangeIndex(len(rows)))
    return frame, numeric, cats


def features_frame(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    categorical: Iterable[str] | None = None,
) -> Any:
    """A DataFrame of feature maps with exactly ``columns``, in that order.

    Missing features are NaN and keys outside ``columns`` are ignored. Columns named in
    ``categorical`` hold str (or NaN), the others float64. With ``categorical=None`` each
    column's kind is inferred from its values like :func:`build_table` does; pass the fitted
    pipeline's kinds (:func:`frame_for` does) so a batch that happens to miss a categorical
    feature, or holds only digits in it, is still encoded as in training.
    """
    frame, _, _ = _build_frame(rows, list(columns), categorical)
    return frame


def frame_for(pipeline: Any, rows: Sequence[Mapping[str, Any]]) -> Any:
    """The input frame of a fitted pipeline for feature maps (its columns and kinds)."""
    return features_frame(
        rows, feature_columns(pipeline), categorical=categorical_columns(pipeline)
    )


def feature_columns(pipeline: Any) -> list[str]:
    """The columns (in order) a fitted estimator was trained on."""
    names = getattr(pipeline, "feature_names_in_", None)
    if names is None:
        msg = f"{type(pipeline).__name__} has no feature_names_in_ (not fitted on a DataFrame?)"
        raise TrainingError(msg)
    return [str(n) for n in names]


def categorical_columns(pipeline: Any) -> list[str]:
    """The columns a pipeline of :func:`make_pipeline` encodes as categories ([] otherwise)."""
    steps = getattr(pipeline, "named_steps", None)
    prep = steps.get("prep") if steps is not None else None
    for name, _, cols in getattr(prep, "transformers_", None) or []:
        if name == "cat":
            return [str(c) for c in cols]
    return []


def _align(estimator: Any, X: Any) -> Any:  # noqa: N803
    """``X`` reshaped to what a fitted estimator expects: its columns, in order, its kinds."""
    try:
        columns = feature_columns(estimator)
    except TrainingError:
        return X
    cats = set(categorical_columns(estimator))
    n = len(X)
    data: dict[str, Any] = {}
    for name in columns:
        present = name in X.columns
        if name in cats:
            values = X[name].tolist() if present else [None] * n
            data[name] = _categorical_values(values)
        elif present:
            col = pd.to_numeric(X[name], errors="coerce").astype(np.float64)
            data[name] = pd.Series(col.to_numpy(), dtype=np.float64).replace(
                [np.inf, -np.inf], np.nan
            )
        else:
            data[name] = pd.Series(np.full(n, np.nan), dtype=np.float64)
    return pd.DataFrame(data, columns=columns, index=pd.RangeIndex(n))


# ---- pipelines -------------------------------------------------------------------------------


def _estimator(kind: str, task: Task, seed: int) -> Any:
    classify = task == "classification"
    if kind == "logistic_regression":
        return LogisticRegression(max_iter=1000, random_state=seed) if classify else Ridge()
    if kind == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(n_estimators=100, random_state=seed, n_jobs=1)
    if kind == "hist_gradient_boosting":
        hgb = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return hgb(random_state=seed)
    msg = f"unknown candidate {kind!r}; known: {', '.join(CANDIDATE_KINDS)}"
    raise ConfigError(msg)


def _check_task(task: str) -> Task:
    if task not in ("classification", "regression"):
        msg = f"task must be classification or regression, got {task!r}"
        raise ConfigError(msg)
    return "classification" if task == "classification" else "regression"


def make_pipeline(
    kind: str, task: Task, numeric: Sequence[str], categorical: Sequence[str], seed: int
) -> Pipeline:
    """The shared preprocessing (step ``prep``) followed by a ``kind`` estimator (``model``).

    The output is always dense (HistGradientBoosting does not take sparse input); one-hot
    columns are bounded by ``min_frequency`` / ``max_categories``, and categories unseen in
    training go to the infrequent column (all zeros when there is none).
    """
    task = _check_task(task)
    model = _estimator(kind, task, seed)
    num = Pipeline(
        [
            (
                "impute",
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ),
            ("scale", StandardScaler()),
        ]
    )
    cat = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            (
                "onehot",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    min_frequency=_ONE_HOT_MIN_FREQUENCY,
                    max_categories=_ONE_HOT_MAX_CATEGORIES,
                    sparse_output=False,
                ),
            ),
        ]
    )
    prep = ColumnTransformer(
        [("num", num, list(numeric)), ("cat", cat, list(categorical))],
        remainder="drop",
        sparse_threshold=0.0,
    )
    return Pipeline([("prep", prep), ("model", model)])


def param_distributions(kind: str, task: Task) -> dict[str, Any]:
    """The randomized-search space of a candidate family (keys address the ``model`` step)."""
    task = _check_task(task)
    if kind == "logistic_regression":
        if task == "classification":
            return {"model__C": loguniform(1e-3, 1e2)}
        return {"model__alpha": loguniform(1e-3, 1e3)}
    if kind == "random_forest":
        # bounded depth, feature and row subsampling: a fit on 20k rows stays near a second
        return {
            "model__n_estimators": randint(50, 151),
            "model__max_depth": [8, 12, 16],
            "model__min_samples_leaf": randint(1, 11),
            "model__max_features": ["sqrt", 0.3],
            "model__max_samples": [0.3, 0.6],
        }
    if kind == "hist_gradient_boosting":
        return {
            "model__learning_rate": loguniform(0.02, 0.3),
            "model__max_iter": randint(50, 201),
            "model__max_leaf_nodes": randint(8, 64),
            "model__min_samples_leaf": randint(5, 60),
            "model__l2_regularization": loguniform(1e-4, 1.0),
        }
    msg = f"unknown candidate {kind!r}; known: {', '.join(CANDIDATE_KINDS)}"
    raise ConfigError(msg)


# ---- search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateReport:
    """How one candidate family fared in a search."""

    kind: str
    status: Literal["ok", "failed", "skipped"]
    cv_score: float | None = None
    """Mean CV score of the best draw over its folds that did not fail (accuracy, or
    negative RMSE); None unless ok."""
    seconds: float = 0.0
    n_iter: int = 0
    """Draws evaluated (0 when skipped)."""
    failed_fits: int = 0
    """Fold fits that raised (scored NaN), e.g. a fold whose training part has one class."""
    fold_scores: tuple[float | None, ...] = ()
    """Test score of the best draw on each fold (None where its fit failed)."""
    params: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    """Why the candidate was skipped or failed."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "cv_score": self.cv_score,
            "seconds": round(self.seconds, 3),
            "n_iter": self.n_iter,
            "failed_fits": self.failed_fits,
            "fold_scores": list(self.fold_scores),
            "params": dict(self.params),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SearchResult:
    """The best candidate of a retrain, fitted on the training part of the table."""

    estimator: Any
    """Fitted :class:`~sklearn.pipeline.Pipeline` (input: a DataFrame of the columns)."""
    kind: str
    params: dict[str, str]
    """Best hyper-parameters of the ``model`` step, values as strings."""
    cv_score: float
    cv_metric: str
    """Scorer of :attr:`cv_score`: ``accuracy`` or ``neg_root_mean_squared_error``."""
    task: Task
    candidates: list[CandidateReport]
    train: TrainingTable
    holdout: TrainingTable
    seconds: float

    @property
    def train_rows(self) -> int:
        return len(self.train)

    @property
    def holdout_rows(self) -> int:
        return len(self.holdout)

    @property
    def window_start_ms(self) -> int | None:
        """First prediction time the estimator was trained on (inclusive)."""
        return self.train.window_start_ms

    @property
    def window_end_ms(self) -> int | None:
        """Last prediction time the estimator was trained on + 1 (exclusive)."""
        return self.train.window_end_ms

    @property
    def estimator_name(self) -> str:
        """Class name of the final estimator (``ModelVersionEvent.estimator``)."""
        model = self.estimator.steps[-1][1]
        return type(model).__name__


def _param_str(value: object) -> str:
    item = getattr(value, "item", None)  # numpy scalars -> Python ones
    if callable(item):
        value = item()
    return str(value)


def fit_best(
    table: TrainingTable, config: TrainingConfig, *, deadline_s: float | None = None
) -> SearchResult:
    """Search every candidate family on the training part and return the best, refitted.

    The holdout (most recent ``config.holdout_fraction`` of the rows) is never seen by the
    search. ``deadline_s`` is a :func:`time.monotonic` instant (default: now +
    ``config.time_budget_s``); once it has passed, the remaining candidates are skipped. The
    first candidate always runs, and a running search is not interrupted. A fold whose fit
    raises (e.g. a time-ordered fold with a single class) is left out of that draw's mean
    score and counted in ``failed_fits``; a candidate with no draw scored on any fold, or
    whose refit raises, is reported as failed. Candidates are compared on the folds all of
    them could score (each one's best draw). Raises :class:`TrainingError`
    when the table is too small, has no features or a single class, or no candidate succeeds.
    """
    started = time.monotonic()
    deadline = started + config.time_budget_s if deadline_s is None else deadline_s
    task = table.task
    if not table.columns:
        msg = "the table has no feature columns"
        raise TrainingError(msg)
    train, holdout = table.split(config.holdout_fraction)
    if len(train) <= config.cv_folds:
        msg = f"{len(train)} training rows are too few for {config.cv_folds} time-ordered folds"
        raise TrainingError(msg)
    if task == "classification" and len(set(train.y.tolist())) < 2:
        msg = "the training rows hold a single class"
        raise TrainingError(msg)
    scoring = CV_SCORING[task]
    reports: list[CandidateReport] = []
    fitted: dict[str, Any] = {}
    for position, kind in enumerate(config.candidates):
        now = time.monotonic()
        if position > 0 and now >= deadline:
            reports.append(
                CandidateReport(
                    kind=kind,
                    status="skipped",
                    reason=(
                        f"time budget spent: {now - started:.1f}s elapsed of "
                        f"{deadline - started:.1f}s"
                    ),
                )
            )
            continue
        report, estimator = _search_one(kind, train, config, scoring)
        reports.append(report)
        if report.status == "ok":
            fitted[kind] = estimator
    winner = _pick(reports)
    if winner is None:
        reasons = "; ".join(f"{r.kind}: {r.reason}" for r in reports)
        msg = f"no candidate could be fitted ({reasons})"
        raise TrainingError(msg)
    return SearchResult(
        estimator=fitted[winner.kind],
        kind=winner.kind,
        params=dict(winner.params),
        cv_score=float(winner.cv_score or 0.0),
        cv_metric=scoring,
        task=task,
        candidates=reports,
        train=train,
        holdout=holdout,
        seconds=time.monotonic() - started,
    )


class _AllDrawsFailedError(Exception):
    """Raised by the refit callable when no draw has a finite score (no refit is wasted)."""


def _draw_scores(cv_results: Mapping[str, Any], folds: int) -> list[float]:
    """Per draw: the mean test score over the folds that did not fail (NaN if all failed)."""
    splits = np.asarray(
        [np.asarray(cv_results[f"split{i}_test_score"], dtype=float) for i in range(folds)]
    )
    scores = []
    for column in splits.T:
        ok = column[np.isfinite(column)]
        scores.append(float(ok.mean()) if len(ok) else math.nan)
    return scores


class _BestDraw:
    """``refit`` callable: the draw with the best mean over its successful folds.

    sklearn's own choice averages every fold, so one fold that cannot be fitted by any
    draw (e.g. a first time-ordered fold with a single class) would sink the whole family.
    Ties go to the earliest draw. Keeps the results it saw (sklearn sets ``cv_results_``
    only after the refit).
    """

    def __init__(self, folds: int) -> None:
        self.folds = folds
        self.results: Mapping[str, Any] | None = None

    def __call__(self, cv_results: Mapping[str, Any]) -> int:
        self.results = cv_results
        scores = _draw_scores(cv_results, self.folds)
        finite = [(score, -i) for i, score in enumerate(scores) if math.isfinite(score)]
        if not finite:
            raise _AllDrawsFailedError
        return -max(finite)[1]


def _pick(reports: Sequence[CandidateReport]) -> CandidateReport | None:
    """The best ok candidate, compared on the folds every ok candidate scored.

    Falls back to each candidate's own mean when no fold is common to all. Ties go to the
    earlier candidate.
    """
    ok = [r for r in reports if r.status == "ok" and r.cv_score is not None]
    if not ok:
        return None
    n_folds = min(len(r.fold_scores) for r in ok)
    common = [i for i in range(n_folds) if all(r.fold_scores[i] is not None for r in ok)]

    def key(item: tuple[int, CandidateReport]) -> tuple[float, int]:
        position, report = item
        if common:
            score = sum(float(report.fold_scores[i] or 0.0) for i in common) / len(common)
        else:
            score = float(report.cv_score or 0.0)
        return score, -position

    return max(enumerate(ok), key=key)[1]


def _search_one(
    kind: str, train: TrainingTable, config: TrainingConfig, scoring: str
) -> tuple[CandidateReport, Any]:
    started = time.monotonic()
    folds = config.cv_folds
    chooser = _BestDraw(folds)
    search = RandomizedSearchCV(
        make_pipeline(kind, train.task, train.numeric, train.categorical, config.seed),
        param_distributions(kind, train.task),
        n_iter=config.n_iter,
        scoring=scoring,
        cv=TimeSeriesSplit(n_splits=folds),
        random_state=config.seed,
        n_jobs=1,
        refit=chooser,
        error_score=np.nan,
    )
    # one thread: n_jobs=1 alone leaves HistGradientBoosting's OpenMP on every core, which
    # is many times slower on a busy machine; failed folds are counted below, and convergence
    # chatter is not actionable here
    failure: str | None = None
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            search.fit(train.X, train.y)
        except _AllDrawsFailedError:
            failure = "every draw failed on every fold"
        except (ValueError, ArithmeticError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
    results = chooser.results
    seconds = time.monotonic() - started
    failed = n_draws = 0
    splits: list[np.ndarray[Any, Any]] = []
    if results is not None:
        splits = [np.asarray(results[f"split{i}_test_score"], dtype=float) for i in range(folds)]
        failed = int(sum(np.isnan(split).sum() for split in splits))
        n_draws = len(results["params"])
    if failure is not None or results is None:
        report = CandidateReport(
            kind=kind,
            status="failed",
            seconds=seconds,
            n_iter=n_draws,
            failed_fits=failed,
            reason=failure,
        )
        return report, None
    best = search.best_index_
    score = _draw_scores(results, folds)[best]
    fold_scores = tuple(
        float(split[best]) if math.isfinite(split[best]) else None for split in splits
    )
    params = {
        k.removeprefix("model__"): _param_str(v) for k, v in sorted(search.best_params_.items())
    }
    report = CandidateReport(
        kind=kind,
        status="ok",
        cv_score=score,
        seconds=seconds,
        n_iter=n_draws,
        failed_fits=failed,
        fold_scores=fold_scores,
        params=params,
    )
    return report, search.best_estimator_


# ---- evaluation and gate ---------------------------------------------------------------------


def evaluate(
    estimator: Any,
    X: Any,  # noqa: N803
    y: Any,
    task: Task,
    *,
    positive_label: object = None,
) -> dict[str, float]:
    """Held-out metrics of a fitted estimator; undefined ones (e.g. AUC of one class) left out.

    Classification: ``accuracy``, ``f1`` (binary for two classes when ``positive_label`` or
    1 is one of them, else macro), and for a binary estimator with ``predict_proba``:
    ``log_loss`` and ``roc_auc``. Regression: ``mae``, ``rmse``, ``r2``. ``X`` is first
    reshaped to the estimator's own columns and kinds (missing columns become NaN), so a
    champion trained on other features is still scored. Raises :class:`TrainingError` when
    the estimator cannot predict at all.
    """
    task = _check_task(task)
    y_true = np.asarray(y)
    if len(y_true) == 0:
        msg = "cannot evaluate on zero rows"
        raise TrainingError(msg)
    frame = _align(estimator, X)
    try:
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y_pred = np.asarray(estimator.predict(frame))
    except Exception as exc:
        msg = f"{type(estimator).__name__} cannot predict the evaluation rows: {exc}"
        raise TrainingError(msg) from exc
    out: dict[str, float] = {}
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "regression":
            yt, yp = y_true.astype(np.float64), y_pred.astype(np.float64)
            out["mae"] = float(mean_absolute_error(yt, yp))
            out["rmse"] = float(root_mean_squared_error(yt, yp))
            if len(yt) >= 2:
                out["r2"] = float(r2_score(yt, yp))
        else:
            out.update(_classification_metrics(estimator, frame, y_true, y_pred, positive_label))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _classification_metrics(
    estimator: Any, frame: Any, y_true: Any, y_pred: Any, positive_label: object
) -> dict[str, float]:
    out: dict[str, float] = {}
    same = [a == b for a, b in zip(y_true.tolist(), y_pred.tolist(), strict=True)]
    out["accuracy"] = float(np.mean(same))
    classes = getattr(estimator, "classes_", None)
    class_list = list(classes.tolist()) if classes is not None else []
    labels = set(y_true.tolist()) | set(y_pred.tolist()) | set(class_list)
    pos = _positive(labels, positive_label)
    try:
        if len(labels) == 2 and pos is not None:
            out["f1"] = float(
                f1_score(y_true, y_pred, average="binary", pos_label=pos, zero_division=0.0)
            )
        else:
            out["f1"] = float(f1_score(y_true, y_pred, average="macro", zero_division=0.0))
    except (ValueError, TypeError):
        pass  # e.g. labels of different types in truth and prediction
    if len(class_list) == 2 and hasattr(estimator, "predict_proba"):
        try:
            proba = np.asarray(estimator.predict_proba(frame))
        except Exception:  # a champion that predicts but cannot give probabilities
            return out
        if set(y_true.tolist()) <= set(class_list):
            out["log_loss"] = float(log_loss(y_true, proba, labels=class_list))
            pos_p = _positive(set(class_list), positive_label)
            idx = class_list.index(pos_p) if pos_p is not None else 1
            hits = np.asarray([v == class_list[idx] for v in y_true.tolist()])
            if 0 < hits.sum() < len(hits):
                out["roc_auc"] = float(roc_auc_score(hits, proba[:, idx]))
    return out


def _positive(labels: set[Any], positive_label: object) -> object:
    if positive_label is not None and positive_label in labels:
        return positive_label
    if 1 in labels and not any(isinstance(v, str) for v in labels):
        return 1
    return None


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate replaces the champion, and why."""

    promote: bool
    reason: str
    primary_metric: str | None
    candidate_score: float | None
    champion_score: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "primary_metric": self.primary_metric,
            "candidate_score": self.candidate_score,
            "champion_score": self.champion_score,
        }


def gate(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    *,
    task: Task,
    primary_metric: str | None,
    margin: float,
) -> GateDecision:
    """Promote when there is no champion, or the candidate beats it by more than ``margin``.

    accuracy, f1, roc_auc and r2 are higher-is-better; log_loss, mae and rmse lower-is-better.
    Both sets of metrics must come from the same holdout. A candidate without the primary
    metric is rejected; a champion without it (e.g. no ``predict_proba`` when gating on
    log_loss) cannot be compared and the candidate is promoted, saying so.
    """
    metric = primary_metric_for(_check_task(task), primary_metric)
    cand = candidate_metrics.get(metric)
    if cand is None or not math.isfinite(cand):
        return GateDecision(False, f"candidate has no {metric}", metric, None, None)
    if champion_metrics is None:
        return GateDecision(True, f"no champion; candidate {metric} {cand:.4f}", metric, cand, None)
    champ = champion_metrics.get(metric)
    if champ is None or not math.isfinite(champ):
        reason = f"champion has no {metric} on this holdout; candidate {metric} {cand:.4f}"
        return GateDecision(True, reason, metric, cand, None)
    gain = cand - champ if metric in HIGHER_IS_BETTER else champ - cand
    if gain > margin:
        reason = (
            f"candidate {metric} {cand:.4f} beats champion {champ:.4f} "
            f"by {gain:.4f} > margin {margin:g}"
        )
        return GateDecision(True, reason, metric, cand, champ)
    reason = (
        f"candidate {metric} {cand:.4f} does not beat champion {champ:.4f} by more than {margin:g}"
    )
    return GateDecision(False, reason, metric, cand, champ)


def not_enough_data(rows: int, min_rows: int) -> GateDecision:
    """The rejection of a retrain whose window has fewer than ``min_rows`` labeled rows.

    >>> not_enough_data(120, 500).reason
    'not enough labeled rows: 120 < trainer_min_rows 500'
    """
    reason = f"not enough labeled rows: {rows} < trainer_min_rows {min_rows}"
    return GateDecision(False, reason, None, None, None)


# ---- reference profile -----------------------------------------------------------------------


def _num(value: Any) -> float | None:
    f = float(value)
    return f if math.isfinite(f) else None


def _numeric_profile(values: Any, rows: int) -> dict[str, Any]:
    arr = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)
    present = arr[np.isfinite(arr)]
    count = len(present)
    profile: dict[str, Any] = {
        "kind": "numeric",
        "count": count,
        "missing_rate": (rows - count) / rows if rows else None,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "quantiles": None,
        "histogram": None,
    }
    if count == 0:
        return profile
    qs = np.quantile(present, PROFILE_QUANTILES)
    counts, edges = np.histogram(present, bins=PROFILE_BINS)
    profile["bins"] = quantile_bins(present.tolist())
    profile.update(
        mean=_num(present.mean()),
        std=_num(present.std()),
        min=_num(present.min()),
        max=_num(present.max()),
        quantiles={
            f"p{round(q * 100):02d}": _num(v) for q, v in zip(PROFILE_QUANTILES, qs, strict=True)
        },
        histogram={"edges": [_num(e) for e in edges], "counts": [int(c) for c in counts]},
    )
    return profile


def _categorical_profile(values: Iterable[object], rows: int) -> dict[str, Any]:
    present = [category_key(v) for v in values if not _is_missing(v) and not _is_nan(v)]
    counts = Counter(present)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = dict(ranked[:PROFILE_TOP_K])
    rest = sum(c for _, c in ranked[PROFILE_TOP_K:])
    if rest:
        top[OTHER_CATEGORY] = top.get(OTHER_CATEGORY, 0) + rest
    return {
        "kind": "categorical",
        "count": len(present),
        "missing_rate": (rows - len(present)) / rows if rows else None,
        "distinct": len(counts),
        "frequencies": top,
    }


def _is_nan(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_numeric_dtype(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    return isinstance(dtype, np.dtype) and dtype.kind in "biuf"


def _series_profile(values: Any, rows: int) -> dict[str, Any]:
    if _is_numeric_dtype(values):
        return _numeric_profile(values, rows)
    return _categorical_profile(list(values), rows)


def reference_profile(
    X: Any,  # noqa: N803
    y: Any,
    predictions: Any = None,
    *,
    categorical: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Per-feature summaries of training data, JSON-able (no NaN: undefined values are None).

    Numeric features (numeric dtype, unless named in ``categorical``): ``count`` of present
    values, ``missing_rate``, ``mean``, ``std`` (population), ``min``, ``max``, 21
    ``quantiles`` (``p01``, ``p05``, ..., ``p95``, ``p99``), a 20-bin equal-width
    ``histogram`` (``edges``, ``counts``) and up to 20 quantile ``bins`` with exact counts
    (``edges``: inner edges, ``counts``: one more; the bins of data-drift tests).
    Categorical features: ``count``, ``missing_rate``,
    ``distinct`` and ``frequencies``, the counts of the 50 most frequent values (ties by
    value) plus ``"__other__"`` for the rest. ``label`` (and ``predictions`` when given) are
    profiled the same way: numeric for float labels, categorical (keys as str) otherwise.
    """
    forced = set(categorical or ())
    rows = len(X)
    features: dict[str, Any] = {}
    for name in X.columns:
        col = X[name]
        if name in forced:
            features[str(name)] = _categorical_profile(col.tolist(), rows)
        else:
            features[str(name)] = _series_profile(col.to_numpy(), rows)
    y_arr = np.asarray(y)
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "rows": rows,
        "features": features,
        "label": _target_profile(y_arr),
        "predictions": None if predictions is None else _target_profile(np.asarray(predictions)),
    }
    return profile


def output_profile(estimator: Any, X: Any, y: Any) -> dict[str, Any]:  # noqa: N803
    """The reference of a model's outputs, from held-out rows: profiles of its
    ``predictions`` and, for a binary classifier, of its ``scores`` (the probability of
    ``classes_[1]``, as the SDK publishes it), plus a score ``calibration`` learnt on those
    rows (None when the scores are calibrated already; see
    :func:`streaming.estimation.fit_calibration`). Merge it into :func:`reference_profile`.
    """
    frame = _align(estimator, X)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = np.asarray(estimator.predict(frame))
        out: dict[str, Any] = {
            "predictions": _target_profile(preds),
            "scores": None,
            "calibration": None,
        }
        classes = list(getattr(estimator, "classes_", []))
        if len(classes) == 2 and hasattr(estimator, "predict_proba"):
            scores = np.asarray(estimator.predict_proba(frame))[:, 1].astype(np.float64)
            out["scores"] = _numeric_profile(scores, len(scores))
            hits = np.asarray([v == classes[1] for v in np.asarray(y).tolist()], dtype=int)
            cal = fit_calibration(scores, hits)
            out["calibration"] = cal.as_dict() if cal is not None else None
    return out


def _target_profile(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    if values.dtype.kind == "f":
        return _numeric_profile(values, len(values))
    return _categorical_profile(values.tolist(), len(values))
