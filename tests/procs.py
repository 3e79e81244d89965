"""Real ``streammon`` processes for integration tests: start, kill, stop, read their status.

Services run as the console script next to the test interpreter, each with its own log file;
:class:`Fleet` kills whatever is still running when the test ends and prints the log tails
when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

STREAMMON = shutil.which("streammon", path=os.path.dirname(sys.executable))


def streammon_path() -> str:
    assert STREAMMON is not None, "the streammon console script is not installed in this venv"
    return STREAMMON


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 120.0) -> Any:
    """Run one ``streammon`` command to completion; the CompletedProcess."""
    return subprocess.run(
        [streammon_path(), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_topics(env: Mapping[str, str]) -> list[dict[str, Any]]:
    done = run_cli(env, "topics", "create", "--json")
    assert done.returncode == 0, f"topics create failed ({done.returncode}): {done.stderr}"
    reports: list[dict[str, Any]] = json.loads(done.stdout)
    return reports


def status(env: Mapping[str, str]) -> dict[str, Any]:
    """``streammon status --json``."""
    done = run_cli(env, "status", "--json")
    assert done.returncode == 0, f"status failed ({done.returncode}): {done.stderr}"
    data: dict[str, Any] = json.loads(done.stdout)
    return data


class Service:
    """One ``streammon <command>`` process with its log file."""

    def __init__(self, name: str, command: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Service:
        assert not self.alive, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts + 1} of {self.name} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [streammon_path(), self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL (no clean-up of any kind), and reap it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP: frozen wherever it is (in the middle of a batch, say)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def current_log(self) -> str:
        """The log of the current (latest) start only."""
        text = self.log_text()
        marker = f"===== start #{self.starts} of {self.name} ====="
        return text[text.rfind(marker) :] if marker in text else text

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the clean shutdown; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def assert_alive(self) -> None:
        code = None if self.proc is None else self.proc.poll()
        assert self.alive, f"{self.name} is not running (exit code {code}):\n{self.tail()}"

    def wait_for_log(self, text: str, times: int = 1, timeout: float = 60.0) -> None:
        """Wait until the log (all starts together) holds ``text`` at least ``times`` times."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(text) < times:
            self.assert_alive()
            assert time.monotonic() < deadline, f"{self.name} never logged {text!r} {times}x"
            time.sleep(0.2)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Fleet:
    """The services of one test."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.services: list[Service] = []

    def service(
        self, name: str, command: str = "monitor", env: Mapping[str, str] | None = None
    ) -> Service:
        svc = Service(name, command, {**self.env, **(env or {})}, self.log_dir / f"{name}.log")
        self.services.append(svc)
        return svc

    def start(self, name: str, command: str = "monitor", **env: str) -> Service:
        return self.service(name, command, env).start()

    def stop_all(self) -> None:
        for svc in self.services:
            if svc.alive:
                svc.kill()

    def dump_logs(self, lines: int = 60) -> None:
        for svc in self.services:
            print(f"----- {svc.name} ({svc.log_path.name}), last {lines} lines -----")
            print(svc.tail(lines))


@contextlib.contextmanager
def fleet(env: Mapping[str, str], log_dir: Path) -> Iterator[Fleet]:
    """A :class:`Fleet` whose processes are killed at the end; logs printed on failure."""
    f = Fleet(env, log_dir)
    try:
        yield f
    except BaseException:
        f.dump_logs()
        raise
    finally:
        f.stop_all()


class EndOffsets:
    """End offsets of topic partitions, read by a consumer outside every group."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"end-offsets-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )

    def __call__(self, topic: str) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        md = self._consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in md.topics[topic].partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        return ends

    def close(self) -> None:
        self._consumer.close()


def stored_offsets(st: Mapping[str, Any], group: str) -> dict[tuple[str, int], int]:
    parts = st["consumer_groups"].get(group, {}).get("partitions", [])
    return {(p["topic"], p["partition"]): p["stored_offset"] for p in parts}


def consumed(
    st: Mapping[str, Any], prefix: str, ends: Callable[[str], dict[int, int]]
) -> tuple[bool, str]:
    """Whether the stored offsets of both services reached the end of their input topics.

    Reads the end offsets *after* the status, so ``labeled`` is complete once the joiner is.
    """
    joiner = stored_offsets(st, f"{prefix}streammon-joiner")
    evaluator = stored_offsets(st, f"{prefix}streammon-evaluator")
    behind = []
    for topic, stored in (
        (f"{prefix}predictions", joiner),
        (f"{prefix}outcomes", joiner),
        (f"{prefix}labeled", evaluator),
    ):
        for p, end in ends(topic).items():
            have = stored.get((topic, p), 0)
            if have != end:
                behind.append(f"{topic}[{p}] {have}/{end}")
    return not behind, ", ".join(behind)


def _stable_view(st: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in st.items() if k not in ("generated_at_ms", "consumer_groups")},
        sort_keys=True,
    )


def quick_status(env: Mapping[str, str]) -> dict[str, Any]:
    """What ``streammon status --json`` would say, read in process (no Kafka end offsets).

    A CLI invocation costs seconds (interpreter start, imports); this is for polling only.
    """
    import redis

    from streaming.state_store import RedisStateStore
    from streaming.status import read_status

    prefix = env["STREAMMON_TOPIC_PREFIX"]
    client = redis.Redis.from_url(env["STREAMMON_REDIS_URL"])
    try:
        st = read_status(RedisStateStore(client, f"streammon:{prefix}"))
    finally:
        client.close()
    st["consumer_groups"] = {f"{prefix}streammon-{k}": v for k, v in st["consumer_groups"].items()}
    return st


def wait_consumed(
    env: Mapping[str, str],
    prefix: str,
    ends: Callable[[str], dict[int, int]],
    *,
    timeout: float = 120.0,
    poll_s: float = 0.3,
    check: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Wait until every input is consumed and stored by both services, then poll
    ``streammon status --json`` until it says so too and two consecutive statuses agree;
    return the last one.

    ``check`` runs at every poll (e.g. to fail early when a service died).
    """
    deadline = time.monotonic() + timeout
    previous: str | None = None
    why = "no status yet"
    while time.monotonic() < deadline:
        if check is not None:
            check()
        done, why = consumed(quick_status(env), prefix, ends)
        if not done:
            previous = None
            time.sleep(poll_s)
            continue
        st = status(env)
        done, why = consumed(st, prefix, ends)
        view = _stable_view(st) if done else None
        if view is not None and view == previous:
            return st
        previous = view
    msg = f"not consumed within {timeout:.0f}s: behind: {why or 'status still changing'}"
    raise AssertionError(msg)


def cleanup_prefix(bootstrap: str, redis_url: str, prefix: str, namespace: str) -> None:
    """Delete this test's own topics (``<prefix>*``) and Redis keys (``<namespace>:*``)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result()
    import redis

    r = redis.Redis.from_url(redis_url)
    batch = []
    for key in r.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            r.delete(*batch)
            batch.clear()
    if batch:
        r.delete(*batch)
    r.close()
