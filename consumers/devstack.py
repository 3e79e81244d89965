"""Local development stack without Docker: Kafka (KRaft), Redis and, on request, Alertmanager.

Run it as ``python -m consumers.devstack up|down|status|env [--with-alertmanager]`` (or through
``scripts/services``). Everything listens on loopback only:

* **Kafka** -- a single-node Apache Kafka broker in combined (broker + controller) KRaft mode,
  run from the Maven Central jars of :data:`KAFKA_VERSION`. The jars are fetched once with
  Maven (``scripts/kafka/pom.xml``) into ``~/.cache/streammon/kafka-<version>/lib``
  (``STREAMMON_CACHE_DIR`` moves the cache) and reused afterwards.
* **Redis** -- Debian's ``redis-server`` without persistence.
* **Alertmanager** -- Debian's ``prometheus-alertmanager`` with a receiver that drops
  everything, clustering disabled (only with ``--with-alertmanager``).

Missing Debian packages are installed with ``apt-get`` (root only). Runtime files (data,
logs, pid files, generated configs) live in ``<repo>/.stack/`` (``STREAMMON_STACK_DIR``).
Ports: Kafka 19092 (controller 19093), Redis 16379, Alertmanager 19094, each overridable with
``STREAMMON_STACK_KAFKA_PORT``, ``STREAMMON_STACK_KAFKA_CONTROLLER_PORT``,
``STREAMMON_STACK_REDIS_PORT`` and ``STREAMMON_STACK_ALERTMANAGER_PORT``.

When ``STREAMMON_KAFKA_BOOTSTRAP_SERVERS``, ``STREAMMON_REDIS_URL`` or
``STREAMMON_ALERTMANAGER_URL`` name another endpoint than the one this stack would serve, that
service is taken as external: nothing is started for it, it is only checked to answer.

The stack is for development and tests: its data is disposable, and a data directory left in
a state that does not match the configuration is wiped and formatted again.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming.errors import StreammonError

__all__ = [
    "KAFKA_VERSION",
    "DevStackError",
    "ServiceState",
    "StackEndpoints",
    "ensure_stack",
    "main",
    "running_pids",
    "stack_status",
    "stop_stack",
]

#: The Apache Kafka release run by the development stack (Maven Central ``kafka_2.13``).
KAFKA_VERSION = "4.1.1"

DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEFAULT_REDIS_PORT = 16379
DEFAULT_ALERTMANAGER_PORT = 19094
DEFAULT_START_TIMEOUT_S = 90.0

KAFKA_ENV = "STREAMMON_KAFKA_BOOTSTRAP_SERVERS"
REDIS_ENV = "STREAMMON_REDIS_URL"
ALERTMANAGER_ENV = "STREAMMON_ALERTMANAGER_URL"

_KAFKA_JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError")
_POLL_INTERVAL_S = 1.0  # at most one progress line a second
_RETRY_S = 0.25
_HEARTBEAT_S = 5.0
_MAVEN_TIMEOUT_S = 900.0
_APT_TIMEOUT_S = 900.0
_LOG_TAIL_LINES = 40
_REPO_DIR = Path(__file__).resolve().parent.parent
_KAFKA_FILES_DIR = _REPO_DIR / "scripts" / "kafka"
_JARS_MARKER = ".streammon-complete"
_MAVEN_DEPENDENCY_PLUGIN = "3.8.1"
_REQUIRED_JAR_PREFIXES = (
    f"kafka_2.13-{KAFKA_VERSION}",
    f"kafka-server-{KAFKA_VERSION}",
    f"kafka-metadata-{KAFKA_VERSION}",
    f"kafka-raft-{KAFKA_VERSION}",
    f"kafka-storage-{KAFKA_VERSION}",
    f"kafka-clients-{KAFKA_VERSION}",
    "log4j-core-",
    "log4j-slf4j-impl-",
)

# Popen handles of the processes this Python process started: polling them reaps a child
# that died, which a bare ``kill(pid, 0)`` would still report alive (a zombie).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_THREAD_LOCK = threading.Lock()


class DevStackError(StreammonError):
    """The development stack could not be brought up, checked or stopped."""


@dataclass(frozen=True)
class StackEndpoints:
    """Where the running stack answers."""

    kafka_bootstrap: str
    redis_url: str
    alertmanager_url: str | None = None


@dataclass(frozen=True)
class ServiceState:
    """One line of ``status``: how a service of the stack is doing."""

    name: str
    endpoint: str
    managed: bool
    running: bool
    answers: bool
    pid: int | None
    detail: str


# --------------------------------------------------------------------------- configuration


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        msg = f"{name}={raw!r} is not a port number"
        raise DevStackError(msg) from None
    if not 0 < port < 65536:
        msg = f"{name}={raw!r} is not a port number"
        raise DevStackError(msg)
    return port


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        msg = f"{name}={raw!r} is not a number of seconds"
        raise DevStackError(msg) from None
    if value <= 0:
        msg = f"{name}={raw!r} must be positive"
        raise DevStackError(msg)
    return value


def _default_cache_dir() -> Path:
    override = os.environ.get("STREAMMON_CACHE_DIR", "").strip()
    if override:
        return Path(override).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "streammon").resolve()


def _default_stack_dir() -> Path:
    override = os.environ.get("STREAMMON_STACK_DIR", "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return _REPO_DIR / ".stack"


@dataclass(frozen=True)
class _Config:
    stack_dir: Path
    cache_dir: Path
    kafka_port: int
    kafka_controller_port: int
    redis_port: int
    alertmanager_port: int
    start_timeout: float

    @classmethod
    def from_env(cls) -> _Config:
        config = cls(
            stack_dir=_default_stack_dir(),
            cache_dir=_default_cache_dir(),
            kafka_port=_env_port("STREAMMON_STACK_KAFKA_PORT", DEFAULT_KAFKA_PORT),
            kafka_controller_port=_env_port(
                "STREAMMON_STACK_KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT
            ),
            redis_port=_env_port("STREAMMON_STACK_REDIS_PORT", DEFAULT_REDIS_PORT),
            alertmanager_port=_env_port(
                "STREAMMON_STACK_ALERTMANAGER_PORT", DEFAULT_ALERTMANAGER_PORT
            ),
            start_timeout=_env_seconds("STREAMMON_STACK_START_TIMEOUT", DEFAULT_START_TIMEOUT_S),
        )
        ports = [
            config.kafka_port,
            config.kafka_controller_port,
            config.redis_port,
            config.alertmanager_port,
        ]
        if len(set(ports)) != len(ports):
            msg = f"the stack's ports must differ, got {ports}"
            raise DevStackError(msg)
        return config

    @property
    def kafka_home(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def kafka_lib(self) -> Path:
        return self.kafka_home / "lib"

    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.stack_dir / "run"


@dataclass(frozen=True)
class _Service:
    """A service of the stack and how to recognise its process."""

    name: str
    title: str
    env_var: str
    own_endpoint: str
    # a substring of the process's command line, so a recycled pid is not taken for ours
    marker: str

    @property
    def configured_endpoint(self) -> str:
        return os.environ.get(self.env_var, "").strip() or self.own_endpoint

    @property
    def external(self) -> bool:
        return self.configured_endpoint != self.own_endpoint


def _kafka_service(config: _Config) -> _Service:
    return _Service(
        name="kafka",
        title="Kafka",
        env_var=KAFKA_ENV,
        own_endpoint=f"127.0.0.1:{config.kafka_port}",
        marker=str(config.stack_dir / "kafka" / "server.properties"),
    )


def _redis_service(config: _Config) -> _Service:
    return _Service(
        name="redis",
        title="Redis",
        env_var=REDIS_ENV,
        own_endpoint=f"redis://127.0.0.1:{config.redis_port}/0",
        # redis rewrites its process title: the template in _up_redis puts this in it
        marker=_redis_title_marker(config),
    )


def _redis_title_marker(config: _Config) -> str:
    return f"streammon-stack=[{config.stack_dir}]"


def _alertmanager_service(config: _Config) -> _Service:
    return _Service(
        name="alertmanager",
        title="Alertmanager",
        env_var=ALERTMANAGER_ENV,
        own_endpoint=f"http://127.0.0.1:{config.alertmanager_port}",
        marker=str(config.stack_dir / "alertmanager" / "alertmanager.yml"),
    )


# --------------------------------------------------------------------------------- output


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _tails(paths: Sequence[Path]) -> str:
    parts = []
    for path in paths:
        text = _tail(path)
        if text.strip():
            parts.append(f"--- last lines of {path} ---\n{text}")
    if not paths:
        return ""
    return "\n".join(parts) if parts else "(its logs are empty)"


# ------------------------------------------------------------------------------ processes


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # the state field follows the parenthesised command name
    state = stat.rpartition(")")[2].split()[:1]
    if state == ["Z"]:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def _pid_file(config: _Config, service: _Service) -> Path:
    return config.run_dir / f"{service.name}.pid"


def _state_file(config: _Config, service: _Service) -> Path:
    return config.run_dir / f"{service.name}.json"


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _managed_pid(config: _Config, service: _Service, *, clean_stale: bool) -> int | None:
    """The pid of the running process this stack started for ``service``, if any."""
    pid_file = _pid_file(config, service)
    pid = _read_pid(pid_file)
    if pid is None:
        if clean_stale and pid_file.exists():
            _say(f"{service.title}: removing unreadable pid file {pid_file}")
            _forget(config, service)
        return None
    if _pid_alive(pid):
        cmdline = _cmdline(pid)
        if cmdline is None or service.marker in cmdline:
            return pid
        reason = f"pid {pid} now belongs to another program"
    else:
        reason = f"pid {pid} is not running"
    if clean_stale:
        _say(f"{service.title}: removing stale pid file {pid_file} ({reason})")
        _forget(config, service)
    return None


def _recorded_endpoint(config: _Config, service: _Service) -> str | None:
    try:
        data = json.loads(_state_file(config, service).read_text())
    except (OSError, ValueError):
        return None
    endpoint = data.get("endpoint") if isinstance(data, dict) else None
    return endpoint if isinstance(endpoint, str) else None


def _remember(config: _Config, service: _Service, pid: int, command: Sequence[str]) -> None:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    _pid_file(config, service).write_text(f"{pid}\n")
    state = {
        "pid": pid,
        "endpoint": service.own_endpoint,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(command),
    }
    _state_file(config, service).write_text(json.dumps(state, indent=2) + "\n")


def _forget(config: _Config, service: _Service) -> None:
    for path in (_pid_file(config, service), _state_file(config, service)):
        path.unlink(missing_ok=True)


def _spawn(command: Sequence[str], output: Path, cwd: Path) -> subprocess.Popen[bytes]:
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("ab") as sink:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[process.pid] = process
    return process


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        try:
            same_group = os.getpgid(pid) == pid
        except ProcessLookupError:
            return
        if same_group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _terminate(title: str, pid: int, grace: float) -> None:
    started = time.monotonic()
    _signal(pid, signal.SIGTERM)
    next_note = started + _HEARTBEAT_S
    while _pid_alive(pid) and time.monotonic() - started < grace:
        if time.monotonic() >= next_note:
            _say(f"waiting for {title} (pid {pid}) to stop ({time.monotonic() - started:.0f} s)")
            next_note += _HEARTBEAT_S
        time.sleep(0.1)
    if _pid_alive(pid):
        _say(f"{title} (pid {pid}) ignored SIGTERM for {grace:.0f} s: sending SIGKILL")
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            msg = f"{title} (pid {pid}) survived SIGKILL"
            raise DevStackError(msg)
    _CHILDREN.pop(pid, None)
    _say(f"stopped {title} (pid {pid}) in {time.monotonic() - started:.1f} s")


def _run_logged(command: Sequence[str], log: Path, what: str, timeout: float) -> None:
    """Run a slow setup command, its output into ``log``, saying every few seconds it runs."""
    log.parent.mkdir(parents=True, exist_ok=True)
    _say(f"{what} (log: {log})")
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with log.open("ab") as sink:
        sink.write(f"$ {shlex.join(command)}\n".encode())
        sink.flush()
        try:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:
            msg = f"{what} failed: cannot run {command[0]}: {exc}"
            raise DevStackError(msg) from exc
        while True:
            try:
                code = process.wait(timeout=_HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    process.kill()
                    process.wait()
                    msg = f"{what} timed out after {elapsed:.0f} s\n{_tails([log])}"
                    raise DevStackError(msg) from None
                _say(f"  ... still running ({elapsed:.0f} s)")
    if code != 0:
        msg = f"{what} failed (exit code {code})\n{_tails([log])}"
        raise DevStackError(msg)
    _say(f"  done in {time.monotonic() - started:.1f} s")


@contextlib.contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process that holds {what} ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _stack_lock(config: _Config) -> Iterator[None]:
    with _THREAD_LOCK, _file_lock(config.stack_dir / ".lock", "the stack lock"):
        yield


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _check_ports_free(title: str, ports: Sequence[int], hint: str) -> None:
    busy = [port for port in ports if _port_in_use(port)]
    if busy:
        listed = " and ".join(f"127.0.0.1:{port}" for port in busy)
        verb = "is" if len(busy) == 1 else "are"
        msg = (
            f"cannot start {title}: {listed} {verb} already taken by a process this stack did "
            f"not start (another checkout's stack?). Stop it, or {hint}"
        )
        raise DevStackError(msg)


# --------------------------------------------------------------------------------- installs


def _ensure_program(program: str, package: str) -> str:
    """The path of ``program``, installing Debian's ``package`` first when it is missing."""
    found = shutil.which(program)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        msg = (
            f"{program} is not installed and cannot be installed from here "
            f"(needs apt-get as root): install the Debian package {package}"
        )
        raise DevStackError(msg)
    config = _Config.from_env()
    log = config.logs_dir / "apt-get.log"
    _run_logged([apt, "-q", "update"], log, "apt-get update", _APT_TIMEOUT_S)
    _run_logged(
        [apt, "install", "-y", "-q", "--no-install-recommends", package],
        log,
        f"installing {package} with apt-get (missing {program})",
        _APT_TIMEOUT_S,
    )
    found = shutil.which(program)
    if not found:
        msg = f"apt-get installed {package} but {program} is still not on PATH\n{_tails([log])}"
        raise DevStackError(msg)
    return found


def _java_major(java: str) -> int:
    result = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False, timeout=60
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return 0
    major = int(match.group(1))
    # "1.8.0_x" style versions
    return int(match.group(2) or 0) if major == 1 else major


# ------------------------------------------------------------------------------------ Kafka


def _jars_stamp() -> str:
    pom = (_KAFKA_FILES_DIR / "pom.xml").read_bytes()
    return f"kafka {KAFKA_VERSION}\npom sha256 {hashlib.sha256(pom).hexdigest()}\n"


def _jars_complete(lib: Path, stamp: str) -> bool:
    marker = lib / _JARS_MARKER
    try:
        return marker.read_text() == stamp
    except OSError:
        return False


def _ensure_kafka_jars(config: _Config) -> Path:
    """The folder of the broker's jars, fetched with Maven the first time only."""
    pom = _KAFKA_FILES_DIR / "pom.xml"
    if not pom.is_file():
        msg = f"{pom} is missing: run the stack from a streammon source checkout"
        raise DevStackError(msg)
    stamp = _jars_stamp()
    lib = config.kafka_lib
    if _jars_complete(lib, stamp):
        return lib
    with _file_lock(config.kafka_home / ".lock", "the Kafka jar cache"):
        if _jars_complete(lib, stamp):
            return lib
        _ensure_program("java", "openjdk-17-jre-headless")
        mvn = _ensure_program("mvn", "maven")
        partial = config.kafka_home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _run_logged(
            [
                mvn,
                "-B",
                "-ntp",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                f"-Dkafka.version={KAFKA_VERSION}",
                f"org.apache.maven.plugins:maven-dependency-plugin:{_MAVEN_DEPENDENCY_PLUGIN}"
                ":copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={partial}",
            ],
            config.logs_dir / "maven.log",
            f"fetching the Apache Kafka {KAFKA_VERSION} jars from Maven Central into {lib}",
            _MAVEN_TIMEOUT_S,
        )
        names = [path.name for path in partial.glob("*.jar")]
        missing = [p for p in _REQUIRED_JAR_PREFIXES if not any(n.startswith(p) for n in names)]
        if missing:
            msg = (
                f"Maven finished but these jars are missing from {partial}: {missing}\n"
                f"{_tails([config.logs_dir / 'maven.log'])}"
            )
            raise DevStackError(msg)
        (partial / _JARS_MARKER).write_text(stamp)
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        _say(f"cached {len(names)} jars in {lib}")
    return lib


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def _kafka_properties(config: _Config, data_dir: Path) -> str:
    port, controller = config.kafka_port, config.kafka_controller_port
    lines = [
        "# generated by consumers/devstack.py on every start: edits are overwritten",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.cleaner.dedupe.buffer.size=2097152",
    ]
    return "\n".join(lines) + "\n"


def _meta_properties(data_dir: Path) -> dict[str, str]:
    try:
        text = (data_dir / "meta.properties").read_text()
    except OSError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines() if not line.startswith("#"))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _prepare_kafka_data(config: _Config, lib: Path, *, wipe_reason: str | None) -> bool:
    """Make the data directory usable; True when it holds data from an earlier run.

    ``wipe_reason`` (said in the output) forces a wipe of what the directory holds.
    """
    kafka_dir = config.stack_dir / "kafka"
    data_dir = kafka_dir / "data"
    properties = kafka_dir / "server.properties"
    stamp_file = kafka_dir / "format.json"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    properties.write_text(_kafka_properties(config, data_dir))
    wanted = {
        "kafka_version": KAFKA_VERSION,
        "port": config.kafka_port,
        "controller_port": config.kafka_controller_port,
        "data_dir": str(data_dir),
    }
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamp = None
    has_data = data_dir.is_dir() and any(data_dir.iterdir())
    if has_data and wipe_reason is None and isinstance(stamp, dict):
        meta = _meta_properties(data_dir)
        cluster_id = meta.get("cluster.id")
        recorded = {key: stamp.get(key) for key in wanted}
        if (
            recorded == wanted
            and cluster_id
            and cluster_id == stamp.get("cluster_id")
            and meta.get("node.id") == "1"
        ):
            _say(
                f"reusing the Kafka data in {data_dir} (cluster id {cluster_id}); "
                "`up --fresh` wipes it"
            )
            return True
    if has_data:
        reason = wipe_reason or "it does not match this configuration"
        _say(
            f"wiping the Kafka data left in {data_dir}: {reason} "
            "(the development stack's data is disposable)"
        )
    _format_kafka(config, lib, wanted)
    return False


def _format_kafka(config: _Config, lib: Path, wanted: dict[str, object]) -> None:
    kafka_dir = config.stack_dir / "kafka"
    data_dir = kafka_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    (kafka_dir / "format.json").unlink(missing_ok=True)
    data_dir.mkdir(parents=True)
    cluster_id = _new_cluster_id()
    log = config.logs_dir / "kafka-format.log"
    log.unlink(missing_ok=True)
    command = [
        _ensure_program("java", "openjdk-17-jre-headless"),
        *_kafka_log_opts(config),
        "-cp",
        f"{lib}/*",
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        cluster_id,
        "-c",
        str(kafka_dir / "server.properties"),
    ]
    _run_logged(command, log, f"formatting the Kafka data directory {data_dir}", 300.0)
    stamp = dict(wanted, cluster_id=cluster_id)
    (kafka_dir / "format.json").write_text(json.dumps(stamp, indent=2) + "\n")


def _kafka_log_opts(config: _Config) -> list[str]:
    log4j = _KAFKA_FILES_DIR / "log4j2.properties"
    if not log4j.is_file():
        msg = f"{log4j} is missing: run the stack from a streammon source checkout"
        raise DevStackError(msg)
    return [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={config.logs_dir / 'kafka'}"]


class _KafkaProbe:
    """One metadata call per attempt; None when the broker answers, else why not."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._admin: Any = None

    def __call__(self) -> str | None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(
                {
                    "bootstrap.servers": self._bootstrap,
                    "socket.connection.setup.timeout.ms": 2000,
                    "reconnect.backoff.ms": 100,
                    "reconnect.backoff.max.ms": 1000,
                    "log_level": 0,
                }
            )
        try:
            metadata = self._admin.list_topics(timeout=3)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            return str(error.str() if hasattr(error, "str") else error)
        if not metadata.brokers:
            return "the metadata lists no broker yet"
        return None


def _tcp_probe(port: int) -> Callable[[], str | None]:
    def probe() -> str | None:
        return None if _port_in_use(port) else "Connection refused"

    return probe


def _chain(*probes: Callable[[], str | None]) -> Callable[[], str | None]:
    def probe() -> str | None:
        for step in probes:
            reason = step()
            if reason is not None:
                return reason
        return None

    return probe


# ------------------------------------------------------------------------- Redis, Alertmanager


def _resp(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.strip()


def _redis_probe(url: str) -> Callable[[], str | None]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"redis", "rediss"}:
        msg = f"{REDIS_ENV}={url!r}: only redis:// and rediss:// URLs can be checked"
        raise DevStackError(msg)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379

    def probe() -> str | None:
        try:
            with socket.create_connection((host, port), timeout=2.0) as raw:
                raw.settimeout(2.0)
                sock: socket.socket = raw
                if parsed.scheme == "rediss":
                    sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
                if parsed.password:
                    user = urllib.parse.unquote(parsed.username or "")
                    password = urllib.parse.unquote(parsed.password)
                    sock.sendall(_resp("AUTH", user, password) if user else _resp("AUTH", password))
                    reply = _read_line(sock)
                    if not reply.startswith(b"+"):
                        return f"AUTH refused: {reply.decode(errors='replace')}"
                sock.sendall(_resp("PING"))
                reply = _read_line(sock)
        except OSError as exc:
            return exc.strerror or str(exc)
        if reply != b"+PONG":
            return f"PING answered {reply.decode(errors='replace')!r}"
        return None

    return probe


def _http_probe(url: str) -> Callable[[], str | None]:
    ready = url.rstrip("/") + "/-/ready"

    def probe() -> str | None:
        try:
            with urllib.request.urlopen(ready, timeout=2.0) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return f"GET {ready} answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, OSError) and reason.strerror:
                return reason.strerror
            return str(reason)
        return None if status == 200 else f"GET {ready} answered HTTP {status}"

    return probe


# --------------------------------------------------------------------------------- waiting


def _wait_until_answers(
    title: str,
    endpoint: str,
    probe: Callable[[], str | None],
    *,
    timeout: float,
    pid: int | None = None,
    logs: Sequence[Path] = (),
) -> float:
    """Poll ``probe`` until it answers; the seconds it took. Fails fast when ``pid`` dies."""
    started = time.monotonic()
    attempt = 0
    last_note = -_POLL_INTERVAL_S
    while True:
        attempt += 1
        reason = probe()
        if reason is None:
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        if pid is not None and not _pid_alive(pid):
            msg = f"{title} (pid {pid}) exited while starting\n{_tails(logs)}".rstrip()
            raise DevStackError(msg)
        if elapsed > timeout:
            msg = (
                f"{title} did not answer at {endpoint} within {timeout:.0f} s "
                f"(last: {reason})\n{_tails(logs)}"
            ).rstrip()
            raise DevStackError(msg)
        if elapsed - last_note >= _POLL_INTERVAL_S:
            _say(f"waiting for {title} at {endpoint} (attempt {attempt}: {reason})")
            last_note = elapsed
        time.sleep(_RETRY_S)


# ------------------------------------------------------------------------- per service: up


def _reuse_or_none(config: _Config, service: _Service) -> int | None:
    pid = _managed_pid(config, service, clean_stale=True)
    if pid is None:
        return None
    recorded = _recorded_endpoint(config, service)
    if recorded is not None and recorded != service.own_endpoint:
        msg = (
            f"{service.title} (pid {pid}) runs at {recorded}, but the configuration now asks "
            f"for {service.own_endpoint}: run `scripts/services down` first"
        )
        raise DevStackError(msg)
    return pid


def _check_external(config: _Config, service: _Service, probe: Callable[[], str | None]) -> None:
    endpoint = service.configured_endpoint
    _say(f"{service.title}: {service.env_var}={endpoint} is set, starting nothing, checking it")
    waited = _wait_until_answers(service.title, endpoint, probe, timeout=config.start_timeout)
    _say(f"{service.title} answers at {endpoint} (external, {waited:.1f} s)")


def _up_kafka(config: _Config, *, fresh: bool) -> None:
    service = _kafka_service(config)
    if service.external:
        _check_external(config, service, _KafkaProbe(service.configured_endpoint))
        return
    logs = [config.logs_dir / "kafka" / "server.log", config.logs_dir / "kafka" / "kafka.out"]
    endpoint = service.own_endpoint
    pid = _reuse_or_none(config, service)
    if pid is not None:
        if fresh:
            _say(f"Kafka runs (pid {pid}): --fresh only wipes data of a broker that is down")
        probe = _chain(_tcp_probe(config.kafka_port), _KafkaProbe(endpoint))
        waited = _wait_until_answers(
            "Kafka", endpoint, probe, timeout=config.start_timeout, pid=pid, logs=logs
        )
        _say(f"Kafka already up at {endpoint} (pid {pid}, answered in {waited:.1f} s)")
        return
    _check_ports_free(
        "Kafka",
        [config.kafka_port, config.kafka_controller_port],
        "pick other ports with STREAMMON_STACK_KAFKA_PORT / STREAMMON_STACK_KAFKA_CONTROLLER_PORT",
    )
    lib = _ensure_kafka_jars(config)
    java = _ensure_program("java", "openjdk-17-jre-headless")
    if _java_major(java) < 17:
        msg = f"Kafka {KAFKA_VERSION} needs Java 17 or newer; {java} is older"
        raise DevStackError(msg)
    reused = _prepare_kafka_data(config, lib, wipe_reason="as asked (--fresh)" if fresh else None)
    try:
        _start_kafka(config, service, java, lib, logs)
    except DevStackError as exc:
        if not reused:
            raise
        _say(f"{exc}\nthe broker failed on the data of an earlier run: retrying on new data")
        _prepare_kafka_data(config, lib, wipe_reason="the broker failed on it")
        _start_kafka(config, service, java, lib, logs)


def _start_kafka(
    config: _Config, service: _Service, java: str, lib: Path, logs: Sequence[Path]
) -> None:
    kafka_dir = config.stack_dir / "kafka"
    out = config.logs_dir / "kafka" / "kafka.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    # so that the tail shown on a failure is this start's
    server_log = config.logs_dir / "kafka" / "server.log"
    if server_log.exists():
        server_log.replace(server_log.with_name("server.previous.log"))
    command = [
        java,
        *_KAFKA_JVM_OPTS,
        "-Djava.awt.headless=true",
        *_kafka_log_opts(config),
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(kafka_dir / "server.properties"),
    ]
    started = time.monotonic()
    process = _spawn(command, out, kafka_dir)
    _remember(config, service, process.pid, command)
    _say(f"started Kafka {KAFKA_VERSION} (pid {process.pid}), waiting until it answers")
    endpoint = service.own_endpoint
    probe = _chain(_tcp_probe(config.kafka_port), _KafkaProbe(endpoint))
    try:
        _wait_until_answers(
            "Kafka", endpoint, probe, timeout=config.start_timeout, pid=process.pid, logs=logs
        )
    except DevStackError:
        if _pid_alive(process.pid):
            _terminate("Kafka", process.pid, grace=10.0)
        _forget(config, service)
        raise
    _say(
        f"Kafka {KAFKA_VERSION} up at {endpoint} (pid {process.pid}, "
        f"{time.monotonic() - started:.1f} s); data: {kafka_dir / 'data'}; log: {logs[0]}"
    )


def _up_redis(config: _Config) -> None:
    service = _redis_service(config)
    if service.external:
        _check_external(config, service, _redis_probe(service.configured_endpoint))
        return
    log = config.logs_dir / "redis.log"
    logs = [log, config.logs_dir / "redis.out"]
    endpoint = service.own_endpoint
    probe = _redis_probe(endpoint)
    pid = _reuse_or_none(config, service)
    if pid is not None:
        waited = _wait_until_answers(
            "Redis", endpoint, probe, timeout=config.start_timeout, pid=pid, logs=logs
        )
        _say(f"Redis already up at {endpoint} (pid {pid}, answered in {waited:.1f} s)")
        return
    _check_ports_free(
        "Redis", [config.redis_port], "pick another port with STREAMMON_STACK_REDIS_PORT"
    )
    redis_server = _ensure_program("redis-server", "redis-server")
    data_dir = config.stack_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        redis_server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(config.redis_port),
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--logfile",
        str(log),
        "--proc-title-template",
        f"{{title}} {{listen-addr}} {_redis_title_marker(config)}",
    ]
    started = time.monotonic()
    process = _spawn(command, config.logs_dir / "redis.out", data_dir)
    _remember(config, service, process.pid, command)
    try:
        _wait_until_answers(
            "Redis", endpoint, probe, timeout=config.start_timeout, pid=process.pid, logs=logs
        )
    except DevStackError:
        if _pid_alive(process.pid):
            _terminate("Redis", process.pid, grace=5.0)
        _forget(config, service)
        raise
    _say(
        f"Redis up at {endpoint} (pid {process.pid}, {time.monotonic() - started:.1f} s, "
        f"no persistence); log: {log}"
    )


_ALERTMANAGER_CONFIG = """\
# generated by consumers/devstack.py on every start: edits are overwritten
route:
  receiver: devnull
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: devnull
"""


def _up_alertmanager(config: _Config) -> None:
    service = _alertmanager_service(config)
    if service.external:
        _check_external(config, service, _http_probe(service.configured_endpoint))
        return
    log = config.logs_dir / "alertmanager.log"
    endpoint = service.own_endpoint
    probe = _http_probe(endpoint)
    pid = _reuse_or_none(config, service)
    if pid is not None:
        waited = _wait_until_answers(
            "Alertmanager", endpoint, probe, timeout=config.start_timeout, pid=pid, logs=[log]
        )
        _say(f"Alertmanager already up at {endpoint} (pid {pid}, answered in {waited:.1f} s)")
        return
    _check_ports_free(
        "Alertmanager",
        [config.alertmanager_port],
        "pick another port with STREAMMON_STACK_ALERTMANAGER_PORT",
    )
    binary = _ensure_program("prometheus-alertmanager", "prometheus-alertmanager")
    home = config.stack_dir / "alertmanager"
    (home / "data").mkdir(parents=True, exist_ok=True)
    config_file = home / "alertmanager.yml"
    config_file.write_text(_ALERTMANAGER_CONFIG)
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{config.alertmanager_port}",
        "--cluster.listen-address=",
    ]
    started = time.monotonic()
    process = _spawn(command, log, home)
    _remember(config, service, process.pid, command)
    try:
        _wait_until_answers(
            "Alertmanager",
            endpoint,
            probe,
            timeout=config.start_timeout,
            pid=process.pid,
            logs=[log],
        )
    except DevStackError:
        if _pid_alive(process.pid):
            _terminate("Alertmanager", process.pid, grace=5.0)
        _forget(config, service)
        raise
    _say(
        f"Alertmanager up at {endpoint} (pid {process.pid}, "
        f"{time.monotonic() - started:.1f} s; API {endpoint}/api/v2/alerts); log: {log}"
    )


# ------------------------------------------------------------------------------ public API


def _alertmanager_url_if_up(config: _Config) -> str | None:
    service = _alertmanager_service(config)
    if service.external:
        return service.configured_endpoint
    if _managed_pid(config, service, clean_stale=False) is None:
        return None
    return service.own_endpoint


def ensure_stack(
    with_alertmanager: bool = False, *, fresh: bool = False, verbose: bool = True
) -> StackEndpoints:
    """Bring the stack up (or reuse what already runs) and wait until every service answers.

    ``fresh`` wipes the data of a broker that is not running. ``verbose=False`` keeps the
    progress lines off stderr. Raises :class:`DevStackError` with the tail of the relevant
    log when a service cannot be started or does not answer.
    """
    config = _Config.from_env()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if not verbose:
            sink = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stderr(sink))
        with _stack_lock(config):
            _say(f"development stack in {config.stack_dir} (logs: {config.logs_dir})")
            _up_kafka(config, fresh=fresh)
            _up_redis(config)
            if with_alertmanager:
                _up_alertmanager(config)
            endpoints = StackEndpoints(
                kafka_bootstrap=_kafka_service(config).configured_endpoint,
                redis_url=_redis_service(config).configured_endpoint,
                alertmanager_url=_alertmanager_url_if_up(config),
            )
        _say(f"stack ready in {time.monotonic() - started:.1f} s")
    return endpoints


def stop_stack() -> None:
    """Stop the processes this stack started (by pid file): SIGTERM, then SIGKILL."""
    config = _Config.from_env()
    graces = {"kafka": 30.0, "redis": 10.0, "alertmanager": 10.0}
    with _stack_lock(config):
        for service in (
            _alertmanager_service(config),
            _redis_service(config),
            _kafka_service(config),
        ):
            pid = _managed_pid(config, service, clean_stale=True)
            if pid is None:
                _say(f"{service.title}: not running")
                continue
            _terminate(service.title, pid, grace=graces[service.name])
            _forget(config, service)


def running_pids() -> dict[str, int]:
    """The pids of the services this stack started and that still run, by service name."""
    config = _Config.from_env()
    pids: dict[str, int] = {}
    for service in _services(config):
        pid = _managed_pid(config, service, clean_stale=False)
        if pid is not None:
            pids[service.name] = pid
    return pids


def _services(config: _Config) -> list[_Service]:
    return [_kafka_service(config), _redis_service(config), _alertmanager_service(config)]


def _probe_for(service: _Service, endpoint: str, config: _Config) -> Callable[[], str | None]:
    if service.name == "kafka":
        if service.external:
            return _KafkaProbe(endpoint)
        return _chain(_tcp_probe(config.kafka_port), _KafkaProbe(endpoint))
    if service.name == "redis":
        return _redis_probe(endpoint)
    return _http_probe(endpoint)


def stack_status() -> list[ServiceState]:
    """Each service's state, after one quick check that it answers."""
    config = _Config.from_env()
    states = []
    for service in _services(config):
        if service.external:
            endpoint = service.configured_endpoint
            reason = _probe_for(service, endpoint, config)()
            states.append(
                ServiceState(
                    name=service.name,
                    endpoint=endpoint,
                    managed=False,
                    running=reason is None,
                    answers=reason is None,
                    pid=None,
                    detail=f"external ({service.env_var})"
                    + ("" if reason is None else f": {reason}"),
                )
            )
            continue
        pid = _managed_pid(config, service, clean_stale=False)
        endpoint = _recorded_endpoint(config, service) or service.own_endpoint
        if pid is None:
            states.append(
                ServiceState(service.name, endpoint, True, False, False, None, "not running")
            )
            continue
        reason = _probe_for(service, endpoint, config)()
        detail = "answers" if reason is None else f"running but not answering: {reason}"
        states.append(ServiceState(service.name, endpoint, True, True, reason is None, pid, detail))
    return states


def _env_lines(states: Sequence[ServiceState]) -> list[str]:
    by_name = {state.name: state for state in states}
    lines = [
        f"export {KAFKA_ENV}={shlex.quote(by_name['kafka'].endpoint)}",
        f"export {REDIS_ENV}={shlex.quote(by_name['redis'].endpoint)}",
    ]
    alertmanager = by_name["alertmanager"]
    if alertmanager.answers or not alertmanager.managed:
        lines.append(f"export {ALERTMANAGER_ENV}={shlex.quote(alertmanager.endpoint)}")
    return lines


# -------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/services",
        description=(
            f"Local development stack on loopback: Apache Kafka {KAFKA_VERSION} (KRaft), "
            "Redis and optionally Alertmanager, without Docker."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start what is not running and wait until it answers")
    up.add_argument(
        "--with-alertmanager", action="store_true", help="also run prometheus-alertmanager"
    )
    up.add_argument(
        "--fresh", action="store_true", help="wipe the Kafka data of a broker that is down"
    )
    down = commands.add_parser("down", help="stop what this stack started")
    down.add_argument("--with-alertmanager", action="store_true", help=argparse.SUPPRESS)
    status = commands.add_parser("status", help="print each service's state (exit 3 if down)")
    status.add_argument("--with-alertmanager", action="store_true", help=argparse.SUPPRESS)
    env = commands.add_parser("env", help='print exports, for eval "$(scripts/services env)"')
    env.add_argument("--with-alertmanager", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m consumers.devstack``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            endpoints = ensure_stack(args.with_alertmanager, fresh=args.fresh)
            _say("endpoints:")
            _say(f"  {KAFKA_ENV}={endpoints.kafka_bootstrap}")
            _say(f"  {REDIS_ENV}={endpoints.redis_url}")
            if endpoints.alertmanager_url:
                _say(f"  {ALERTMANAGER_ENV}={endpoints.alertmanager_url}")
            _say('to use them in this shell: eval "$(scripts/services env)"')
            return 0
        if args.command == "down":
            stop_stack()
            return 0
        states = stack_status()
        if args.command == "status":
            for state in states:
                where = f"pid {state.pid}" if state.pid is not None else "-"
                shown = "up" if state.answers else ("starting?" if state.running else "down")
                sys.stdout.write(
                    f"{state.name:<13} {shown:<9} {state.endpoint:<28} {where:<10} {state.detail}\n"
                )
            sys.stdout.write(f"stack dir: {_Config.from_env().stack_dir}\n")
            core = [state for state in states if state.name != "alertmanager"]
            return 0 if all(state.answers for state in core) else 3
        for state in states:
            if state.name != "alertmanager" and not state.answers:
                _say(f"warning: {state.name} does not answer at {state.endpoint} ({state.detail})")
        sys.stdout.write("\n".join(_env_lines(states)) + "\n")
        return 0
    except DevStackError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted; what was started keeps running (`scripts/services down` stops it)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
