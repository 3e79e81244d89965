"""The demo's data: a loan-approval stream with a concept change, and offline baselines.

Pure and deterministic given a seed. :func:`applications` yields the stream of the demo: loan
applications from river's ``Agrawal`` generator (salary, commission, age, elevel, car,
zipcode, hvalue, hyears, loan) whose true approval rule is classification function
:data:`BEFORE_FUNCTION` (age bands) before position ``drift_at`` and
:data:`AFTER_FUNCTION` (age and education level) from there on. At the same point the loans
asked for grow by :data:`LOAN_SHIFT` (a change of the inputs that label-free monitoring sees
at once; neither rule depends on the loan). A model of the first concept
is right about half the time on the second (:func:`initial_model` on 3 000 rows: about 0.95
before the change, 0.47 after), and a model refitted on a few hundred rows of the second
concept is back above 0.9.

Event times are spaced ``1000 / rate`` ms apart from ``start_ms``. Each application gets a
label delay drawn from a log-normal distribution (:class:`LabelDelays`, scaled to the run
length by :func:`default_label_delays`); a share of them never gets a label.

The baselines replay the same stream offline with the models the live loop would have had
without it: :func:`no_retrain` keeps the initial model throughout, :func:`periodic_retrain`
refits the same pipeline kind every ``every`` labels on the most recent ``window`` labeled
applications, the moment those labels are known (in event time), and never looks at
metrics. Both score only applications whose label arrives, like the monitor.

>>> stream = list(applications(seed=7, events=5, drift_at=3, start_ms=1_000, rate=2.0))
>>> [(a.index, a.event_time_ms, a.concept) for a in stream]
[(0, 1000, 0), (1, 1500, 0), (2, 2000, 0), (3, 2500, 2), (4, 3000, 2)]
>>> stream == list(applications(seed=7, events=5, drift_at=3, start_ms=1_000, rate=2.0))
True
>>> sorted(stream[0].features) == sorted(FEATURES)
True
>>> index_of(stream[4].prediction_id)
4
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from river.datasets import synth

from streaming.report import ScoredEvent

__all__ = [
    "AFTER_FUNCTION",
    "BEFORE_FUNCTION",
    "FEATURES",
    "MODEL_KIND",
    "MODEL_NAME",
    "Application",
    "LabelDelays",
    "Refit",
    "applications",
    "default_label_delays",
    "event_time_of",
    "history",
    "index_of",
    "initial_model",
    "labeled_examples",
    "no_retrain",
    "periodic_retrain",
    "prediction_id_of",
]

MODEL_NAME: Final = "loan-approval"
"""The model name the demo registers and monitors."""
FEATURES: Final = (
    "salary",
    "commission",
    "age",
    "elevel",
    "car",
    "zipcode",
    "hvalue",
    "hyears",
    "loan",
)
BEFORE_FUNCTION: Final = 0
"""Agrawal classification function before the change: approve under 40 or from 60 on."""
AFTER_FUNCTION: Final = 2
"""Agrawal classification function after the change: age bands combined with elevel."""
PERTURBATION: Final = 0.05
"""Agrawal feature noise, so that no model is perfect."""
LOAN_SHIFT: Final = 1.5
"""From the change on, applicants ask for loans this many times larger: a shift of the input
distribution that no approval rule looks at, visible before any label (data drift)."""
MODEL_KIND: Final = "hist_gradient_boosting"
"""Pipeline kind (``streaming.training``) of the initial model and the periodic baseline."""
_ID_PREFIX: Final = "app-"


@dataclass(frozen=True)
class LabelDelays:
    """Outcome delays: log-normal with this median (ms) and shape, capped; some never come."""

    median_ms: int = 2_000
    sigma: float = 0.6
    never: float = 0.05
    """Share of applications whose outcome never arrives."""
    max_ms: int = 20_000

    def __post_init__(self) -> None:
        if self.median_ms < 1 or self.max_ms < self.median_ms:
            msg = f"need 1 <= median_ms <= max_ms, got {self.median_ms}, {self.max_ms}"
            raise ValueError(msg)
        if not 0 <= self.never < 1 or not self.sigma >= 0:
            msg = f"need 0 <= never < 1 and sigma >= 0, got {self.never}, {self.sigma}"
            raise ValueError(msg)

    def draw(self, rng: random.Random) -> int | None:
        """One delay in ms, or None for an outcome that never arrives (two draws always)."""
        missing = rng.random() < self.never
        z = rng.gauss(0.0, 1.0)
        if missing:
            return None
        return min(self.max_ms, max(1, round(self.median_ms * math.exp(self.sigma * z))))


def default_label_delays(events: int, rate: float) -> LabelDelays:
    """Delays scaled to the run: a median of 1 % of its event-time length, in 0.5..5 s.

    >>> default_label_delays(6_000, 150.0).median_ms, default_label_delays(24_000, 80.0).median_ms
    (500, 3000)
    """
    duration_ms = events * 1000.0 / rate
    median = int(min(5_000, max(500, round(duration_ms * 0.01, -2))))
    return LabelDelays(median_ms=median, max_ms=median * 8)


@dataclass(frozen=True)
class Application:
    """One loan application of the stream, with its true label and label delay."""

    index: int
    prediction_id: str
    features: dict[str, float | int]
    label: int
    event_time_ms: int
    label_delay_ms: int | None
    """None: the outcome never arrives."""
    concept: int
    """The Agrawal classification function that decided ``label``."""

    @property
    def outcome_time_ms(self) -> int | None:
        """Event time of the outcome, None when it never comes."""
        if self.label_delay_ms is None:
            return None
        return self.event_time_ms + self.label_delay_ms


def prediction_id_of(index: int) -> str:
    """The prediction id of stream position ``index``."""
    return f"{_ID_PREFIX}{index:08d}"


def index_of(prediction_id: str) -> int:
    """The stream position of a prediction id of :func:`prediction_id_of` (ValueError else)."""
    if not prediction_id.startswith(_ID_PREFIX):
        msg = f"not a demo prediction id: {prediction_id!r}"
        raise ValueError(msg)
    return int(prediction_id[len(_ID_PREFIX) :])


def event_time_of(index: int, start_ms: int, rate: float) -> int:
    """Event time of stream position ``index``: ``start_ms + index * 1000 / rate``."""
    return start_ms + round(index * 1000.0 / rate)


def _check(events: int, drift_at: int, rate: float) -> None:
    if events < 1 or drift_at < 0:
        msg = f"need events >= 1 and drift_at >= 0, got {events}, {drift_at}"
        raise ValueError(msg)
    if not rate > 0:
        msg = f"rate must be positive, got {rate}"
        raise ValueError(msg)


def _row(x: Mapping[str, Any]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for name in FEATURES:
        value = x[name]
        out[name] = int(value) if isinstance(value, int) else float(value)
    return out


def applications(
    seed: int,
    events: int,
    drift_at: int,
    start_ms: int,
    rate: float,
    *,
    delays: LabelDelays | None = None,
) -> Iterator[Application]:
    """The demo stream: ``events`` applications, the concept changing at ``drift_at``.

    Deterministic given the arguments; a longer stream starts with the same applications as
    a shorter one of the same seed and ``drift_at`` (``drift_at >= events``: no change).
    """
    _check(events, drift_at, rate)
    delays = delays or default_label_delays(events, rate)
    before = synth.Agrawal(
        classification_function=BEFORE_FUNCTION, seed=seed, perturbation=PERTURBATION
    )
    after = synth.Agrawal(
        classification_function=AFTER_FUNCTION, seed=seed + 1, perturbation=PERTURBATION
    )
    rng = random.Random(f"streammon-demo-delays-{seed}")
    old, new = iter(before), iter(after)
    for i in range(events):
        concept = BEFORE_FUNCTION if i < drift_at else AFTER_FUNCTION
        x, y = next(old) if i < drift_at else next(new)
        row = _row(x)
        if i >= drift_at:
            row["loan"] = row["loan"] * LOAN_SHIFT
        yield Application(
            index=i,
            prediction_id=prediction_id_of(i),
            features=row,
            label=int(y),
            event_time_ms=event_time_of(i, start_ms, rate),
            label_delay_ms=delays.draw(rng),
            concept=concept,
        )


def history(seed: int, rows: int) -> list[tuple[dict[str, float | int], int]]:
    """Labeled applications of the pre-change concept from before the stream (training data)."""
    gen = synth.Agrawal(
        classification_function=BEFORE_FUNCTION, seed=seed + 1_000, perturbation=PERTURBATION
    )
    return [(_row(x), int(y)) for x, y in gen.take(rows)]


def labeled_examples(
    rows: Sequence[tuple[Mapping[str, Any], int]], *, start_ms: int = 0, step_ms: int = 1
) -> list[dict[str, Any]]:
    """``LabeledExample``-like records of (features, label) rows, for the training helpers."""
    return [
        {
            "prediction_id": f"row-{i:08d}",
            "prediction_timestamp": start_ms + i * step_ms,
            "label": label,
            "features": dict(features),
        }
        for i, (features, label) in enumerate(rows)
    ]


def _fit(rows: Sequence[tuple[Mapping[str, Any], int]], seed: int, kind: str) -> Any:
    from streaming.training import build_table, make_pipeline

    table = build_table(labeled_examples(rows), max_rows=max(1, len(rows)))
    pipeline = make_pipeline(kind, table.task, table.numeric, table.categorical, seed)
    pipeline.fit(table.X, table.y)
    return pipeline


def initial_model(
    rows: Sequence[tuple[Mapping[str, Any], int]], *, seed: int, kind: str = MODEL_KIND
) -> Any:
    """The model registered as version 1: the ``streaming.training`` pipeline on ``rows``."""
    return _fit(rows, seed, kind)


def _predict(model: Any, apps: Sequence[Application]) -> list[int]:
    if not apps:
        return []
    from streaming.training import frame_for

    return [int(v) for v in model.predict(frame_for(model, [a.features for a in apps]))]


def _scored(apps: Sequence[Application], predictions: Sequence[int], version: str) -> list[Any]:
    return [
        ScoredEvent(
            index=a.index,
            event_time_ms=a.event_time_ms,
            label=a.label,
            prediction=p,
            version=version,
        )
        for a, p in zip(apps, predictions, strict=True)
    ]


def no_retrain(model: Any, stream: Sequence[Application]) -> list[ScoredEvent]:
    """Every labeled application scored by ``model`` (the initial one) throughout."""
    labeled = [a for a in stream if a.label_delay_ms is not None]
    return _scored(labeled, _predict(model, labeled), "initial")


@dataclass(frozen=True)
class Refit:
    """One refit of the periodic baseline."""

    at_ms: int
    """Event time at which the refitted model takes over (the arrival of the last label)."""
    rows: int
    version: str


def periodic_retrain(
    initial: Any,
    stream: Sequence[Application],
    *,
    every: int,
    window: int,
    seed: int,
    kind: str = MODEL_KIND,
) -> tuple[list[ScoredEvent], list[Refit]]:
    """Score the stream refitting every ``every`` arrived labels on the last ``window``.

    Labels become known at their outcome time; after each ``every``-th arrival the model is
    refitted on the ``window`` most recent (by prediction time) labeled applications known
    then, and scores every application from that event time on. The refit itself is taken as
    instantaneous, which flatters this baseline.
    """
    if every < 1 or window < 2:
        msg = f"need every >= 1 and window >= 2, got {every}, {window}"
        raise ValueError(msg)
    arrivals = sorted(
        (a for a in stream if a.outcome_time_ms is not None),
        key=lambda a: (a.outcome_time_ms or 0, a.index),
    )
    refits: list[Refit] = []
    models: list[tuple[int, Any, str]] = [(-(2**62), initial, "p0")]
    for k in range(every, len(arrivals) + 1, every):
        known = sorted(arrivals[:k], key=lambda a: a.index)[-window:]
        labels = {a.label for a in known}
        if len(labels) < 2:
            continue
        at = int(arrivals[k - 1].outcome_time_ms or 0)
        version = f"p{len(refits) + 1}"
        fitted = _fit([(a.features, a.label) for a in known], seed + len(refits) + 1, kind)
        models.append((at, fitted, version))
        refits.append(Refit(at_ms=at, rows=len(known), version=version))
    labeled = [a for a in stream if a.label_delay_ms is not None]
    out: list[ScoredEvent] = []
    for j, (since, model, version) in enumerate(models):
        until = models[j + 1][0] if j + 1 < len(models) else 2**62
        part = [a for a in labeled if since <= a.event_time_ms < until]
        out.extend(_scored(part, _predict(model, part), version))
    out.sort(key=lambda s: s.index)
    return out, refits
