"""Serving settings from environment variables (serve/settings.py)."""

import pytest

from serve.settings import load_settings


def test_settings_from_environment():
    settings = load_settings(
        {"POLYPSEG_MAX_BODY_BYTES": "1000", "POLYPSEG_ALLOW_STAGING": "true", "POLYPSEG_ORT_THREADS": "2"}
    )
    assert (settings.max_body_bytes, settings.allow_staging, settings.ort_threads) == (1000, True, 2)
    assert settings.shadow_dir == "" and settings.model_uri == ""


@pytest.mark.parametrize(
    "env",
    [
        {"POLYPSEG_MAX_PIXELS": "many"},
        {"POLYPSEG_ORT_THREADS": "0"},
        {"POLYPSEG_ALLOW_STAGING": "maybe"},
        {"POLYPSEG_READ_TIMEOUT_S": "0"},
        {"POLYPSEG_MAX_QUEUE": "-1"},
        {"POLYPSEG_MAX_RUNNING": "0"},
        {"POLYPSEG_METRICS_ALLOW": "10.0.0.0/8,not-a-network"},
        {"POLYPSEG_CORS_ORIGINS": "viewer.example.org"},
    ],
)
def test_bad_settings_name_the_variable(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        load_settings(env)


def test_hardening_settings_from_environment():
    settings = load_settings(
        {
            "POLYPSEG_READ_TIMEOUT_S": "2.5",
            "POLYPSEG_MAX_QUEUE": "0",
            "POLYPSEG_METRICS_ALLOW": "127.0.0.1, 10.0.0.0/8",
            "POLYPSEG_CORS_ORIGINS": "https://viewer.example.org,http://localhost:3000",
            "POLYPSEG_SHADOW_MAX_TOTAL_BYTES": "1000",
        }
    )
    assert settings.read_timeout_s == 2.5 and settings.max_waiting == 0
    assert settings.metrics_allow == ("127.0.0.1", "10.0.0.0/8")
    assert settings.cors_origins == ("https://viewer.example.org", "http://localhost:3000")
    assert settings.shadow_max_total_bytes == 1000
