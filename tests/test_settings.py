"""Settings come from the environment mapping and the TOML file it names, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.settings import OPENAI_BASE_URL, ConfigError, load_settings


def write(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"METERING_CONFIG": str(path)}


def test_without_config_the_proxy_forwards_to_openai_with_the_client_key() -> None:
    settings = load_settings({})
    (upstream,) = settings.upstreams
    assert upstream.config.base_url == OPENAI_BASE_URL
    assert upstream.config.models == ("*",)
    assert upstream.api_key is None


def test_without_config_openai_api_key_makes_the_default_upstream_managed() -> None:
    (upstream,) = load_settings({"OPENAI_API_KEY": "sk-env"}).upstreams
    assert upstream.api_key is not None and upstream.api_key.get_secret_value() == "sk-env"


def test_environment_defaults() -> None:
    environment = load_settings({}).environment
    assert (environment.host, environment.port) == ("127.0.0.1", 8080)
    assert environment.database_url == "sqlite+aiosqlite:///./metering.db"


def test_environment_overrides() -> None:
    environment = load_settings({"METERING_PORT": "9000", "METERING_HOST": "0.0.0.0"}).environment
    assert (environment.host, environment.port) == ("0.0.0.0", 9000)


def test_a_missing_upstream_key_variable_is_a_config_error(tmp_path: Path) -> None:
    environ = write(
        tmp_path,
        '[[upstreams]]\nname = "a"\nbase_url = "http://x/v1"\napi_key_env = "MISSING_KEY"\n',
    )
    with pytest.raises(ConfigError, match=r"\$MISSING_KEY"):
        load_settings(environ)


def test_duplicate_upstream_names_are_refused(tmp_path: Path) -> None:
    upstream = '[[upstreams]]\nname = "a"\nbase_url = "http://x/v1"\n'
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write(tmp_path, upstream * 2))


@pytest.mark.parametrize(
    "config",
    [
        '[prices."gpt-4o"]\ninput = -2.5\n',
        '[[upstreams]]\nname = "gpu"\nbase_url = "http://x/v1"\nhourly_cost_usd = -1\n',
    ],
    ids=["token price", "hourly cost"],
)
def test_a_negative_price_is_refused(tmp_path: Path, config: str) -> None:
    with pytest.raises(ConfigError, match="greater than or equal to 0"):
        load_settings(write(tmp_path, config))


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="upstreamz"):
        load_settings(write(tmp_path, "[[upstreamz]]\nname = 'a'\n"))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[[upstreams]\n"))


def test_default_upstream_must_exist(tmp_path: Path) -> None:
    text = 'default_upstream = "b"\n[[upstreams]]\nname = "a"\nbase_url = "http://x/v1"\n'
    with pytest.raises(ConfigError, match="default_upstream"):
        load_settings(write(tmp_path, text))


def test_default_upstream_is_the_first_unless_named(tmp_path: Path) -> None:
    text = '[[upstreams]]\nname = "a"\nbase_url = "http://x/v1/"\n'
    text += '[[upstreams]]\nname = "b"\nbase_url = "http://y/v1"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.default_upstream_name == "a"
    assert settings.upstreams[0].config.base_url == "http://x/v1"
    named = load_settings(write(tmp_path, 'default_upstream = "b"\n' + text))
    assert named.default_upstream_name == "b"


@pytest.mark.parametrize(
    ("budget", "complaint"),
    [
        ('period = "monthly"\nlimit_usd = "10"\ntimezone = "Mars/Olympus"', "time zone"),
        (
            'period = "window"\nlimit_usd = "10"\nwindow_start = 2026-12-01T00:00:00Z',
            "both window_start and window_end",
        ),
        ('period = "daily"\nlimit_usd = "10"\nthresholds = [0]', "thresholds"),
    ],
)
def test_a_config_budget_is_checked_when_the_config_is_read(
    tmp_path: Path, budget: str, complaint: str
) -> None:
    config = f'[[teams]]\nname = "search"\n[teams.budget]\n{budget}\n'

    with pytest.raises(ConfigError, match=complaint):
        load_settings(write(tmp_path, config))


def test_server_deadlines_and_connection_cap_have_their_documented_defaults() -> None:
    server = load_settings({}).proxy.server
    assert (
        server.header_timeout_seconds,
        server.body_timeout_seconds,
        server.whole_body_timeout_seconds,
        server.max_connections,
    ) == (10, 30, 120, 10_000)


@pytest.mark.parametrize(
    "setting",
    [
        "header_timeout_seconds = 0",
        "body_timeout_seconds = -1",
        "whole_body_timeout_seconds = 0",
        "max_connections = 0",
    ],
)
def test_server_deadlines_and_connection_cap_must_be_positive(tmp_path: Path, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting.split()[0]):
        load_settings(write(tmp_path, f"[server]\n{setting}\n"))
