"""The development stack (consumers/devstack.py).

The integration tests bring the stack up (or reuse the one ``scripts/services up`` started)
and leave it running for the tests after them. The other tests use a throw-away stack folder
and start nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from consumers import devstack
from consumers.devstack import StackEndpoints

REPO = Path(__file__).resolve().parent.parent


def _own(service_env: str, own_endpoint: str) -> bool:
    """True when the stack itself runs that service (the variable is unset or names it)."""
    return os.environ.get(service_env, "").strip() in {"", own_endpoint}


def _own_kafka() -> bool:
    port = os.environ.get("STREAMMON_STACK_KAFKA_PORT") or str(devstack.DEFAULT_KAFKA_PORT)
    return _own(devstack.KAFKA_ENV, f"127.0.0.1:{port}")


def _own_redis() -> bool:
    port = os.environ.get("STREAMMON_STACK_REDIS_PORT") or str(devstack.DEFAULT_REDIS_PORT)
    return _own(devstack.REDIS_ENV, f"redis://127.0.0.1:{port}/0")


@pytest.fixture(scope="module")
def stack() -> StackEndpoints:
    return devstack.ensure_stack()


@pytest.mark.integration
def test_kafka_metadata_lists_the_broker(stack: StackEndpoints) -> None:
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap, "log_level": 0})
    metadata = admin.list_topics(timeout=15)
    assert metadata.brokers, "the metadata lists no broker"
    if _own_kafka():
        broker = next(iter(metadata.brokers.values()))
        assert f"{broker.host}:{broker.port}" == stack.kafka_bootstrap
        assert broker.id == 1


@pytest.mark.integration
def test_redis_answers_ping(stack: StackEndpoints) -> None:
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.integration
def test_second_ensure_stack_reuses_the_running_processes(stack: StackEndpoints) -> None:
    expected = {name for name, own in (("kafka", _own_kafka()), ("redis", _own_redis())) if own}
    if not expected:
        reason = "Kafka and Redis are both external: the stack runs nothing to reuse"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the local stack")
        pytest.skip(reason)
    before = devstack.running_pids()
    assert expected <= before.keys()
    again = devstack.ensure_stack()
    after = devstack.running_pids()
    assert again == stack
    assert {name: after.get(name) for name in expected} == {name: before[name] for name in expected}
    for name in expected:
        os.kill(after[name], 0)  # still alive


@pytest.mark.integration
def test_cli_status_and_env(stack: StackEndpoints) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    status = subprocess.run(
        [sys.executable, "-m", "consumers.devstack", "status"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    exports = subprocess.run(
        [sys.executable, "-m", "consumers.devstack", "env"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout.splitlines()
    assert f"export {devstack.KAFKA_ENV}={stack.kafka_bootstrap}" in exports
    assert f"export {devstack.REDIS_ENV}={stack.redis_url}" in exports


# ------------------------------------------------------------ no services needed below


@pytest.fixture
def empty_stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMMON_STACK_DIR", str(tmp_path))
    for name in (devstack.KAFKA_ENV, devstack.REDIS_ENV, devstack.ALERTMANAGER_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _write_pid(stack_dir: Path, service: str, pid: int) -> Path:
    run = stack_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    pid_file = run / f"{service}.pid"
    pid_file.write_text(f"{pid}\n")
    return pid_file


def test_stale_pid_file_is_not_taken_for_a_running_service(empty_stack_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file = _write_pid(empty_stack_dir, "kafka", dead.pid)
    assert devstack.running_pids() == {}
    devstack.stop_stack()
    assert not pid_file.exists()


def test_pid_of_another_program_is_never_stopped(empty_stack_dir: Path) -> None:
    # this test process is alive, but it is not a broker started for this stack folder
    pid_file = _write_pid(empty_stack_dir, "kafka", os.getpid())
    assert devstack.running_pids() == {}
    devstack.stop_stack()
    assert not pid_file.exists()


def test_env_echoes_an_external_endpoint(
    empty_stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a closed loopback port: the value is echoed, and a warning says it does not answer
    monkeypatch.setenv(devstack.REDIS_ENV, "redis://127.0.0.1:1/0")
    assert devstack.main(["env"]) == 0
    captured = capsys.readouterr()
    assert f"export {devstack.REDIS_ENV}=redis://127.0.0.1:1/0" in captured.out.splitlines()
    assert "redis does not answer" in captured.err
    assert devstack.main(["status"]) == 3


def test_bad_port_override_is_refused(
    empty_stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMMON_STACK_REDIS_PORT", "not-a-port")
    with pytest.raises(devstack.DevStackError, match="STREAMMON_STACK_REDIS_PORT"):
        devstack.ensure_stack()
