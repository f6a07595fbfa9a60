"""Settings: environment variables plus the optional TOML config file, read and validated once.

Nothing else in the package reads ``os.environ``: the upstream keys that the config names by
environment variable are resolved here, so the rest of the code receives plain values.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from proxy.access.errors import InvalidAdminRequest
from proxy.budgets.model import DEFAULT_THRESHOLDS, BudgetSettings, check_settings, window_of
from proxy.budgets.periods import PeriodKind

UpstreamKind = Literal["openai", "azure", "openai-compatible"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
MULTIPROCESS_ENVIRONMENT_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamConfig(_Strict):
    """One `[[upstreams]]` entry of the config file."""

    name: str = Field(min_length=1)
    base_url: str
    kind: UpstreamKind = "openai"
    api_key_env: str | None = None
    models: tuple[str, ...] = ("*",)
    hourly_cost_usd: Decimal | None = Field(default=None, ge=0)
    # Azure OpenAI only: the `api-version` query parameter and model -> deployment names.
    api_version: str = "2024-10-21"
    deployments: dict[str, str] = Field(default_factory=dict)
    # Another upstream's name: a call this one turns away before answering (no connection, a
    # 429 or a 5xx) goes there instead.
    fallback: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class PriceOverride(_Strict):
    """A `[prices."MODEL"]` entry: token prices in USD per million tokens, the rest per unit;
    never negative, so that no call costs less than nothing."""

    input: Decimal | None = Field(default=None, ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    output: Decimal | None = Field(default=None, ge=0)
    # Defaults to `output`: reasoning tokens are output tokens.
    reasoning: Decimal | None = Field(default=None, ge=0)
    audio_input: Decimal | None = Field(default=None, ge=0)
    audio_output: Decimal | None = Field(default=None, ge=0)
    per_image: Decimal | None = Field(default=None, ge=0)
    per_second: Decimal | None = Field(default=None, ge=0)  # transcription and translation audio
    per_million_characters: Decimal | None = Field(default=None, ge=0)  # text-to-speech input


class TimeoutConfig(_Strict):
    """Seconds; `read` is the longest silence allowed between two bytes of the upstream's answer."""

    connect: float = Field(default=10.0, gt=0)
    read: float = Field(default=600.0, gt=0)
    total: float | None = Field(default=None, gt=0)


class ServerConfig(_Strict):
    """How long a client may take to send its request, and how many connections a process holds.

    Seconds. `header_timeout_seconds` runs from the connection's opening (or the end of the
    previous answer on it) to the end of the request's headers; `body_timeout_seconds` is the
    longest silence between two chunks of a request body; `whole_body_timeout_seconds` bounds a
    body the proxy reads whole (a JSON call) from its first chunk, while a streamed upload (a
    large file) has no such bound, only the silence one. `max_connections` is per worker process,
    and lowered at start to what the process's file descriptor limit can hold. `max_header_bytes`
    bounds a request's line and headers together.
    """

    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    whole_body_timeout_seconds: float = Field(default=120.0, gt=0)
    max_connections: int = Field(default=10_000, gt=0)
    # A request's request line and headers together; the HTTP parser itself has no bound.
    max_header_bytes: int = Field(default=65_536, gt=0)


class LedgerConfig(_Strict):
    """How records travel from the local journal to the database."""

    journal_dir: Path = Path("metering-journal")
    batch_size: int = Field(default=500, gt=0)
    flush_seconds: float = Field(default=0.2, gt=0)
    fsync_seconds: float = Field(default=0.2, gt=0)
    # At shutdown: how long to keep copying the journal to the database before leaving the
    # rest in the journal for the next start.
    drain_seconds: float = Field(default=10.0, ge=0)
    # Postgres: a statement unanswered for this long fails and is retried, so that a lock held
    # for ever or a server gone silent cannot stall the writer and the background tasks unseen.
    statement_timeout_seconds: float = Field(default=30.0, gt=0)
    # Raw rows older than this many days are deleted (the hourly rollup stays); None keeps all.
    retention_days: int | None = Field(default=None, gt=0)


class AccessConfig(_Strict):
    """Who may call: `require_proxy_key` refuses calls without a proxy key (401)."""

    require_proxy_key: bool = False
    # How often each process checks the database for changed keys, teams and budgets.
    poll_seconds: float = Field(default=1.0, gt=0)


class BudgetConfig(_Strict):
    """How hard budgets reserve: see proxy/budgets/guard.py for the leases."""

    # Output tokens reserved for a call that sets no max_tokens (or equivalent).
    output_allowance_tokens: int = Field(default=1024, ge=0)
    lease_ttl_seconds: float = Field(default=15.0, gt=0)
    lease_slice_share: Decimal = Field(default=Decimal("0.02"), gt=0, le=1)
    lease_idle_seconds: float = Field(default=2.0, gt=0)


class AlertConfig(_Strict):
    """When budgets are checked for alerts, and how the burn rate is measured."""

    check_seconds: float = Field(default=10.0, gt=0)
    # A forecast alert extrapolates the spend of this many last hours to the period's end.
    forecast_window_hours: float = Field(default=6.0, gt=0)
    delivery_max_attempts: int = Field(default=8, gt=0)


class AlertSinkConfig(_Strict):
    """An `[[alert_sinks]]` entry; a webhook's HMAC secret comes from `secret_env`."""

    kind: Literal["webhook", "slack"]
    url: str
    secret_env: str | None = None


class ReportConfig(_Strict):
    """How `/usage/*` reports run: in each worker's reports process, away from the calls."""

    # Reports running at once, and more waiting for one of them to end; past both, 503.
    max_running: int = Field(default=2, gt=0)
    max_waiting: int = Field(default=8, ge=0)
    # Running and waiting reports of one team (the admin key counts as one team); past it, 429.
    max_per_team: int = Field(default=2, gt=0)
    # A report still waiting this long gets 503; one running this long, 504 (and is stopped).
    timeout_seconds: float = Field(default=60.0, gt=0)


class TraceLimitConfig(_Strict):
    """Caps on one agent trace; a call past them gets 429 `trace_budget_exceeded`."""

    max_calls: int | None = Field(default=None, gt=0)
    max_cost_usd: Decimal | None = Field(default=None, gt=0)


class KeyConfig(_Strict):
    """A `[[teams.keys]]` entry: the key itself comes from the environment variable `key_env`."""

    key_env: str
    name: str | None = None
    models: tuple[str, ...] | None = None
    end_user: str | None = None
    expires_at: AwareDatetime | None = None


class TeamBudgetConfig(_Strict):
    period: PeriodKind
    limit_usd: Decimal = Field(gt=0)
    hard: bool = False
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    timezone: str = "UTC"
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None

    def budget_settings(self) -> BudgetSettings:
        return BudgetSettings(
            period=self.period,
            limit_usd=self.limit_usd,
            hard=self.hard,
            thresholds=self.thresholds,
            timezone=self.timezone,
            window=window_of(self.window_start, self.window_end),
        )

    @model_validator(mode="after")
    def _usable(self) -> TeamBudgetConfig:
        # The checks the admin API and the CLI make, at load time rather than at the first
        # write to the database.
        try:
            check_settings(self.budget_settings())
        except InvalidAdminRequest as error:
            raise ValueError(error.message) from None
        return self


class TeamConfig(_Strict):
    """A `[[teams]]` entry, for deployments that keep their teams in the config file."""

    name: str = Field(min_length=1, max_length=128)
    keys: tuple[KeyConfig, ...] = ()
    budget: TeamBudgetConfig | None = None


class ProxyConfig(_Strict):
    """The TOML config file."""

    upstreams: tuple[UpstreamConfig, ...] = ()
    default_upstream: str | None = None
    timeouts: TimeoutConfig = TimeoutConfig()
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    max_connections_per_upstream: int = Field(default=1000, gt=0)
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    # An agent trace is finished once no call joined it for this long.
    trace_idle_seconds: float = Field(default=300.0, gt=0)
    # On SIGTERM, calls in flight (long streams) get this long to finish.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    server: ServerConfig = ServerConfig()
    ledger: LedgerConfig = LedgerConfig()
    access: AccessConfig = AccessConfig()
    budgets: BudgetConfig = BudgetConfig()
    alerts: AlertConfig = AlertConfig()
    alert_sinks: tuple[AlertSinkConfig, ...] = ()
    trace_limits: TraceLimitConfig = TraceLimitConfig()
    reports: ReportConfig = ReportConfig()
    teams: tuple[TeamConfig, ...] = ()

    @model_validator(mode="after")
    def _names(self) -> ProxyConfig:
        names = [upstream.name for upstream in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("upstream names must be unique")
        if self.default_upstream is not None and self.default_upstream not in names:
            raise ValueError(f"default_upstream {self.default_upstream!r} is not an upstream")
        _check_fallbacks(self.upstreams)
        teams = [team.name for team in self.teams]
        if len(teams) != len(set(teams)):
            raise ValueError("team names must be unique")
        return self


def _check_fallbacks(upstreams: tuple[UpstreamConfig, ...]) -> None:
    """Each fallback names an upstream, and no chain of fallbacks comes back on itself."""
    fallbacks = {upstream.name: upstream.fallback for upstream in upstreams}
    for start in fallbacks:
        chain = [start]
        while (fallback := fallbacks[chain[-1]]) is not None:
            if fallback not in fallbacks:
                raise ValueError(
                    f"fallback {fallback!r} of upstream {chain[-1]!r} is not an upstream"
                )
            if fallback in chain:
                raise ValueError(
                    f"upstream fallbacks go in a circle: {' -> '.join([*chain, fallback])}"
                )
            chain.append(fallback)


class EnvironmentSettings(_Strict):
    """The `METERING_*` environment variables, read from the mapping `load_settings` is given."""

    config: Path | None = None
    database_url: str = "sqlite+aiosqlite:///./metering.db"
    admin_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # prometheus-client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR, its own name):
    # set, the metrics of every worker process are summed at /metrics.
    metrics_multiprocess_dir: Path | None = None


class ResolvedUpstream(_Strict):
    """An upstream with its key looked up: `api_key` set means managed mode for it."""

    config: UpstreamConfig
    api_key: SecretStr | None


class ResolvedSecrets(_Strict):
    """The secrets the config names by environment variable, looked up."""

    # Proxy keys of `[[teams.keys]]`, by team name, in the config's order.
    team_keys: dict[str, tuple[SecretStr, ...]] = Field(default_factory=dict)
    # HMAC secrets of `[[alert_sinks]]`, in the config's order (None: no secret).
    alert_sink_secrets: tuple[SecretStr | None, ...] = ()


class Settings(_Strict):
    """Everything the app needs, handed down from the entry point."""

    environment: EnvironmentSettings
    proxy: ProxyConfig
    upstreams: tuple[ResolvedUpstream, ...]
    secrets: ResolvedSecrets = ResolvedSecrets()

    @property
    def default_upstream_name(self) -> str:
        return self.proxy.default_upstream or self.upstreams[0].config.name


def _read_config_file(path: Path) -> ProxyConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    try:
        return ProxyConfig.model_validate(raw)
    except ValueError as error:
        raise ConfigError(f"config file {path} is invalid:\n{error}") from error


def _resolve_upstreams(
    config: ProxyConfig, environ: Mapping[str, str]
) -> tuple[ResolvedUpstream, ...]:
    if not config.upstreams:
        # No upstream configured: forward to OpenAI, with OPENAI_API_KEY when it is set and the
        # client's own key when it is not.
        default = UpstreamConfig(
            name="openai", base_url=OPENAI_BASE_URL, api_key_env="OPENAI_API_KEY"
        )
        key = environ.get("OPENAI_API_KEY")
        return (ResolvedUpstream(config=default, api_key=SecretStr(key) if key else None),)
    resolved = []
    for upstream in config.upstreams:
        key = None
        if upstream.api_key_env is not None:
            key = environ.get(upstream.api_key_env)
            if not key:
                raise ConfigError(
                    f"upstream {upstream.name!r} takes its key from ${upstream.api_key_env}, "
                    "which is not set"
                )
        resolved.append(ResolvedUpstream(config=upstream, api_key=SecretStr(key) if key else None))
    return tuple(resolved)


def _required_secret(environ: Mapping[str, str], variable: str, what: str) -> SecretStr:
    value = environ.get(variable)
    if not value:
        raise ConfigError(f"{what} comes from ${variable}, which is not set")
    return SecretStr(value)


def _resolve_secrets(config: ProxyConfig, environ: Mapping[str, str]) -> ResolvedSecrets:
    team_keys = {
        team.name: tuple(
            _required_secret(environ, key.key_env, f"a key of team {team.name!r}")
            for key in team.keys
        )
        for team in config.teams
    }
    sink_secrets = tuple(
        None
        if sink.secret_env is None
        else _required_secret(environ, sink.secret_env, f"the secret of alert sink {sink.url}")
        for sink in config.alert_sinks
    )
    return ResolvedSecrets(team_keys=team_keys, alert_sink_secrets=sink_secrets)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment and the config file it names; raise `ConfigError` on bad input."""
    environ = os.environ if environ is None else environ
    try:
        environment = EnvironmentSettings.model_validate(_environment_values(environ))
    except ValueError as error:
        raise ConfigError(f"invalid METERING_* environment variable:\n{error}") from error
    config = _read_config_file(environment.config) if environment.config else ProxyConfig()
    return Settings(
        environment=environment,
        proxy=config,
        upstreams=_resolve_upstreams(config, environ),
        secrets=_resolve_secrets(config, environ),
    )


def _environment_values(environ: Mapping[str, str]) -> dict[str, str]:
    prefix = "METERING_"
    values = {
        name[len(prefix) :].lower(): value
        for name, value in environ.items()
        if name.startswith(prefix)
        and name[len(prefix) :].lower() in EnvironmentSettings.model_fields
    }
    if environ.get(MULTIPROCESS_ENVIRONMENT_VARIABLE):
        values["metrics_multiprocess_dir"] = environ[MULTIPROCESS_ENVIRONMENT_VARIABLE]
    return values
