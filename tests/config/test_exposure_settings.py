"""The exposure and webhook settings read from SPOOL_* variables."""

from __future__ import annotations

import pytest

from config.settings import Settings, SettingsError


def test_exposure_and_webhook_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "SPOOL_API_KEYS": "alice-key-1:alice,ops-key-22:ops",
            "SPOOL_ADMIN_KEYS": "ops-key-22",
            "SPOOL_ALLOW_ANONYMOUS": "1",
            "SPOOL_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "SPOOL_WEBHOOK_ALLOW": "10.0.0.0/8,hooks.internal",
            "SPOOL_WEBHOOK_SECRET": "s3cret",
            "SPOOL_WEBHOOK_ATTEMPTS": "3",
            "SPOOL_WEBHOOK_BACKOFF": "1.5",
        }
    )
    assert settings.admin_keys == ("ops-key-22",) and settings.allow_anonymous
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.webhook_allow == ("10.0.0.0/8", "hooks.internal")
    assert (settings.webhook_secret, settings.webhook_attempts, settings.webhook_backoff) == ("s3cret", 3, 1.5)
    assert "s3cret" not in repr(settings) and "ops-key-22" not in repr(settings)
    # Workers started with to_env() see the same.
    assert Settings.from_env(settings.to_env()) == settings


def test_defaults_are_closed() -> None:
    settings = Settings()
    assert not settings.allow_anonymous and settings.webhook_allow == () and settings.allowed_origins == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SPOOL_API_KEYS": "alice-key-1:alice", "SPOOL_ADMIN_KEYS": "nobody-key-1"}, "SPOOL_ADMIN_KEYS"),
        ({"SPOOL_WEBHOOK_ATTEMPTS": "0"}, "SPOOL_WEBHOOK_ATTEMPTS"),
        ({"SPOOL_WEBHOOK_QUEUE": "Bad Queue"}, "SPOOL_WEBHOOK_QUEUE"),
    ],
)
def test_bad_values_say_which_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
