"""The producer SDK: send predictions and outcomes, serve the current champion model.

:class:`PredictionProducer` writes ``PredictionEvent`` and ``OutcomeEvent`` records the way the
monitor expects them (our Avro serde, key = prediction id, idempotent batching producer) and
surfaces delivery failures instead of dropping them::

    with PredictionProducer(bootstrap_servers="broker:9092") as producer:
        producer.send_prediction("p-1", "churn", 3, {"age": 41}, 1, score=0.83)
        producer.send_outcome("p-1", 1)
    # leaving the block flushes; undelivered records raise DeliveryError

:class:`ChampionModel` follows the ``model-versions`` topic in a background thread and serves
whichever version is currently the champion, swapping to a newly promoted (or rolled-back-to)
version without a restart::

    model = ChampionModel("churn")
    model.wait_until_ready(30)
    model.predict_proba({"age": 41, "plan": "pro"})   # Prediction(value=1, version=3, ...)

>>> Prediction(value=1, version=3, probabilities={"0": 0.2, "1": 0.8}, score=0.8).score
0.8
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streaming.artifacts import ArtifactStore, artifact_store_for, load_model
from streaming.errors import DeliveryError, ModelNotReadyError, SerializationError
from streaming.kafka_io import client_config, producer_config
from streaming.serde import AvroSerde, serde_for
from streaming.settings import Settings, load_settings

__all__ = [
    "ChampionModel",
    "DeliveryFailure",
    "Prediction",
    "PredictionProducer",
]

log = logging.getLogger(__name__)


def _settings(
    settings: Settings | None, bootstrap_servers: str | None, topic_prefix: str | None
) -> Settings:
    if settings is None:
        return load_settings(kafka_bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    updates: dict[str, Any] = {}
    if bootstrap_servers is not None:
        updates["kafka_bootstrap_servers"] = bootstrap_servers
    if topic_prefix is not None:
        updates["topic_prefix"] = topic_prefix
    return settings.model_copy(update=updates) if updates else settings


def _serde(name: str, settings: Settings) -> AvroSerde:
    if settings.schema_registry_url:
        return AvroSerde(name, registry_url=settings.schema_registry_url)
    return serde_for(name)


def _plain(value: Any) -> Any:
    """Numpy scalars to Python scalars (Avro needs ``int``/``float``/``str``/``bool``)."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def _label(value: Any) -> Any:
    """A prediction or label for the ``long | double | string`` union (bools become ints)."""
    value = _plain(value)
    return int(value) if isinstance(value, bool) else value


# ---- producing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryFailure:
    """One record Kafka did not acknowledge."""

    topic: str
    key: str
    error: str

    def __str__(self) -> str:
        return f"{self.topic} key={self.key}: {self.error}"


class PredictionProducer:
    """Send predictions and outcomes to the monitor's topics.

    Settings come from ``settings`` or, when None, from ``STREAMMON_*`` variables (see
    :func:`streaming.settings.load_settings`); ``bootstrap_servers`` and ``topic_prefix``
    override them. ``producer_conf`` are extra librdkafka properties
    (``PredictionProducer(**{"linger.ms": 20})``) over :func:`streaming.kafka_io.producer_config`
    (idempotent, ``acks=all``, lz4, ``linger.ms=5``).

    ``send_*`` only enqueue: records are batched and sent in the background. A record that
    cannot be delivered (after librdkafka's retries, within ``message.timeout.ms``) is
    collected: :meth:`flush` and :meth:`close` raise :class:`DeliveryError` listing them, and
    ``on_error`` (if given) is called with each :class:`DeliveryFailure` as soon as it is
    known (from within ``send_*``, :meth:`poll` or :meth:`flush`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic_prefix: str | None = None,
        on_error: Callable[[DeliveryFailure], None] | None = None,
        flush_timeout_s: float = 30.0,
        config: Mapping[str, Any] | None = None,
        **producer_conf: Any,
    ) -> None:
        self.settings = _settings(settings, bootstrap_servers, topic_prefix)
        conf = producer_config(self.settings, **{"client.id": "streammon-sdk"})
        conf.update(config or {})
        conf.update(producer_conf)
        self._producer = Producer(conf)
        self.predictions_topic = self.settings.topic("predictions")
        self.outcomes_topic = self.settings.topic("outcomes")
        self._prediction_serde = _serde("PredictionEvent", self.settings)
        self._outcome_serde = _serde("OutcomeEvent", self.settings)
        self._on_error = on_error
        self._flush_timeout_s = flush_timeout_s
        self._failures: list[DeliveryFailure] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- sending ---------------------------------------------------------------------------
    def send_prediction(
        self,
        prediction_id: str,
        model_name: str,
        model_version: int | str,
        features: Mapping[str, Any],
        prediction: Any,
        *,
        score: float | None = None,
        probabilities: Mapping[Any, float] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Enqueue one ``PredictionEvent``; raises :class:`SerializationError` at once if the
        record breaks the contract (e.g. a feature value that is a list)."""
        record = {
            "prediction_id": prediction_id,
            "model_name": model_name,
            "model_version": str(model_version),
            "timestamp": _now_ms() if timestamp_ms is None else int(timestamp_ms),
            "features": {str(k): _plain(v) for k, v in features.items()},
            "prediction": _label(prediction),
            "score": None if score is None else float(score),
            "probabilities": (
                None
                if probabilities is None
                else {str(_plain(k)): float(v) for k, v in probabilities.items()}
            ),
            "tags": {str(k): str(v) for k, v in (tags or {}).items()},
        }
        self._send(self.predictions_topic, prediction_id, self._prediction_serde.encode(record))

    def send_outcome(
        self,
        prediction_id: str,
        label: Any,
        *,
        timestamp_ms: int | None = None,
        model_name: str | None = None,
    ) -> None:
        """Enqueue one ``OutcomeEvent`` (the true label of an earlier prediction)."""
        record = {
            "prediction_id": prediction_id,
            "timestamp": _now_ms() if timestamp_ms is None else int(timestamp_ms),
            "label": _label(label),
            "model_name": model_name,
        }
        self._send(self.outcomes_topic, prediction_id, self._outcome_serde.encode(record))

    def _send(self, topic: str, key: str, value: bytes) -> None:
        if self._closed:
            msg = "PredictionProducer is closed"
            raise RuntimeError(msg)
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key.encode(), on_delivery=self._delivered
                )
                break
            except BufferError:  # local queue full: serve callbacks until there is room
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        raw_key = msg.key()
        key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else str(raw_key)
        failure = DeliveryFailure(str(msg.topic()), key, str(err))
        with self._lock:
            self._failures.append(failure)
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:
                log.exception("on_error callback failed for %s", failure)

    # -- delivery --------------------------------------------------------------------------
    def poll(self, timeout: float = 0) -> int:
        """Serve delivery callbacks; the number of events served."""
        return self._producer.poll(timeout)

    @property
    def failures(self) -> list[DeliveryFailure]:
        """Failures collected since the last :meth:`flush` (a copy)."""
        with self._lock:
            return list(self._failures)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every enqueued record is acknowledged or failed.

        Raises :class:`DeliveryError` listing the records that failed since the last flush,
        and those still in flight when ``timeout`` (default ``flush_timeout_s``) ran out.
        """
        remaining = self._producer.flush(self._flush_timeout_s if timeout is None else timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        problems = [str(f) for f in failures]
        if remaining:
            problems.append(f"{remaining} record(s) still in flight when the flush timed out")
        if problems:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            msg = f"{len(problems)} delivery problem(s): {shown}"
            raise DeliveryError(msg, problems)

    def close(self, timeout: float | None = None) -> None:
        """Flush (raising :class:`DeliveryError` on failures) and refuse further sends."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)

    def __enter__(self) -> PredictionProducer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except DeliveryError as err:  # do not hide the exception that is propagating
            log.error("while closing after %s: %s", exc_type.__name__, err)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---- serving ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """A model output and the version that made it.

    ``probabilities`` (class label as string -> probability) and ``score`` (probability of
    the positive class, ``classes_[1]``, for binary classifiers) are set by
    :meth:`ChampionModel.predict_proba`.
    """

    value: Any
    version: int
    probabilities: dict[str, float] | None = None
    score: float | None = None


@dataclass(frozen=True)
class _Loaded:
    version: int
    sha256: str
    model: Any
    columns: list[str] | None
    categorical: list[str] | None
    event: dict[str, Any]


class ChampionModel:
    """Serve the current champion of ``model_name``, hot-swapped when it changes.

    A background thread reads the compacted ``model-versions`` topic from the beginning
    without a consumer group, keeps the latest event of each version of this model, and
    takes as champion the version whose most recent ``champion`` event came last among
    those still ``champion`` (so a rollback, published as ``rolled_back`` then ``champion``,
    is followed). When the champion changes, its artifact is fetched (``artifact_store``,
    default: chosen from the URI, ``file://`` -> the local file), its SHA-256 checked against
    the event **before** anything is deserialized, the types allowlisted, and only then is the
    served model replaced, in one reference assignment: a ``predict`` call uses either the
    old or the new version, never a mix.

    A refused or unreadable artifact never reaches the caller: it is logged, described in
    :attr:`last_error`, the previous version keeps serving, and the load is retried after
    ``reload_backoff_s`` (or at the next event). :attr:`last_error` is cleared once the
    champion is loaded.

    Inputs: the rows (feature maps) are turned into the model's input the way the trainer
    built its training frame, with ``streaming.training.features_frame(rows,
    feature_columns(pipeline), categorical=categorical_columns(pipeline) or None)`` (kinds
    inferred from the values when the pipeline does not name its categorical columns) when
    that module is importable; otherwise into a ``pandas.DataFrame`` of the rows, reindexed to the
    estimator's ``feature_names_in_`` when it has them. Absent features become missing
    values and unknown keys are ignored.
    """

    def __init__(
        self,
        model_name: str,
        settings: Settings | None = None,
        *,
        artifact_store: ArtifactStore | None = None,
        poll_interval_s: float = 0.5,
        reload_backoff_s: float = 5.0,
    ) -> None:
        self.model_name = model_name
        self.settings = settings or load_settings()
        self.topic = self.settings.topic("model-versions")
        self.poll_interval_s = poll_interval_s
        self.reload_backoff_s = reload_backoff_s
        self._store = artifact_store
        self._serde = _serde("ModelVersionEvent", self.settings)
        self._current: _Loaded | None = None
        self.last_error: str | None = None
        self._latest: dict[int, dict[str, Any]] = {}
        self._champion_seq: dict[int, int] = {}
        self._seq = 0
        self._failed: dict[tuple[int, str], float] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"champion-{model_name}", daemon=True
        )
        self._thread.start()

    # -- public ----------------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        """The version being served, None before the first champion is loaded."""
        current = self._current
        return None if current is None else current.version

    @property
    def event(self) -> dict[str, Any] | None:
        """The ``ModelVersionEvent`` of the version being served (metrics, params...)."""
        current = self._current
        return None if current is None else dict(current.event)

    @property
    def estimator(self) -> Any:
        """The estimator being served (do not mutate it)."""
        return self._require().model

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a champion is loaded; False if ``timeout`` seconds passed first."""
        return self._ready.wait(timeout)

    def predict(self, features: Mapping[str, Any]) -> Prediction:
        """The champion's prediction for one row of features."""
        return self.predict_many([features])[0]

    def predict_many(self, rows: Iterable[Mapping[str, Any]]) -> list[Prediction]:
        """Predictions for many rows, all by the same version."""
        current = self._require()
        rows = list(rows)
        if not rows:
            return []
        values = current.model.predict(self._frame(current, rows))
        return [Prediction(_plain(v), current.version) for v in values]

    def predict_proba(self, features: Mapping[str, Any]) -> Prediction:
        """The champion's class probabilities for one row (classifiers only)."""
        return self.predict_proba_many([features])[0]

    def predict_proba_many(self, rows: Iterable[Mapping[str, Any]]) -> list[Prediction]:
        """Class probabilities for many rows, all by the same version."""
        current = self._require()
        model = current.model
        if not hasattr(model, "predict_proba"):
            msg = f"{self.model_name} version {current.version} has no predict_proba"
            raise TypeError(msg)
        rows = list(rows)
        if not rows:
            return []
        matrix = model.predict_proba(self._frame(current, rows))
        classes = [_plain(c) for c in model.classes_]
        out = []
        for row in matrix:
            probs = [float(p) for p in row]
            best = max(range(len(probs)), key=probs.__getitem__)
            out.append(
                Prediction(
                    value=classes[best],
                    version=current.version,
                    probabilities={str(c): p for c, p in zip(classes, probs, strict=True)},
                    score=probs[1] if len(classes) == 2 else None,
                )
            )
        return out

    def close(self, timeout: float = 10.0) -> None:
        """Stop following the topic (the loaded model stays usable)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> ChampionModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inputs ----------------------------------------------------------------------------
    def _require(self) -> _Loaded:
        current = self._current
        if current is None:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            msg = f"no champion of {self.model_name} is loaded yet{detail}"
            raise ModelNotReadyError(msg)
        return current

    @staticmethod
    def _frame(current: _Loaded, rows: Sequence[Mapping[str, Any]]) -> Any:
        training = _training_module()
        if training is not None and current.columns is not None:
            return training.features_frame(rows, current.columns, categorical=current.categorical)
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]

        frame = pd.DataFrame.from_records([dict(r) for r in rows])
        names = getattr(current.model, "feature_names_in_", None)
        if names is not None:
            frame = frame.reindex(columns=[str(n) for n in names])
        return frame

    # -- the follower thread ---------------------------------------------------------------
    def _run(self) -> None:
        conf = client_config(self.settings)
        conf.update(
            {
                "group.id": f"streammon-champion-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": max(10, int(self.poll_interval_s * 1000)),
                "client.id": f"streammon-champion-{self.model_name}",
            }
        )
        consumer = Consumer(conf)
        assigned = False
        try:
            while not self._stop.is_set():
                try:
                    if not assigned:
                        assigned = self._assign(consumer)
                        if not assigned:
                            self._stop.wait(self.poll_interval_s)
                            continue
                    for msg in consumer.consume(500, timeout=self.poll_interval_s):
                        self._take(msg)
                    self._sync()
                except Exception as exc:  # the thread must survive anything
                    self._report(f"following {self.topic}: {type(exc).__name__}: {exc}")
                    self._stop.wait(self.poll_interval_s)
        finally:
            consumer.close()

    def _assign(self, consumer: Any) -> bool:
        md = consumer.list_topics(self.topic, timeout=5)
        topic = md.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            log.debug("%s does not exist yet", self.topic)
            return False
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)]
        )
        return True

    def _take(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: %s", self.topic, err)
            return
        try:
            event = self._serde.decode(msg.value() or b"")
        except SerializationError as exc:
            log.warning("%s: undecodable event at offset %s: %s", self.topic, msg.offset(), exc)
            return
        if event.get("model_name") != self.model_name:
            return
        version = int(event["version"])
        self._latest[version] = event
        self._seq += 1
        if event.get("status") == "champion":
            self._champion_seq[version] = self._seq

    def _target(self) -> dict[str, Any] | None:
        live = [v for v, e in self._latest.items() if e.get("status") == "champion"]
        if not live:
            return None
        return self._latest[max(live, key=lambda v: self._champion_seq.get(v, 0))]

    def _sync(self) -> None:
        target = self._target()
        if target is None:
            return
        version = int(target["version"])
        sha = target.get("artifact_sha256") or ""
        current = self._current
        if current is not None and current.version == version and current.sha256 == sha:
            return
        key = (version, sha)
        failed_at = self._failed.get(key)
        if failed_at is not None and time.monotonic() - failed_at < self.reload_backoff_s:
            return
        try:
            loaded = self._load(target)
        except Exception as exc:
            self._failed[key] = time.monotonic()
            serving = "nothing" if current is None else f"version {current.version}"
            self._report(
                f"{self.model_name} version {version} refused: {type(exc).__name__}: {exc} "
                f"(still serving {serving})"
            )
            return
        self._failed.pop(key, None)
        self._current = loaded  # the atomic swap
        self.last_error = None
        self._ready.set()
        log.info(
            "%s: serving version %d (was %s)",
            self.model_name,
            version,
            "none" if current is None else current.version,
        )

    def _load(self, event: Mapping[str, Any]) -> _Loaded:
        uri, sha = event.get("artifact_uri"), event.get("artifact_sha256")
        if not uri or not sha:
            msg = "the event names no artifact (artifact_uri / artifact_sha256 missing)"
            raise ModelNotReadyError(msg)
        store = self._store or artifact_store_for(uri)
        model = load_model(store.get(uri), expected_sha256=sha)
        columns: list[str] | None = None
        categorical: list[str] | None = None
        training = _training_module()
        if training is not None:
            try:
                columns = list(training.feature_columns(model))
                # [] also means "not a pipeline of make_pipeline": then infer the kinds
                categorical = list(training.categorical_columns(model)) or None
            except Exception as exc:
                log.warning("%s: no feature columns (%s); using the rows as given", uri, exc)
        return _Loaded(int(event["version"]), sha, model, columns, categorical, dict(event))

    def _report(self, message: str) -> None:
        self.last_error = message
        log.error("%s", message)


@functools.cache
def _training_module() -> Any:
    """``streaming.training`` if it can be imported (it needs the training extras)."""
    try:
        return importlib.import_module("streaming.training")
    except ImportError:
        return None
