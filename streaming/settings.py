"""Typed settings: CLI flags > ``STREAMMON_*`` environment variables > config file > defaults.

Every field maps to one environment variable, ``STREAMMON_`` + the field name in upper case
(``kafka_bootstrap_servers`` -> ``STREAMMON_KAFKA_BOOTSTRAP_SERVERS``). Mappings and lists are
given as JSON in the environment (``STREAMMON_KAFKA_CONFIG='{"linger.ms": "5"}'``). The config
file is TOML, found at ``STREAMMON_CONFIG_FILE`` or passed with ``--config``; its top-level keys
are the field names.

Settings are read when :func:`load_settings` is called, never at import time, so tests and
services can set the environment first.

>>> s = load_settings(kafka_bootstrap_servers="broker:9092", topic_prefix="dev.")
>>> s.topic("predictions")
'dev.predictions'
>>> s.consumer_group("joiner")
'dev.streammon-joiner'
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streaming.alerting import (
    AlertRule,
    DataDriftRule,
    RetrainPolicy,
    Rule,
    rules_for,
    validate_rules,
)
from streaming.errors import ConfigError

if TYPE_CHECKING:
    from streaming.datadrift import DriftBudget
    from streaming.labelfree import LabelFreeConfig

TOPIC_NAMES = (
    "predictions",
    "outcomes",
    "labeled",
    "predictions-by-model",
    "alerts",
    "retrain-requests",
    "model-versions",
    "dead-letter",
)
"""Logical topic names; the physical name is ``topic_prefix`` + logical name."""

INSECURE_DEV_KEY = "streammon-insecure-development-key"
DEFAULT_DRIFT_RULE = "data_drift"
"""Name of the data-drift rule added by default (see ``drift_alert``)."""


class DetectorConfig(BaseModel):
    """One concept-drift detector: a river detector kind and its constructor parameters."""

    kind: str = "adwin"
    params: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(BaseModel):
    """Per-model overrides of the monitoring defaults; unset fields fall back to them."""

    task: Literal["classification", "regression"] | None = None
    positive_label: int | float | str | None = None
    windows: list[str] | None = None
    detectors: dict[str, DetectorConfig] | None = None
    segment_tags: list[str] | None = None
    alert_rules: list[AlertRule] | None = None
    """Rules of this model; one with the name of a shared rule replaces it."""
    drift_features: list[str] | None = None
    categorical_features: list[str] | None = None


class _EnvSource(EnvSettingsSource):
    """Environment source that reads label-valued variables as JSON when they are JSON.

    ``STREAMMON_POSITIVE_LABEL=1`` is the number 1 and ``STREAMMON_POSITIVE_LABEL='"1"'``
    the string "1" (labels 1 and "1" are different classes); a bare word such as
    ``approve`` stays a string.
    """

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        if field_name == "positive_label" and isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            return parsed if isinstance(parsed, int | float | str) else value
        return super().prepare_field_value(field_name, field, value, value_is_complex)


class Settings(BaseSettings):
    """Every setting streammon reads. See docs/configuration.md for the full reference."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMMON_",
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka brokers, ``host:port[,host:port...]``."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""
    kafka_sasl_mechanism: str | None = None
    """SASL mechanism, e.g. ``PLAIN``, ``SCRAM-SHA-512``, ``OAUTHBEARER``."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password (masked in ``config show``)."""
    kafka_ssl_ca_location: str | None = None
    """CA certificate file for TLS to Kafka."""
    kafka_ssl_certificate_location: str | None = None
    """Client certificate file (mutual TLS)."""
    kafka_ssl_key_location: str | None = None
    """Client private key file (mutual TLS)."""
    kafka_ssl_key_password: SecretStr | None = None
    """Password of the client key (masked)."""
    kafka_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """librdkafka properties passed to every client (consumers, producers, admin)."""
    kafka_consumer_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """librdkafka properties for consumers only (override the defaults)."""
    kafka_producer_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """librdkafka properties for producers only (override the defaults)."""
    schema_registry_url: str | None = None
    """When set, producers write the Confluent Schema Registry wire format."""

    # Topics
    topic_prefix: str = ""
    """Prefix of every topic name and of the Redis namespace (two deployments can share one
    Kafka and one Redis)."""
    group_id_prefix: str | None = None
    """Consumer group ids are ``<group_id_prefix>streammon-<service>``; defaults to the topic
    prefix so two deployments sharing a broker never share a group."""
    predictions_partitions: int = Field(default=6, ge=1)
    """Partitions of ``predictions`` and ``outcomes`` (always equal: co-partitioning)."""
    labeled_partitions: int = Field(default=6, ge=1)
    """Partitions of ``labeled``: the evaluator parallelism (one writer per model)."""
    alerts_partitions: int = Field(default=3, ge=1)
    """Partitions of ``alerts``."""
    retrain_requests_partitions: int = Field(default=3, ge=1)
    """Partitions of ``retrain-requests``: the trainer parallelism."""
    replication_factor: int = Field(default=1, ge=1)
    """Replication factor of the topics ``topics create`` makes."""
    labeled_retention_bytes: int = Field(default=1 << 30, ge=-1)
    """Size retention of each ``labeled`` partition (the trainer's history; -1: unbounded).
    Its record timestamps are event times, so it has no time retention."""
    dead_letter_retention_ms: int = Field(default=14 * 24 * 3600 * 1000, ge=-1)
    """Retention of the dead-letter topic (-1: forever)."""

    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    """``redis://`` or ``rediss://`` (TLS); user and password may be in the URL."""
    redis_password: SecretStr | None = None
    """Redis AUTH password when not in the URL (masked)."""
    redis_ssl_ca_certs: str | None = None
    """CA certificate file for ``rediss://`` URLs."""
    redis_max_connections: int = Field(default=16, ge=1)
    """Size of the Redis connection pool of one process."""
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    """Redis connect and socket timeout."""
    redis_key_prefix: str = "streammon"
    """First part of every Redis key."""

    # State and exactly-once
    state_hmac_key: SecretStr = SecretStr(INSECURE_DEV_KEY)
    """Key signing every state blob. Set it in production; the default only suits a laptop."""
    checkpoint_interval_ms: int = Field(default=1000, ge=10)
    """How often the evaluator checkpoints its state (also on revoke and stop). The joiner
    checkpoints every batch."""
    max_batch_size: int = Field(default=2000, ge=1)
    """Messages consumed per poll and processed as one batch."""
    poll_timeout_ms: int = Field(default=200, ge=1)
    """How long one poll waits for messages."""

    # Join
    join_max_label_delay_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=1)
    """An outcome later than this after its prediction (event time) is not joined."""
    join_grace_ms: int = Field(default=60_000, ge=0)
    """Extra event time an entry waits past the window before it expires."""

    # Monitoring defaults (per-model overrides in ``models``)
    task: Literal["classification", "regression"] | None = None
    """None infers it per model: a float prediction means regression."""
    positive_label: int | float | str | None = None
    """Positive class for binary precision/recall/F1 (default: 1, "1" or "true" when
    seen)."""
    windows: list[str] = Field(default_factory=lambda: ["count:1000", "time:1h"])
    """Rolling windows: ``count:N`` (last N labeled events) or ``time:30s|5m|1h|1d[/panes]``
    (event time)."""
    detectors: dict[str, DetectorConfig] = Field(
        default_factory=lambda: {"adwin": DetectorConfig(kind="adwin")}
    )
    """Drift detectors by name: ``{"kind": "adwin|ddm|eddm|hddm_a|hddm_w|page_hinkley|fhddm",
    "params": {...}}``."""
    segment_tags: list[str] = Field(default_factory=list)
    """Tags of a prediction whose values get their own metrics (e.g. ``["region"]``)."""
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    """Per-model overrides of task, positive_label, windows, detectors, segment_tags,
    alert_rules, drift_features and categorical_features, keyed by model name."""

    # Label-free monitoring: data drift and estimated performance before labels arrive
    label_free_monitoring: bool = True
    """The joiner forwards the first sighting of every prediction to ``predictions-by-model``
    (keyed by model, co-partitioned with ``labeled``) and the evaluator tests it for data drift
    and estimates performance from its score."""
    drift_windows: list[str] = Field(default_factory=lambda: ["count:1000", "time:1h"])
    """Tumbling windows of predictions tested for drift: ``count:N`` (N predictions) or
    ``time:D`` (prediction event time; the first one also pairs estimated with realized
    metrics)."""
    drift_reference_events: int = Field(default=1000, ge=50)
    """A version without a training profile takes its first N predictions as reference."""
    drift_false_alarm_events: int = Field(default=100_000, ge=100)
    """The false-alarm budget: on undrifted data, on average at most one drift alarm per this
    many predictions (split evenly over the drift windows)."""
    drift_window_false_alarm_rate: float | None = Field(default=None, gt=0, lt=1)
    """Instead of ``drift_false_alarm_events``: the chance that an undrifted window alarms."""
    drift_correction: Literal["bonferroni", "benjamini_hochberg"] = "bonferroni"
    """Correction of the tests across features and statistics within a window."""
    drift_alarm_statistics: list[str] = Field(default_factory=lambda: ["jensen_shannon"])
    """Statistics that decide drift (each applies to the feature kinds that have it): psi,
    jensen_shannon, ks, wasserstein (numeric), chi2 (categorical). All are reported."""
    drift_min_window_events: int = Field(default=100, ge=10)
    """A time window with fewer predictions is reported but not tested."""
    drift_lateness_ms: int = Field(default=60_000, ge=0)
    """A time window closes once prediction event time passes its end by this much; later
    predictions of it are counted as late and left out."""
    drift_features: list[str] | None = None
    """Features to monitor (None: every feature of the reference)."""
    categorical_features: list[str] = Field(default_factory=list)
    """Numeric-valued features to treat as categorical in a reference built from predictions."""
    drift_alert: bool = True
    """Add the rule ``data_drift`` (any drifted feature in the first drift window) to every
    model that has no rule of that name."""
    estimation_calibration_events: int = Field(default=1000, ge=50)
    """A version whose reference has no score calibration learns one (isotonic, kept only
    when it helps) from its first N labeled examples."""

    # Alerting
    alert_rules: list[AlertRule] = Field(default_factory=list)
    """Rules evaluated for every model (threshold, detector, data_quality); see the README."""
    retrain_cooldown_ms: int = Field(default=6 * 3600 * 1000, ge=0)
    """At most one retrain request per model within this much event time."""
    retrain_min_labeled: int = Field(default=1000, ge=0)
    """A version must have this many labeled events before it can ask for a retrain."""
    retrain_max_in_flight_ms: int = Field(default=24 * 3600 * 1000, ge=1)
    """A request without a model-version answer stops blocking new ones after this."""
    retrain_window_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=1)
    """Suggested training window of a retrain request (event time before the alert)."""
    quality_refresh_ms: int = Field(default=5000, ge=100)
    """How often the evaluator re-reads the joiner's counters for data-quality rules."""
    alertmanager_url: str | None = None
    """Base URL of a Prometheus Alertmanager for ``streammon alerts forward``."""
    alert_webhook_urls: list[str] = Field(default_factory=list)
    """JSON webhooks for ``streammon alerts forward`` (each receives every transition)."""
    alert_firing_horizon_ms: int = Field(default=24 * 3600 * 1000, ge=60_000)
    """endsAt sent to Alertmanager for a firing alert: forwarding time plus this."""
    alert_http_timeout_s: float = Field(default=10.0, gt=0)
    """HTTP timeout of one delivery to Alertmanager or a webhook."""

    # Trainer and registry
    artifact_dir: str = "~/.local/share/streammon/artifacts"
    """Root of the local artifact store (skops files, content-addressed by sha256)."""
    trainer_candidates: list[str] = Field(
        default_factory=lambda: ["logistic_regression", "random_forest", "hist_gradient_boosting"]
    )
    """Estimator families tried by a retrain (their regressor twins for regression models)."""
    trainer_n_iter: int = Field(default=6, ge=1)
    """Randomized-search draws per candidate family."""
    trainer_time_budget_s: float = Field(default=120.0, gt=0)
    """Wall-clock budget of one retrain's search; candidates not reached are skipped."""
    trainer_cv_folds: int = Field(default=3, ge=2)
    """Time-ordered folds (TimeSeriesSplit) of the search."""
    trainer_holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    """Most recent share of the rows kept out of training to gate candidate vs champion."""
    trainer_min_rows: int = Field(default=500, ge=10)
    """Fewer labeled rows in the window: the request is rejected for lack of data."""
    trainer_max_rows: int = Field(default=50_000, ge=100)
    """The most recent rows kept when the window holds more (bounds memory and time)."""
    trainer_window_ms: int | None = Field(default=None, ge=1)
    """Training window; None takes the retrain request's suggested window."""
    trainer_primary_metric: str | None = None
    """Gate metric: accuracy (classification) / rmse (regression) when None."""
    trainer_promotion_margin: float = Field(default=0.01, ge=0)
    """A candidate must beat the champion by this much on the primary metric."""
    trainer_seed: int = 0
    """Seed of the search and of the estimators (retrains are reproducible)."""

    # Process
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``."""
    log_format: Literal["text", "json"] = "text"
    """``text`` or ``json`` (one object per line, for log shippers)."""
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    """Cap of the exponential back-off while Kafka or Redis is unavailable."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            msg = f"must start with redis://, rediss:// or unix://, got {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                msg = f"expected host:port[,host:port...], got {value!r}"
                raise ValueError(msg)
        return value

    @field_validator("state_hmac_key")
    @classmethod
    def _check_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < 16:
            msg = "must be at least 16 bytes"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        from streaming.detectors import parse_detector_spec
        from streaming.metrics import parse_window

        def check(
            where: str, windows: list[str] | None, dets: dict[str, DetectorConfig] | None
        ) -> None:
            for w in windows or []:
                try:
                    parse_window(w)
                except ConfigError as exc:
                    msg = f"{where}windows: {exc}"
                    raise ValueError(msg) from exc
            for name, det in (dets or {}).items():
                try:
                    parse_detector_spec(det.kind, det.params)
                except ConfigError as exc:
                    msg = f"{where}detectors.{name}: {exc}"
                    raise ValueError(msg) from exc

        check("", self.windows, self.detectors)
        for w in self.drift_windows:
            try:
                parse_window(w)
            except ConfigError as exc:
                msg = f"drift_windows: {exc}"
                raise ValueError(msg) from exc
        self.drift_budget()  # fails naming the field
        validate_rules(
            self.alert_rules,
            windows=set(self.windows),
            detectors=set(self.detectors),
            drift_windows=self.drift_windows,
            where="alert_rules",
        )
        for model, cfg in self.models.items():
            check(f"models.{model}.", cfg.windows, cfg.detectors)
            eff = self.model_settings(model)
            validate_rules(
                rules_for(model, self.alert_rules, cfg.alert_rules or []),
                windows=set(eff.windows or []),
                detectors=set(eff.detectors or {}),
                drift_windows=self.drift_windows,
                where=f"models.{model}.alert_rules",
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls))

    # ---- derived names -------------------------------------------------------------------
    def topic(self, logical: str) -> str:
        """Physical topic name of a logical one (``predictions`` -> ``<prefix>predictions``)."""
        if logical not in TOPIC_NAMES:
            msg = f"unknown topic {logical!r}; known: {', '.join(TOPIC_NAMES)}"
            raise ConfigError(msg)
        return f"{self.topic_prefix}{logical}"

    def consumer_group(self, service: str) -> str:
        """Consumer group id of a service (``joiner``, ``evaluator``, ``trainer``...)."""
        prefix = self.topic_prefix if self.group_id_prefix is None else self.group_id_prefix
        return f"{prefix}streammon-{service}"

    def model_settings(self, model_name: str) -> ModelConfig:
        """The effective monitoring config of one model (its overrides over the defaults)."""
        override = self.models.get(model_name, ModelConfig())
        return ModelConfig(
            task=override.task or self.task,
            positive_label=(
                override.positive_label
                if override.positive_label is not None
                else self.positive_label
            ),
            windows=override.windows if override.windows is not None else self.windows,
            detectors=override.detectors if override.detectors is not None else self.detectors,
            segment_tags=(
                override.segment_tags if override.segment_tags is not None else self.segment_tags
            ),
            alert_rules=override.alert_rules or [],
            drift_features=(
                override.drift_features
                if override.drift_features is not None
                else self.drift_features
            ),
            categorical_features=(
                override.categorical_features
                if override.categorical_features is not None
                else self.categorical_features
            ),
        )

    def rules_for(self, model_name: str) -> list[Rule]:
        """The effective alert rules of a model (its own over the shared ones), with the
        default ``data_drift`` rule when ``drift_alert`` is on and no rule has that name."""
        own = self.models.get(model_name, ModelConfig()).alert_rules or []
        rules = rules_for(model_name, self.alert_rules, own)
        if (
            self.drift_alert
            and self.label_free_monitoring
            and self.drift_windows
            and all(r.name != DEFAULT_DRIFT_RULE for r in rules)
        ):
            rules.append(DataDriftRule(name=DEFAULT_DRIFT_RULE, window=self.drift_windows[0]))
        return rules

    def drift_budget(self) -> DriftBudget:
        """The false-alarm budget of drift tests (ConfigError naming the field if bad)."""
        from streaming.datadrift import DriftBudget

        rate = self.drift_window_false_alarm_rate
        return DriftBudget(
            false_alarm_events=None if rate is not None else self.drift_false_alarm_events,
            window_false_alarm_rate=rate,
            correction=self.drift_correction,
            alarm_statistics=tuple(self.drift_alarm_statistics),
        )

    def label_free_config(self, model_name: str) -> LabelFreeConfig:
        """Label-free monitoring settings of one model."""
        from streaming.labelfree import LabelFreeConfig
        from streaming.metrics import parse_window

        eff = self.model_settings(model_name)
        return LabelFreeConfig(
            windows=[parse_window(w, name=w) for w in self.drift_windows],
            reference_events=self.drift_reference_events,
            budget=self.drift_budget(),
            min_window_events=self.drift_min_window_events,
            lateness_ms=self.drift_lateness_ms,
            features=eff.drift_features,
            categorical=list(eff.categorical_features or []),
            positive_label=eff.positive_label,
            calibration_events=self.estimation_calibration_events,
        )

    def retrain_policy(self) -> RetrainPolicy:
        return RetrainPolicy(
            cooldown_ms=self.retrain_cooldown_ms,
            min_labeled=self.retrain_min_labeled,
            max_in_flight_ms=self.retrain_max_in_flight_ms,
            window_ms=self.retrain_window_ms,
        )

    @property
    def uses_insecure_key(self) -> bool:
        return self.state_hmac_key.get_secret_value() == INSECURE_DEV_KEY

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain data with secrets masked (for ``config show``)."""
        data = self.model_dump(mode="json")
        for name, field in type(self).model_fields.items():
            if field.annotation is not None and "SecretStr" in str(field.annotation):
                data[name] = None if getattr(self, name) is None else "********"
        for key in ("kafka_config", "kafka_consumer_config", "kafka_producer_config"):
            data[key] = {
                k: ("********" if "password" in k or "secret" in k else v)
                for k, v in data[key].items()
            }
        data["redis_url"] = _mask_url(self.redis_url)
        return data


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:********@{host}"


def _read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        msg = f"config file not found: {p}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {p} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; a bad value raises :class:`ConfigError` naming the field.

    ``overrides`` are CLI flags (highest precedence); ``None`` values are ignored. The config
    file (lowest precedence above defaults) is ``config_file`` or ``$STREAMMON_CONFIG_FILE``.
    """
    path = config_file or os.environ.get("STREAMMON_CONFIG_FILE")
    file_values = _read_config_file(path) if path else {}
    cli = {k: v for k, v in overrides.items() if v is not None}
    env_set = {name for name in Settings.model_fields if f"STREAMMON_{name.upper()}" in os.environ}
    # file values only for fields that neither the CLI nor the environment sets
    merged = {k: v for k, v in file_values.items() if k not in env_set and k not in cli}
    merged.update(cli)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        env = f"STREAMMON_{str(err['loc'][0]).upper()}" if err["loc"] else ""
        where = f"{field} ({env})" if env and env != "STREAMMON_" else field
        parts.append(f"{where}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)
