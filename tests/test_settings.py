"""Settings: precedence, validation naming the field, masking, derived names."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.errors import ConfigError
from streaming.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("STREAMMON_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.topic("predictions") == "predictions"
    assert s.consumer_group("joiner") == "streammon-joiner"
    assert s.uses_insecure_key


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "streammon.toml"
    cfg.write_text(
        'topic_prefix = "file."\nredis_key_prefix = "fromfile"\nlabeled_partitions = 9\n'
        '[models.credit]\npositive_label = "approve"\nwindows = ["count:50"]\n'
    )
    monkeypatch.setenv("STREAMMON_TOPIC_PREFIX", "env.")
    monkeypatch.setenv("STREAMMON_REDIS_KEY_PREFIX", "fromenv")
    s = load_settings(cfg, topic_prefix="cli.")
    assert s.topic_prefix == "cli."  # flag beats env and file
    assert s.redis_key_prefix == "fromenv"  # env beats file
    assert s.labeled_partitions == 9  # file beats default
    credit = s.model_settings("credit")
    assert credit.positive_label == "approve"
    assert credit.windows == ["count:50"]
    assert credit.detectors == s.detectors  # unset override falls back to the default
    other = s.model_settings("other")
    assert other.windows == ["count:1000", "time:1h"]


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('topic_prefix = "viaenv."\n')
    monkeypatch.setenv("STREAMMON_CONFIG_FILE", str(cfg))
    assert load_settings().topic_prefix == "viaenv."


def test_json_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMMON_KAFKA_CONFIG", '{"linger.ms": "7", "sasl.password": "x"}')
    monkeypatch.setenv("STREAMMON_WINDOWS", '["count:10", "time:5m"]')
    monkeypatch.setenv("STREAMMON_DETECTORS", '{"ph": {"kind": "page_hinkley", "params": {}}}')
    s = load_settings()
    assert s.kafka_config == {"linger.ms": "7", "sasl.password": "x"}
    assert s.windows == ["count:10", "time:5m"]
    assert s.detectors["ph"].kind == "page_hinkley"
    assert s.masked()["kafka_config"]["sasl.password"] == "********"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("STREAMMON_PREDICTIONS_PARTITIONS", "0", "predictions_partitions"),
        ("STREAMMON_PREDICTIONS_PARTITIONS", "six", "predictions_partitions"),
        ("STREAMMON_REDIS_URL", "http://localhost:6379", "redis_url"),
        ("STREAMMON_KAFKA_BOOTSTRAP_SERVERS", "localhost", "kafka_bootstrap_servers"),
        ("STREAMMON_STATE_HMAC_KEY", "short", "state_hmac_key"),
        ("STREAMMON_LOG_LEVEL", "LOUD", "log_level"),
        ("STREAMMON_WINDOWS", '["count:0"]', "windows"),
        ("STREAMMON_WINDOWS", '["weekly"]', "windows"),
        ("STREAMMON_DETECTORS", '{"x": {"kind": "nope"}}', "detectors.x"),
        ("STREAMMON_DETECTORS", '{"x": {"kind": "adwin", "params": {"dleta": 1}}}', "dleta"),
        ("STREAMMON_NO_SUCH_THING", "1", None),
    ],
)
def test_bad_values_fail_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str | None
) -> None:
    monkeypatch.setenv(env, value)
    if named is None:  # unknown variables are ignored (the environment holds many things)
        load_settings()
        return
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('topic_prefx = "typo."\n')
    with pytest.raises(ConfigError, match="topic_prefx"):
        load_settings(cfg)


def test_bad_model_override_names_the_model(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[models.credit]\nwindows = ["count:-5"]\n')
    with pytest.raises(ConfigError, match=r"models\.credit\.windows"):
        load_settings(cfg)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("does-not-exist.toml")


def test_secrets_are_masked() -> None:
    s = load_settings(
        redis_url="redis://user:hunter2@redis:6379/0",
        kafka_sasl_password="topsecret",
        state_hmac_key="0123456789abcdef0123",
    )
    shown = str(s.masked())
    assert "hunter2" not in shown and "topsecret" not in shown and "0123456789abcdef" not in shown
    assert s.masked()["redis_url"] == "redis://user:********@redis:6379/0"


def test_group_prefix_defaults_to_topic_prefix() -> None:
    assert load_settings(topic_prefix="a.").consumer_group("evaluator") == "a.streammon-evaluator"
    s = load_settings(topic_prefix="a.", group_id_prefix="g-")
    assert s.consumer_group("evaluator") == "g-streammon-evaluator"
    with pytest.raises(ConfigError, match="unknown topic"):
        s.topic("nope")


def test_configuration_doc_is_up_to_date_and_its_example_loads(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout
    text = (root / "docs" / "configuration.md").read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example is not None
    cfg = tmp_path / "example.toml"
    cfg.write_text(example.group(1))
    s = load_settings(cfg)
    assert [r.name for r in s.rules_for("credit")] == [
        "low_accuracy",
        "concept_drift",
        "data_drift",
    ]
    assert s.model_settings("credit").segment_tags == ["region"]


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", 1), ('"1"', "1"), ("approve", "approve"), ("0.5", 0.5)]
)
def test_positive_label_from_env_keeps_its_type(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: object
) -> None:
    monkeypatch.setenv("STREAMMON_POSITIVE_LABEL", raw)
    value = load_settings().positive_label
    assert value == expected and type(value) is type(expected)


def test_default_data_drift_rule_can_be_replaced_or_turned_off() -> None:
    from streaming.alerting import DataDriftRule

    (rule,) = load_settings().rules_for("m")
    assert isinstance(rule, DataDriftRule) and rule.window == "count:1000"
    assert load_settings(drift_alert=False).rules_for("m") == []
    assert load_settings(label_free_monitoring=False).rules_for("m") == []
    own = {"type": "data_drift", "name": "data_drift", "min_features": 3, "window": "time:1h"}
    (mine,) = load_settings(alert_rules=[own]).rules_for("m")
    assert isinstance(mine, DataDriftRule) and mine.min_features == 3


def test_drift_settings_fail_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="drift_windows"):
        load_settings(drift_windows=["count:0"])
    with pytest.raises(ConfigError, match="drift_alarm_statistics"):
        load_settings(drift_alarm_statistics=["median"])
    with pytest.raises(ConfigError, match=r"alert_rules\[dd\]\.window"):
        load_settings(alert_rules=[{"type": "data_drift", "name": "dd", "window": "count:7"}])
    cfg = load_settings(
        drift_window_false_alarm_rate=0.01,
        models={"m": {"drift_features": ["age"], "categorical_features": ["zip"]}},
    ).label_free_config("m")
    assert cfg.budget.window_false_alarm_rate == 0.01 and cfg.budget.false_alarm_events is None
    assert (cfg.features, cfg.categorical) == (["age"], ["zip"])
