"""Alert transitions out of Kafka: the forwarder (Alertmanager, webhooks) and ``tail``.

**Forwarder** (:func:`run_forwarder`). One member of the consumer group
``<prefix>streammon-alert-forwarder`` reads ``alerts`` (AlertEvent, Avro) and hands every
transition to each destination:

* **Alertmanager** (API v2): ``POST <url>/api/v2/alerts`` with one JSON object per transition:
  ``labels`` are the event's labels plus ``alertname`` (the rule), ``model``, ``version`` (the
  event's ``model_version``; when that is null the event's own ``version`` label stays, e.g.
  ``*`` for all versions) and ``severity``; label and annotation names that Alertmanager
  refuses are rewritten (``model.tier`` -> ``model_tier``). ``annotations`` are the event's,
  plus ``value`` and ``threshold`` when the event has them and does not set those itself.
  ``generatorURL`` is the event's ``generator_url`` when it is an absolute URL.
  ``startsAt`` is the event's ``starts_at``. A resolved transition sends ``endsAt`` = its
  ``ends_at`` (``emitted_at`` if it has none; the time of forwarding if that is earlier, so an
  event time ahead of this clock does not keep the alert active until then). A firing
  transition sends ``endsAt`` = the later of ``starts_at`` and the time of forwarding, plus
  ``alert_firing_horizon_ms`` (default 24 h): a firing alert is sent once, when it starts
  firing, and an alert without ``endsAt`` would be resolved by Alertmanager after its
  ``resolve_timeout`` (5 min by default). Counting from the time of forwarding keeps an old
  firing transition that is forwarded late (event time in the past, or after an outage) from
  arriving already resolved. An alert that fires for longer than the horizon without a
  resolved transition is shown resolved by Alertmanager after the horizon: raise the setting
  if alerts fire longer.
* **Webhooks**: ``POST`` of ``{"version": 1, "alert": {...}}`` per transition to each URL, the
  alert holding every AlertEvent field, timestamps as RFC 3339 strings (``starts_at``) and as
  epoch milliseconds (``starts_at_ms``), with the header ``Idempotency-Key: <alert_id>`` so that
  receivers can drop the duplicates at-least-once delivery implies.

Delivery is at least once. A destination that does not answer, answers 408, 429, 3xx or 5xx is
retried with capped exponential back-off (``retry_max_backoff_s``; ``Retry-After`` is honoured
up to that cap), never skipping a transition. Other 4xx answers are permanent: the transition
is written to ``dead-letter`` with the response text in ``streammon.error`` and the stream goes
on. Undecodable messages go to ``dead-letter`` too. The group's offsets are committed
(synchronously) only after every destination accepted the batch and its dead letters are
stored. Transitions whose ``alert_id`` was forwarded recently (the last 10 000 ids) are dropped.

The first SIGTERM or SIGINT finishes the batch in hand, commits and stops; if a destination is
being retried at that moment, the batch is left uncommitted (it is delivered again on the next
start) and the forwarder stops.

**Tail** (:func:`tail_alerts`) prints the transitions stored in ``alerts``, sorted by
``emitted_at``, without joining a consumer group or committing anything.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from rich.console import Console
from rich.text import Text

from consumers.service import GracefulStop
from streaming.errors import ConfigError, SerializationError, ServiceUnavailableError, TopicError
from streaming.kafka_io import (
    OutRecord,
    ProduceAbortedError,
    consumer_config,
    dead_letter_headers,
    offset_of,
    partition_of,
    produce_acknowledged,
    producer_config,
    topic_of,
)
from streaming.serde import serde_for
from streaming.settings import Settings

__all__ = [
    "DEFAULT_FIRING_HORIZON_MS",
    "DEFAULT_HTTP_TIMEOUT_S",
    "RECENT_IDS",
    "AlertForwarder",
    "alertmanager_alert",
    "rfc3339",
    "run_forwarder",
    "tail_alerts",
    "webhook_payload",
]

log = logging.getLogger(__name__)

DEFAULT_FIRING_HORIZON_MS: Final = 24 * 3600 * 1000
"""``endsAt`` of a firing alert, counted from its start (or from forwarding, if later)."""
DEFAULT_HTTP_TIMEOUT_S: Final = 10.0
RECENT_IDS: Final = 10_000
"""How many recently forwarded ``alert_id`` values the forwarder remembers to drop doubles."""
WEBHOOK_PAYLOAD_VERSION: Final = 1

_INITIAL_BACKOFF_S: Final = 0.5
_ALERTMANAGER_CHUNK: Final = 500
_STATUSES: Final = ("firing", "resolved")
_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_NOT_LABEL_CHAR: Final = re.compile(r"[^a-zA-Z0-9_]")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TAIL_STALL_S: Final = 30.0
_FIELDS: Final = (
    "alert_id",
    "fingerprint",
    "status",
    "rule",
    "model_name",
    "model_version",
    "severity",
    "labels",
    "annotations",
    "starts_at",
    "ends_at",
    "value",
    "threshold",
    "generator_url",
    "emitted_at",
)
_TIMESTAMP_FIELDS: Final = ("starts_at", "ends_at", "emitted_at")


def _version() -> str:
    try:
        return version("streammon")
    except PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------------------- formatting


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC timestamp with milliseconds.

    >>> rfc3339(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _finite(value: Any) -> float | None:
    """A double for JSON: NaN and infinities (not representable) become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _label_name(name: str) -> str:
    """A name Alertmanager accepts for a label or annotation (``model.tier`` -> ``model_tier``).

    >>> _label_name("model.tier"), _label_name("9lives"), _label_name("ok_name")
    ('model_tier', '_9lives', 'ok_name')
    """
    if _LABEL_NAME.match(name):
        return name
    fixed = _NOT_LABEL_CHAR.sub("_", name)
    return fixed if fixed[:1].isalpha() or fixed[:1] == "_" else f"_{fixed}"


def _names_fixed(values: Mapping[str, str]) -> dict[str, str]:
    return {_label_name(k): v for k, v in values.items() if k}


def _number(value: float) -> str:
    return f"{value:.6g}"


def _absolute_url(url: str | None) -> bool:
    if not url or any(c.isspace() for c in url):
        return False
    parts = urllib.parse.urlsplit(url)
    return bool(parts.scheme and parts.netloc)


def _problem(event: Mapping[str, Any]) -> str | None:
    """Why an event cannot be forwarded at all, or None."""
    status = event.get("status")
    if status not in _STATUSES:
        return f"status {status!r} is neither 'firing' nor 'resolved'"
    for name in _TIMESTAMP_FIELDS:
        ms = event.get(name)
        if ms is None:
            continue
        try:
            rfc3339(ms)
        except (OverflowError, ValueError):
            return f"{name}={ms} is not a representable time"
    return None


def alertmanager_alert(
    event: Mapping[str, Any], *, now_ms: int, horizon_ms: int = DEFAULT_FIRING_HORIZON_MS
) -> dict[str, Any]:
    """The Alertmanager API v2 postable alert of one AlertEvent (see the module docstring)."""
    labels = _names_fixed(event.get("labels") or {})
    labels["alertname"] = event["rule"]
    labels["model"] = event["model_name"]
    if event.get("model_version") is not None:
        labels["version"] = event["model_version"]
    labels["severity"] = event["severity"]
    annotations = _names_fixed(event.get("annotations") or {})
    for name in ("value", "threshold"):
        number = _finite(event.get(name))
        if number is not None:
            annotations.setdefault(name, _number(number))
    starts_at = int(event["starts_at"])
    if event["status"] == "resolved":
        ends = event.get("ends_at")
        ends_at = int(ends) if ends is not None else int(event["emitted_at"])
        if ends_at > now_ms:
            # event time ahead of this clock: resolve now rather than at a future time
            ends_at = now_ms
            starts_at = min(starts_at, ends_at)
    else:
        ends_at = max(starts_at, now_ms) + horizon_ms
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
    }
    generator_url = event.get("generator_url")
    if _absolute_url(generator_url):
        alert["generatorURL"] = generator_url
    return alert


def _alert_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """The AlertEvent as plain JSON data, in schema order, timestamps in milliseconds."""
    data = {name: event.get(name) for name in _FIELDS}
    data["labels"] = dict(data["labels"] or {})
    data["annotations"] = dict(data["annotations"] or {})
    data["value"] = _finite(data["value"])
    data["threshold"] = _finite(data["threshold"])
    return data


def webhook_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body of one AlertEvent: every field, timestamps in RFC 3339 and in ms."""
    alert: dict[str, Any] = {}
    for name, value in _alert_json(event).items():
        if name in _TIMESTAMP_FIELDS:
            alert[name] = None if value is None else rfc3339(value)
            alert[f"{name}_ms"] = value
        else:
            alert[name] = value
    return {"version": WEBHOOK_PAYLOAD_VERSION, "alert": alert}


# ---------------------------------------------------------------------------------- HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects instead of following them (urllib turns a redirected POST into GET)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class _Answer:
    """What one POST got: an HTTP status (None when nothing answered) and a short text."""

    status: int | None
    detail: str
    retry_after_s: float | None = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def permanent(self) -> bool:
        """A 4xx other than 408 and 429: sending the same request again cannot help."""
        return (
            self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)
        )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class _Destination:
    kind: Literal["alertmanager", "webhook"]
    url: str
    """Where to POST, without credentials."""
    title: str
    """How logs and dead letters name it (no credentials, no secret path)."""
    authorization: str | None = None

    @classmethod
    def parse(cls, kind: Literal["alertmanager", "webhook"], url: str) -> _Destination:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            what = "alertmanager_url" if kind == "alertmanager" else "alert_webhook_urls"
            msg = f"{what}: expected an http:// or https:// URL, got {_redacted(url)!r}"
            raise ConfigError(msg)
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        try:
            port = parts.port
        except ValueError as exc:
            msg = f"{kind} URL {_redacted(url)!r}: {exc}"
            raise ConfigError(msg) from exc
        netloc = host if port is None else f"{host}:{port}"
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            authorization = f"Basic {token}"
        if kind == "alertmanager":
            path = parts.path.rstrip("/") + "/api/v2/alerts"
            target = urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, ""))
            shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
            title = f"Alertmanager at {shown}"
        else:
            target = urllib.parse.urlunsplit(
                (parts.scheme, netloc, parts.path or "/", parts.query, "")
            )
            title = f"webhook {_redacted(url)}"
        return cls(kind, target, title, authorization)


def _redacted(url: str) -> str:
    """A URL safe to log: no credentials, no query, only the first path segment.

    Webhook URLs often carry their secret in the path (chat services do).

    >>> _redacted("https://user:pw@hooks.example.com/services/T0/B0/secret?x=1")
    'https://hooks.example.com/services/...'
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    segments = [s for s in parts.path.split("/") if s]
    path = ""
    if segments:
        path = "/" + segments[0] + ("/..." if len(segments) > 1 else "")
    return f"{parts.scheme}://{netloc}{path}"


def _post(
    destination: _Destination, body: bytes, headers: Mapping[str, str], timeout_s: float
) -> _Answer:
    request = urllib.request.Request(destination.url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", f"streammon/{_version()}")
    if destination.authorization:
        request.add_header("Authorization", destination.authorization)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = int(response.status)
            response.read()
            return _Answer(status, f"HTTP {status}")
    except urllib.error.HTTPError as exc:
        try:
            text = exc.read(4000).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            text = ""
        detail = f"HTTP {exc.code}" + (f": {text}" if text else "")
        if 300 <= exc.code < 400:
            detail += f" (redirect to {exc.headers.get('Location', '?')}; configure that URL)"
        return _Answer(exc.code, detail, _retry_after(exc.headers.get("Retry-After")))
    except urllib.error.URLError as exc:
        return _Answer(None, str(exc.reason))
    except (OSError, http.client.HTTPException) as exc:
        return _Answer(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


# ----------------------------------------------------------------------------- forwarder


class _AbortedError(Exception):
    """Stop was requested while a destination was being retried: leave the batch."""


@dataclass
class _Item:
    message: Message
    event: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def alert_id(self) -> str:
        assert self.event is not None
        return str(self.event["alert_id"])


class _RecentIds:
    """The last ``size`` ids seen, oldest dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        self._ids.move_to_end(alert_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


class AlertForwarder:
    """Forwards ``alerts`` to Alertmanager and webhooks (see the module docstring)."""

    name = "alert-forwarder"

    def __init__(
        self,
        settings: Settings,
        *,
        alertmanager_url: str | None,
        webhook_urls: Sequence[str],
        stop: GracefulStop,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        destinations = []
        if alertmanager_url:
            destinations.append(_Destination.parse("alertmanager", alertmanager_url))
        destinations.extend(_Destination.parse("webhook", u) for u in webhook_urls if u)
        if not destinations:
            msg = (
                "nothing to forward alerts to: set STREAMMON_ALERTMANAGER_URL or "
                "STREAMMON_ALERT_WEBHOOK_URLS"
            )
            raise ConfigError(msg)
        self.settings = settings
        self.destinations: list[_Destination] = destinations
        self.stop = stop
        self.topic = settings.topic("alerts")
        self.dead_letter_topic = settings.topic("dead-letter")
        self.group_id = settings.consumer_group(self.name)
        horizon = getattr(settings, "alert_firing_horizon_ms", None)
        self.horizon_ms = int(horizon) if horizon else DEFAULT_FIRING_HORIZON_MS
        timeout = getattr(settings, "alert_http_timeout_s", None)
        self.timeout_s = float(timeout) if timeout else DEFAULT_HTTP_TIMEOUT_S
        self.max_backoff_s = float(settings.retry_max_backoff_s)
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.serde = serde_for("AlertEvent")
        client_id = {"client.id": f"streammon-{self.name}"}
        self.consumer = consumer or Consumer(consumer_config(settings, self.group_id, **client_id))
        self.producer = producer or Producer(producer_config(settings, **client_id))
        self.recent = _RecentIds(RECENT_IDS)
        self.batches = 0
        self.forwarded = 0
        self.duplicates = 0
        self.dead_letters = 0

    # ---- the loop -------------------------------------------------------------------------
    def run(self, *, max_idle_s: float | None = None) -> int:
        """Forward until stopped (or idle for ``max_idle_s``); return the exit code."""
        self._check_topic()
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "%s: started (group %s, topic %s) forwarding to %s",
            self.name,
            self.group_id,
            self.topic,
            ", ".join(d.title for d in self.destinations),
        )
        last_activity = time.monotonic()
        try:
            while not self.stop.stopping:
                msgs = self.consumer.consume(
                    num_messages=self.settings.max_batch_size,
                    timeout=self.settings.poll_timeout_ms / 1000,
                )
                batch = []
                for m in msgs:
                    err = m.error()
                    if err is None:
                        batch.append(m)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.error("%s: consumer error: %s", self.name, err)
                if batch:
                    try:
                        self.handle(batch)
                    except _AbortedError:
                        log.warning(
                            "%s: stopping while a destination is retried: %d messages left "
                            "uncommitted (delivered again on the next start)",
                            self.name,
                            len(batch),
                        )
                        break
                    last_activity = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - last_activity > max_idle_s:
                    break
        finally:
            self.close()
        return 0

    def _on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        log.info("%s: assigned partitions %s", self.name, sorted(tp.partition for tp in tps))

    def _on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        # Batches are handled (and committed) between polls: nothing is in flight here.
        log.info("%s: revoked partitions %s", self.name, sorted(tp.partition for tp in tps))

    def _check_topic(self) -> None:
        try:
            md = self.consumer.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            msg = f"Kafka at {self.settings.kafka_bootstrap_servers} did not answer: {exc}"
            raise ServiceUnavailableError(msg) from exc
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None:
            msg = f"topic {self.topic} missing; run `streammon topics create` first"
            raise TopicError(msg)

    def close(self) -> None:
        log.info("%s: stopping", self.name)
        try:
            self.consumer.close()
        finally:
            self.producer.flush(30)
        log.info(
            "%s: stopped after %d batches (%d forwarded, %d duplicates dropped, %d dead letters)",
            self.name,
            self.batches,
            self.forwarded,
            self.duplicates,
            self.dead_letters,
        )

    # ---- one batch ------------------------------------------------------------------------
    def handle(self, messages: list[Message]) -> None:
        """Deliver one batch everywhere, dead-letter what cannot be, then commit its offsets.

        Raises :class:`_AbortedError` (nothing committed) when stopping during a retry.
        """
        items = [_Item(m) for m in messages]
        fresh: list[_Item] = []
        in_batch: set[str] = set()
        for item in items:
            self._decode(item)
            if item.event is None:
                continue
            alert_id = item.alert_id
            if alert_id in self.recent or alert_id in in_batch:
                self.duplicates += 1
                log.debug("%s: duplicate alert_id %s dropped", self.name, alert_id)
                continue
            in_batch.add(alert_id)
            fresh.append(item)
        for destination in self.destinations:
            if destination.kind == "alertmanager":
                self._to_alertmanager(destination, fresh)
            else:
                self._to_webhook(destination, fresh)
        failed = [i for i in items if i.errors]
        self._dead_letter(failed)
        self._commit(messages)
        for item in fresh:
            self.recent.add(item.alert_id)
        self.batches += 1
        delivered = [i for i in fresh if not i.errors]
        self.forwarded += len(delivered)
        self.dead_letters += len(failed)
        if delivered or failed:
            log.info(
                "%s: forwarded %d transitions (%d firing, %d resolved)%s",
                self.name,
                len(delivered),
                sum(1 for i in delivered if i.event and i.event["status"] == "firing"),
                sum(1 for i in delivered if i.event and i.event["status"] == "resolved"),
                f"; {len(failed)} to {self.dead_letter_topic}" if failed else "",
            )

    def _decode(self, item: _Item) -> None:
        value = item.message.value()
        if not value:
            item.errors.append("empty message")
            return
        try:
            event = self.serde.decode(value)
        except SerializationError as exc:
            item.errors.append(str(exc))
            return
        problem = _problem(event)
        if problem is not None:
            item.errors.append(f"AlertEvent {event.get('alert_id')!r}: {problem}")
            return
        item.event = event

    def _to_alertmanager(self, destination: _Destination, items: list[_Item]) -> None:
        now_ms = self.clock_ms()
        for start in range(0, len(items), _ALERTMANAGER_CHUNK):
            chunk = items[start : start + _ALERTMANAGER_CHUNK]
            bodies = [self._am_alert(i.event, now_ms) for i in chunk]
            answer = self._deliver(destination, _json_bytes(bodies), {})
            if answer.accepted:
                continue
            if len(chunk) == 1:
                chunk[0].errors.append(f"{destination.title} rejected the alert: {answer.detail}")
                continue
            # One invalid alert makes Alertmanager refuse the request (it stores the valid ones
            # anyway): find which, one by one. Posting an alert again changes nothing.
            for item, body in zip(chunk, bodies, strict=True):
                single = self._deliver(destination, _json_bytes([body]), {})
                if not single.accepted:
                    item.errors.append(f"{destination.title} rejected the alert: {single.detail}")

    def _am_alert(self, event: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
        assert event is not None
        return alertmanager_alert(event, now_ms=now_ms, horizon_ms=self.horizon_ms)

    def _to_webhook(self, destination: _Destination, items: list[_Item]) -> None:
        for item in items:
            assert item.event is not None
            body = _json_bytes(webhook_payload(item.event))
            answer = self._deliver(destination, body, {"Idempotency-Key": item.alert_id})
            if not answer.accepted:
                item.errors.append(f"{destination.title} rejected the alert: {answer.detail}")

    def _deliver(
        self, destination: _Destination, body: bytes, headers: Mapping[str, str]
    ) -> _Answer:
        """POST until accepted or permanently refused; raise :class:`_AbortedError` on stop."""
        delay = _INITIAL_BACKOFF_S
        attempt = 0
        while True:
            answer = _post(destination, body, headers, self.timeout_s)
            if answer.accepted or answer.permanent:
                if answer.permanent:
                    log.error("%s refused a request: %s", destination.title, answer.detail)
                return answer
            attempt += 1
            wait = min(max(delay, answer.retry_after_s or 0.0), self.max_backoff_s)
            log.warning(
                "%s unavailable (%s); retrying in %.1fs (attempt %d)",
                destination.title,
                answer.detail,
                wait,
                attempt,
            )
            if self.stop.stopping or self.stop.event.wait(wait):
                raise _AbortedError
            delay = min(delay * 2, self.max_backoff_s)

    # ---- dead letters and offsets ---------------------------------------------------------
    def _dead_letter(self, items: list[_Item]) -> None:
        if not items:
            return
        records = []
        for item in items:
            m = item.message
            error = "; ".join(item.errors)
            log.warning(
                "%s: %s[%d]@%d to %s: %s",
                self.name,
                topic_of(m),
                partition_of(m),
                offset_of(m),
                self.dead_letter_topic,
                error,
            )
            headers = dead_letter_headers(topic_of(m), partition_of(m), offset_of(m), error)
            records.append(OutRecord(self.dead_letter_topic, m.value(), m.key(), headers))
        try:
            produce_acknowledged(
                self.producer,
                records,
                what=f"{self.name}: {len(records)} dead letters",
                max_backoff_s=self.max_backoff_s,
                wait=lambda delay: self.stop.stopping or self.stop.event.wait(delay),
            )
        except ProduceAbortedError as exc:
            raise _AbortedError from exc

    def _commit(self, messages: Iterable[Message]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (topic_of(m), partition_of(m))
            next_offsets[key] = max(next_offsets.get(key, 0), offset_of(m) + 1)
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(next_offsets.items())]
        for attempt in range(1, 6):
            try:
                self.consumer.commit(offsets=tps, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and error.retriable()
                if not retriable or attempt == 5:
                    log.warning(
                        "%s: offset commit failed (%s): the batch may be forwarded again",
                        self.name,
                        exc,
                    )
                    return
                time.sleep(_INITIAL_BACKOFF_S * attempt)


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def run_forwarder(
    settings: Settings,
    *,
    alertmanager_url: str | None,
    webhook_urls: list[str],
    stop: GracefulStop,
    max_idle_s: float | None = None,
) -> int:
    """Forward ``alerts`` until ``stop`` is set (or idle for ``max_idle_s``); the exit code.

    Raises :class:`ConfigError` without any destination or with a URL that is not http(s),
    :class:`TopicError` when the ``alerts`` topic is missing.
    """
    forwarder = AlertForwarder(
        settings, alertmanager_url=alertmanager_url, webhook_urls=webhook_urls, stop=stop
    )
    return forwarder.run(max_idle_s=max_idle_s)


# ---------------------------------------------------------------------------------- tail


def _line_time(ms: int) -> str:
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _value_vs_threshold(event: Mapping[str, Any]) -> str:
    value, threshold = _finite(event.get("value")), _finite(event.get("threshold"))
    shown = "-" if value is None else _number(value)
    if threshold is not None:
        shown += f" vs {_number(threshold)}"
    return shown


def _summary(event: Mapping[str, Any]) -> str:
    annotations = event.get("annotations") or {}
    text = str(annotations.get("summary") or annotations.get("description") or "")
    return " ".join(text.split())


def _render(console: Console, events: list[dict[str, Any]]) -> None:
    """One aligned line per transition; the status coloured when the console is a terminal."""
    rows = []
    for e in events:
        version = e.get("model_version")
        model = e["model_name"] + (f"/{version}" if version is not None else "")
        rows.append(
            (
                _line_time(e["emitted_at"]),
                str(e["status"]).upper(),
                str(e["rule"]),
                model,
                _value_vs_threshold(e),
                _summary(e),
            )
        )
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        style = "bold red" if row[1] == "FIRING" else "bold green"
        line = Text()
        line.append(row[0].ljust(widths[0]))
        line.append("  ")
        line.append(row[1].ljust(8), style=style)
        for i in (2, 3, 4):
            line.append("  ")
            line.append(row[i].ljust(widths[i]))
        if row[5]:
            line.append("  ")
            line.append(row[5])
        line.rstrip()
        console.print(line, soft_wrap=True, highlight=False)


def _emit(console: Console, events: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        out = console.file
        for e in events:
            out.write(json.dumps(_alert_json(e), allow_nan=False) + "\n")
        out.flush()
    else:
        _render(console, events)


def tail_alerts(
    settings: Settings,
    *,
    follow: bool,
    as_json: bool,
    console: Console,
    stop: GracefulStop | None = None,
) -> int:
    """Print the transitions in ``alerts`` from the beginning, sorted by ``emitted_at``.

    Without ``follow``, reads up to the end offsets found at start and returns 0. With
    ``follow``, goes on printing new transitions until ``stop`` is set (by default a
    :class:`GracefulStop` installed on SIGINT and SIGTERM when called from the main thread).
    Transitions whose ``alert_id`` was printed already are skipped. With ``as_json``, one JSON
    object per line: the AlertEvent fields in schema order, timestamps in epoch milliseconds.
    Joins no consumer group and commits nothing.
    """
    if follow and stop is None:
        stop = GracefulStop()
        if threading.current_thread() is threading.main_thread():
            stop.install()
    topic = settings.topic("alerts")
    conf = consumer_config(
        settings,
        f"streammon-tail-{uuid.uuid4().hex}",
        **{
            "client.id": "streammon-tail",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        },
    )
    consumer = Consumer(conf)
    serde = serde_for("AlertEvent")
    seen = _RecentIds(100_000)

    def fresh(messages: list[Message]) -> list[dict[str, Any]]:
        keyed: list[tuple[int, int, int, dict[str, Any]]] = []
        for m in messages:
            try:
                event = serde.decode(m.value() or b"")
            except SerializationError as exc:
                log.warning("%s[%d]@%d skipped: %s", topic, partition_of(m), offset_of(m), exc)
                continue
            problem = _problem(event)
            if problem is not None:
                log.warning("%s[%d]@%d skipped: %s", topic, partition_of(m), offset_of(m), problem)
                continue
            if event["alert_id"] in seen:
                continue
            seen.add(event["alert_id"])
            keyed.append((event["emitted_at"], partition_of(m), offset_of(m), event))
        keyed.sort(key=lambda k: k[:3])
        return [k[3] for k in keyed]

    try:
        try:
            md = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            msg = f"Kafka at {settings.kafka_bootstrap_servers} did not answer: {exc}"
            raise ServiceUnavailableError(msg) from exc
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            msg = f"topic {topic} missing; run `streammon topics create` first"
            raise TopicError(msg)
        partitions = sorted(meta.partitions)
        pending: dict[int, int] = {}
        for p in partitions:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10, cached=False
                )
            except KafkaException as exc:
                msg = f"cannot read the end offsets of {topic}: {exc}"
                raise ServiceUnavailableError(msg) from exc
            if high > low:
                pending[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        backlog: list[Message] = []
        last_progress = time.monotonic()
        while pending:
            if stop is not None and stop.stopping:
                break
            msgs = consumer.consume(num_messages=1000, timeout=0.5)
            if msgs:
                last_progress = time.monotonic()
            for m in msgs:
                err = m.error()
                p = m.partition()
                if p is None:
                    continue
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.pop(p, None)
                    else:
                        log.warning("consumer error on %s: %s", topic, err)
                    continue
                offset = offset_of(m)
                end = pending.get(p)
                if follow or (end is not None and offset < end):
                    backlog.append(m)
                if end is not None and offset + 1 >= end:
                    pending.pop(p, None)
            if pending and time.monotonic() - last_progress > _TAIL_STALL_S:
                msg = (
                    f"no progress reading {topic} for {_TAIL_STALL_S:.0f}s "
                    f"(partitions {sorted(pending)} not read to their end)"
                )
                raise ServiceUnavailableError(msg)
        _emit(console, fresh(backlog), as_json)
        while follow and stop is not None and not stop.stopping:
            msgs = consumer.consume(num_messages=1000, timeout=0.5)
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", topic, err)
            if good:
                _emit(console, fresh(good), as_json)
    finally:
        consumer.close()
    return 0
