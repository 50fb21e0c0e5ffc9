"""Settings: read from SPOOL_* variables when asked, validated, and round-tripped to the environment."""

from __future__ import annotations

import pytest

from config import defaults
from config.celery import celery_config
from config.settings import Settings, SettingsError, owner_for_key, parse_api_keys


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == defaults.REDIS_URL
    assert settings.max_text_chars == defaults.MAX_TEXT_CHARS
    assert settings.api_keys == {}
    assert not settings.auth_enabled


def test_reads_typed_variables() -> None:
    settings = Settings.from_env(
        {
            "SPOOL_REDIS_URL": "redis://r:6379/2",
            "SPOOL_MAX_TEXT_CHARS": "500",
            "SPOOL_SPEECH_TIMEOUT": "2.5",
            "SPOOL_AUDIO_REDIRECT": "yes",
            "SPOOL_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider",
            "SPOOL_WORKER_QUEUES": "cpu,gpu",
            "SPOOL_S3_ENDPOINT_URL": "",
            "AWS_ACCESS_KEY_ID": "ak",
        }
    )
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.max_text_chars == 500
    assert settings.speech_timeout == 2.5
    assert settings.audio_redirect is True
    assert settings.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert settings.worker_queues == ("cpu", "gpu")
    assert settings.s3_endpoint_url is None
    assert settings.s3_access_key == "ak"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"SPOOL_MAX_TEXT_CHARS": "lots"}, "SPOOL_MAX_TEXT_CHARS"),
        ({"SPOOL_AUDIO_REDIRECT": "maybe"}, "boolean"),
        ({"SPOOL_QUEUE": "CPU!"}, "Queue name"),
        ({"SPOOL_TASK_TIME_LIMIT": "10", "SPOOL_TASK_SOFT_TIME_LIMIT": "20"}, "SOFT_TIME_LIMIT"),
        ({"SPOOL_VISIBILITY_TIMEOUT": "60"}, "VISIBILITY_TIMEOUT"),
        ({"SPOOL_LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"SPOOL_FIRST_SEGMENT_PHONEMES": "10"}, "FIRST_SEGMENT_PHONEMES"),
        ({"SPOOL_FIRST_SEGMENT_PHONEMES": "500"}, "from 24 to 180"),
        ({"SPOOL_API_KEYS": "short"}, "8 characters"),
        ({"SPOOL_API_KEYS": "longenough:bad name"}, "owner name"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env(env)


def test_api_keys_named_and_unnamed() -> None:
    keys = parse_api_keys("secret-aaaa:alice, secret-bbbb")
    assert keys["secret-aaaa"] == "alice"
    assert keys["secret-bbbb"] == owner_for_key("secret-bbbb")
    assert "secret-bbbb" not in keys["secret-bbbb"]


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings(api_keys={"secret-aaaa": "alice"}, s3_secret_key="hunter2hunter2", api_key="k" * 10)
    text = repr(settings)
    assert "secret-aaaa" not in text and "hunter2" not in text


def test_round_trip_through_environment() -> None:
    original = Settings(
        redis_url="redis://x/3",
        api_keys={"secret-aaaa": "alice"},
        providers=("A", "B"),
        audio_redirect=True,
        s3_endpoint_url="http://s3:9000",
        engine_threads=2,
    )
    assert Settings.from_env(original.to_env()) == original


def test_from_mapping_rejects_unknown_names() -> None:
    with pytest.raises(SettingsError, match="Unknown setting"):
        Settings.from_mapping({"redis": "x"})
    assert Settings.from_mapping({"api_keys": "secret-aaaa:bob"}).api_keys == {"secret-aaaa": "bob"}


def test_celery_config_follows_settings() -> None:
    conf = celery_config(Settings(redis_url="redis://h/4", queue="gpu", broker_key_prefix="p:"))
    assert conf["broker_url"] == "redis://h/4"
    assert conf["task_default_queue"] == "gpu"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    options = conf["broker_transport_options"]
    assert options["visibility_timeout"] > conf["task_time_limit"] > conf["task_soft_time_limit"]
    assert options["queue_order_strategy"] == "priority"
    assert options["global_keyprefix"] == "p:"


def test_first_segment_range_matches_the_engine() -> None:
    from config.settings import MAX_BUDGET, MIN_BUDGET
    from engine.segment import DEFAULT_MAX_PHONEMES, MIN_BUDGET_PHONEMES

    assert (MIN_BUDGET, MAX_BUDGET) == (MIN_BUDGET_PHONEMES, DEFAULT_MAX_PHONEMES)
    assert Settings.from_env({"SPOOL_FIRST_SEGMENT_PHONEMES": "28"}).first_segment_phonemes == 28


def test_quota_settings_parse_and_refuse_what_cannot_work() -> None:
    from config.settings import parse_key_quotas

    env = {
        "SPOOL_KEY_QUOTAS": '{"alice": {"max_concurrent_jobs": 2, "allowed_lanes": ["normal"]}}',
        "SPOOL_ALLOWED_LANES": "normal",
        "SPOOL_STREAM_MAX_BYTES": "65536",
        "SPOOL_RETENTION_DAYS": "0.5",
    }
    settings = Settings.from_env(env)
    assert settings.allowed_lanes == ("normal",) and settings.stream_max_bytes == 65536
    assert settings.retention_days == 0.5
    assert parse_key_quotas(settings.key_quotas) == {"alice": {"max_concurrent_jobs": 2, "allowed_lanes": ("normal",)}}
    assert Settings.from_env(settings.to_env()) == settings
    for raw, fragment in (
        ("{not json", "not valid JSON"),
        ('{"alice": {"max_jobs": 1}}', "unknown field"),
        ('{"alice": {"max_concurrent_jobs": -1}}', "whole number"),
        ('{"alice": {"allowed_lanes": ["bulk"]}}', "allowed_lanes"),
        ('{"bad name!": {}}', "owner name"),
    ):
        with pytest.raises(SettingsError, match=fragment):
            Settings.from_env({"SPOOL_KEY_QUOTAS": raw})
    with pytest.raises(SettingsError, match="SPOOL_ALLOWED_LANES"):
        Settings.from_env({"SPOOL_ALLOWED_LANES": "urgent"})
