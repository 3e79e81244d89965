"""The model registry: versions and their status in Redis, every change on ``model-versions``.

Redis holds the truth; the compacted ``model-versions`` topic (key = model name) tells
everyone else (the evaluator, :class:`streaming.client.ChampionModel`). All keys of one model
share a Redis Cluster hash tag, so each operation is one atomic ``WATCH``/``MULTI`` transaction::

    <ns>:registry:{<model>}:versions     hash  version -> ModelVersion JSON
    <ns>:registry:{<model>}:champion     str   current champion version
    <ns>:registry:{<model>}:next         str   last version number handed out
    <ns>:registry:{<model>}:by_sha       hash  artifact sha256 -> version
    <ns>:registry:{<model>}:by_request   hash  retrain request id -> version
    <ns>:registry:{<model>}:champions    list  versions in the order they became champion
    <ns>:registry:{<model>}:clock        str   created_at of the model's last change (ms)
    <ns>:registry:{<model>}:pending      hash  version -> event_id not yet delivered
    <ns>:registry:models                 set   model names (written before any version)

Life of a version (``status``): ``candidate`` -> ``champion`` (promote) or ``rejected``
(reject). When a version becomes champion, the previous champion becomes ``retired`` (its own
event is published), so at most one version of a model is ``champion``. :meth:`Registry.rollback`
turns the champion into ``rolled_back`` and makes the most recent earlier champion that is
still ``retired`` the champion again.

Publication and crashes: an operation first stores the artifact (content-addressed, so a
crash leaves at most an unreferenced file), then commits the metadata in one transaction
that also marks the changed versions *pending*, then produces their events, waits for the
acknowledgement, and clears the pending marks (``ModelVersion.announced``). A version is
visible as soon as its transaction committed and never half-written. A crash after the
commit leaves pending versions, which :meth:`Registry.reconcile` (run at trainer start)
re-publishes; event ids are deterministic, so a re-published event is recognisable.

Compaction keeps one record per key, i.e. per model. So the last event published for a
model is always the event of its current champion: an operation whose own last event is
not the champion's (a new candidate, a rejection) re-publishes the champion's current event
(same ``event_id``) after it. A consumer reading the compacted topic from the beginning
therefore always finds every model's champion.

One writer per model is assumed for the *order* of events (the trainer); the metadata stays
consistent with any number of writers.

>>> v = ModelVersion(model_name="churn", version=2, status="candidate", created_at=1000,
...                  metrics={"accuracy": 0.91})
>>> rec = v.to_record()
>>> rec["event_id"] == event_id_of("churn", 2, "candidate", 1000), rec["metrics"]
(True, {'accuracy': 0.91})
>>> ModelVersion.from_record(rec) == v
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Literal, Protocol, TypeVar, cast

from streaming.artifacts import ArtifactStore, LocalArtifactStore, sha256_of
from streaming.errors import DeliveryError, RegistryError
from streaming.serde import AvroSerde, serde_for
from streaming.state_store import with_retry

log = logging.getLogger(__name__)

T = TypeVar("T")

Status = Literal["candidate", "champion", "rejected", "rolled_back", "retired"]
STATUSES: Final = ("candidate", "champion", "rejected", "rolled_back", "retired")

_MARK_ANNOUNCED_LUA = """
local done = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    done = done + 1
  end
end
return done
"""


def event_id_of(model_name: str, version: int, status: str, created_at: int) -> str:
    """Deterministic id of the event announcing one status change.

    >>> event_id_of("churn", 1, "champion", 5) == event_id_of("churn", 1, "champion", 5)
    True
    >>> len(event_id_of("churn", 1, "champion", 5))
    32
    """
    payload = json.dumps([model_name, version, status, created_at], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class ModelVersion:
    """One version of a model as the registry knows it; mirrors ``ModelVersionEvent``.

    ``status``, ``reason``, ``created_at`` and ``event_id`` describe the version's *latest*
    change. ``announced`` is not part of the event: it tells whether that change's event was
    acknowledged by Kafka.
    """

    model_name: str
    version: int
    status: str
    created_at: int
    event_id: str = ""
    parent_version: int | None = None
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    estimator: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    training_window_start: int | None = None
    training_window_end: int | None = None
    training_rows: int | None = None
    request_id: str | None = None
    alert_fingerprint: str | None = None
    reason: str | None = None
    reference_profile: str | None = None
    announced: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            msg = f"unknown status {self.status!r}; expected one of {', '.join(STATUSES)}"
            raise RegistryError(msg)
        if not self.event_id:
            self.event_id = event_id_of(self.model_name, self.version, self.status, self.created_at)

    def to_record(self) -> dict[str, Any]:
        """The ``ModelVersionEvent`` record (exactly the schema's fields)."""
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self) if f.name in _FIELDS}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, announced: bool = False) -> ModelVersion:
        """A version from a decoded ``ModelVersionEvent`` (unknown fields are ignored)."""
        values = {k: _copy(record[k]) for k in _FIELDS if k in record}
        values["params"] = {str(k): str(v) for k, v in (values.get("params") or {}).items()}
        for name in ("metrics", "champion_metrics"):
            values[name] = {str(k): float(v) for k, v in (values.get(name) or {}).items()}
        return cls(**values, announced=announced)

    def changed(self, status: str, created_at: int, **updates: Any) -> ModelVersion:
        """A copy with a new status change (new created_at and event id, not announced)."""
        return replace(
            self, status=status, created_at=created_at, event_id="", announced=False, **updates
        )


_FIELDS: Final = (
    "event_id",
    "model_name",
    "version",
    "parent_version",
    "status",
    "artifact_uri",
    "artifact_sha256",
    "estimator",
    "params",
    "metrics",
    "champion_metrics",
    "training_window_start",
    "training_window_end",
    "training_rows",
    "request_id",
    "alert_fingerprint",
    "reason",
    "reference_profile",
    "created_at",
)


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


class EventProducer(Protocol):
    """What the registry needs of a Kafka producer (``confluent_kafka.Producer`` fits)."""

    def produce(
        self, topic: str, *, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


@dataclass
class _Change:
    """The outcome of one transaction: the versions it wrote, or the one it found."""

    result: ModelVersion
    written: bool


class Registry:
    """Model versions in Redis, announced on the ``model-versions`` topic.

    ``producer`` is a ``confluent_kafka.Producer`` (idempotent, see
    :func:`streaming.kafka_io.producer_config`), ``topic`` the physical ``model-versions``
    topic, ``namespace`` the Redis key namespace (``consumers.cli.namespace_of``). Redis
    connection errors are retried with exponential back-off up to ``max_backoff_s`` between
    attempts.
    """

    def __init__(
        self,
        redis_client: Any,
        namespace: str,
        producer: EventProducer,
        topic: str,
        clock: Callable[[], float] = time.time,
        *,
        artifact_store: ArtifactStore | None = None,
        serde: AvroSerde | None = None,
        max_backoff_s: float = 30.0,
        delivery_timeout_s: float = 30.0,
    ) -> None:
        self._r = redis_client
        self._ns = namespace
        self._producer = producer
        self.topic = topic
        self._clock = clock
        self.artifact_store = artifact_store
        self._serde = serde or serde_for("ModelVersionEvent")
        self._max_backoff_s = max_backoff_s
        self._delivery_timeout_s = delivery_timeout_s
        self._mark_announced = redis_client.register_script(_MARK_ANNOUNCED_LUA)
        self._publish_lock = threading.Lock()

    # ---- keys and plumbing ----------------------------------------------------------------
    def key(self, model: str, suffix: str) -> str:
        """The Redis key ``suffix`` (``versions``, ``champion``...) of ``model``."""
        return f"{self._ns}:registry:{{{model}}}:{suffix}"

    @property
    def models_key(self) -> str:
        return f"{self._ns}:registry:models"

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        return with_retry(what, fn, max_backoff_s=self._max_backoff_s)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _transaction(self, model: str, what: str, body: Callable[[Any], _Change]) -> _Change:
        """Run ``body(pipe)`` under WATCH on every key of ``model`` until it commits.

        ``body`` reads with ``pipe`` (immediate in WATCH mode), then calls ``pipe.multi()``
        and queues its writes; it returns the change. A concurrent write to a watched key
        makes redis-py run it again from the start.
        """
        keys = [
            self.key(model, s)
            for s in (
                "versions",
                "champion",
                "next",
                "by_sha",
                "by_request",
                "champions",
                "clock",
                "pending",
            )
        ]
        out: list[_Change] = []

        def run(pipe: Any) -> None:
            out.clear()
            out.append(body(pipe))

        self._retry(f"registry {what} {model}", lambda: self._r.transaction(run, *keys))
        return out[0]

    def _read_version(self, pipe: Any, model: str, version: int) -> ModelVersion | None:
        raw = pipe.hget(self.key(model, "versions"), str(version))
        return None if raw is None else _from_json(raw)

    def _next_created_at(self, pipe: Any, model: str) -> int:
        """A change time of ``model`` after all earlier ones (ms; never goes backwards)."""
        last = pipe.get(self.key(model, "clock"))
        last_ms = int(last) if last is not None else -1
        return max(self._now_ms(), last_ms + 1)

    def _write(self, pipe: Any, model: str, versions: Iterable[ModelVersion]) -> None:
        """Queue the writes of changed versions (inside MULTI): record, pending mark, clock."""
        last = None
        for v in versions:
            pipe.hset(self.key(model, "versions"), str(v.version), _to_json(v))
            pipe.hset(self.key(model, "pending"), str(v.version), v.event_id)
            last = v.created_at if last is None else max(last, v.created_at)
        if last is not None:
            pipe.set(self.key(model, "clock"), str(last))

    # ---- reads ----------------------------------------------------------------------------
    def get(self, model: str, version: int) -> ModelVersion:
        """One version; :class:`RegistryError` if the model has no such version."""

        def read() -> tuple[Any, Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(self.key(model, "versions"), str(version))
            pipe.hget(self.key(model, "pending"), str(version))
            result: list[Any] = pipe.execute()
            return result[0], result[1]

        raw, pending = self._retry(f"registry get {model}", read)
        if raw is None:
            msg = f"model {model!r} has no version {version}"
            raise RegistryError(msg)
        v = _from_json(raw)
        v.announced = pending is None or _s(pending) != v.event_id
        return v

    def champion(self, model: str) -> ModelVersion | None:
        """The current champion of ``model``, or None when it has none."""
        raw = self._retry(
            f"registry champion {model}", lambda: self._r.get(self.key(model, "champion"))
        )
        return None if raw is None else self.get(model, int(raw))

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of one model, by version number."""

        def read() -> tuple[dict[Any, Any], dict[Any, Any]]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(self.key(model, "versions"))
            pipe.hgetall(self.key(model, "pending"))
            result: list[Any] = pipe.execute()
            return result[0], result[1]

        raw, pending = self._retry(f"registry list {model}", read)
        marks = {_s(k): _s(v) for k, v in pending.items()}
        out = []
        for value in raw.values():
            v = _from_json(value)
            v.announced = marks.get(str(v.version)) != v.event_id
            out.append(v)
        return sorted(out, key=lambda v: v.version)

    def models(self) -> list[str]:
        """Names of every model with a registry entry."""
        names = self._retry("registry models", lambda: self._r.smembers(self.models_key))
        return sorted(_s(n) for n in names)

    # ---- register -------------------------------------------------------------------------
    def register(
        self,
        model: str,
        artifact_bytes: bytes,
        *,
        status: Literal["candidate", "champion"] = "candidate",
        estimator: str | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        champion_metrics: Mapping[str, float] | None = None,
        reference_profile: str | Mapping[str, Any] | None = None,
        request_id: str | None = None,
        alert_fingerprint: str | None = None,
        reason: str | None = None,
        training_window: tuple[int | None, int | None] | None = None,
        training_rows: int | None = None,
        parent_version: int | None = None,
    ) -> ModelVersion:
        """Store an artifact and record it as a new version; publish the change.

        Idempotent: an artifact whose sha256 this model already has, or a ``request_id``
        that already made a version, returns that version unchanged (whatever ``status`` is
        asked; use :meth:`promote` to change it) and publishes nothing unless its last
        change was never announced. ``status="champion"`` makes the new version the
        champion at once (the previous one becomes ``retired``). ``parent_version``
        defaults to the current champion. ``training_window`` is ``(start_ms, end_ms)``.
        """
        if status not in ("candidate", "champion"):
            msg = f"a new version is a candidate or a champion, not {status!r}"
            raise RegistryError(msg)
        if self.artifact_store is None:
            msg = "this registry has no artifact store; pass artifact_store="
            raise RegistryError(msg)
        sha = sha256_of(artifact_bytes)
        existing = self._existing(model, sha, request_id)
        if existing is not None:
            return self._finish(model, existing, written=False)
        artifact = self.artifact_store.put(model, artifact_bytes)
        self._retry(f"registry register {model}", lambda: self._r.sadd(self.models_key, model))
        profile = (
            json.dumps(reference_profile, sort_keys=True, separators=(",", ":"))
            if isinstance(reference_profile, Mapping)
            else reference_profile
        )
        start, end = training_window if training_window is not None else (None, None)

        def body(pipe: Any) -> _Change:
            found = self._existing_in(pipe, model, sha, request_id)
            if found is not None:
                return _Change(found, written=False)
            last = pipe.get(self.key(model, "next"))
            version = (int(last) if last is not None else 0) + 1
            current = pipe.get(self.key(model, "champion"))
            current_v = int(current) if current is not None else None
            created = self._next_created_at(pipe, model)
            old = None
            if status == "champion" and current_v is not None:
                old = self._read_version(pipe, model, current_v)
            new = ModelVersion(
                model_name=model,
                version=version,
                status=status,
                created_at=created + (1 if old is not None else 0),
                parent_version=parent_version if parent_version is not None else current_v,
                artifact_uri=artifact.uri,
                artifact_sha256=artifact.sha256,
                estimator=estimator,
                params={str(k): str(v) for k, v in (params or {}).items()},
                metrics={str(k): float(v) for k, v in (metrics or {}).items()},
                champion_metrics={str(k): float(v) for k, v in (champion_metrics or {}).items()},
                training_window_start=start,
                training_window_end=end,
                training_rows=training_rows,
                request_id=request_id,
                alert_fingerprint=alert_fingerprint,
                reason=reason,
                reference_profile=profile,
            )
            changed = [new]
            if old is not None:
                changed.insert(0, old.changed("retired", created, reason=f"replaced by {version}"))
            pipe.multi()
            pipe.set(self.key(model, "next"), str(version))
            pipe.hset(self.key(model, "by_sha"), artifact.sha256, str(version))
            if request_id is not None:
                pipe.hset(self.key(model, "by_request"), request_id, str(version))
            if status == "champion":
                pipe.set(self.key(model, "champion"), str(version))
                pipe.rpush(self.key(model, "champions"), str(version))
            self._write(pipe, model, changed)
            return _Change(new, written=True)

        change = self._transaction(model, "register", body)
        if change.written:
            log.info(
                "registered %s version %d as %s (sha256 %s)",
                model,
                change.result.version,
                change.result.status,
                change.result.artifact_sha256,
            )
        return self._finish(model, change.result, written=change.written)

    def _existing(self, model: str, sha: str, request_id: str | None) -> ModelVersion | None:
        def read() -> ModelVersion | None:
            pipe = self._r.pipeline(transaction=False)
            return self._existing_in(pipe, model, sha, request_id, execute=True)

        return self._retry(f"registry register {model}", read)

    def _existing_in(
        self, pipe: Any, model: str, sha: str, request_id: str | None, *, execute: bool = False
    ) -> ModelVersion | None:
        """The version already made for ``request_id`` or with artifact ``sha``, if any."""
        if execute:
            pipe.hget(self.key(model, "by_request"), request_id or "")
            pipe.hget(self.key(model, "by_sha"), sha)
            by_request, by_sha = pipe.execute()
        else:
            by_request = pipe.hget(self.key(model, "by_request"), request_id or "")
            by_sha = pipe.hget(self.key(model, "by_sha"), sha)
        if request_id is not None and by_request is not None:
            found = int(by_request)
            if by_sha is None or int(by_sha) != found:
                log.warning(
                    "%s: request %s already made version %d; ignoring the new artifact %s",
                    model,
                    request_id,
                    found,
                    sha,
                )
        elif by_sha is not None:
            found = int(by_sha)
        else:
            return None
        if execute:
            return self.get(model, found)
        v = self._read_version(pipe, model, found)
        if v is None:  # pragma: no cover - the indexes are written with the version
            msg = f"{model}: index points to missing version {found}"
            raise RegistryError(msg)
        return v

    # ---- status changes -------------------------------------------------------------------
    def promote(
        self, model: str, version: int, *, reason: str | None = None, force: bool = False
    ) -> ModelVersion:
        """Make ``version`` the champion; the previous champion becomes ``retired``.

        Promoting the champion changes nothing. A ``rejected`` version is only promoted
        with ``force=True``.
        """

        def body(pipe: Any) -> _Change:
            v = self._require(pipe, model, version)
            current = pipe.get(self.key(model, "champion"))
            current_v = int(current) if current is not None else None
            if current_v == version and v.status == "champion":
                return _Change(v, written=False)
            if v.status == "rejected" and not force:
                msg = f"{model} version {version} was rejected ({v.reason}); use force=True"
                raise RegistryError(msg)
            created = self._next_created_at(pipe, model)
            changed = []
            if current_v is not None:
                old = self._read_version(pipe, model, current_v)
                if old is not None:
                    why = f"replaced by {version}"
                    changed.append(old.changed("retired", created, reason=why))
                    created += 1
            new = v.changed("champion", created, reason=reason)
            changed.append(new)
            pipe.multi()
            pipe.set(self.key(model, "champion"), str(version))
            pipe.rpush(self.key(model, "champions"), str(version))
            self._write(pipe, model, changed)
            return _Change(new, written=True)

        change = self._transaction(model, "promote", body)
        if change.written:
            log.info("promoted %s version %d to champion", model, version)
        return self._finish(model, change.result, written=change.written)

    def reject(
        self,
        model: str,
        version: int,
        reason: str,
        champion_metrics: Mapping[str, float] | None = None,
    ) -> ModelVersion:
        """Mark a candidate ``rejected`` with the reason and the champion's scores.

        Rejecting a rejected version again changes nothing; the champion cannot be rejected
        (use :meth:`rollback`).
        """

        def body(pipe: Any) -> _Change:
            v = self._require(pipe, model, version)
            if v.status == "rejected":
                return _Change(v, written=False)
            if v.status != "candidate":
                msg = f"{model} version {version} is {v.status}; only a candidate is rejected"
                raise RegistryError(msg)
            created = self._next_created_at(pipe, model)
            updates: dict[str, Any] = {"reason": reason}
            if champion_metrics is not None:
                updates["champion_metrics"] = {
                    str(k): float(x) for k, x in champion_metrics.items()
                }
            new = v.changed("rejected", created, **updates)
            pipe.multi()
            self._write(pipe, model, [new])
            return _Change(new, written=True)

        change = self._transaction(model, "reject", body)
        if change.written:
            log.info("rejected %s version %d: %s", model, version, reason)
        return self._finish(model, change.result, written=change.written)

    def rollback(self, model: str, *, reason: str | None = None) -> ModelVersion:
        """Demote the champion to ``rolled_back``; return the restored previous champion.

        The restored version is the most recent earlier champion whose status is still
        ``retired`` (versions rolled back before are skipped). Both changes are published,
        the restored champion last.
        """

        def body(pipe: Any) -> _Change:
            current = pipe.get(self.key(model, "champion"))
            if current is None:
                msg = f"{model} has no champion to roll back"
                raise RegistryError(msg)
            current_v = int(current)
            history = [int(x) for x in pipe.lrange(self.key(model, "champions"), 0, -1)]
            target: ModelVersion | None = None
            keep = 0
            for i in range(len(history) - 1, -1, -1):
                if history[i] == current_v:
                    continue
                candidate = self._read_version(pipe, model, history[i])
                if candidate is not None and candidate.status == "retired":
                    target, keep = candidate, i + 1
                    break
            if target is None:
                msg = f"{model} has no earlier champion to roll back to from version {current_v}"
                raise RegistryError(msg)
            old = self._require(pipe, model, current_v)
            created = self._next_created_at(pipe, model)
            why = reason or f"rolled back to {target.version}"
            demoted = old.changed("rolled_back", created, reason=why)
            restored = target.changed(
                "champion", created + 1, reason=f"restored by rollback of {current_v}"
            )
            pipe.multi()
            pipe.ltrim(self.key(model, "champions"), 0, keep - 1)
            pipe.set(self.key(model, "champion"), str(target.version))
            self._write(pipe, model, [demoted, restored])
            return _Change(restored, written=True)

        change = self._transaction(model, "rollback", body)
        log.info(
            "rolled back %s to version %d (%s)",
            model,
            change.result.version,
            change.result.reason,
        )
        return self._finish(model, change.result, written=True)

    def _require(self, pipe: Any, model: str, version: int) -> ModelVersion:
        v = self._read_version(pipe, model, version)
        if v is None:
            msg = f"model {model!r} has no version {version}"
            raise RegistryError(msg)
        return v

    # ---- publication ----------------------------------------------------------------------
    def _finish(self, model: str, result: ModelVersion, *, written: bool) -> ModelVersion:
        """Publish whatever of ``model`` is pending, then return ``result`` re-read."""
        if written or not self.get(model, result.version).announced:
            self.announce(model)
        return self.get(model, result.version)

    def announce(self, model: str) -> list[ModelVersion]:
        """Publish the pending changes of ``model``; return the versions announced.

        The events go out oldest change first, followed by the champion's current event
        when it is not already the last, and are acknowledged before their pending marks
        are cleared (only if no newer change replaced them meanwhile). Raises
        :class:`DeliveryError` when Kafka does not acknowledge them; they stay pending.
        """

        def read() -> tuple[dict[Any, Any], Any, dict[Any, Any]]:
            pipe = self._r.pipeline(transaction=True)
            pipe.hgetall(self.key(model, "pending"))
            pipe.get(self.key(model, "champion"))
            pipe.hgetall(self.key(model, "versions"))
            result: list[Any] = pipe.execute()
            return result[0], result[1], result[2]

        with self._publish_lock:
            pending_raw, champion_raw, versions_raw = self._retry(
                f"registry announce {model}", read
            )
            pending = {_s(k): _s(v) for k, v in pending_raw.items()}
            if not pending:
                return []
            versions = {_s(k): _from_json(v) for k, v in versions_raw.items()}
            todo = sorted(
                (versions[k] for k, eid in pending.items() if k in versions),
                key=lambda v: (v.created_at, v.version),
            )
            todo = [v for v in todo if v.event_id == pending[str(v.version)]]
            events = list(todo)
            champ = versions.get(_s(champion_raw)) if champion_raw is not None else None
            if (
                champ is not None
                and champ.status == "champion"
                and (not events or events[-1].version != champ.version)
            ):
                events.append(champ)
            self._publish(model, events)
            args: list[str] = []
            for v in todo:
                args += [str(v.version), v.event_id]
            if args:
                self._retry(
                    f"registry announce {model}",
                    lambda: self._mark_announced(keys=[self.key(model, "pending")], args=args),
                )
            for v in todo:
                v.announced = True
            return todo

    def _publish(self, model: str, events: list[ModelVersion]) -> None:
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        key = model.encode()
        for v in events:
            value = self._serde.encode(v.to_record())
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:
                    self._producer.poll(0.1)
        remaining = self._producer.flush(self._delivery_timeout_s)
        if remaining or errors:
            detail = "; ".join(errors[:5]) or f"{remaining} not acknowledged in time"
            msg = (
                f"{model}: {len(events)} model-version event(s) not delivered to {self.topic} "
                f"({detail}); they stay pending and Registry.reconcile() re-publishes them"
            )
            raise DeliveryError(msg, errors or [f"{remaining} record(s) timed out"])

    def answered(self, model: str, request_id: str) -> bool:
        """Whether a retrain request was already answered (with a version or without one)."""

        def read() -> tuple[Any, Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(self.key(model, "by_request"), request_id)
            pipe.hget(self.key(model, "answered"), request_id)
            result: list[Any] = pipe.execute()
            return result[0], result[1]

        by_request, answered = self._retry(f"registry answered {model}", read)
        return by_request is not None or answered is not None

    def answer_without_version(
        self,
        model: str,
        request_id: str,
        reason: str,
        *,
        alert_fingerprint: str | None = None,
        training_rows: int | None = None,
        training_window: tuple[int | None, int | None] | None = None,
    ) -> ModelVersion:
        """Answer a retrain request that made no version (e.g. not enough labeled data).

        Publishes a ``rejected`` event with ``version = 0`` and no artifact, carrying the
        request id and the reason, so the evaluator ends the retrain in flight; then the
        champion's current event again, so the compacted topic still ends with the champion.
        Idempotent by request id (the same event id on a retry).
        """
        window = training_window or (None, None)
        created = self._now_ms()
        raw = self._retry(
            f"registry answer {model}",
            lambda: self._r.hsetnx(self.key(model, "answered"), request_id, str(created)),
        )
        if not raw:
            stored = self._retry(
                f"registry answer {model}",
                lambda: self._r.hget(self.key(model, "answered"), request_id),
            )
            created = int(stored)
        event = ModelVersion(
            model_name=model,
            version=0,
            parent_version=None,
            status="rejected",
            artifact_uri=None,
            artifact_sha256=None,
            estimator=None,
            params={},
            metrics={},
            champion_metrics={},
            training_window_start=window[0],
            training_window_end=window[1],
            training_rows=training_rows,
            request_id=request_id,
            alert_fingerprint=alert_fingerprint,
            reason=reason,
            reference_profile=None,
            created_at=created,
            event_id=event_id_of(model, 0, f"rejected:{request_id}", created),
        )
        champion = self.champion(model)
        with self._publish_lock:
            self._publish(model, [event] + ([champion] if champion is not None else []))
        return event

    def reconcile(self) -> dict[str, list[int]]:
        """Re-publish every change that was committed but never announced (trainer start).

        Returns the versions announced, by model. Safe to run at any time and repeatedly.
        """
        done: dict[str, list[int]] = {}
        for model in self.models():
            announced = self.announce(model)
            if announced:
                done[model] = [v.version for v in announced]
                log.info(
                    "reconcile: announced %s version(s) %s",
                    model,
                    ", ".join(str(v) for v in done[model]),
                )
        return done

    def list(self, model: str | None = None) -> list[ModelVersion]:
        """Every version of ``model``, or of every model; by model then version."""
        names = [model] if model is not None else self.models()
        out: list[ModelVersion] = []
        for name in names:
            out.extend(self.versions(name))
        return out


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _to_json(v: ModelVersion) -> str:
    return json.dumps(v.to_record(), sort_keys=True, separators=(",", ":"))


def _from_json(raw: Any) -> ModelVersion:
    record = json.loads(raw)
    return ModelVersion.from_record(cast(dict[str, Any], record))


def registry_from_settings(settings: Any, *, producer: EventProducer | None = None) -> Registry:
    """A :class:`Registry` on the configured Redis, Kafka, topic prefix and artifact dir."""
    from confluent_kafka import Producer

    from consumers.cli import namespace_of
    from streaming.kafka_io import producer_config
    from streaming.state_store import redis_client_from_settings

    serde = (
        AvroSerde("ModelVersionEvent", registry_url=settings.schema_registry_url)
        if settings.schema_registry_url
        else None
    )
    return Registry(
        redis_client_from_settings(settings),
        namespace_of(settings),
        producer or Producer(producer_config(settings, **{"client.id": "streammon-registry"})),
        settings.topic("model-versions"),
        artifact_store=LocalArtifactStore(settings.artifact_dir),
        serde=serde,
        max_backoff_s=settings.retry_max_backoff_s,
    )
