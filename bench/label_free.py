"""Label-free monitoring: false-alarm rate, detection delay and estimation accuracy (pure logic).

Usage::

    .venv/bin/python bench/label_free.py [--quick] [--jobs J] [--scale F] [--json-out FILE]
        [--only fa,delay,estimation]

No Kafka, no Redis: synthetic prediction records go straight into
:class:`streaming.labelfree.LabelFreeMonitor` (``observe`` / ``observe_label``), one fresh
monitor per seed, seeds spread over ``--jobs`` worker processes.

**Data.** One binary classifier over eleven features of different shapes: a standard normal
(``x_norm``), a log-normal (``income``, skewed), integer ages (``age``), Poisson counts with
heavy ties (``visits``), exponential integer days with 8% missing (``tenure``), a beta with 3%
missing (``ratio``), a zero-inflated gamma (``balance``, 35% exact zeros), three categoricals
(``device``: 3 values, ``country``: 12 Zipf-like values, ``plan``: 40 values so the reference's
tail goes to ``__other__``, 4% missing) and a boolean (``is_premium``). The score is a logistic
function of some of them; the prediction is ``score >= 0.5``. The monitor also tests the two
outputs, so a window runs 13 tests.

**(a) False alarms.** Undrifted streams, budgets ``DriftBudget(false_alarm_events=E)``,
windows ``count:1000`` alone or with ``time:1h`` (about 5000 events an hour, Poisson arrivals),
the reference either the first 1000 predictions (``reference=None``) or a "training" reference
built with ``ReferenceBuilder`` over 20 000 independent rows. An alarm is a closed window whose
``drift.drifted`` is not empty. The budget's expectation is ``events / E`` (and, exactly,
the sum of the tested windows' ``alpha``); the upper bound is the one-sided 95% Poisson bound on
the alarm count. Windows of one seed share its reference, so alarms may cluster by seed; the
dispersion (variance / mean of the per-seed counts; about 1 for Poisson) shows it.

**(b) Detection delay.** After a change point at a random position (so the window in progress
is partly drifted), one change: ``x_norm`` shifted by 0.25, 0.5, 1 standard deviations,
``income`` shifted by 0.5 standard deviations, ``device`` frequencies changed, 10% more missing
``ratio``. Delay = events from the change point to the close of the first window naming the
changed feature. The model reads ``x_norm`` and ``income``, so the outputs drifting with them
is correct; other *input* features named after the change are reported as wrong attributions.

**(c) Estimation.** ``time:1h`` windows, about 2000 events an hour, labels ``y ~ Bernoulli(p)``
fed in event-time order after an exponential delay (mean 10 minutes); all labels arrive. Per
window, the error of the estimated accuracy (precision, recall, F1) against the realized one,
from ``monitor.estimation_rows()``, first and last (partial) hours left out (the monitors
here test only the outputs for drift, to keep the run short). "oracle" is the
estimate from the true probabilities (the noise floor: realized metrics are random too). The
published score is either ``p`` (calibrated) or miscalibrated (``p**2``, over-confident
``sigmoid(2.5 logit p)`` or very over-confident ``sigmoid(8 logit p)``, prediction
``score >= 0.5``), with the monitor learning a calibration
from its first ``calibration_events`` labels, or never (``calibration_events`` above the stream).

Timing figures are wall-clock on a possibly shared machine: read them as rough.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streaming.datadrift import DriftBudget, Reference, ReferenceBuilder
from streaming.labelfree import LabelFreeConfig, LabelFreeMonitor
from streaming.metrics import parse_window

# --------------------------------------------------------------------------- data

DEVICES = ("android", "ios", "web")
DEVICE_P = (0.50, 0.35, 0.15)
DEVICE_P_DRIFT = (0.40, 0.35, 0.25)
COUNTRIES = tuple(f"c{i:02d}" for i in range(12))
_zipf = 1.0 / np.arange(1, 13) ** 1.1
COUNTRY_P = tuple(_zipf / _zipf.sum())
PLANS = tuple(f"plan{i:02d}" for i in range(40))
_plan = 1.0 / np.arange(1, 41) ** 0.8
PLAN_P = tuple(_plan / _plan.sum())
INCOME_MU, INCOME_SIGMA = 10.5, 0.7
INCOME_SD = math.sqrt((math.exp(INCOME_SIGMA**2) - 1) * math.exp(2 * INCOME_MU + INCOME_SIGMA**2))
INPUTS = (
    "x_norm", "income", "age", "visits", "tenure", "ratio", "balance",
    "device", "country", "plan", "is_premium",
)  # fmt: skip
OUTPUTS = ("output:prediction", "output:score")


@dataclass(frozen=True)
class Drift:
    """A change applied to the events from ``change`` on (index within the generated batch)."""

    name: str
    feature: str
    kind: str  # "shift" | "freq" | "missing"
    amount: float = 0.0


DRIFTS = (
    Drift("x_norm +0.25 sd", "x_norm", "shift", 0.25),
    Drift("x_norm +0.5 sd", "x_norm", "shift", 0.5),
    Drift("x_norm +1 sd", "x_norm", "shift", 1.0),
    Drift("income +0.5 sd (skewed)", "income", "shift", 0.5 * INCOME_SD),
    Drift("device freqs .50/.35/.15->.40/.35/.25", "device", "freq"),
    Drift("ratio +10% missing", "ratio", "missing", 0.10),
)


def _with_missing(values: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> list[Any]:
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(mask):
        out[i] = None
    return out


def generate(
    rng: np.random.Generator,
    n: int,
    *,
    drift: Drift | None = None,
    change: int = 0,
) -> dict[str, Any]:
    """Columns of ``n`` events (features as Python lists, ``p`` the true P(y=1))."""
    after = np.arange(n) >= change if drift is not None else np.zeros(n, dtype=bool)
    x = rng.normal(size=n)
    income = rng.lognormal(INCOME_MU, INCOME_SIGMA, size=n)
    if drift is not None and drift.kind == "shift":
        if drift.feature == "x_norm":
            x = x + drift.amount * after
        elif drift.feature == "income":
            income = income + drift.amount * after
    age = np.clip(np.round(rng.normal(40, 12, size=n)), 18, 90).astype(int)
    visits = rng.poisson(2.5, size=n)
    tenure = np.round(rng.exponential(365.0, size=n)).astype(int)
    tenure_missing = rng.uniform(size=n) < 0.08
    ratio = rng.beta(2.0, 5.0, size=n)
    ratio_missing = rng.uniform(size=n) < 0.03
    extra = rng.uniform(size=n)  # drawn always, so a drift leaves the other columns unchanged
    if drift is not None and drift.kind == "missing":
        ratio_missing |= after & (extra < drift.amount)
    balance = np.where(rng.uniform(size=n) < 0.35, 0.0, rng.gamma(2.0, 1500.0, size=n))
    dev_u = rng.uniform(size=n)
    dev_idx = np.searchsorted(np.cumsum(DEVICE_P), dev_u, side="right")
    if drift is not None and drift.kind == "freq":
        drifted = np.searchsorted(np.cumsum(DEVICE_P_DRIFT), dev_u, side="right")
        dev_idx = np.where(after, drifted, dev_idx)
    dev_idx = np.minimum(dev_idx, len(DEVICES) - 1)
    country_idx = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)
    plan_idx = rng.choice(len(PLANS), size=n, p=PLAN_P)
    plan_missing = rng.uniform(size=n) < 0.04
    premium = rng.uniform(size=n) < 0.2
    logit = (
        0.9 * x
        + 0.6 * (np.log(np.maximum(income, 1.0)) - INCOME_MU) / INCOME_SIGMA
        + 0.02 * (age - 40)
        + 0.15 * (visits - 2.5)
        + 0.5 * (dev_idx == 2)
        - 0.4 * premium
        - 0.2
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    devices = np.array(DEVICES, dtype=object)[dev_idx]
    countries = np.array(COUNTRIES, dtype=object)[country_idx]
    plans = np.array(PLANS, dtype=object)[plan_idx]
    return {
        "x_norm": x.tolist(),
        "income": income.tolist(),
        "age": age.tolist(),
        "visits": visits.tolist(),
        "tenure": _with_missing(tenure, tenure_missing),
        "ratio": _with_missing(ratio, ratio_missing),
        "balance": balance.tolist(),
        "device": devices.tolist(),
        "country": countries.tolist(),
        "plan": _with_missing(plans, plan_missing),
        "is_premium": premium.tolist(),
        "p": p,
        "n": n,
    }


def records(
    cols: dict[str, Any],
    timestamps: Sequence[int] | np.ndarray[Any, Any],
    score: np.ndarray[Any, Any] | None = None,
) -> list[dict[str, Any]]:
    """Prediction records; ``score`` defaults to the true probability (a calibrated model)."""
    s = cols["p"] if score is None else score
    preds = (s >= 0.5).astype(int).tolist()
    scores = s.tolist()
    names = INPUTS
    columns = [cols[k] for k in names]
    out = []
    for i, row in enumerate(zip(*columns, strict=True)):
        out.append(
            {
                "timestamp": int(timestamps[i]),
                "features": dict(zip(names, row, strict=True)),
                "prediction": preds[i],
                "score": scores[i],
                "probabilities": None,
                "model_name": "bench",
                "model_version": "1",
            }
        )
    return out


def training_reference(
    rng: np.random.Generator, rows: int = 20_000, features: Iterable[str] | None = None
) -> Reference:
    cols = generate(rng, rows)
    builder = ReferenceBuilder(rows, features=features)
    for r in records(cols, range(rows)):
        builder.add(r["features"], prediction=r["prediction"], score=r["score"])
    return builder.build()


def arrivals(
    rng: np.random.Generator, n: int, start_ms: int, per_hour: float
) -> np.ndarray[Any, Any]:
    gaps = rng.exponential(3_600_000.0 / per_hour, size=n)
    return (start_ms + np.cumsum(gaps)).astype(np.int64)


def windows_of(names: Iterable[str]) -> list[Any]:
    return [parse_window(w, name=w) for w in names]


# --------------------------------------------------------------------------- (a) false alarms


@dataclass(frozen=True)
class FaConfig:
    label: str
    budget_events: int
    windows: tuple[str, ...]
    reference: str  # "first1000" | "training20k"
    seeds: int
    events_per_seed: int
    per_hour: float = 5000.0


def run_false_alarm_seed(cfg: FaConfig, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rng = np.random.default_rng([1, seed, cfg.budget_events, len(cfg.windows)])
    ref = training_reference(rng) if cfg.reference == "training20k" else None
    config = LabelFreeConfig(
        windows=windows_of(cfg.windows),
        reference_events=1000,
        budget=DriftBudget(false_alarm_events=cfg.budget_events),
    )
    mon = LabelFreeMonitor("bench", "1", config, reference=ref)
    n = cfg.events_per_seed + (1000 if ref is None else 0)
    ts = arrivals(rng, n, 1_700_000_000_000, cfg.per_hour)
    monitored = 0
    per_kind: dict[str, dict[str, float]] = {}
    named: dict[str, int] = {}
    done = 0
    while done < n:
        m = min(20_000, n - done)
        recs = records(generate(rng, m), ts[done : done + m])
        for r in recs:
            if mon.reference is not None:
                monitored += 1
            for wname in mon.observe(r):
                closed = mon.latest[wname]
                k = per_kind.setdefault(
                    wname, {"windows": 0, "tested": 0, "alarms": 0, "alpha": 0.0, "events": 0}
                )
                k["windows"] += 1
                if closed.drift is None:
                    continue
                k["tested"] += 1
                k["events"] += closed.drift.n
                k["alpha"] += closed.drift.alpha
                if closed.drift.drifted:
                    k["alarms"] += 1
                    for f in closed.drift.drifted:
                        named[f] = named.get(f, 0) + 1
        done += m
    return {
        "seed": seed,
        "events": n,
        "monitored": monitored,
        "kinds": per_kind,
        "named": named,
        "seconds": time.perf_counter() - t0,
    }


def poisson_upper(k: int, level: float = 0.95) -> float:
    """One-sided upper confidence bound on a Poisson mean after observing ``k``."""
    return float(sps.chi2.ppf(level, 2 * (k + 1)) / 2)


def summarize_false_alarms(cfg: FaConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    monitored = sum(r["monitored"] for r in results)
    windows = tested = alarms = 0
    alpha = 0.0
    per_seed = []
    named: dict[str, int] = {}
    for r in results:
        a = sum(int(k["alarms"]) for k in r["kinds"].values())
        per_seed.append(a)
        alarms += a
        windows += sum(int(k["windows"]) for k in r["kinds"].values())
        tested += sum(int(k["tested"]) for k in r["kinds"].values())
        alpha += sum(k["alpha"] for k in r["kinds"].values())
        for f, c in r["named"].items():
            named[f] = named.get(f, 0) + c
    by_kind: dict[str, dict[str, float]] = {}
    for r in results:
        for name, k in r["kinds"].items():
            agg = by_kind.setdefault(name, {"tested": 0, "alarms": 0, "alpha": 0.0})
            agg["tested"] += k["tested"]
            agg["alarms"] += k["alarms"]
            agg["alpha"] += k["alpha"]
    expected = monitored / cfg.budget_events
    ps = np.asarray(per_seed, dtype=float)
    dispersion = float(ps.var(ddof=1) / ps.mean()) if len(ps) > 1 and ps.mean() > 0 else None
    return {
        "config": cfg.label,
        "budget_events": cfg.budget_events,
        "windows": list(cfg.windows),
        "reference": cfg.reference,
        "seeds": len(results),
        "events_processed": sum(r["events"] for r in results),
        "events_monitored": monitored,
        "windows_closed": windows,
        "windows_tested": tested,
        "alarm_windows": alarms,
        "expected_alarms": expected,
        "sum_window_alpha": alpha,
        "per_100k": alarms / monitored * 1e5,
        "budget_per_100k": 1e5 / cfg.budget_events,
        "upper95_per_100k": poisson_upper(alarms) / monitored * 1e5,
        "ratio_to_budget": alarms / expected if expected else None,
        "seeds_with_alarm": int((ps > 0).sum()),
        "max_alarms_one_seed": int(ps.max()) if len(ps) else 0,
        "dispersion": dispersion,
        "by_window": by_kind,
        "named": dict(sorted(named.items(), key=lambda kv: -kv[1])),
        "cpu_seconds": sum(r["seconds"] for r in results),
    }


# --------------------------------------------------------------------------- (b) delay


def run_delay_seed(
    seed: int, reference: str, horizon: int, budget_events: int
) -> list[dict[str, Any]]:
    """Every drift scenario on one seed: the same reference and pre-change stream for all, so
    the bootstrap calibration is computed once per seed."""
    out = []
    train = (
        training_reference(np.random.default_rng([2, seed, 0]))
        if reference == "training20k"
        else None
    )
    for drift in DRIFTS:
        t0 = time.perf_counter()
        rng = np.random.default_rng([2, seed, 1])
        ref = train
        config = LabelFreeConfig(
            windows=windows_of(["count:1000"]),
            reference_events=1000,
            budget=DriftBudget(false_alarm_events=budget_events),
        )
        mon = LabelFreeMonitor("bench", "1", config, reference=ref)
        lead = 1000 if ref is None else 0
        pre = 3000 + int(rng.integers(0, 1000))  # change point at a random place in a window
        change = lead + pre
        n = change + horizon
        # the pre-change stream is the same for every scenario of a seed (same generator state)
        cols = generate(rng, n, drift=drift, change=change)
        recs = records(cols, np.arange(n) * 1000)
        detected = None
        pre_alarms = pre_windows = 0
        wrong_inputs: dict[str, int] = {}
        outputs_named = 0
        post_windows = 0
        for i, r in enumerate(recs):
            for wname in mon.observe(r):
                d = mon.latest[wname].drift
                if d is None:
                    continue
                if i < change:
                    pre_windows += 1
                    pre_alarms += bool(d.drifted)
                    continue
                post_windows += 1
                for f in d.drifted:
                    if f in OUTPUTS:
                        outputs_named += 1
                    elif f != drift.feature:
                        wrong_inputs[f] = wrong_inputs.get(f, 0) + 1
                if drift.feature in d.drifted:
                    detected = i + 1 - change  # events from the change to the window's close
                    break
            if detected is not None:
                break
        out.append(
            {
                "seed": seed,
                "drift": drift.name,
                "reference": reference,
                "delay": detected,
                "pre_alarm_windows": pre_alarms,
                "pre_windows": pre_windows,
                "post_windows": post_windows,
                "wrong_inputs": wrong_inputs,
                "outputs_named": outputs_named,
                "seconds": time.perf_counter() - t0,
            }
        )
    return out


def summarize_delay(rows: list[dict[str, Any]], horizon: int) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["reference"], r["drift"]), []).append(r)
    out = []
    for (reference, drift), rs in groups.items():
        delays = np.array([r["delay"] for r in rs if r["delay"] is not None], dtype=float)
        n = len(rs)

        def within(k: int, delays: np.ndarray[Any, Any] = delays, n: int = n) -> float:
            return float((delays <= k).sum() / n)

        wrong = sum(1 for r in rs if r["wrong_inputs"])
        wrong_names: dict[str, int] = {}
        for r in rs:
            for f, c in r["wrong_inputs"].items():
                wrong_names[f] = wrong_names.get(f, 0) + c
        out.append(
            {
                "reference": reference,
                "drift": drift,
                "seeds": n,
                "detected": len(delays),
                "median_delay": float(np.median(delays)) if len(delays) else None,
                "p90_delay": (
                    float(np.quantile(delays, 0.9))
                    if len(delays) >= 0.9 * n and len(delays)
                    else None
                ),
                "p_within_1000": within(1000),
                "p_within_2000": within(2000),
                "p_within_5000": within(5000),
                "p_within_horizon": within(horizon),
                "seeds_with_wrong_input": wrong,
                "wrong_input_names": wrong_names,
                "post_windows": sum(r["post_windows"] for r in rs),
                "outputs_named_windows": sum(r["outputs_named"] for r in rs),
                "pre_change_alarm_windows": sum(r["pre_alarm_windows"] for r in rs),
            }
        )
    order = {d.name: i for i, d in enumerate(DRIFTS)}
    out.sort(key=lambda r: (r["reference"], order[r["drift"]]))
    return out


# --------------------------------------------------------------------------- (c) estimation

EST_CASES = (
    ("calibrated p", "calibrated", 1000),
    ("p**2, never calibrated", "square", 10**9),
    ("p**2, calibration from 1000 labels", "square", 1000),
    ("overconfident, never calibrated", "overconfident", 10**9),
    ("overconfident, calibration from 1000 labels", "overconfident", 1000),
    ("very overconfident, never calibrated", "very_overconfident", 10**9),
    ("very overconfident, calibration from 1000 labels", "very_overconfident", 1000),
    ("calibrated p, reference=first 1000", "calibrated_firstref", 1000),
)
METRICS = ("accuracy", "precision", "recall", "f1")


def published_score(kind: str, p: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if kind == "square":
        return p**2
    if kind in ("overconfident", "very_overconfident"):
        k = 2.5 if kind == "overconfident" else 8.0
        logit = np.log(p / (1 - p))
        return np.asarray(1.0 / (1.0 + np.exp(-k * logit)))
    return p


def _metrics_of(tp: float, fp: float, fn: float, tn: float) -> dict[str, float | None]:
    n = tp + fp + fn + tn
    return {
        "accuracy": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    }


def run_estimation_seed(
    case: str,
    kind: str,
    calibration_events: int,
    seed: int,
    hours: int,
    ref: Reference,
    label_delay_ms: float = 600_000.0,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    rng = np.random.default_rng([3, seed])
    per_hour = 2000.0
    n = int(hours * per_hour)
    first_ref = kind == "calibrated_firstref"
    config = LabelFreeConfig(
        windows=windows_of(["time:1h"]),
        reference_events=1000,
        budget=DriftBudget(false_alarm_events=100_000),
        calibration_events=calibration_events,
        lateness_ms=60_000,
        history=hours + 5,
        features=[],  # drift of the outputs only: (a) and (b) measure drift, this part estimates
    )
    mon = LabelFreeMonitor("bench", "1", config, reference=None if first_ref else ref)
    start_ms = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    ts = arrivals(rng, n, start_ms, per_hour)
    cols = generate(rng, n)
    p = cols["p"]
    score = published_score("calibrated" if first_ref else kind, p)
    y = (rng.uniform(size=n) < p).astype(int)
    recs = records(cols, ts, score)
    oracle: dict[int, list[float]] = {}  # window start -> expected tp, fp, fn, tn from true p
    members: dict[int, list[int]] = {}  # window start -> its events
    ready = ts + rng.exponential(label_delay_ms, size=n).astype(np.int64)
    pending: list[tuple[int, int]] = []

    def label(j: int) -> None:
        r = recs[j]
        mon.observe_label(
            {
                "label": int(y[j]),
                "prediction": r["prediction"],
                "score": r["score"],
                "prediction_timestamp": r["timestamp"],
            }
        )

    for i, r in enumerate(recs):
        mon.observe(r)
        heapq.heappush(pending, (int(ready[i]), i))
        while pending and pending[0][0] <= r["timestamp"]:
            label(heapq.heappop(pending)[1])
        if True:  # every scored prediction counts in its time row (reference or not)
            start = int(r["timestamp"]) - int(r["timestamp"]) % 3_600_000
            o = oracle.setdefault(start, [0.0, 0.0, 0.0, 0.0])
            members.setdefault(start, []).append(i)
            if r["prediction"] == 1:
                o[0] += p[i]
                o[1] += 1 - p[i]
            else:
                o[2] += p[i]
                o[3] += 1 - p[i]
    while pending:
        label(heapq.heappop(pending)[1])
    rows = mon.estimation_rows()
    errs: dict[str, list[float]] = {m: [] for m in METRICS}
    oracle_errs: dict[str, list[float]] = {m: [] for m in METRICS}
    per_score_errs: dict[str, list[float]] = {m: [] for m in METRICS}
    mismatched = 0
    first_row: dict[str, Any] | None = None
    for row in rows[1:-1]:  # the first and last hours are partial
        if not row["error"]:
            continue
        if row["labeled"] != row["predictions"]:
            mismatched += 1
        o4 = oracle.get(row["start"])
        om: dict[str, float | None] = _metrics_of(*o4) if o4 else {}
        for m in METRICS:
            if m in row["error"]:
                errs[m].append(abs(row["error"][m]))
            if om.get(m) is not None and row["realized"][m] is not None:
                oracle_errs[m].append(abs(float(om[m] or 0.0) - row["realized"][m]))
        # the monitor's final calibration applied to every score, not to each bin's mean
        idx = np.asarray(members.get(row["start"], []), dtype=int)
        if len(idx):
            sc = score[idx]
            c = mon.calibration.apply(sc) if mon.calibration is not None else sc
            pp = sc >= 0.5
            ps = _metrics_of(c[pp].sum(), (1 - c[pp]).sum(), c[~pp].sum(), (1 - c[~pp]).sum())
            for m in METRICS:
                v = ps[m]
                if v is not None and row["realized"][m] is not None:
                    per_score_errs[m].append(abs(v - row["realized"][m]))
    if rows:
        r0 = rows[0]
        first_row = {
            "predictions": r0["predictions"],
            "labeled": r0["labeled"],
            "error_accuracy": r0["error"].get("accuracy"),
        }
    signed = [row["error"]["accuracy"] for row in rows[1:-1] if "accuracy" in row["error"]]
    return {
        "case": case,
        "seed": seed,
        "errors": errs,
        "oracle": oracle_errs,
        "per_score": per_score_errs,
        "signed_accuracy": signed,
        "calibration": mon.calibration_source,
        "mismatched_rows": mismatched,
        "first_row": first_row,
        "realized_accuracy": [
            row["realized"]["accuracy"] for row in rows[1:-1] if row["realized"]["accuracy"]
        ],
        "seconds": time.perf_counter() - t0,
    }


def summarize_estimation(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for case, _, _ in EST_CASES:
        rs = [r for r in results if r["case"] == case]
        if not rs:
            continue
        row: dict[str, Any] = {"case": case, "seeds": len(rs)}
        row["windows"] = len([e for r in rs for e in r["errors"]["accuracy"]])
        for m in METRICS:
            v = [e for r in rs for e in r["errors"][m]]
            o = [e for r in rs for e in r["oracle"][m]]
            row[f"mae_{m}"] = float(np.mean(v)) if v else None
            row[f"oracle_mae_{m}"] = float(np.mean(o)) if o else None
            ps = [e for r in rs for e in r["per_score"][m]]
            row[f"per_score_mae_{m}"] = float(np.mean(ps)) if ps else None
        signed = [e for r in rs for e in r["signed_accuracy"]]
        row["bias_accuracy"] = float(np.mean(signed)) if signed else None
        real = [a for r in rs for a in r["realized_accuracy"]]
        row["realized_accuracy_mean"] = float(np.mean(real)) if real else None
        cal: dict[str, int] = {}
        for r in rs:
            cal[r["calibration"]] = cal.get(r["calibration"], 0) + 1
        row["calibration_outcome"] = cal
        row["rows_labeled_ne_predictions"] = sum(r["mismatched_rows"] for r in rs)
        firsts = [r["first_row"] for r in rs if r["first_row"]]
        row["first_row_labeled_minus_predictions"] = (
            float(np.mean([f["labeled"] - f["predictions"] for f in firsts])) if firsts else None
        )
        fe = [abs(f["error_accuracy"]) for f in firsts if f["error_accuracy"] is not None]
        row["first_row_abs_error_accuracy"] = float(np.mean(fe)) if fe else None
        out.append(row)
    return out


# --------------------------------------------------------------------------- printing


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 10 ** (-nd)):
            return f"{v:.3g}"
        return f"{v:.{nd}f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [
        [_fmt(c) if not isinstance(c, str) else c for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for j, row in enumerate(cells):
        lines.append(
            " | ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
            )
        )
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def module_digests() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1] / "streaming"
    return {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
        for name in ("datadrift.py", "estimation.py", "labelfree.py")
    }


def _call(args: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
    fn, a = args
    return fn(*a)


def run_parallel(
    pool: ProcessPoolExecutor | None, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]
) -> list[Any]:
    if pool is None:
        return [_call(c) for c in calls]
    return list(pool.map(_call, calls, chunksize=1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of seeds")
    ap.add_argument("--only", default="fa,delay,estimation", help="comma-separated parts to run")
    ap.add_argument("--json-out", default=None, help="write every figure as JSON to this file")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    quick = args.quick

    def seeds(full: int, q: int) -> int:
        scaled: float = (q if quick else full) * args.scale
        return max(1, math.floor(scaled + 0.5))

    started = time.perf_counter()
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    report: dict[str, Any] = {
        "quick": quick,
        "jobs": args.jobs,
        "scale": args.scale,
        "modules": module_digests(),
    }
    print(
        "modules under test (sha256[:12]): "
        + ", ".join(f"{k} {v}" for k, v in report["modules"].items())
    )
    timings: dict[str, float] = {}
    try:
        # ---------------------------------------------------------------- (a)
        if "fa" in parts:
            t = time.perf_counter()
            c1, ct = ("count:1000",), ("count:1000", "time:1h")
            fa_cfgs = [
                FaConfig(
                    "E=20k  count:1000        first1000",
                    20_000,
                    c1,
                    "first1000",
                    seeds(40, 6),
                    20_000,
                ),
                FaConfig(
                    "E=20k  count:1000        training20k",
                    20_000,
                    c1,
                    "training20k",
                    seeds(20, 3),
                    20_000,
                ),
                FaConfig(
                    "E=20k  count:1000+time:1h first1000",
                    20_000,
                    ct,
                    "first1000",
                    seeds(20, 3),
                    20_000,
                ),
                FaConfig(
                    "E=100k count:1000        first1000",
                    100_000,
                    c1,
                    "first1000",
                    seeds(60, 8),
                    30_000,
                ),
                FaConfig(
                    "E=100k count:1000        training20k",
                    100_000,
                    c1,
                    "training20k",
                    seeds(30, 4),
                    30_000,
                ),
                FaConfig(
                    "E=100k count:1000+time:1h first1000",
                    100_000,
                    ct,
                    "first1000",
                    seeds(24, 4),
                    30_000,
                ),
                FaConfig(
                    "E=100k count:1000+time:1h training20k",
                    100_000,
                    ct,
                    "training20k",
                    seeds(16, 3),
                    30_000,
                ),
            ]
            calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
                (run_false_alarm_seed, (cfg, s)) for cfg in fa_cfgs for s in range(cfg.seeds)
            ]
            res = run_parallel(pool, calls)
            summaries = []
            i = 0
            for cfg in fa_cfgs:
                summaries.append(summarize_false_alarms(cfg, res[i : i + cfg.seeds]))
                i += cfg.seeds
            timings["false_alarms"] = time.perf_counter() - t
            report["false_alarms"] = summaries
            print(
                "\n(a) false alarms on undrifted streams "
                "(alarm = a closed window naming any feature)"
            )
            print(
                table(
                    [
                        "config",
                        "seeds",
                        "events",
                        "windows tested",
                        "alarm windows",
                        "expected",
                        "per 100k",
                        "budget/100k",
                        "95% UB/100k",
                        "seeds w/ alarm",
                        "dispersion",
                    ],
                    [
                        [
                            s["config"],
                            s["seeds"],
                            s["events_monitored"],
                            s["windows_tested"],
                            s["alarm_windows"],
                            s["expected_alarms"],
                            s["per_100k"],
                            s["budget_per_100k"],
                            s["upper95_per_100k"],
                            s["seeds_with_alarm"],
                            s["dispersion"],
                        ]
                        for s in summaries
                    ],
                )
            )
            print("  events = monitored events (after the reference); expected = events / E")
            print("  by window kind (alarms / sum of alpha):")
            for s in summaries:
                parts_txt = ", ".join(
                    f"{k}: {int(v['alarms'])}/{v['alpha']:.2f} over {int(v['tested'])} windows"
                    for k, v in s["by_window"].items()
                )
                named = ", ".join(f"{k} {v}" for k, v in list(s["named"].items())[:6])
                print(f"    {s['config']}: {parts_txt}; named: {named or '-'}")

        # ---------------------------------------------------------------- (b)
        if "delay" in parts:
            t = time.perf_counter()
            horizon = 5000 if quick else 10_000
            n_first, n_train = seeds(30, 6), seeds(12, 3)
            calls = [(run_delay_seed, (s, "first1000", horizon, 100_000)) for s in range(n_first)]
            calls += [
                (run_delay_seed, (s, "training20k", horizon, 100_000)) for s in range(n_train)
            ]
            res = [row for rows in run_parallel(pool, calls) for row in rows]
            summary = summarize_delay(res, horizon)
            timings["delay"] = time.perf_counter() - t
            report["delay"] = {"horizon": horizon, "budget_events": 100_000, "rows": summary}
            print(
                f"\n(b) detection delay, count:1000 windows, E=100k, change at a random point; "
                f"horizon {horizon} events after the change"
            )
            print(
                table(
                    [
                        "reference",
                        "change",
                        "seeds",
                        "detected",
                        "median delay",
                        "p90 delay",
                        "P(<=1000)",
                        "P(<=2000)",
                        "P(<=5000)",
                        f"P(<={horizon})",
                        "wrong input (seeds)",
                        "outputs named (win)",
                        "post windows",
                    ],
                    [
                        [
                            r["reference"],
                            r["drift"],
                            r["seeds"],
                            r["detected"],
                            r["median_delay"],
                            r["p90_delay"],
                            r["p_within_1000"],
                            r["p_within_2000"],
                            r["p_within_5000"],
                            r["p_within_horizon"],
                            r["seeds_with_wrong_input"],
                            r["outputs_named_windows"],
                            r["post_windows"],
                        ]
                        for r in summary
                    ],
                )
            )
            print("  delay = events from the change point to the close of the first window naming")
            print("  the changed feature (undetected seeds excluded from the median; p90 '-' when")
            print("  fewer than 90% detected). wrong input = another input feature named in a")
            print(
                "  post-change window up to detection; outputs follow x_norm and income by design."
            )
            wrong = [
                (r["reference"], r["drift"], r["wrong_input_names"])
                for r in summary
                if r["wrong_input_names"]
            ]
            for ref_name, drift_name, names in wrong:
                print(f"    wrong names ({ref_name}, {drift_name}): {names}")
            pre = sum(r["pre_alarm_windows"] for r in res if r["drift"] == DRIFTS[0].name)
            pre_windows = sum(r["pre_windows"] for r in res if r["drift"] == DRIFTS[0].name)
            report["delay"]["pre_change"] = {"windows": pre_windows, "alarm_windows": pre}
            print(
                "  pre-change windows (the same stream in every scenario of a seed): "
                f"{pre_windows}, alarm windows among them: {pre}"
            )

        # ---------------------------------------------------------------- (c)
        if "estimation" in parts:
            t = time.perf_counter()
            hours = 12 if quick else 24
            n_seeds = seeds(16, 2)
            ref = training_reference(np.random.default_rng([4, 0]), features=[])
            calls = [
                (run_estimation_seed, (case, kind, cal, s, hours, ref))
                for case, kind, cal in EST_CASES
                for s in range(n_seeds)
            ]
            res = run_parallel(pool, calls)
            summary = summarize_estimation(res)
            timings["estimation"] = time.perf_counter() - t
            report["estimation"] = {"hours": hours, "events_per_hour": 2000, "rows": summary}
            print(
                f"\n(c) estimation: time:1h windows, ~2000 events/h, {hours} h per seed, every "
                "prediction labeled (delay ~ exp, mean 10 min); "
                "mean |estimated - realized| per hour"
            )
            print(
                table(
                    [
                        "score published / calibration",
                        "seeds",
                        "windows",
                        "MAE acc",
                        "per-score acc",
                        "oracle acc",
                        "bias acc",
                        "MAE prec",
                        "oracle prec",
                        "MAE rec",
                        "oracle rec",
                        "MAE F1",
                        "per-score F1",
                        "oracle F1",
                        "realized acc",
                        "calibration",
                    ],
                    [
                        [
                            r["case"],
                            r["seeds"],
                            r["windows"],
                            r["mae_accuracy"],
                            r["per_score_mae_accuracy"],
                            r["oracle_mae_accuracy"],
                            r["bias_accuracy"],
                            r["mae_precision"],
                            r["oracle_mae_precision"],
                            r["mae_recall"],
                            r["oracle_mae_recall"],
                            r["mae_f1"],
                            r["per_score_mae_f1"],
                            r["oracle_mae_f1"],
                            r["realized_accuracy_mean"],
                            ",".join(f"{k}:{v}" for k, v in r["calibration_outcome"].items()),
                        ]
                        for r in summary
                    ],
                )
            )
            print(
                "  oracle = the same estimate from the true probabilities (sampling-noise floor);"
            )
            print(
                "  bias = mean signed error of accuracy. First and last (partial) hours left out."
            )
            print(
                "  per-score = the monitor's final calibration applied to each score of the\n"
                "  window instead of to each histogram bin's mean score (what ScoreHistogram does)."
            )
            for r in summary:
                if r["first_row_labeled_minus_predictions"]:
                    print(
                        f"    {r['case']}: first time row has on average "
                        f"{r['first_row_labeled_minus_predictions']:.0f} more labeled than "
                        "predictions "
                        f"(|error acc| there {_fmt(r['first_row_abs_error_accuracy'])})"
                    )
    finally:
        if pool is not None:
            pool.shutdown()
    timings["total"] = time.perf_counter() - started
    report["seconds"] = timings
    print("\nwall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, default=float, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
