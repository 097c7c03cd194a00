"""Settings base class: environment (and `.env`) with a per-service prefix over shared names.

Every service subclasses `ServiceSettings` with `env_prefix="<SERVICE>_"`. The shared fields
(`redis_url`, `database_url`, `log_level`, `log_format`, `otel_exporter_otlp_endpoint`) are read
from the prefixed variable first (`URL_SHORTENER_REDIS_URL`) and then from the unprefixed one
(`REDIS_URL`), so one `.env` can point the whole suite at the same Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from common.redis import SCHEMES as REDIS_SCHEMES
from common.redis import cluster_url, is_cluster_url

SHARED_FIELDS = (
    "redis_url",
    "redis_cluster",
    "database_url",
    "log_level",
    "log_format",
    "otel_exporter_otlp_endpoint",
    "data_dir",
    "environment",
)

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "development"}


class _SharedOnly(PydanticBaseSettingsSource):
    """Wraps an unprefixed source and keeps only the shared fields."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._inner().items() if k in SHARED_FIELDS}


class ServiceSettings(BaseSettings):
    """What every service is configured with; subclasses add their own fields."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", validate_default=True)

    service_name: str = "service"
    environment: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Path(".data")
    redis_url: str | None = None
    # The Redis at `redis_url` is a Redis Cluster (as a `redis+cluster://` URL says itself).
    redis_cluster: bool = False
    database_url: str | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    otel_exporter_otlp_endpoint: str | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Seconds a request may take before its response starts; past it the service answers
    # 503 problem+json itself (a dependency that stopped answering). 0 turns it off.
    request_timeout: float = Field(default=10.0, ge=0)
    # Seconds SQL may take to connect, to wait for a pooled connection, and per statement
    # (PostgreSQL's statement_timeout; SQLite's busy timeout): then a 503, not a hang.
    sql_timeout: float = Field(default=5.0, gt=0)
    # Seconds a connection may take to send a request's headers (common.server closes it then).
    header_timeout: float = Field(default=10.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_file = settings_cls.model_config.get("env_file")
        shared_env = _SharedOnly(settings_cls, EnvSettingsSource(settings_cls, env_prefix=""))
        shared_dotenv = _SharedOnly(
            settings_cls, DotEnvSettingsSource(settings_cls, env_file=env_file, env_prefix="")
        )
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            shared_env,
            shared_dotenv,
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _check_url_schemes(self) -> ServiceSettings:
        url = self.redis_url
        if url and ("://" not in url or url.split("://", 1)[0] not in REDIS_SCHEMES):
            raise ValueError(
                "redis_url must start with redis://, rediss://, unix://, redis+cluster:// "
                "or rediss+cluster://"
            )
        if self.redis_cluster:
            if not url:
                raise ValueError("redis_cluster needs a redis_url naming a node of the cluster")
            self.redis_url = cluster_url(url)  # (refuses unix://: a cluster is reached by TCP)
        elif url and is_cluster_url(url):
            self.redis_cluster = True
        return self

    def require_secret(self, name: str, value: str) -> str:
        """Refuse placeholder secrets (and the `dev-...` defaults) in production."""
        lowered = value.lower()
        placeholder = lowered in PLACEHOLDER_SECRETS or lowered.startswith(("dev-", "change"))
        if self.environment == "production" and (placeholder or len(value) < 16):
            raise ValueError(f"{name} must be set to a real secret (16+ characters) in production")
        return value

    def sqlite_url(self, name: str) -> str:
        """The default database: a SQLite file under the data folder."""
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{name}.db').resolve()}"
