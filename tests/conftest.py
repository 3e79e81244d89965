"""Shared fixtures: the real local stack, unique topic prefixes, settings for one test.

Integration tests talk to a real Kafka broker and a real redis-server. ``scripts/test``
starts them (``scripts/services up``) and exports their addresses; when the variables are
not set, the ``stack`` fixture starts the same local stack itself. A stack that cannot be
reached is an error, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streaming.settings import Settings, load_settings


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    """Addresses of a Kafka broker and a Redis server that answer."""
    bootstrap = os.environ.get("STREAMMON_KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("STREAMMON_REDIS_URL")
    if not (bootstrap and redis_url):
        from consumers.devstack import ensure_stack

        endpoints = ensure_stack()
        bootstrap, redis_url = endpoints.kafka_bootstrap, endpoints.redis_url
    from streaming.kafka_io import wait_for_kafka

    wait_for_kafka(load_settings(kafka_bootstrap_servers=bootstrap), timeout_s=90)
    import redis

    redis.Redis.from_url(redis_url).ping()
    return {"kafka": bootstrap, "redis": redis_url}


@pytest.fixture
def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def make_settings(
    stack: dict[str, str], unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    """Settings bound to the real stack under a topic prefix unique to the test."""
    monkeypatch.delenv("STREAMMON_CONFIG_FILE", raising=False)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": stack["kafka"],
            "redis_url": stack["redis"],
            "topic_prefix": unique_prefix,
            "predictions_partitions": 3,
            "labeled_partitions": 3,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def service_env(stack: dict[str, str], unique_prefix: str) -> Iterator[dict[str, str]]:
    """Environment for a ``streammon`` subprocess bound to the stack and the test's prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMMON_")}
    env.update(
        {
            "STREAMMON_KAFKA_BOOTSTRAP_SERVERS": stack["kafka"],
            "STREAMMON_REDIS_URL": stack["redis"],
            "STREAMMON_TOPIC_PREFIX": unique_prefix,
            "STREAMMON_PREDICTIONS_PARTITIONS": "3",
            "STREAMMON_LABELED_PARTITIONS": "3",
            "STREAMMON_STATE_HMAC_KEY": "test-key-0123456789abcdef",
        }
    )
    yield env


@pytest.fixture
def ends(stack: dict[str, str]) -> Iterator[Any]:
    """End offsets of topic partitions (a consumer outside every group)."""
    from procs import EndOffsets

    reader = EndOffsets(stack["kafka"])
    yield reader
    reader.close()


@pytest.fixture
def registry_settings(
    make_settings: Callable[..., Settings],
    tmp_path: Any,
    stack: dict[str, str],
    unique_prefix: str,
) -> Iterator[Settings]:
    """Settings with topics created and a private artifact directory; the test's topics and
    Redis keys are deleted afterwards."""
    from procs import cleanup_prefix

    from consumers.cli import namespace_of
    from streaming.kafka_io import create_topics

    settings = make_settings(artifact_dir=str(tmp_path / "artifacts"))
    create_topics(settings)
    yield settings
    cleanup_prefix(stack["kafka"], stack["redis"], unique_prefix, namespace_of(settings))
