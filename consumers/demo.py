"""``streammon demo``: the whole loop on a loan-approval stream with a concept change.

:func:`run_demo` brings up the local stack when no Kafka and Redis are configured (the same
:mod:`consumers.devstack` as ``scripts/services``), creates the topics under a fresh prefix
``demo<timestamp>.``, trains the initial model on the pre-change concept and registers it as
champion (version 1), then runs these processes, which talk only through Kafka and Redis:

* two **producer services** (``python -m consumers.demo producer``): each scores its share
  of the applications of :func:`streaming.demo_data.applications` with the SDK's
  :class:`~streaming.client.ChampionModel` (hot-swapped when a new champion is announced)
  and emits the predictions with :class:`~streaming.client.PredictionProducer`, paced at
  ``rate`` events per second, the event times following the wall clock;
* a **label source** (``python -m consumers.demo label-source``): reads ``predictions``,
  regenerates the true labels and label delays from the seed, and emits each outcome once
  the stream (or the clock) has passed the prediction's time plus its delay; about 5 % of
  the applications never get one;
* ``streammon monitor`` (joiner + evaluator), ``streammon trainer`` and
  ``streammon alerts forward`` (to the stack's Alertmanager).

The demo's configuration reaches the children as ``STREAMMON_*`` variables: an ADWIN rule on
the error rate that detects the change, a threshold rule on rolling accuracy held long enough
for the new concept to fill its window that requests the retrain (see :class:`DemoPlan`), a
short retrain cooldown and a small trainer budget. A live view (rich; plain progress lines
when the output is not a terminal) shows the throughput, the consumer lag, rolling accuracy
and detector state per version, alerts, retrains and the champion. When every labeled event
has been evaluated (or the time is up) the children are stopped (SIGTERM, then SIGKILL),
``labeled``, ``alerts``, ``retrain-requests`` and ``model-versions`` are read back, the
baselines (no retraining, periodic retraining) are replayed offline on the same stream, and
the report is written to ``<report_dir>/demo-<timestamp>-<id>/index.html`` with its PNG
plots and ``summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr
from pydantic_core import to_jsonable_python
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streaming.errors import ConfigError
from streaming.settings import Settings

log = logging.getLogger("streammon.demo")

__all__ = ["DemoPlan", "main", "run_demo"]

QUICK: Final = {"events": 6_000, "drift_at": 2_500, "rate": 150.0}
DEFAULT: Final = {"events": 21_000, "drift_at": 8_000, "rate": 90.0}
DETECTOR_RULE: Final = "accuracy_drift"
THRESHOLD_RULE: Final = "low_accuracy"
_REFRESH_S: Final = 0.5
_PLAIN_EVERY_S: Final = 5.0
_STOP_GRACE_S: Final = 20.0
_BATCH_S: Final = 0.1
_LEAD_MS: Final = 3_000
_PRODUCER_CONF: Final[dict[str, Any]] = {"linger.ms": 20}


# ---- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and knobs of one run, derived from the flags (:meth:`make`).

    The retrain is driven by the threshold rule on rolling accuracy, held for
    ``hold_events`` evaluations so that the window it suggests (``retrain_window_events``
    before the alert) holds the new concept only; the ADWIN rule detects the change and
    alerts at once. A retrain asked for at the detection itself would be trained on the old
    concept (few labeled events of the new one exist by then) and rejected by the gate.
    """

    events: int
    drift_at: int
    seed: int
    rate: float
    quick: bool
    window: int
    """Rolling window (labeled events) of the monitor, the alert rule and the report."""
    history_rows: int = 3_000
    producers: int = 2
    accuracy_threshold: float = 0.80
    hold_events: int = 300
    """``for_events`` of the threshold rule."""
    detector_retrain: bool = False
    """``retrain`` of the ADWIN rule."""
    periodic_every: int = 1_000
    periodic_window: int = 1_000
    trainer_candidates: tuple[str, ...] = ("hist_gradient_boosting",)
    trainer_n_iter: int = 2
    trainer_budget_s: float = 10.0
    trainer_min_rows: int = 150
    retrain_min_labeled: int = 200
    retrain_window_events: int = 400
    """Suggested training window of a retrain request, in events of event time."""
    cooldown_events: int = 600
    """Retrain cooldown, in events of event time."""

    @classmethod
    def make(
        cls,
        *,
        events: int | None,
        drift_at: int | None,
        seed: int,
        rate: float | None,
        quick: bool,
    ) -> DemoPlan:
        base = QUICK if quick else DEFAULT
        n = int(events if events is not None else base["events"])
        drift = round(n * base["drift_at"] / base["events"]) if drift_at is None else drift_at
        r = float(rate if rate is not None else base["rate"])
        if n < 1_000 or not 0 < drift < n or not r > 0:
            msg = (
                "demo: need --events >= 1000, 0 < --drift-at < --events and --rate > 0 "
                f"(got {n}, {drift}, {r})"
            )
            raise ConfigError(msg)
        window = max(50, min(300 if quick else 500, drift // 3, (n - drift) // 6))
        common: dict[str, Any] = {
            "events": n,
            "drift_at": drift,
            "seed": seed,
            "rate": r,
            "quick": quick,
            "window": window,
            "hold_events": max(window, 600),
            "retrain_window_events": max(window, 600) + window // 3,
            "cooldown_events": 2 * window,
            "retrain_min_labeled": max(100, 2 * window // 3),
            "trainer_min_rows": max(100, window),
        }
        if quick:
            return cls(**common)
        return cls(
            **common,
            periodic_every=3_000,
            periodic_window=3_000,
            trainer_candidates=("logistic_regression", "random_forest", "hist_gradient_boosting"),
            trainer_n_iter=3,
            trainer_budget_s=30.0,
        )

    def ms_of(self, events: int) -> int:
        """Event time spanned by ``events`` stream events."""
        return max(1, round(events * 1000.0 / self.rate))

    @property
    def duration_s(self) -> float:
        return self.events / self.rate

    def alert_rules(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "detector",
                "name": DETECTOR_RULE,
                "detector": "adwin",
                "severity": "critical",
                "retrain": self.detector_retrain,
                "resolve_after_events": self.window * 2,
                "annotations": {"runbook": "streammon demo: the error rate of the model rose"},
            },
            {
                "type": "threshold",
                "name": THRESHOLD_RULE,
                "metric": "accuracy",
                "window": f"count:{self.window}",
                "op": "<",
                "threshold": self.accuracy_threshold,
                "min_samples": max(50, self.window // 2),
                "for_events": self.hold_events,
                "retrain": True,
            },
        ]

    def overrides(self) -> dict[str, Any]:
        """Settings of the demo's services (over the caller's)."""
        return {
            "predictions_partitions": 3,
            "labeled_partitions": 1,
            "alerts_partitions": 1,
            "retrain_requests_partitions": 1,
            "windows": [f"count:{self.window}"],
            "detectors": {"adwin": {"kind": "adwin", "params": {"delta": 0.002}}},
            "alert_rules": self.alert_rules(),
            "models": {},
            "retrain_cooldown_ms": self.ms_of(self.cooldown_events),
            "retrain_min_labeled": self.retrain_min_labeled,
            "retrain_max_in_flight_ms": round((3 * self.trainer_budget_s + 30) * 1000),
            "retrain_window_ms": self.ms_of(self.retrain_window_events),
            "trainer_candidates": list(self.trainer_candidates),
            "trainer_n_iter": self.trainer_n_iter,
            "trainer_time_budget_s": self.trainer_budget_s,
            "trainer_cv_folds": 3,
            "trainer_min_rows": self.trainer_min_rows,
            "trainer_window_ms": None,
            "trainer_seed": self.seed,
            "trainer_promotion_margin": 0.01,
            "quality_refresh_ms": 2_000,
            "drift_windows": [f"count:{self.window}", f"time:{self.drift_time_window_s}s"],
            "drift_lateness_ms": 2_000,
            "drift_alert": True,
        }

    @property
    def drift_time_window_s(self) -> int:
        """About 16 event-time windows over the run (estimated beside realized accuracy)."""
        return max(2, round(self.duration_s / 16))


# ---- settings for the children ---------------------------------------------------------------


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value))


def settings_env(settings: Settings) -> dict[str, str]:
    """``STREAMMON_*`` variables that make ``load_settings()`` rebuild ``settings``."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        env[f"STREAMMON_{name.upper()}"] = _env_value(value)
    return env


def _child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMMON_")}
    env.update(settings_env(settings))
    # many processes on few cores: one thread each for the numeric libraries
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _configured(settings: Settings, name: str) -> bool:
    default = Settings.model_fields[name].default
    return f"STREAMMON_{name.upper()}" in os.environ or getattr(settings, name) != default


# ---- reading topics --------------------------------------------------------------------------


def _serde(settings: Settings, name: str) -> Any:
    from streaming.serde import AvroSerde, serde_for

    if settings.schema_registry_url:
        return AvroSerde(name, registry_url=settings.schema_registry_url)
    return serde_for(name)


_SCHEMAS: Final = {
    "alerts": "AlertEvent",
    "retrain-requests": "RetrainRequest",
    "model-versions": "ModelVersionEvent",
    "labeled": "LabeledExample",
    "predictions": "PredictionEvent",
}


@dataclass
class _Record:
    topic: str
    value: dict[str, Any]
    timestamp_ms: int | None


class TopicTail:
    """Reads whole topics from the beginning, outside any consumer group."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from streaming.kafka_io import client_config

        conf = client_config(settings)
        conf.update(
            {
                "group.id": f"streammon-demo-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }
        )
        self._consumer = Consumer(conf)
        self._names = {settings.topic(t): t for t in topics}
        self._serdes = {t: _serde(settings, _SCHEMAS[t]) for t in topics}
        md = self._consumer.list_topics(timeout=10)
        self._parts: list[Any] = []
        for physical in self._names:
            meta = md.topics.get(physical)
            if meta is None:
                msg = f"topic {physical} does not exist"
                raise RuntimeError(msg)
            self._parts.extend(TopicPartition(physical, p) for p in sorted(meta.partitions))
        self._consumer.assign(
            [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in self._parts]
        )
        self.undecodable = 0

    def poll(self, timeout: float = 0.0, max_messages: int = 5_000) -> list[_Record]:
        out: list[_Record] = []
        for msg in self._consumer.consume(max_messages, timeout=timeout):
            if msg.error() is not None:
                continue
            topic = self._names.get(msg.topic() or "")
            if topic is None:
                continue
            try:
                value = self._serdes[topic].decode(msg.value() or b"")
            except Exception:
                self.undecodable += 1
                continue
            kind, ts = msg.timestamp()
            out.append(_Record(topic, value, ts if kind != 0 else None))
        return out

    def drain(self, timeout_s: float = 30.0) -> list[_Record]:
        """Everything up to the current end offsets (or what came within ``timeout_s``)."""
        from confluent_kafka import TopicPartition

        ends = {}
        for tp in self._parts:
            _, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            ends[(tp.topic, tp.partition)] = high
        out: list[_Record] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out.extend(self.poll(timeout=0.2))
            positions = self._consumer.position(
                [TopicPartition(t, p) for (t, p) in ends if ends[(t, p)] > 0]
            )
            if all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions):
                break
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


class _EndOffsets:
    """End offsets of partitions, read fresh at each call (for consumer lag)."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer

        from streaming.kafka_io import client_config

        conf = client_config(settings)
        conf.update({"group.id": f"streammon-demo-lag-{uuid.uuid4().hex}"})
        self._consumer = Consumer(conf)

    def __call__(self, topic: str, partition: int) -> int | None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=5, cached=False
            )
        except KafkaException:
            return None
        return int(high)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


# ---- what happened: events of the run --------------------------------------------------------


@dataclass
class _Observed:
    """Alerts, retrain requests and model versions seen so far (from their topics)."""

    alerts: list[_Record] = field(default_factory=list)
    requests: list[_Record] = field(default_factory=list)
    versions: list[_Record] = field(default_factory=list)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=6))

    def take(self, records: Iterable[_Record], start_ms: int) -> None:
        for rec in records:
            v = rec.value
            if rec.topic == "alerts":
                self.alerts.append(rec)
                at = v.get("ends_at") if v["status"] == "resolved" else None
                t = (int(at or v["starts_at"]) - start_ms) / 1000
                self.recent.append(
                    f"{v['status']:<8} {v['rule']} v{v.get('model_version') or '*'} "
                    f"(event time {t:.1f} s)"
                )
            elif rec.topic == "retrain-requests":
                self.requests.append(rec)
                self.recent.append(f"retrain requested for v{v['model_version']}")
            elif rec.topic == "model-versions":
                if any(r.value["event_id"] == v["event_id"] for r in self.versions):
                    continue  # the champion's event, published again after another change
                self.versions.append(rec)
                why = f": {v['reason']}" if v.get("reason") else ""
                if int(v["version"]) == 0:
                    self.recent.append(f"retrain answered without a version{why}"[:110])
                elif int(v["version"]) > 1 or v["status"] != "champion":
                    self.recent.append(f"version {v['version']} {v['status']}{why}"[:110])

    def champion(self) -> int | None:
        live: dict[int, int] = {}
        for i, rec in enumerate(self.versions):
            version = int(rec.value["version"])
            if rec.value["status"] == "champion":
                live[version] = i
            else:
                live.pop(version, None)
        return max(live, key=lambda v: live[v]) if live else None

    def answered(self) -> set[str]:
        return {str(r.value["request_id"]) for r in self.versions if r.value.get("request_id")}

    def in_flight(self) -> int:
        asked = {str(r.value["request_id"]) for r in self.requests}
        return len(asked - self.answered())

    def counts(self) -> dict[str, int]:
        latest: dict[int, str] = {}
        promoted: set[int] = set()
        for rec in self.versions:
            version = int(rec.value["version"])
            if version == 0:
                continue  # a request answered without a version
            latest[version] = rec.value["status"]
            if rec.value["status"] == "champion":
                promoted.add(version)
        return {
            "requests": len({str(r.value["request_id"]) for r in self.requests}),
            "versions": len(latest),
            "promoted": len([v for v in promoted if v > 1]),
            "rejected": len([s for s in latest.values() if s == "rejected"]),
            "firing": len([r for r in self.alerts if r.value["status"] == "firing"]),
        }


# ---- children --------------------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    essential: bool = True
    """Its exiting before the end fails the run."""
    finite: bool = False
    """It exits by itself when its work is done (exit code 0)."""

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s: killing it", self.name, grace_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _streammon_argv() -> list[str]:
    found = shutil.which("streammon", path=os.path.dirname(sys.executable))
    if found:
        return [found]
    return [sys.executable, "-c", "from consumers.cli import main; main()"]


# ---- the live view ---------------------------------------------------------------------------


@dataclass
class _Progress:
    started: float
    start_ms: int
    plan: DemoPlan
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=12))

    def rate(self, produced: int) -> float:
        now = time.monotonic()
        self.samples.append((now, produced))
        t0, n0 = self.samples[0]
        return (produced - n0) / (now - t0) if now > t0 else 0.0


def _model_view(status: Mapping[str, Any]) -> Mapping[str, Any]:
    from streaming.demo_data import MODEL_NAME

    model: Mapping[str, Any] = status.get("models", {}).get(MODEL_NAME) or {}
    return model


def _numbers(status: Mapping[str, Any]) -> dict[str, Any]:
    model = _model_view(status)
    counts = model.get("counts") or {}
    versions = model.get("versions") or {}
    evaluated = sum(int(v.get("labeled") or 0) for v in versions.values())
    groups = status.get("consumer_groups") or {}
    return {
        "produced": int(counts.get("predictions") or 0),
        "joined": int(counts.get("joined") or 0),
        "evaluated": evaluated,
        "lag_joiner": (groups.get("joiner") or {}).get("lag"),
        "lag_evaluator": (groups.get("evaluator") or {}).get("lag"),
    }


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if pct and isinstance(value, int | float):
        return f"{100 * value:.1f}%"
    return str(value)


def _versions_table(status: Mapping[str, Any], window: int, champion: int | None) -> Table:
    table = Table(
        "version",
        "labeled",
        f"accuracy (last {window})",
        "F1",
        "cumulative",
        "ADWIN",
        "alarms",
        box=None,
        header_style="bold",
    )
    versions = _model_view(status).get("versions") or {}
    for name in sorted(versions, key=lambda v: int(v) if v.isdigit() else 10**9):
        v = versions[name]
        metrics = v.get("metrics") or {}
        win = (metrics.get("windows") or {}).get(f"count:{window}") or {}
        cum = metrics.get("cumulative") or {}
        det = (v.get("detectors") or {}).get("adwin") or {}
        state = str(det.get("state") or "-")
        style = {"drift": "bold red", "warning": "yellow"}.get(state, "green")
        label = f"v{name}" + (
            " (champion)" if champion is not None and str(champion) == name else ""
        )
        table.add_row(
            label,
            str(v.get("labeled") or 0),
            _fmt(win.get("accuracy"), pct=True),
            _fmt(None if win.get("f1") is None else round(float(win["f1"]), 3)),
            _fmt(cum.get("accuracy"), pct=True),
            Text(state, style=style),
            str(det.get("alarms") or 0),
        )
    return table


def _render(
    plan: DemoPlan,
    prefix: str,
    status: Mapping[str, Any],
    observed: _Observed,
    progress: _Progress,
    children: Sequence[_Child],
    expected_labeled: int,
) -> Group:
    n = _numbers(status)
    eps = progress.rate(n["produced"])
    elapsed = time.monotonic() - progress.started
    done = min(1.0, n["produced"] / plan.events)
    bar = "#" * round(30 * done) + "." * (30 - round(30 * done))
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]streammon demo[/bold] {prefix}",
        f"elapsed {elapsed:.0f} s",
        f"change at event {plan.drift_at}",
    )
    head.add_row(
        Text(f"[{bar}] {n['produced']}/{plan.events} predictions"),
        f"{eps:.0f} events/s",
        f"evaluated {n['evaluated']}/{expected_labeled} labeled",
    )
    head.add_row(
        f"lag: joiner {_fmt(n['lag_joiner'])}, evaluator {_fmt(n['lag_evaluator'])}",
        f"champion v{_fmt(observed.champion())}",
        "retrains: {requests} requested, {promoted} promoted, {rejected} rejected".format(
            **observed.counts()
        ),
    )
    firing = (_model_view(status).get("alerts") or {}).get("firing") or []
    firing_text = ", ".join(f"{a['rule']} v{a['version']}" for a in firing) or "none"
    events = "\n".join(observed.recent) or "-"
    procs = "  ".join(
        f"{c.name}:{'up' if c.alive else ('done' if c.code == 0 else f'exit {c.code}')}"
        for c in children
    )
    return Group(
        Panel(head, title="progress", border_style="blue"),
        Panel(
            _versions_table(status, plan.window, observed.champion()),
            title="per version",
            border_style="blue",
        ),
        Panel(f"firing now: {firing_text}\n{events}", title="alerts and retrains"),
        Text(procs, style="dim"),
    )


def _plain_line(
    plan: DemoPlan, status: Mapping[str, Any], observed: _Observed, progress: _Progress
) -> str:
    n = _numbers(status)
    eps = progress.rate(n["produced"])
    versions = _model_view(status).get("versions") or {}
    accs = []
    for name in sorted(versions, key=lambda v: int(v) if v.isdigit() else 10**9):
        win = ((versions[name].get("metrics") or {}).get("windows") or {}).get(
            f"count:{plan.window}"
        ) or {}
        det = ((versions[name].get("detectors") or {}).get("adwin") or {}).get("state", "-")
        accs.append(f"v{name} acc {_fmt(win.get('accuracy'), pct=True)} adwin {det}")
    c = observed.counts()
    return (
        f"[{time.monotonic() - progress.started:5.0f} s] {n['produced']}/{plan.events} "
        f"predictions ({eps:.0f}/s), evaluated {n['evaluated']}, lag "
        f"{_fmt(n['lag_joiner'])}/{_fmt(n['lag_evaluator'])}, champion "
        f"v{_fmt(observed.champion())}; {'; '.join(accs) or 'no metrics yet'}; alerts fired "
        f"{c['firing']}, retrains {c['requests']} requested / {c['promoted']} promoted"
    )


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class _Run:
    settings: Settings
    plan: DemoPlan
    prefix: str
    run_dir: Path
    start_ms: int = 0
    wall_started: float = field(default_factory=time.monotonic)
    children: list[_Child] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    """The latest ``streammon status`` data read while watching."""


def _ensure_endpoints(settings: Settings, say: Callable[[str], None]) -> tuple[Settings, list[str]]:
    """Settings pointing at a Kafka, Redis (and Alertmanager) that answer; notes for the report."""
    from consumers import devstack
    from streaming.kafka_io import wait_for_kafka

    notes: list[str] = []
    kafka_set = _configured(settings, "kafka_bootstrap_servers")
    redis_set = _configured(settings, "redis_url")
    updates: dict[str, Any] = {}
    if not (kafka_set and redis_set):
        saved = {k: os.environ.get(k) for k in (devstack.KAFKA_ENV, devstack.REDIS_ENV)}
        if kafka_set:
            os.environ[devstack.KAFKA_ENV] = settings.kafka_bootstrap_servers
        if redis_set:
            os.environ[devstack.REDIS_ENV] = settings.redis_url
        try:
            say("bringing up the local stack (scripts/services)")
            try:
                endpoints = devstack.ensure_stack(
                    with_alertmanager=settings.alertmanager_url is None
                )
            except devstack.DevStackError as exc:
                if settings.alertmanager_url is not None:
                    raise
                say(f"Alertmanager could not be started ({exc}); going on without it")
                notes.append("Alertmanager was not available: alerts were not forwarded.")
                endpoints = devstack.ensure_stack(with_alertmanager=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        updates["kafka_bootstrap_servers"] = endpoints.kafka_bootstrap
        updates["redis_url"] = endpoints.redis_url
        if settings.alertmanager_url is None and endpoints.alertmanager_url:
            updates["alertmanager_url"] = endpoints.alertmanager_url
    out = _rebuild(settings, updates)
    wait_for_kafka(out, timeout_s=90)
    from streaming.state_store import redis_client_from_settings

    redis_client_from_settings(out).ping()
    return out, notes


def _rebuild(settings: Settings, updates: Mapping[str, Any]) -> Settings:
    values = {name: getattr(settings, name) for name in Settings.model_fields}
    values.update(updates)
    return Settings(**values)


def _one_thread() -> Any:
    """Numeric libraries on one thread: OpenMP threads spin badly on a busy small machine."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(limits=1)


def _register_initial(
    settings: Settings, plan: DemoPlan, start_ms: int
) -> tuple[Any, dict[str, float]]:
    """Train version 1 on history of the old concept, register it as champion; (model,
    holdout metrics)."""
    from streaming import demo_data
    from streaming.artifacts import dump_model
    from streaming.registry import registry_from_settings
    from streaming.training import build_table, evaluate, output_profile, reference_profile

    rows = demo_data.history(plan.seed, plan.history_rows)
    cut = int(len(rows) * 0.8)
    model = demo_data.initial_model(rows[:cut], seed=plan.seed)
    holdout = build_table(demo_data.labeled_examples(rows[cut:]), max_rows=len(rows))
    metrics = evaluate(model, holdout.X, holdout.y, "classification")
    table = build_table(demo_data.labeled_examples(rows[:cut]), max_rows=len(rows))
    profile = reference_profile(table.X, table.y, categorical=table.categorical)
    profile.update(output_profile(model, holdout.X, holdout.y))
    registry = registry_from_settings(settings)
    step = plan.ms_of(1)
    registry.register(
        demo_data.MODEL_NAME,
        dump_model(model),
        status="champion",
        estimator=type(model.steps[-1][1]).__name__,
        params={"kind": demo_data.MODEL_KIND},
        metrics=metrics,
        reference_profile=profile,
        reason="initial model, trained on the concept before the change",
        training_window=(start_ms - len(rows) * step, start_ms - (len(rows) - cut) * step),
        training_rows=cut,
    )
    return model, metrics


def _spawn(run: _Run, say: Callable[[str], None]) -> None:
    plan, env = run.plan, _child_env(run.settings)
    logs = run.run_dir / "logs"
    sm = _streammon_argv()
    common = [
        "--seed",
        str(plan.seed),
        "--events",
        str(plan.events),
        "--drift-at",
        str(plan.drift_at),
        "--rate",
        repr(plan.rate),
        "--start-ms",
        str(run.start_ms),
    ]
    me = [sys.executable, "-m", "consumers.demo"]
    run.children = [
        _Child("monitor", [*sm, "monitor"], logs / "monitor.log"),
        _Child("trainer", [*sm, "trainer"], logs / "trainer.log"),
    ]
    if run.settings.alertmanager_url or run.settings.alert_webhook_urls:
        run.children.append(
            _Child("alerts", [*sm, "alerts", "forward"], logs / "alerts.log", essential=False)
        )
    for shard in range(plan.producers):
        run.children.append(
            _Child(
                f"producer-{shard}",
                [*me, "producer", *common, "--shard", str(shard), "--shards", str(plan.producers)],
                logs / f"producer-{shard}.log",
                finite=True,
            )
        )
    run.children.append(
        _Child(
            "label-source", [*me, "label-source", *common], logs / "label-source.log", finite=True
        )
    )
    cwd = Path.cwd()
    for child in run.children:
        child.start(env, cwd)
    say(
        "started "
        + ", ".join(f"{c.name} (pid {c.proc.pid if c.proc else '?'})" for c in run.children)
    )


def _expected_labeled(plan: DemoPlan, start_ms: int) -> int:
    from streaming.demo_data import applications

    return sum(
        1
        for a in applications(plan.seed, plan.events, plan.drift_at, start_ms, plan.rate)
        if a.label_delay_ms is not None
    )


def _watch(
    run: _Run,
    console: Console,
    live: bool,
    observed: _Observed,
    tail: TopicTail,
    expected_labeled: int,
    timeout_s: float,
) -> tuple[bool, str]:
    """Show progress until the stream is evaluated; (completed, reason)."""
    from consumers.cli import namespace_of
    from streaming.state_store import RedisStateStore, redis_client_from_settings
    from streaming.status import read_status

    store = RedisStateStore(
        redis_client_from_settings(run.settings),
        namespace_of(run.settings),
        max_backoff_s=run.settings.retry_max_backoff_s,
    )
    ends = _EndOffsets(run.settings)
    progress = _Progress(time.monotonic(), run.start_ms, run.plan)
    deadline = time.monotonic() + timeout_s
    finished_at: float | None = None
    last_plain = 0.0
    status: dict[str, Any] = {}
    result = (False, "timeout")

    def step() -> tuple[bool, str] | None:
        nonlocal status, finished_at
        observed.take(tail.poll(timeout=0.0), run.start_ms)
        status = read_status(store, end_offset=ends)
        run.status = status
        for child in run.children:
            code = child.code
            if code is None:
                continue
            if child.finite and code == 0:
                continue
            if child.essential:
                return False, f"{child.name} exited with code {code}:\n{child.tail()}"
        n = _numbers(status)
        producers_done = all(c.code == 0 for c in run.children if c.finite)
        drained = n["lag_joiner"] == 0 and n["lag_evaluator"] == 0
        if producers_done and drained and n["evaluated"] >= expected_labeled:
            # give a retrain in flight a moment to answer, so the report shows it
            finished_at = finished_at or time.monotonic()
            if observed.in_flight() == 0 or time.monotonic() - finished_at > 60:
                return True, "every labeled event evaluated"
        if time.monotonic() > deadline:
            return False, (
                f"timed out after {timeout_s:.0f} s: {n['evaluated']}/{expected_labeled} "
                "labeled events evaluated"
            )
        return None

    try:
        if live:
            with Live(console=console, refresh_per_second=4, transient=False) as view:
                while True:
                    done = step()
                    view.update(
                        _render(
                            run.plan,
                            run.prefix,
                            status,
                            observed,
                            progress,
                            run.children,
                            expected_labeled,
                        )
                    )
                    if done is not None:
                        result = done
                        break
                    time.sleep(_REFRESH_S)
        else:
            while True:
                done = step()
                if time.monotonic() - last_plain >= _PLAIN_EVERY_S or done is not None:
                    last_plain = time.monotonic()
                    console.print(
                        Text(_plain_line(run.plan, status, observed, progress)),
                        soft_wrap=True,
                    )
                if done is not None:
                    result = done
                    break
                time.sleep(_REFRESH_S)
    finally:
        ends.close()
    return result


def _stop_children(run: _Run) -> None:
    # the data sources first, then the services that read them
    order = ["producer", "label-source", "alerts", "trainer", "monitor"]
    for prefix in order:
        for child in run.children:
            if child.name.startswith(prefix):
                child.stop()


# ---- collecting and reporting ----------------------------------------------------------------


def _collect_report(
    run: _Run,
    observed: _Observed,
    labeled: Sequence[_Record],
    completed: bool,
    initial: Any,
    initial_metrics: Mapping[str, float],
) -> Any:
    from streaming import demo_data, report
    from streaming.alerting import DetectorRule

    plan = run.plan
    by_id: dict[str, report.ScoredEvent] = {}
    for rec in labeled:
        v = rec.value
        if v.get("model_name") != demo_data.MODEL_NAME:
            continue
        try:
            index = demo_data.index_of(str(v["prediction_id"]))
        except ValueError:
            continue
        by_id[str(v["prediction_id"])] = report.ScoredEvent(
            index=index,
            event_time_ms=int(v["prediction_timestamp"]),
            label=v["label"],
            prediction=v["prediction"],
            version=str(v["model_version"]),
        )
    live_events = sorted(by_id.values(), key=lambda e: e.index)

    kinds = {r.name: r.type for r in run.settings.rules_for(demo_data.MODEL_NAME)}
    spans: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in observed.alerts:
        v = rec.value
        key = (str(v["fingerprint"]), int(v["starts_at"]))
        span = spans.setdefault(
            key,
            {
                "rule": str(v["rule"]),
                "kind": kinds.get(str(v["rule"]), "?"),
                "version": v.get("model_version"),
                "starts_at_ms": int(v["starts_at"]),
                "ends_at_ms": None,
                "emitted_wall_ms": None,
                "summary": "",
                "retrain": "",
                "feature": (v.get("labels") or {}).get("feature"),
            },
        )
        annotations = v.get("annotations") or {}
        if v["status"] == "firing":
            span["emitted_wall_ms"] = rec.timestamp_ms
            span["summary"] = str(annotations.get("summary", ""))
            span["retrain"] = str(annotations.get("retrain", ""))
        else:
            span["ends_at_ms"] = v.get("ends_at") or v.get("emitted_at")
    alerts = [report.AlertSpan(**s) for s in spans.values()]

    markers: list[report.Marker] = []
    for rec in observed.requests:
        markers.append(
            report.Marker(
                "retrain_request",
                int(rec.value["requested_at"]),
                str(rec.value["model_version"]),
                str(rec.value.get("reason") or ""),
            )
        )
    first_served: dict[str, int] = {}
    for e in live_events:
        first_served.setdefault(e.version, e.event_time_ms)
    latest: dict[int, dict[str, Any]] = {}
    promoted: set[int] = set()
    for rec in observed.versions:
        v = rec.value
        version = int(v["version"])
        if version == 0:
            # a retrain request answered without a version (too little data, no candidate)
            markers.append(report.Marker("rejection", int(v["created_at"]), None, str(v["reason"])))
            run.notes.append(f"a retrain request was answered without a version: {v['reason']}")
            continue
        latest[version] = v
        if v["status"] == "champion" and version not in promoted:
            promoted.add(version)
            if version > 1:
                at = first_served.get(str(version), int(v["created_at"]))
                markers.append(report.Marker("promotion", at, str(version), "promoted"))
        if v["status"] == "rejected":
            markers.append(
                report.Marker("rejection", int(v["created_at"]), str(version), str(v["reason"]))
            )
    versions = [
        report.VersionInfo(
            version=version,
            status=str(v["status"]),
            estimator=v.get("estimator"),
            training_rows=v.get("training_rows"),
            metrics=dict(v.get("metrics") or {}),
            champion_metrics=dict(v.get("champion_metrics") or {}),
            reason=v.get("reason"),
            promoted=version in promoted,
        )
        for version, v in sorted(latest.items())
    ]
    if 1 not in latest:
        versions.insert(0, report.VersionInfo(1, "champion", metrics=dict(initial_metrics)))

    stream = list(
        demo_data.applications(plan.seed, plan.events, plan.drift_at, run.start_ms, plan.rate)
    )
    baseline_none = demo_data.no_retrain(initial, stream)
    periodic, refits = demo_data.periodic_retrain(
        initial,
        stream,
        every=plan.periodic_every,
        window=plan.periodic_window,
        seed=plan.seed,
    )
    markers.extend(report.Marker("refit", r.at_ms, r.version, "periodic refit") for r in refits)
    requests = len({str(r.value["request_id"]) for r in observed.requests})
    candidates = len([v for v in latest if v > 1])
    detector_names = [r.name for r in run.settings.alert_rules if isinstance(r, DetectorRule)]
    run_report = report.DemoRun(
        title="streammon demo: concept change, detection, retraining, recovery",
        seed=plan.seed,
        events=plan.events,
        drift_at=plan.drift_at,
        rate=plan.rate,
        start_ms=run.start_ms,
        live=report.System(
            "live",
            "live loop (monitor + trainer)",
            live_events,
            retrains=candidates,
            promotions=len([v for v in promoted if v > 1]),
            note=f"{requests} retrain requests",
        ),
        baselines=[
            report.System("no_retrain", "no retraining", baseline_none),
            report.System(
                "periodic",
                f"periodic retrain (every {plan.periodic_every} labels, last "
                f"{plan.periodic_window})",
                periodic,
                retrains=len(refits),
                promotions=len(refits),
            ),
        ],
        alerts=alerts,
        markers=sorted(markers, key=lambda m: m.at_ms),
        versions=versions,
        label_free={
            version: view["label_free"]
            for version, view in (
                (run.status.get("models") or {}).get(demo_data.MODEL_NAME, {}).get("versions") or {}
            ).items()
            if view.get("label_free")
        },
        window=plan.window,
        wall_seconds=time.monotonic() - run.wall_started,
        completed=completed,
        config={
            "topic prefix": run.prefix,
            "mode": "quick" if plan.quick else "default",
            "alert rules": json.dumps(to_jsonable_python(run.settings.alert_rules)),
            "detectors": json.dumps(to_jsonable_python(run.settings.detectors)),
            "detector rules": ", ".join(detector_names),
            "retrain cooldown (ms)": str(run.settings.retrain_cooldown_ms),
            "retrain min labeled": str(run.settings.retrain_min_labeled),
            "retrain window (ms)": str(run.settings.retrain_window_ms),
            "trainer candidates": ", ".join(run.settings.trainer_candidates),
            "trainer n_iter / budget (s)": (
                f"{run.settings.trainer_n_iter} / {run.settings.trainer_time_budget_s:g}"
            ),
            "label delays": str(demo_data.default_label_delays(plan.events, plan.rate)),
            "concepts": (
                f"Agrawal function {demo_data.BEFORE_FUNCTION} then {demo_data.AFTER_FUNCTION}; "
                f"loans x{demo_data.LOAN_SHIFT:g} from the change"
            ),
            "drift windows": ", ".join(run.settings.drift_windows),
            "drift false-alarm budget": (
                f"1 per {run.settings.drift_false_alarm_events} predictions "
                f"({run.settings.drift_correction})"
            ),
        },
        notes=run.notes,
    )
    return run_report


def _summary_json(run_report: Any, summary: Any, run: _Run, reason: str) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(summary)
    data.update(
        {
            "topic_prefix": run.prefix,
            "events": run.plan.events,
            "drift_at": run.plan.drift_at,
            "rate": run.plan.rate,
            "seed": run.plan.seed,
            "quick": run.plan.quick,
            "start_ms": run.start_ms,
            "change_time_ms": run_report.change_time_ms,
            "completed": run_report.completed,
            "end_reason": reason,
            "wall_seconds": run_report.wall_seconds,
            "gain_over_no_retrain": summary.gain_over_no_retrain,
            "alerts": [dataclasses.asdict(a) for a in run_report.alerts],
            "markers": [dataclasses.asdict(m) for m in run_report.markers],
            "versions": [dataclasses.asdict(v) for v in run_report.versions],
        }
    )
    return data


def run_demo(
    settings: Settings,
    *,
    events: int | None = None,
    drift_at: int | None = None,
    seed: int = 7,
    rate: float | None = None,
    quick: bool = False,
    report_dir: str | Path = "reports",
    live: bool | None = None,
    timeout_s: float | None = None,
    console: Console | None = None,
) -> int:
    """Run the demo end to end; 0 when it ran to the end and wrote the report, else 1.

    ``events``, ``drift_at`` and ``rate`` default to the mode's (``quick``: 6 000 events, change
    at 2 500, 150 events/s; otherwise 21 000, 8 000, 90/s). ``live`` None: the rich view when
    the console is a terminal, plain progress lines otherwise. ``timeout_s`` bounds the
    wait for the stream to be evaluated (default: three times its length plus two minutes).
    """
    console = console or Console()
    plan = DemoPlan.make(events=events, drift_at=drift_at, seed=seed, rate=rate, quick=quick)
    live = console.is_terminal if live is None else live
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = f"demo{stamp.replace('-', '')}{secrets.token_hex(2)}."
    run_dir = Path(report_dir) / f"demo-{stamp}-{prefix[-5:-1]}"

    began = time.monotonic()

    def say(message: str) -> None:
        stamp = f"demo [{time.monotonic() - began:5.1f} s]: "
        console.print(Text.assemble((stamp, "dim"), message), soft_wrap=True)

    base, notes = _ensure_endpoints(settings, say)
    overrides = plan.overrides()
    overrides["topic_prefix"] = prefix
    overrides["group_id_prefix"] = None
    overrides["artifact_dir"] = str((run_dir / "artifacts").resolve())
    if base.uses_insecure_key:
        overrides["state_hmac_key"] = SecretStr(secrets.token_hex(24))
    demo_settings = _rebuild(base, overrides)
    run = _Run(demo_settings, plan, prefix, run_dir, notes=notes)
    run_dir.mkdir(parents=True, exist_ok=True)

    from streaming.kafka_io import create_topics

    say(f"topics under the prefix {prefix} (Kafka {demo_settings.kafka_bootstrap_servers})")
    create_topics(demo_settings)
    say("training the initial model on the concept before the change")
    now_ms = int(time.time() * 1000)
    with _one_thread():
        initial, initial_metrics = _register_initial(demo_settings, plan, now_ms)
    say(
        f"registered version 1 (holdout accuracy {initial_metrics.get('accuracy', 0):.3f}); "
        f"{plan.events} events at {plan.rate:g}/s, change at {plan.drift_at}, seed {plan.seed}"
    )
    expected = _expected_labeled(plan, now_ms)  # the same whatever the start time
    # the stream starts a moment from now, once the producers have loaded the model
    run.start_ms = int(time.time() * 1000) + _LEAD_MS
    observed = _Observed()
    tail = TopicTail(demo_settings, ["alerts", "retrain-requests", "model-versions"])
    completed, reason = False, "interrupted"
    try:
        _spawn(run, say)
        budget = timeout_s if timeout_s is not None else plan.duration_s * 3 + 120
        completed, reason = _watch(run, console, live, observed, tail, expected, budget)
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        say("stopping the services")
        _stop_children(run)
    say(f"{'finished' if completed else 'stopped'}: {reason}")
    observed.take(tail.drain(), run.start_ms)
    tail.close()

    say("reading the labeled events back")
    labeled_tail = TopicTail(demo_settings, ["labeled"])
    labeled = labeled_tail.drain(timeout_s=60)
    labeled_tail.close()
    say(f"{len(labeled)} labeled events; replaying the baselines on the same stream")

    from streaming import report

    with _one_thread():
        run_report = _collect_report(run, observed, labeled, completed, initial, initial_metrics)
    say("writing the report")
    page = report.write_report(run_report, run_dir)
    summary = report.summarize(run_report)
    (run_dir / "summary.json").write_text(
        json.dumps(_summary_json(run_report, summary, run, reason), indent=2, default=str) + "\n"
    )
    _print_summary(console, summary, run_report)
    console.print(f"report: {page.resolve()}", highlight=False, soft_wrap=True)
    console.print(
        f"inspect the run: STREAMMON_TOPIC_PREFIX={prefix} streammon status", highlight=False
    )
    return 0 if completed else 1


def _print_summary(console: Console, summary: Any, run_report: Any) -> None:
    table = Table("", *(s.name for s in summary.systems), box=None, header_style="bold")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    table.add_row("accuracy before", *(pct(s.accuracy_before) for s in summary.systems))
    table.add_row("right after", *(pct(s.accuracy_after_change) for s in summary.systems))
    table.add_row("after recovery", *(pct(s.accuracy_after_recovery) for s in summary.systems))
    table.add_row(
        "events to recovery",
        *(
            "-" if s.events_to_recovery is None else str(s.events_to_recovery)
            for s in summary.systems
        ),
    )
    table.add_row(
        "retrains / promotions", *(f"{s.retrains} / {s.promotions}" for s in summary.systems)
    )
    console.print(table)
    if summary.detected:
        console.print(
            f"change detected by {summary.detection_rule} after {summary.detection_delay_events} "
            f"events ({summary.detection_delay_s:.1f} s of event time); false alarms "
            f"{summary.false_alarms}; promoted: "
            + (", ".join(f"v{v}" for v in summary.promoted_versions) or "none"),
            highlight=False,
        )
    else:
        console.print("the change was not detected", style="red")
    if summary.drift_detected_features:
        console.print(
            "input drift flagged without labels: "
            f"{', '.join(summary.drift_detected_features)} after "
            f"{summary.drift_detection_delay_events} events",
            highlight=False,
        )


# ---- worker processes ------------------------------------------------------------------------


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.event.set()


def _worker_settings() -> Settings:
    from consumers.logs import setup_logging
    from streaming.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    return settings


def _producer_main(args: argparse.Namespace) -> int:
    """Score this shard's applications with the champion, paced on the wall clock."""
    from streaming.client import ChampionModel, PredictionProducer
    from streaming.demo_data import MODEL_NAME, applications

    settings = _worker_settings()
    stop = _Stop()
    mine = [
        a
        for a in applications(args.seed, args.events, args.drift_at, args.start_ms, args.rate)
        if a.index % args.shards == args.shard
    ]
    model = ChampionModel(MODEL_NAME, settings, poll_interval_s=0.2)
    if not model.wait_until_ready(120):
        log.error("no champion of %s after 120 s: %s", MODEL_NAME, model.last_error)
        return 1
    producer = PredictionProducer(settings, **_PRODUCER_CONF)
    sent, last_note = 0, time.monotonic()
    versions: dict[int, int] = {}
    try:
        while sent < len(mine) and not stop.event.is_set():
            now_ms = int(time.time() * 1000)
            due: list[Any] = []
            while sent + len(due) < len(mine) and mine[sent + len(due)].event_time_ms <= now_ms:
                due.append(mine[sent + len(due)])
                if len(due) >= 500:
                    break
            if not due:
                # score in micro-batches of about a tenth of a second of the stream
                wait_ms = mine[sent].event_time_ms - now_ms
                stop.event.wait(min(0.1, max(0.001, wait_ms / 1000)) + _BATCH_S)
                producer.poll(0)
                continue
            predictions = model.predict_proba_many([a.features for a in due])
            for app, p in zip(due, predictions, strict=True):
                producer.send_prediction(
                    app.prediction_id,
                    MODEL_NAME,
                    p.version,
                    app.features,
                    p.value,
                    score=p.score,
                    probabilities=p.probabilities,
                    tags={"channel": "web" if app.index % 3 else "branch"},
                    timestamp_ms=app.event_time_ms,
                )
                versions[p.version] = versions.get(p.version, 0) + 1
            sent += len(due)
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.info("sent %d/%d predictions; by version %s", sent, len(mine), versions)
        producer.flush(60)
    finally:
        model.close()
    log.info("done: %d/%d predictions; by version %s", sent, len(mine), versions)
    return 0 if sent == len(mine) else 1


def _label_source_main(args: argparse.Namespace) -> int:
    """Emit each outcome once the stream has passed its prediction's time plus its delay."""
    from streaming.client import PredictionProducer
    from streaming.demo_data import MODEL_NAME, applications, index_of

    settings = _worker_settings()
    stop = _Stop()
    apps = list(applications(args.seed, args.events, args.drift_at, args.start_ms, args.rate))
    expected = sum(1 for a in apps if a.outcome_time_ms is not None)
    tail = TopicTail(settings, ["predictions"])
    producer = PredictionProducer(settings, **_PRODUCER_CONF)
    seen: set[int] = set()
    waiting: list[tuple[int, int]] = []
    watermark = 0
    emitted, last_note = 0, time.monotonic()
    try:
        while emitted < expected and not stop.event.is_set():
            for rec in tail.poll(timeout=0.1):
                try:
                    i = index_of(str(rec.value["prediction_id"]))
                except ValueError:
                    continue
                if i in seen or not 0 <= i < len(apps):
                    continue
                seen.add(i)
                watermark = max(watermark, int(rec.value["timestamp"]))
                due = apps[i].outcome_time_ms
                if due is not None:
                    heapq.heappush(waiting, (due, i))
            clock = max(watermark, int(time.time() * 1000))
            while waiting and waiting[0][0] <= clock:
                due, i = heapq.heappop(waiting)
                app = apps[i]
                producer.send_outcome(
                    app.prediction_id, app.label, timestamp_ms=due, model_name=MODEL_NAME
                )
                emitted += 1
            producer.poll(0)
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.info("emitted %d/%d outcomes (%d waiting)", emitted, expected, len(waiting))
        producer.flush(60)
    finally:
        tail.close()
    log.info("done: %d/%d outcomes", emitted, expected)
    return 0 if emitted == expected else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumers.demo",
        description="Worker processes of `streammon demo` (started by it, not by people).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("producer", "label-source"):
        p = sub.add_parser(name)
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--events", type=int, required=True)
        p.add_argument("--drift-at", type=int, required=True)
        p.add_argument("--rate", type=float, required=True)
        p.add_argument("--start-ms", type=int, required=True)
        if name == "producer":
            p.add_argument("--shard", type=int, default=0)
            p.add_argument("--shards", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the worker processes: ``python -m consumers.demo producer|label-source``."""
    args = _parser().parse_args(argv)
    if args.command == "producer":
        return _producer_main(args)
    return _label_source_main(args)


if __name__ == "__main__":
    sys.exit(main())
