"""Throughput and latency of ``streammon monitor`` against a bare consume + Avro-decode loop.

Usage::

    eval "$(scripts/services env)"
    .venv/bin/python bench/monitor_throughput.py [--events N] [--partitions P]
        [--skip-latency] [--latency-seconds S] [--latency-rate R] [--profile [cpu|wall]]
        [--json-out FILE] [--keep]

What it does, in one run, under a fresh topic prefix (``bench<random>.``):

1. pre-fills ``predictions`` and ``outcomes`` with N events each (one binary classifier, two
   versions, ten features, a score, outcomes delayed by a random amount, every outcome present);
2. **baseline**: a bare loop with a confluent-kafka ``Consumer`` (the services' consumer
   settings) that consumes the 2N messages and decodes them with ``serde_for``; run before and
   after the services, so a load change on the machine shows;
3. **monitor**: ``streammon monitor`` as one subprocess over the same messages, until the
   joiner's counters in Redis show N joined and the evaluator's snapshots N labeled;
4. ``streammon evaluator`` alone (over the N ``labeled`` records the monitor wrote) and
   ``streammon joiner`` alone, each with its own consumer group and Redis namespace, to split
   the cost between the two services;
5. **latency** (unless ``--skip-latency``): a fresh monitor on fresh topics, fed predictions
   immediately followed by their outcomes in 10 ms bursts at half the measured monitor rate;
   a thread polls Redis every 5 ms and each burst's latency is the time from its produce call
   to the moment every one of its outcomes is visible as joined (joiner counters) and as
   evaluated (evaluator checkpoint), per partition. Run with a 1000 ms and a 200 ms evaluator
   checkpoint interval;
6. with ``--profile``: the monitor once more under cProfile (one profile per service thread,
   on each thread's CPU time by default), printing where each thread's time goes.

Rates are given from the first checkpoint seen in Redis to the last ("steady", which leaves out
start-up and the consumer group join) and from process start ("wall"); the baseline's steady
rate runs from its first message. CPU seconds are the process's user + system time over the
steady part (all its threads, librdkafka's included); Redis CPU is the server's, from INFO.
The machine may be shared: compare the ratio, not the absolute figures. Topics, consumer
groups and Redis keys created by the run are deleted at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_REDIS = "redis://127.0.0.1:16379/0"
MODEL = "credit"
MAX_DELAY_MS = 3_600_000  # outcome delays are capped at one hour
HMAC_KEY = "bench-only-state-key-0123456789a"  # 32 characters
assert len(HMAC_KEY) == 32
CHECKPOINT_MS = 1000  # the default evaluator checkpoint interval
POLL_S = 0.05  # progress polling of the throughput runs
LATENCY_POLL_S = 0.005
BURST_S = 0.010


# ---------------------------------------------------------------------------------------------
# Settings, environment, processes


@dataclass
class Bench:
    """Everything one run shares: addresses, the prefix, what to clean up."""

    bootstrap: str
    redis_url: str
    prefix: str
    partitions: int
    events: int
    workdir: Path
    namespaces: list[str] = field(default_factory=list)
    topic_prefixes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def settings(self, topic_prefix: str | None = None, **extra: Any) -> Any:
        from streaming.settings import load_settings

        return load_settings(
            kafka_bootstrap_servers=self.bootstrap,
            redis_url=self.redis_url,
            topic_prefix=topic_prefix or self.prefix,
            predictions_partitions=self.partitions,
            state_hmac_key=HMAC_KEY,
            **extra,
        )

    def store(self, settings: Any) -> Any:
        from consumers.cli import namespace_of
        from streaming.state_store import RedisStateStore, redis_client_from_settings

        ns = namespace_of(settings)
        if ns not in self.namespaces:
            self.namespaces.append(ns)
        return RedisStateStore(redis_client_from_settings(settings), ns)

    def child_env(
        self,
        topic_prefix: str,
        *,
        key_prefix: str = "streammon",
        group_prefix: str | None = None,
        checkpoint_ms: int = CHECKPOINT_MS,
    ) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "STREAMMON_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "STREAMMON_REDIS_URL": self.redis_url,
                "STREAMMON_TOPIC_PREFIX": topic_prefix,
                "STREAMMON_PREDICTIONS_PARTITIONS": str(self.partitions),
                "STREAMMON_STATE_HMAC_KEY": HMAC_KEY,
                "STREAMMON_CHECKPOINT_INTERVAL_MS": str(checkpoint_ms),
                "STREAMMON_REDIS_KEY_PREFIX": key_prefix,
                "STREAMMON_GROUP_ID_PREFIX": group_prefix or topic_prefix,
                "STREAMMON_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        gp = group_prefix or topic_prefix
        for svc in ("joiner", "evaluator"):
            if f"{gp}streammon-{svc}" not in self.groups:
                self.groups.append(f"{gp}streammon-{svc}")
        return env

    def start(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{log_name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode


def measured_code() -> str:
    """Which streammon code runs: git revision of its checkout (with ``+dirty``), if known."""
    import streaming

    root = Path(streaming.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "streaming", "consumers"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return rev + ("+dirty" if dirty else "")


def streammon_command() -> list[str]:
    """The ``streammon`` console script of the interpreter running this file."""
    script = Path(sys.executable).parent / "streammon"
    if script.exists():
        return [str(script)]
    found = shutil.which("streammon")
    if found:
        return [found]
    return [sys.executable, "-c", "from consumers.cli import main; main()"]


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def exited(bench: Bench, label: str, proc: subprocess.Popen[bytes]) -> str:
    """Why a service stopped early: its exit code and the end of its log."""
    return f"{label} exited with {proc.returncode}:\n{tail(bench.workdir / f'{label}.log')}"


def redis_cpu_seconds(client: Any) -> float | None:
    """CPU seconds the Redis server has used (INFO cpu); other users of it count too."""
    try:
        info = client.info("cpu")
    except Exception:
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Events


FEATURES = (
    "income",
    "age",
    "debt_ratio",
    "n_accounts",
    "utilization",
    "months_employed",
    "country",
    "has_mortgage",
    "bureau_score",
    "late_payments",
)


def make_events(
    n: int, rng: random.Random, pid_prefix: str, start_ms: int, spacing_ms: int = 20
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """n predictions of a binary credit model and their n outcomes (outcomes in event time)."""
    preds: list[dict[str, Any]] = []
    outs: list[tuple[int, int, dict[str, Any]]] = []
    for i in range(n):
        pid = f"{pid_prefix}{i:09d}"
        income = round(rng.lognormvariate(10.8, 0.5), 2)
        age = rng.randint(18, 80)
        debt = round(rng.betavariate(2, 5), 4)
        accounts = rng.randint(0, 12)
        util = round(rng.random(), 4)
        employed = rng.randint(0, 480)
        bureau = round(rng.gauss(680, 60), 1)
        late = rng.randint(0, 6) if rng.random() > 0.1 else None
        logit = 2.5 * util + 3.0 * debt - (bureau - 680) / 40 + 0.3 * (late or 0) - 2.0
        score = 1 / (1 + math.exp(-logit))
        ts = start_ms + i * spacing_ms
        preds.append(
            {
                "prediction_id": pid,
                "model_name": MODEL,
                "model_version": "2" if rng.random() < 0.2 else "1",
                "timestamp": ts,
                "features": {
                    "income": income,
                    "age": age,
                    "debt_ratio": debt,
                    "n_accounts": accounts,
                    "utilization": util,
                    "months_employed": employed,
                    "country": rng.choice(("DE", "FR", "ES", "IT", "NL")),
                    "has_mortgage": rng.random() < 0.35,
                    "bureau_score": bureau,
                    "late_payments": late,
                },
                "prediction": int(score >= 0.5),
                "score": round(score, 6),
                "probabilities": None,
                "tags": {"region": rng.choice(("eu-west", "eu-central")), "channel": "web"},
            }
        )
        delay = int(min(rng.lognormvariate(math.log(30_000), 1.0), MAX_DELAY_MS))
        label = int(rng.random() < min(0.97, max(0.03, score)))
        outs.append(
            (
                ts + delay,
                i,
                {
                    "prediction_id": pid,
                    "timestamp": ts + delay,
                    "label": label,
                    "model_name": MODEL if rng.random() < 0.5 else None,
                },
            )
        )
    outs.sort(key=lambda t: (t[0], t[1]))
    return preds, [o for _, _, o in outs]


def now_ms() -> int:
    return int(time.time() * 1000)


def encode_all(
    preds: list[dict[str, Any]], outs: list[dict[str, Any]]
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    from streaming.serde import serde_for

    ps, os_ = serde_for("PredictionEvent"), serde_for("OutcomeEvent")
    return (
        [(p["prediction_id"].encode(), ps.encode(p)) for p in preds],
        [(o["prediction_id"].encode(), os_.encode(o)) for o in outs],
    )


def new_producer(settings: Any) -> Any:
    from confluent_kafka import Producer

    from streaming.kafka_io import producer_config

    return Producer(producer_config(settings, **{"client.id": "bench-producer"}))


def produce_all(producer: Any, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i, (key, value) in enumerate(items):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        msg = f"pre-fill of {topic}: {remaining} undelivered, errors: {errors[:3]}"
        raise RuntimeError(msg)


# ---------------------------------------------------------------------------------------------
# Progress in Redis


def joined_by_partition(store: Any, scopes: list[str]) -> dict[int, int]:
    """The joiner's ``joined`` counters per partition (summed over models and versions)."""
    out: dict[int, int] = {}
    for scope in scopes:
        n = 0
        for fld, raw in store.hgetall(scope, "counts").items():
            if fld.rsplit("\x1f", 1)[-1] == "joined":
                n += int(raw)
        out[int(scope.split(":", 1)[1])] = n
    return out


def labeled_count(store: Any, scopes: list[str]) -> int:
    """The evaluator's labeled count: ``labeled`` of every version snapshot (not ``*``)."""
    n = 0
    for scope in scopes:
        for fld, raw in store.hgetall(scope, "snapshots").items():
            _, version, segment = fld.split("\x1f")
            if version != "*" and not segment:
                n += int(json.loads(raw).get("labeled", 0))
    return n


def evaluated_by_source(store: Any, scopes: list[str]) -> dict[int, int]:
    """Per joiner partition, the highest ``source_sequence`` the evaluator has checkpointed.

    Joined examples of a joiner partition are numbered 1, 2, ... so this is how many of that
    partition's joined events are in the evaluator's state in Redis.
    """
    out: dict[int, int] = {}
    for scope in scopes:
        dedupe = json.loads(store.meta(scope).get("dedupe", "{}"))
        for src, seq in dedupe.items():
            out[int(src)] = out.get(int(src), 0) + int(seq)
    return out


# ---------------------------------------------------------------------------------------------
# Baseline


@dataclass
class Rate:
    label: str
    events: int
    messages: int
    wall_s: float
    steady_s: float
    steady_events: int
    cpu_s: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        if self.steady_events <= 0 or self.steady_s <= 0:
            return float("nan")  # everything landed in one checkpoint: use more --events
        return self.steady_events / self.steady_s

    @property
    def wall_events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def events_per_cpu_s(self) -> float | None:
        if not self.cpu_s or self.steady_events <= 0:
            return None
        return self.steady_events / self.cpu_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "events": self.events,
            "messages": self.messages,
            "wall_s": round(self.wall_s, 3),
            "steady_s": round(self.steady_s, 3),
            "steady_events": self.steady_events,
            "events_per_s": round(self.events_per_s, 1),
            "wall_events_per_s": round(self.wall_events_per_s, 1),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "events_per_cpu_s": (
                None if self.events_per_cpu_s is None else round(self.events_per_cpu_s, 1)
            ),
            **self.extra,
        }


def run_baseline(bench: Bench, settings: Any, label: str) -> Rate:
    """Consume the 2N pre-filled messages and Avro-decode each one; nothing else."""
    from confluent_kafka import Consumer, KafkaError

    from streaming.kafka_io import consumer_config
    from streaming.serde import serde_for

    group = f"{bench.prefix}bench-{label}"
    bench.groups.append(group)
    t_pred, t_out = settings.topic("predictions"), settings.topic("outcomes")
    pred_serde, out_serde = serde_for("PredictionEvent"), serde_for("OutcomeEvent")
    consumer = Consumer(consumer_config(settings, group, **{"client.id": "bench-baseline"}))
    consumer.subscribe([t_pred, t_out])
    want = 2 * bench.events
    n = 0
    start = time.perf_counter()
    first = first_cpu = None
    deadline = start + max(120.0, want / 2000)
    try:
        while n < want:
            if time.perf_counter() > deadline:
                msg = f"baseline: only {n} of {want} messages within the deadline"
                raise RuntimeError(msg)
            msgs = consumer.consume(
                num_messages=settings.max_batch_size, timeout=settings.poll_timeout_ms / 1000
            )
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(err))
                    continue
                if first is None:
                    first, first_cpu = time.perf_counter(), time.process_time()
                value = m.value()
                if m.topic() == t_pred:
                    pred_serde.decode(value)
                else:
                    out_serde.decode(value)
                n += 1
        end, end_cpu = time.perf_counter(), time.process_time()
    finally:
        consumer.close()
    assert first is not None and first_cpu is not None
    return Rate(
        label,
        bench.events,
        n,
        end - start,
        end - first,
        bench.events,
        end_cpu - first_cpu,
    )


# ---------------------------------------------------------------------------------------------
# Services


def run_service(
    bench: Bench,
    label: str,
    argv: list[str],
    env: dict[str, str],
    settings: Any,
    *,
    want_joined: bool,
    want_labeled: bool,
) -> Rate:
    """Start a service, follow its checkpoints in Redis until it has done the N events."""
    from streaming.state_store import redis_client_from_settings
    from streaming.status import read_status

    store = bench.store(settings)
    # every scope that can exist, so the first checkpoint is seen at once (no SCAN per poll)
    joiners = [f"joiner:{p}" for p in range(settings.predictions_partitions)]
    evaluators = [f"evaluator:{p}" for p in range(settings.labeled_partitions)]
    n = bench.events
    redis_client = redis_client_from_settings(settings)
    start = time.perf_counter()
    proc = bench.start(argv, env, label)
    first: tuple[float, int, float | None, float | None] | None = None
    joined_at = labeled_at = None
    deadline = start + max(180.0, n / 300)
    joined = labeled = 0
    try:
        while True:
            time.sleep(POLL_S)
            if proc.poll() is not None:
                raise RuntimeError(exited(bench, label, proc))
            if time.perf_counter() > deadline:
                msg = f"{label}: joined {joined}, labeled {labeled} of {n} within the deadline"
                raise RuntimeError(msg)
            if want_joined:
                joined = sum(joined_by_partition(store, joiners).values())
            if want_labeled:
                labeled = labeled_count(store, evaluators)
            now = time.perf_counter()
            progress = joined if want_joined else labeled
            if first is None and progress > 0:
                first = (now, progress, cpu_seconds(proc.pid), redis_cpu_seconds(redis_client))
            if want_joined and joined_at is None and joined >= n:
                joined_at = now
            if want_labeled and labeled_at is None and labeled >= n:
                labeled_at = now
            if (not want_joined or joined_at) and (not want_labeled or labeled_at):
                end_cpu = cpu_seconds(proc.pid)
                end_redis_cpu = redis_cpu_seconds(redis_client)
                break
        end = time.perf_counter()
    finally:
        code = bench.stop(proc)
    if code not in (0, None):
        print(f"  warning: {label} exited with {code}", file=sys.stderr)
    assert first is not None
    status = read_status(store)
    model = status["models"].get(MODEL, {})
    counts = model.get("counts", {})
    status_labeled = sum(v.get("labeled", 0) for v in model.get("versions", {}).values())
    if want_joined and counts.get("joined") != n:
        msg = f"{label}: read_status shows {counts.get('joined')} joined, expected {n}"
        raise RuntimeError(msg)
    if want_joined and counts.get("dead_letter", 0):
        msg = f"{label}: read_status shows {counts['dead_letter']} dead letters, expected none"
        raise RuntimeError(msg)
    if want_labeled and status_labeled != n:
        msg = f"{label}: read_status shows {status_labeled} labeled, expected {n}"
        raise RuntimeError(msg)
    cpu = None if end_cpu is None or first[2] is None else end_cpu - first[2]
    extra: dict[str, Any] = {"start_to_first_checkpoint_s": round(first[0] - start, 3)}
    if end_redis_cpu is not None and first[3] is not None:
        extra["redis_cpu_s"] = round(end_redis_cpu - first[3], 3)
    joiner_gens = [int(store.meta(sc).get("generation", "0")) for sc in store.scopes("joiner")]
    if joiner_gens:
        extra["joiner_batches"] = sum(joiner_gens) // 2  # a batch: intent, then checkpoint
    eval_gens = [int(store.meta(sc).get("generation", "0")) for sc in store.scopes("evaluator")]
    if eval_gens:
        extra["evaluator_checkpoints"] = sum(eval_gens)
    if want_joined and want_labeled and joined_at is not None:
        extra["joined_all_after_s"] = round(joined_at - start, 3)
        extra["joined_only_events_per_s"] = round((n - first[1]) / (joined_at - first[0]), 1)
        extra["labeled_all_after_s"] = round(end - start, 3)
    if want_joined:
        extra["dead_letter"] = counts.get("dead_letter", 0)
        extra["unlabeled"] = counts.get("unlabeled", 0)
    return Rate(label, n, 2 * n if want_joined else n, end - start, end - first[0],
                n - first[1], cpu, extra)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Latency


class Poller(threading.Thread):
    """Every few ms: per-partition joined counts and evaluated counts, with the read's time."""

    def __init__(self, store: Any, joiner_scopes: list[str], evaluator_scopes: list[str]) -> None:
        super().__init__(name="redis-poller", daemon=True)
        self.store = store
        self.joiner_scopes = joiner_scopes
        self.evaluator_scopes = evaluator_scopes
        self.samples: list[tuple[float, dict[int, int], dict[int, int]]] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def read(self) -> tuple[dict[int, int], dict[int, int]]:
        return (
            joined_by_partition(self.store, self.joiner_scopes),
            evaluated_by_source(self.store, self.evaluator_scopes),
        )

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                joined, evaluated = self.read()
                self.samples.append((time.perf_counter(), joined, evaluated))
                time.sleep(LATENCY_POLL_S)
        except BaseException as exc:  # reported by the caller
            self.error = exc


def first_time_reaching(times: list[float], counts: list[int], target: int) -> float | None:
    i = bisect.bisect_left(counts, target)
    return times[i] if i < len(times) else None


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_latency(
    bench: Bench, rate: float, seconds: float, checkpoint_ms: int, cmd: list[str]
) -> dict[str, Any]:
    """Feed a fresh monitor at ``rate`` events/s and time each burst's effect in Redis."""
    from streaming.kafka_io import create_topics

    prefix = f"{bench.prefix}lat{checkpoint_ms}."
    settings = bench.settings(prefix)
    bench.topic_prefixes.append(prefix)
    create_topics(settings)
    store = bench.store(settings)
    t_pred, t_out = settings.topic("predictions"), settings.topic("outcomes")
    rng = random.Random(1000 + checkpoint_ms)
    warm, total = 200, max(1, int(rate * seconds))
    preds, outs = make_events(warm + total, rng, "l", now_ms(), spacing_ms=1)
    # a live feed: each outcome right after its prediction, in prediction order
    outs.sort(key=lambda o: o["prediction_id"])
    enc_p, enc_o = encode_all(preds, outs)
    producer = new_producer(settings)
    label = f"latency-{checkpoint_ms}ms"
    env = bench.child_env(prefix, checkpoint_ms=checkpoint_ms)
    proc = bench.start([*cmd, "monitor"], env, label)
    joiner_scopes = [f"joiner:{p}" for p in range(bench.partitions)]
    poller: Poller | None = None
    try:
        # warm-up: the group is joined and both services have checkpointed once
        produce_all(producer, t_pred, enc_p[:warm])
        produce_all(producer, t_out, enc_o[:warm])
        deadline = time.perf_counter() + 90
        evaluator_scopes: list[str] = []
        while True:
            if proc.poll() is not None:
                raise RuntimeError(exited(bench, label, proc))
            if time.perf_counter() > deadline:
                msg = f"{label}: warm-up not done within 90 s"
                raise RuntimeError(msg)
            evaluator_scopes = store.scopes("evaluator")
            joined = joined_by_partition(store, joiner_scopes)
            evaluated = evaluated_by_source(store, evaluator_scopes)
            if sum(joined.values()) == warm and sum(evaluated.values()) == warm:
                break
            time.sleep(0.1)
        base_joined = dict(joined)
        poller = Poller(bench.store(settings), joiner_scopes, evaluator_scopes)
        poller.start()
        time.sleep(0.05)
        bursts: list[tuple[float, int]] = []
        burst_parts: list[dict[int, int]] = []
        per_burst = rate * BURST_S
        sent = k = 0
        cpu0 = cpu_seconds(proc.pid)
        start = next_at = time.perf_counter()
        while sent < total:
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            upto = min(total, round((k + 1) * per_burst))
            parts: dict[int, int] = {}
            burst_parts.append(parts)

            def delivered(err: Any, msg: Any, parts: dict[int, int] = parts) -> None:
                if err is None:
                    parts[msg.partition()] = parts.get(msg.partition(), 0) + 1

            for i in range(warm + sent, warm + upto):
                producer.produce(t_pred, value=enc_p[i][1], key=enc_p[i][0])
                producer.produce(t_out, value=enc_o[i][1], key=enc_o[i][0], on_delivery=delivered)
            bursts.append((time.perf_counter(), upto - sent))
            producer.poll(0)
            sent = upto
            k += 1
            next_at += BURST_S
        produce_end = time.perf_counter()
        if producer.flush(60):
            msg = f"{label}: producer could not deliver everything"
            raise RuntimeError(msg)
        # wait until every event is joined and evaluated
        want = warm + total
        deadline = time.perf_counter() + 120
        while True:
            if poller.error is not None:
                raise poller.error
            if poller.samples:
                _, j, e = poller.samples[-1]
                if sum(j.values()) >= want and sum(e.values()) >= want:
                    break
            if time.perf_counter() > deadline:
                msg = f"{label}: not all {want} events joined and evaluated within 120 s"
                raise RuntimeError(msg)
            time.sleep(0.05)
        cpu1 = cpu_seconds(proc.pid)
    finally:
        if poller is not None:
            poller.halt.set()
            poller.join(5)
        bench.stop(proc)
    # per partition: cumulative targets of each burst, then the first poll that reached them
    times = [s[0] for s in poller.samples]
    series_j = {p: [s[1].get(p, 0) for s in poller.samples] for p in range(bench.partitions)}
    series_e = {p: [s[2].get(p, 0) for s in poller.samples] for p in range(bench.partitions)}
    cum = dict(base_joined)
    lat_j: list[float] = []
    lat_e: list[float] = []
    for (t_prod, _), parts in zip(bursts, burst_parts, strict=True):
        for p, c in parts.items():
            cum[p] = cum.get(p, 0) + c
        reach_j = [first_time_reaching(times, series_j[p], cum[p]) for p in parts]
        reach_e = [first_time_reaching(times, series_e[p], cum[p]) for p in parts]
        if parts and None not in reach_j:
            lat_j.append(max(t for t in reach_j if t is not None) - t_prod)
        if parts and None not in reach_e:
            lat_e.append(max(t for t in reach_e if t is not None) - t_prod)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "checkpoint_interval_ms": checkpoint_ms,
        "target_events_per_s": round(rate, 1),
        "achieved_events_per_s": round(total / (produce_end - start), 1),
        "events": total,
        "bursts": len(bursts),
        "burst_ms": BURST_S * 1000,
        "poll_interval_ms_median": round(percentile(gaps, 0.5) * 1000, 2),
        "monitor_cpu_share": (
            None
            if cpu0 is None or cpu1 is None
            else round((cpu1 - cpu0) / (time.perf_counter() - start), 3)
        ),
        "joined_ms": summarize(lat_j),
        "evaluated_ms": summarize(lat_e),
    }


def summarize(lat: list[float]) -> dict[str, Any]:
    return {
        "n": len(lat),
        "p50": round(percentile(lat, 0.5) * 1000, 1),
        "p99": round(percentile(lat, 0.99) * 1000, 1),
        "max": round(max(lat) * 1000, 1) if lat else None,
    }


# ---------------------------------------------------------------------------------------------
# Profile


def profile_child(out_dir: str, service: str, clock: str) -> None:
    """Run ``streammon <service>`` with one cProfile profile per service thread.

    ``clock`` is ``cpu`` (each thread's CPU time: what the GIL-bound process spends) or
    ``wall``. The breakdown is computed here, against the code this process ran.
    """
    import cProfile

    from consumers import service as svc_mod
    from consumers.cli import main

    original = svc_mod.PartitionedService.run

    def profiled_run(self: Any, **kwargs: Any) -> int:
        prof = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        prof.enable()
        try:
            return original(self, **kwargs)
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(out_dir, f"{self.name}.prof"))
            with open(os.path.join(out_dir, f"{self.name}.json"), "w") as fh:
                json.dump(
                    {"cpu_s": time.thread_time() - cpu0, "wall_s": time.perf_counter() - wall0}, fh
                )

    svc_mod.PartitionedService.run = profiled_run  # type: ignore[method-assign]
    sys.argv = ["streammon", service]
    try:
        main()
    finally:
        breakdown = profile_breakdown(Path(out_dir))
        breakdown["clock"] = clock
        (Path(out_dir) / "breakdown.json").write_text(json.dumps(breakdown, indent=2))


def _key(fn: Callable[..., Any]) -> tuple[str, int, str]:
    code = fn.__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _cum(stats: Any, fn: Callable[..., Any] | str) -> float:
    """Cumulative seconds of a Python function, or of builtins whose name contains ``fn``."""
    if isinstance(fn, str):
        return sum(v[3] for k, v in stats.stats.items() if k[0] == "~" and fn in k[2])
    entry = stats.stats.get(_key(fn))
    return entry[3] if entry else 0.0


def _cum_from(stats: Any, fn: Callable[..., Any], caller: Callable[..., Any]) -> float:
    entry = stats.stats.get(_key(fn))
    if not entry:
        return 0.0
    sub = entry[4].get(_key(caller))
    return sub[3] if sub else 0.0


def profile_breakdown(prof_dir: Path) -> dict[str, Any]:
    import pstats

    from consumers.evaluator import Evaluator
    from consumers.joiner import Joiner
    from consumers.service import PartitionedService
    from streaming.detectors import DetectorBundle
    from streaming.evaluation import PartitionEvaluator, Series
    from streaming.join import Entry, JoinBatch
    from streaming.metrics import MetricBundle
    from streaming.serde import AvroSerde
    from streaming.state_codec import SignedStateCodec
    from streaming.state_store import RedisStateStore

    out: dict[str, Any] = {}
    j = pstats.Stats(str(prof_dir / "joiner.prof"))
    e = pstats.Stats(str(prof_dir / "evaluator.prof"))
    for name, stats in (("joiner", j), ("evaluator", e)):
        meta = json.loads((prof_dir / f"{name}.json").read_text())
        total = stats.total_tt  # everything run() did, as profiled
        consume = _cum(stats, "'consume' of 'cimpl.Consumer'")
        out[name] = {
            "wall_s": round(meta["wall_s"], 2),
            "cpu_s": round(meta["cpu_s"], 2),
            "profiled_s": round(total, 2),
            "consume_s": round(consume, 2),
            "busy_s": round(total - consume, 2),
            "parts": {},
            "top_tottime": [
                (f"{Path(k[0]).name}:{k[1]}:{k[2]}", round(v[2], 3))
                for k, v in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
            ],
        }
    jp = out["joiner"]["parts"]
    redecode = _cum_from(j, AvroSerde.decode, JoinBatch._decode_prediction) + _cum_from(
        j, AvroSerde.decode, JoinBatch._decode_outcome
    )
    join_logic = sum(
        _cum(j, fn) for fn in (JoinBatch.add_prediction, JoinBatch.add_outcome, JoinBatch.finish)
    )
    jp["decode predictions+outcomes (Joiner._decode)"] = _cum(j, Joiner._decode)
    jp["JoinBatch add/finish (without re-decode)"] = join_logic - redecode
    jp["re-decode of stored messages at join"] = redecode
    jp["Entry.decode"] = _cum(j, Entry.decode)
    jp["Entry.encode"] = _cum(j, Entry.encode)
    jp["LabeledExample encode (AvroSerde.encode)"] = _cum(j, AvroSerde.encode)
    jp["Redis: intent commit"] = _cum_from(j, RedisStateStore.commit, Joiner.process)
    jp["Redis: zrange_upto x2 + hmget"] = _cum(j, RedisStateStore.zrange_upto) + _cum(
        j, RedisStateStore.hmget
    )
    jp["Redis: checkpoint commit"] = _cum_from(j, RedisStateStore.commit, Joiner.checkpoint)
    jp["produce + flush (wait for acks)"] = _cum(j, PartitionedService.produce_all)
    jp["offset mirror commit"] = _cum(j, PartitionedService._commit_for_monitoring)
    jp["Joiner.checkpoint building ops (without commit/encode)"] = (
        _cum(j, Joiner.checkpoint)
        - _cum_from(j, RedisStateStore.commit, Joiner.checkpoint)
        - _cum(j, Entry.encode)
    )
    jp["consume (librdkafka fetch; waiting too on the wall clock)"] = out["joiner"]["consume_s"]
    ep = out["evaluator"]["parts"]
    ep["consume (librdkafka fetch; waiting too on the wall clock)"] = out["evaluator"]["consume_s"]
    ep["LabeledExample decode"] = _cum(e, AvroSerde.decode)
    ep["PartitionEvaluator.apply (total)"] = _cum(e, PartitionEvaluator.apply)
    ep["  MetricBundle.update"] = _cum(e, MetricBundle.update)
    ep["  DetectorBundle.update"] = _cum(e, DetectorBundle.update)
    ep["  error_of + Series bookkeeping"] = (
        _cum(e, Series.update) - _cum(e, MetricBundle.update) - _cum(e, DetectorBundle.update)
    )
    ep["checkpoint (flush_partition, total)"] = _cum(e, Evaluator.flush_partition)
    ep["  pickling + HMAC (SignedStateCodec.encode)"] = _cum(e, SignedStateCodec.encode)
    ep["  Series.snapshot"] = _cum(e, Series.snapshot)
    ep["  Redis commit"] = _cum(e, RedisStateStore.commit)

    def calls(stats: Any, fns: dict[str, Callable[..., Any]]) -> dict[str, int]:
        return {k: (stats.stats.get(_key(f)) or (0, 0))[1] for k, f in fns.items()}

    out["joiner"]["calls"] = calls(
        j,
        {
            "AvroSerde.decode": AvroSerde.decode,
            "AvroSerde.encode": AvroSerde.encode,
            "Entry.encode": Entry.encode,
            "Entry.decode": Entry.decode,
            "RedisStateStore.commit": RedisStateStore.commit,
        },
    )
    out["evaluator"]["calls"] = calls(
        e,
        {
            "AvroSerde.decode": AvroSerde.decode,
            "PartitionEvaluator.apply": PartitionEvaluator.apply,
            "Series.update": Series.update,
            "Evaluator.flush_partition": Evaluator.flush_partition,
            "Series.snapshot": Series.snapshot,
        },
    )
    for name in ("joiner", "evaluator"):
        total = out[name]["profiled_s"]
        parts = out[name]["parts"]
        listed = sum(v for k, v in parts.items() if not k.startswith(" "))
        parts["rest of the loop"] = total - listed
        out[name]["parts"] = {
            k: {"s": round(v, 3), "share": round(v / total, 3) if total else None}
            for k, v in parts.items()
        }
    return out


def run_profile(
    bench: Bench, clock: str, messages: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]
) -> dict[str, Any]:
    """The monitor once more under cProfile, on fresh topics holding the same messages (so its
    evaluator reads only what its joiner writes)."""
    from streaming.kafka_io import create_topics

    prof_dir = bench.workdir / f"profile-{clock}"
    prof_dir.mkdir(exist_ok=True)
    prefix = f"{bench.prefix}prof{clock}."
    bench.topic_prefixes.append(prefix)
    settings = bench.settings(prefix)
    create_topics(settings)
    producer = new_producer(settings)
    produce_all(producer, settings.topic("predictions"), messages[0])
    produce_all(producer, settings.topic("outcomes"), messages[1])
    env = bench.child_env(prefix)
    argv = [sys.executable, str(Path(__file__).resolve()), "--profile-child", str(prof_dir)]
    rate = run_service(
        bench, f"profiled-{clock}", [*argv, "monitor", clock], env, settings,
        want_joined=True, want_labeled=True,
    )  # fmt: skip
    breakdown: dict[str, Any] = json.loads((prof_dir / "breakdown.json").read_text())
    breakdown["rate_under_profiler"] = rate.as_dict()
    return breakdown


# ---------------------------------------------------------------------------------------------
# Cleanup


def cleanup(bench: Bench) -> None:
    import redis
    from confluent_kafka import KafkaException

    from streaming.kafka_io import admin_client, topic_specs

    for proc in list(bench.procs):
        bench.stop(proc, 10)
    settings = bench.settings()
    admin = admin_client(settings)
    topics = []
    existing = admin.list_topics(timeout=10).topics
    for prefix in bench.topic_prefixes:
        topics += [s.name for s in topic_specs(bench.settings(prefix)) if s.name in existing]
    if topics:
        for fut in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                fut.result()
    if bench.groups:
        with contextlib.suppress(Exception):
            for fut in admin.delete_consumer_groups(bench.groups, request_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    fut.result()
    r = redis.Redis.from_url(bench.redis_url)
    deleted = 0
    for ns in bench.namespaces:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in ns) + ":*"
        batch: list[bytes] = []
        for key in r.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += r.delete(*batch)
                batch = []
        if batch:
            deleted += r.delete(*batch)
    print(
        f"cleanup: deleted {len(topics)} topics, {len(bench.groups)} consumer groups, "
        f"{deleted} Redis keys"
    )


# ---------------------------------------------------------------------------------------------
# Report


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def print_rates(rates: list[Rate]) -> None:
    print()
    print(
        f"{'run':<18}{'events/s':>12}{'wall ev/s':>12}{'steady s':>10}{'wall s':>9}"
        f"{'CPU s':>8}{'ev/CPU-s':>11}{'Redis CPU s':>13}{'batches':>9}{'eval ckpts':>12}"
    )
    for r in rates:
        print(
            f"{r.label:<18}{fmt(r.events_per_s):>12}{fmt(r.wall_events_per_s):>12}"
            f"{r.steady_s:>10.2f}{r.wall_s:>9.2f}{fmt(r.cpu_s, 2):>8}"
            f"{fmt(r.events_per_cpu_s):>11}{fmt(r.extra.get('redis_cpu_s'), 2):>13}"
            f"{fmt(r.extra.get('joiner_batches')):>9}{fmt(r.extra.get('evaluator_checkpoints')):>12}"
        )


def print_profile(prof: dict[str, Any]) -> None:
    for name in ("joiner", "evaluator"):
        p = prof[name]
        print(
            f"  {name} thread: wall {p['wall_s']} s, CPU {p['cpu_s']} s, "
            f"profiled ({prof['clock']}) {p['profiled_s']} s"
        )
        for part, v in p["parts"].items():
            print(f"    {part:<60}{v['s']:>8.2f} s {100 * (v['share'] or 0):>5.1f}%")
        print("    calls: " + ", ".join(f"{k} {v:,}" for k, v in p["calls"].items()))
        print("    top by own time:")
        for fn, tt in p["top_tottime"][:12]:
            print(f"      {tt:>7.2f} s  {fn}")


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    print(f"... {what}", flush=True)
    t = time.perf_counter()
    yield
    print(f"    done in {time.perf_counter() - t:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profile-child"]:
        profile_child(argv[1], argv[2], argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="predictions (and outcomes)")
    ap.add_argument("--partitions", type=int, default=3, help="partitions of predictions/outcomes")
    ap.add_argument("--skip-latency", action="store_true", help="only the throughput part")
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--latency-rate", type=float, help="events/s (default: half the monitor rate)")
    ap.add_argument(
        "--profile",
        choices=("cpu", "wall"),
        nargs="?",
        const="cpu",
        help="also run the monitor under cProfile, per thread, on CPU time (default) or wall time",
    )
    ap.add_argument("--json-out", type=Path, help="write every figure as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep topics and Redis keys")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    bench = Bench(
        bootstrap=os.environ.get("STREAMMON_KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP),
        redis_url=os.environ.get("STREAMMON_REDIS_URL", DEFAULT_REDIS),
        prefix=f"bench{secrets.token_hex(3)}.",
        partitions=args.partitions,
        events=args.events,
        workdir=Path(tempfile.mkdtemp(prefix="streammon-bench-")),
    )
    bench.topic_prefixes.append(bench.prefix)
    cmd = streammon_command()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "events": args.events,
        "partitions": args.partitions,
        "prefix": bench.prefix,
        "code": measured_code(),
    }
    print(
        f"streammon monitor throughput: {args.events:,} predictions + {args.events:,} outcomes, "
        f"{args.partitions} partitions, prefix {bench.prefix}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, code {results['code']}"
    )
    try:
        from streaming.kafka_io import create_topics

        settings = bench.settings()
        print(
            f"settings: max_batch_size {settings.max_batch_size}, poll_timeout_ms "
            f"{settings.poll_timeout_ms}, checkpoint_interval_ms {CHECKPOINT_MS}, windows "
            f"{settings.windows}, detectors {sorted(settings.detectors)}, labeled partitions "
            f"{settings.labeled_partitions}"
        )
        with step("creating topics and pre-filling"):
            create_topics(settings)
            # event times end now: recent enough for the topics' retention
            start_ms = now_ms() - 20 * args.events - MAX_DELAY_MS
            preds, outs = make_events(args.events, random.Random(args.seed), "p", start_ms)
            enc_p, enc_o = encode_all(preds, outs)
            del preds, outs
            producer = new_producer(settings)
            produce_all(producer, settings.topic("predictions"), enc_p)
            produce_all(producer, settings.topic("outcomes"), enc_o)
            del producer
        rates: list[Rate] = []
        with step("baseline (bare consume + decode)"):
            rates.append(run_baseline(bench, settings, "baseline-1"))
        with step("streammon monitor"):
            env = bench.child_env(bench.prefix)
            monitor = run_service(
                bench, "monitor", [*cmd, "monitor"], env, settings,
                want_joined=True, want_labeled=True,
            )  # fmt: skip
            rates.append(monitor)
        with step("streammon evaluator alone (the monitor's labeled records, 100 ms checkpoints)"):
            # 100 ms checkpoints: the evaluator alone is quick, 1 s would hide its progress
            kp = "streammonbench-evaluator"
            env = bench.child_env(
                bench.prefix, key_prefix=kp, group_prefix=f"{bench.prefix}ev.", checkpoint_ms=100
            )
            rates.append(
                run_service(
                    bench, "evaluator-alone", [*cmd, "evaluator"], env,
                    bench.settings(redis_key_prefix=kp), want_joined=False, want_labeled=True,
                )
            )  # fmt: skip
        with step("streammon joiner alone"):
            kp = "streammonbench-joiner"
            env = bench.child_env(bench.prefix, key_prefix=kp, group_prefix=f"{bench.prefix}jo.")
            rates.append(
                run_service(
                    bench, "joiner-alone", [*cmd, "joiner"], env,
                    bench.settings(redis_key_prefix=kp), want_joined=True, want_labeled=False,
                )
            )  # fmt: skip
        with step("baseline again"):
            rates.append(run_baseline(bench, settings, "baseline-2"))
        print_rates(rates)
        base = [r.events_per_s for r in rates if r.label.startswith("baseline")]
        base_rate = sum(base) / len(base)
        base_cpu = [r.events_per_cpu_s for r in rates if r.label.startswith("baseline")]
        ratio = monitor.events_per_s / base_rate
        spread = (max(base) - min(base)) / max(base)
        results["baseline_spread"] = round(spread, 3)
        print()
        if spread > 0.25:
            print(
                f"note: the two baselines differ by {100 * spread:.0f}%: the machine's load "
                "changed during the run; the per-CPU-second ratio is the steadier figure"
            )
        print(
            f"baseline {fmt(base_rate)} events/s | monitor {fmt(monitor.events_per_s)} events/s "
            f"| ratio {ratio:.2f}"
        )
        print(
            f"(monitor until all joined, before the evaluator's last checkpoint: "
            f"{fmt(monitor.extra['joined_only_events_per_s'])} events/s, ratio "
            f"{monitor.extra['joined_only_events_per_s'] / base_rate:.2f})"
        )
        if all(base_cpu) and monitor.events_per_cpu_s:
            cpu_ratio = monitor.events_per_cpu_s / (sum(base_cpu) / len(base_cpu))  # type: ignore[arg-type]
            print(f"per CPU-second: ratio {cpu_ratio:.2f}")
            results["cpu_ratio"] = round(cpu_ratio, 3)
        results["rates"] = [r.as_dict() for r in rates]
        results["baseline_events_per_s"] = round(base_rate, 1)
        results["ratio"] = round(ratio, 3)
        if not args.skip_latency:
            rate = args.latency_rate or monitor.events_per_s / 2
            results["latency"] = []
            for cp in (CHECKPOINT_MS, 200):
                with step(f"latency at {rate:,.0f} events/s, checkpoint interval {cp} ms"):
                    lat = run_latency(bench, rate, args.latency_seconds, cp, cmd)
                results["latency"].append(lat)
                j, e = lat["joined_ms"], lat["evaluated_ms"]
                print(
                    f"    produce -> joined in Redis: p50 {j['p50']} ms, p99 {j['p99']} ms | "
                    f"-> evaluated: p50 {e['p50']} ms, p99 {e['p99']} ms "
                    f"({lat['bursts']} bursts, achieved {fmt(lat['achieved_events_per_s'])} ev/s)"
                )
        if args.profile:
            with step(f"profiling the monitor (cProfile per service thread, {args.profile} time)"):
                results["profile"] = prof = run_profile(bench, args.profile, (enc_p, enc_o))
            print_profile(prof)
        results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if args.keep:
            print(f"kept topics under {bench.prefix} and Redis namespaces {bench.namespaces}")
        else:
            cleanup(bench)
        print(f"logs: {bench.workdir}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
