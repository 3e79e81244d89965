"""Exactly once across crashes, rebalances, fencing and a Redis stall (real processes).

Each test runs ``streammon monitor`` processes in one consumer group against the real stack,
disturbs them while a stream is being produced, and then requires the *exact* final counts and
metrics of ``tests/test_monitor_integration.py``: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_checks import SEGMENT_TAG, assert_counts, assert_metrics, topics
from procs import (
    EndOffsets,
    Fleet,
    Service,
    cleanup_prefix,
    create_topics,
    fleet,
    wait_consumed,
)
from streams import BackgroundProducer, GeneratedStream, generate_monitor_stream, produce

pytestmark = pytest.mark.integration

PARTITIONS = 3
# A join window (30 s + 15 s grace) much shorter than the streams: entries expire mid-stream,
# so the expiry indexes and counters go through the crashes too.
MAX_DELAY_MS, GRACE_MS = 30_000, 15_000
JOINED = "m\x1f1\x1fjoined"
MIN_KILLS, MAX_KILLS = 4, 10


@pytest.fixture
def monitor_env(
    service_env: dict[str, str], stack: dict[str, str], unique_prefix: str
) -> Iterator[dict[str, str]]:
    """Service environment for these tests; the test's topics and Redis keys go after."""
    yield {
        **service_env,
        "STREAMMON_JOIN_MAX_LABEL_DELAY_MS": str(MAX_DELAY_MS),
        "STREAMMON_JOIN_GRACE_MS": str(GRACE_MS),
        # small batches and frequent evaluator checkpoints: a kill lands between the steps
        "STREAMMON_MAX_BATCH_SIZE": "500",
        "STREAMMON_CHECKPOINT_INTERVAL_MS": "300",
        "STREAMMON_SEGMENT_TAGS": f'["{SEGMENT_TAG}"]',
    }
    cleanup_prefix(stack["kafka"], stack["redis"], unique_prefix, f"streammon:{unique_prefix}")


def make_stream(n: int, seed: int, step_ms: int = 1) -> GeneratedStream:
    """A stream longer than the join window: entries expire while it flows (no re-sent
    predictions, see :func:`streams.generate_monitor_stream`)."""
    stream = generate_monitor_stream(
        n,
        seed=seed,
        step_ms=step_ms,
        max_outcome_delay_ms=20_000,
        duplicate_prediction_rate=0.0,
        expire_mid_stream=True,
        max_label_delay_ms=MAX_DELAY_MS,
        grace_ms=GRACE_MS,
        late_rate=0.02,
    )
    assert stream.last_event_ms - stream.t0_ms > 1.3 * (MAX_DELAY_MS + GRACE_MS)
    return stream


def labeled_so_far(ends: EndOffsets, prefix: str) -> int:
    return sum(ends(f"{prefix}labeled").values())


def finish_and_check(
    env: dict[str, str],
    prefix: str,
    bootstrap: str,
    stream: GeneratedStream,
    ends: EndOffsets,
    alive: list[Service],
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Wait until all is consumed, check, flush the watermarks, wait, check everything."""

    def check() -> None:
        for svc in alive:
            svc.assert_alive()

    st = wait_consumed(env, prefix, ends, timeout=timeout, check=check)
    assert_counts(st, stream, flushed=False)
    produce(bootstrap, topics(prefix), stream.flush_events(PARTITIONS))
    st = wait_consumed(env, prefix, ends, timeout=90, check=check)
    assert_counts(st, stream, flushed=True)
    assert_metrics(st, stream, segments=True)
    return st


def replays(f: Fleet) -> int:
    return sum(svc.log_text().count("replays an unfinished batch") for svc in f.services)


@pytest.mark.parametrize(
    "n_predictions",
    [
        pytest.param(100_000, id="100k"),
        pytest.param(250_000, id="250k", marks=pytest.mark.slow),
    ],
)
def test_kill_9_and_restart_two_monitors(
    n_predictions: int,
    monitor_env: dict[str, str],
    stack: dict[str, str],
    unique_prefix: str,
    tmp_path: Path,
    ends: EndOffsets,
) -> None:
    started = time.monotonic()
    rng = random.Random(20_240_601)
    stream = make_stream(n_predictions, seed=7)
    generated = time.monotonic()
    env = {
        **monitor_env,
        # the broker's minimum: a killed member's partitions move on after 6 s
        "STREAMMON_KAFKA_CONSUMER_CONFIG": '{"session.timeout.ms": 6000, '
        '"heartbeat.interval.ms": 1500}',
    }
    create_topics(env)
    total_joined = len(stream.expected.pairs)
    redis_url = stack["redis"]
    with fleet(env, tmp_path) as f:
        a, b = f.start("monitor-a"), f.start("monitor-b")
        # produced while the monitors run (and get killed): 50 s per 100,000 predictions
        seconds = 50 * n_predictions / 100_000
        producer = BackgroundProducer(
            stack["kafka"], topics(unique_prefix), stream.events, len(stream.events) / seconds
        )
        producer.start()
        kills: list[tuple[float, str, int, list[int]]] = []
        victims = rng.sample([a, b], 2)  # taking turns, so that both die
        # At least MIN_KILLS, all while the stream is being produced. Each victim is frozen
        # (SIGSTOP) at a random moment until one of its joiner partitions is caught between
        # its intent and its checkpoint, then killed there: the next owner must replay it.
        # More kills (up to MAX_KILLS) until a replay re-produced examples that the evaluators
        # then dropped as duplicates.
        while producer.is_alive() and (
            len(kills) < MIN_KILLS
            or (dropped_duplicates(redis_url, unique_prefix) == 0 and len(kills) < MAX_KILLS)
        ):
            wait_busy(ends, unique_prefix, [a, b])
            time.sleep(rng.uniform(0.2, 1.5))
            victim = victims[len(kills) % 2]
            victim.assert_alive()
            caught = freeze_mid_batch(victim, redis_url, unique_prefix, rng)
            progress = labeled_so_far(ends, unique_prefix)
            victim.kill()
            kills.append((round(time.monotonic() - generated, 1), victim.name, progress, caught))
            time.sleep(rng.uniform(0.0, 1.0))
            assigned = victim.log_text().count("joiner: assigned partition")
            victim.start()
            # the next kill should hit a member that owns partitions again
            victim.wait_for_log("joiner: assigned partition", assigned + 1)
        assert len(kills) >= MIN_KILLS, f"the stream ended after {len(kills)} kills"
        producer.result()
        print(f"kills (seconds, victim, labeled records so far, partitions mid-batch): {kills}")
        assert all(progress > 0 for _, _, progress, _ in kills), kills
        mid_batch = sum(len(caught) for *_, caught in kills)
        assert mid_batch >= MIN_KILLS, kills
        st = finish_and_check(env, unique_prefix, stack["kafka"], stream, ends, [a, b], 240)
        labeled_records = labeled_so_far(ends, unique_prefix)
        print(
            f"{n_predictions} predictions, {len(stream.events)} events: generated in "
            f"{generated - started:.1f}s, the rest took {time.monotonic() - generated:.1f}s; "
            f"{labeled_records - total_joined} labeled records re-produced by replays, "
            f"{replays(f)} intent replays logged, "
            f"{dropped_duplicates(stack['redis'], unique_prefix)} duplicates dropped"
        )
        # every partition caught mid-batch was replayed by its next owner
        assert replays(f) >= mid_batch
        assert st["dead_letter"]["labeled"] == 0
        assert labeled_records >= total_joined


def freeze_mid_batch(
    svc: Service, redis_url: str, prefix: str, rng: random.Random, tries: int = 50
) -> list[int]:
    """SIGSTOP ``svc`` at random moments until one of its joiner partitions is caught between
    intent and checkpoint; return them, ``svc`` left frozen (or [] and running)."""
    for _ in range(tries):
        svc.pause()
        caught = mid_batch_partitions(svc, redis_url, prefix)
        if caught:
            return caught
        svc.resume()
        time.sleep(rng.uniform(0.01, 0.2))
    return []


def mid_batch_partitions(svc: Service, redis_url: str, prefix: str) -> list[int]:
    """Joiner partitions that ``svc`` owns (its epoch is the current one) whose stored intent
    is set: the batch is planned but not checkpointed."""
    import redis

    owned = {
        int(p): int(e)
        for p, e in re.findall(r"joiner: assigned partition (\d+) \(epoch (\d+)", svc.current_log())
    }
    r = redis.Redis.from_url(redis_url)
    try:
        caught = []
        for p, epoch in sorted(owned.items()):
            base = f"streammon:{prefix}:{{joiner:{p}}}:"
            if int(r.get(base + "epoch") or 0) == epoch and r.hget(base + "meta", "intent"):
                caught.append(p)
        return caught
    finally:
        r.close()


def dropped_duplicates(redis_url: str, prefix: str) -> int:
    """Replayed examples the evaluators dropped (``duplicates_dropped`` of their checkpoints)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        return sum(
            int(r.hget(f"streammon:{prefix}:{{evaluator:{p}}}:meta", "duplicates_dropped") or 0)
            for p in range(PARTITIONS)
        )
    finally:
        r.close()


def wait_busy(ends: EndOffsets, prefix: str, services: list[Service], timeout: float = 60) -> None:
    """Wait until the joiners are producing (the group is not stalled in a rebalance)."""
    deadline = time.monotonic() + timeout
    last = labeled_so_far(ends, prefix)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        for svc in services:
            svc.assert_alive()
        now = labeled_so_far(ends, prefix)
        if now > last:
            return
        last = now
    msg = f"the monitors made no progress for {timeout:.0f}s"
    raise AssertionError(msg)


def test_rebalance_without_loss(
    monitor_env: dict[str, str],
    stack: dict[str, str],
    unique_prefix: str,
    tmp_path: Path,
    ends: EndOffsets,
) -> None:
    """One monitor, then three (partitions move), then one of them stopped with SIGTERM.

    This one has the full mix, re-sent predictions and duplicated orphans included: its join
    window is longer than the stream, so everything expires at the flush.
    """
    window_ms = 120_000
    monitor_env = {**monitor_env, "STREAMMON_JOIN_MAX_LABEL_DELAY_MS": str(window_ms)}
    stream = generate_monitor_stream(30_000, seed=9, step_ms=2, max_outcome_delay_ms=20_000)
    assert stream.last_event_ms - stream.t0_ms + 2000 < window_ms + GRACE_MS
    assert stream.expected.model_counts("credit")["duplicate_predictions"] > 0
    create_topics(monitor_env)
    total_joined = len(stream.expected.pairs)

    def wait_progress(examples: float, services: list[Service], timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while (done := labeled_so_far(ends, unique_prefix)) < examples:
            for svc in services:
                svc.assert_alive()
            assert time.monotonic() < deadline, f"stuck at {done} of {total_joined} examples"
            time.sleep(0.2)
        return done

    with fleet(monitor_env, tmp_path) as f:
        first = f.start("monitor-1")
        first.wait_for_log("joiner: assigned partition", PARTITIONS)
        producer = BackgroundProducer(
            stack["kafka"], topics(unique_prefix), stream.events, rate_per_s=len(stream.events) / 25
        )
        producer.start()
        wait_progress(0.1 * total_joined, [first])
        second, third = f.start("monitor-2"), f.start("monitor-3")
        # the partitions move: the newcomers get some, the first gives some up
        second.wait_for_log("joiner: assigned partition")
        third.wait_for_log("joiner: assigned partition")
        first.wait_for_log("joiner: revoked partition")
        moved = labeled_so_far(ends, unique_prefix)
        wait_progress(moved + 0.1 * total_joined, [first, second, third])
        # a clean stop in the middle of the stream: finish the batch, checkpoint, leave
        stopped_at = labeled_so_far(ends, unique_prefix)
        assert first.terminate() == 0, first.tail()
        log = first.current_log()
        assert "joiner: stopped after" in log
        assert "evaluator: stopped after" in log
        producer.result()
        finish_and_check(monitor_env, unique_prefix, stack["kafka"], stream, ends, [second, third])
        owners = {
            svc.name: sorted(set(re.findall(r"joiner: assigned partition (\d+)", svc.log_text())))
            for svc in f.services
        }
        print(
            f"{total_joined} examples: rebalanced at {moved}, SIGTERM at {stopped_at}; "
            f"joiner partitions owned per process over the test: {owners}"
        )
        assert all(owners.values()), owners
        assert moved < stopped_at < total_joined


def test_fencing_on_the_real_redis(make_settings: Any, unique_prefix: str) -> None:
    import redis

    from streaming.errors import FencedError, StateError
    from streaming.state_store import Ops, RedisStateStore, redis_client_from_settings

    settings = make_settings()
    namespace = f"streammon:{unique_prefix}"
    client = redis_client_from_settings(settings)
    store = RedisStateStore(client, namespace)
    scope = "joiner:0"
    raw = redis.Redis.from_url(settings.redis_url)
    counts_key = f"{namespace}:{{{scope}}}:counts"
    try:
        old = store.claim(scope)
        store.commit(
            scope,
            old,
            1,
            Ops().hincrby("counts", JOINED, 5).hset("entries", "p1", b"P").meta("o", 7),
        )
        new = store.claim(scope)
        assert new > old

        def snapshot() -> tuple[Any, ...]:
            return (
                store.meta(scope),
                store.hgetall(scope, "counts"),
                store.hgetall(scope, "entries"),
                raw.hgetall(counts_key),
            )

        before = snapshot()
        assert before[0] == {"generation": "1", "o": "7"}
        assert before[1] == {JOINED: b"5"}
        # the zombie's next checkpoint, and a replay of its last one, are both refused
        for generation in (2, 1):
            zombie = (
                Ops()
                .hincrby("counts", JOINED, 100)
                .hset("entries", "p1", b"zombie")
                .hdel("entries", "p1")
                .meta("o", 99)
            )
            with pytest.raises(FencedError, match=f"epoch {old} was fenced by epoch {new}"):
                store.commit(scope, old, generation, zombie)
            assert snapshot() == before

        # the new owner's checkpoint applies once; a retry with the same generation is a no-op
        ops = Ops().hincrby("counts", JOINED, 3).hset("entries", "p2", b"J").meta("o", 9)
        store.commit(scope, new, 2, ops)
        store.commit(scope, new, 2, ops)
        assert store.hgetall(scope, "counts") == {JOINED: b"8"}
        assert store.hgetall(scope, "entries") == {"p1": b"P", "p2": b"J"}
        assert store.meta(scope) == {"generation": "2", "o": "9"}
        # a generation that skips one is refused and changes nothing
        with pytest.raises(StateError, match="cannot precede"):
            store.commit(scope, new, 4, Ops().hincrby("counts", JOINED, 1))
        assert raw.hget(counts_key, JOINED) == b"8"
        assert store.scopes("joiner") == [scope]
    finally:
        keys = list(raw.scan_iter(match=f"{namespace}:*"))
        if keys:
            raw.delete(*keys)
        raw.close()
        client.close()


def test_redis_write_pause_is_retried_without_loss(
    monitor_env: dict[str, str],
    stack: dict[str, str],
    unique_prefix: str,
    tmp_path: Path,
    ends: EndOffsets,
) -> None:
    """``CLIENT PAUSE ... WRITE`` stalls every checkpoint for 5 s: the monitor retries (its
    socket timeout is shorter) and carries on. Then a batch is held between its output and
    its checkpoint (frozen mid-batch, thawed while Redis refuses writes) and the monitor is
    killed there: the restarted one replays the batch and the evaluators drop the copies.
    Everything is still counted exactly once."""
    import redis

    env = {
        **monitor_env,
        "STREAMMON_REDIS_SOCKET_TIMEOUT_S": "1",
        "STREAMMON_RETRY_MAX_BACKOFF_S": "1",
    }
    rng = random.Random(5)
    stream = make_stream(15_000, seed=13, step_ms=4)
    create_topics(env)
    r = redis.Redis.from_url(stack["redis"])
    with fleet(env, tmp_path) as f:
        monitor = f.start("monitor")
        monitor.wait_for_log("joiner: assigned partition", PARTITIONS)
        producer = BackgroundProducer(
            stack["kafka"], topics(unique_prefix), stream.events, rate_per_s=len(stream.events) / 20
        )
        producer.start()
        wait_busy(ends, unique_prefix, [monitor])
        assert r.client_pause(5000, all=False)
        time.sleep(5.5)
        monitor.assert_alive()
        retried = re.findall(r"Redis unavailable .*retrying in", monitor.log_text())
        assert retried, "the monitor never logged a Redis retry"

        # The single monitor is the only writer of `labeled`: records that appear while it
        # is thawed under the pause belong to the batch that waits for its checkpoint.
        held = 0
        for _ in range(5):
            wait_busy(ends, unique_prefix, [monitor])
            caught = freeze_mid_batch(monitor, stack["redis"], unique_prefix, rng)
            if not caught:
                continue
            before = labeled_so_far(ends, unique_prefix)
            assert r.client_pause(3000, all=False)
            if mid_batch_partitions(monitor, stack["redis"], unique_prefix):
                monitor.resume()
                time.sleep(1.5)  # the batch is produced; its checkpoint waits for Redis
                held = labeled_so_far(ends, unique_prefix) - before
                if held > 0:
                    monitor.kill()
                    r.client_unpause()
                    monitor.start()
                    break
            monitor.resume()
            r.client_unpause()
        assert held > 0, "never caught a batch between its output and its checkpoint"
        producer.result()
        finish_and_check(env, unique_prefix, stack["kafka"], stream, ends, [monitor])
        dropped = dropped_duplicates(stack["redis"], unique_prefix)
        print(
            f"{len(retried)} Redis retries logged; killed with {held} examples produced but not "
            f"checkpointed; {replays(f)} replays, {dropped} duplicates dropped"
        )
        assert replays(f) >= 1
        assert dropped >= held
    r.close()
