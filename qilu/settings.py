"""Typed settings, one class per component, built once at start-up and passed down.

Every field can be set from the environment with the ``QILU_`` prefix and the component's
section, for example ``QILU_KAFKA__BOOTSTRAP=127.0.0.1:9092`` or ``QILU_DB__PASSWORD=...``.
Nothing here is read at import time: call :func:`load` in the entry point.

Secrets are ``SecretStr`` (masked when printed). The development defaults for secrets are
refused unless ``QILU_ENV=development`` (the default on a developer machine).
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qilu.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DB_PASSWORD = "postgres"  # noqa: S105 - the development default, refused outside development


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class StorageMode(enum.StrEnum):
    AUTO = "auto"
    TIMESCALE = "timescale"
    POSTGRES = "postgres"


class ServicesSettings(BaseModel):
    """Where the local servers started by ``qilu services`` live and listen."""

    state_dir: Path = REPO_ROOT / ".state"
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_version: str = "4.3.1"
    kafka_heap_mb: int = 512
    postgres_port: int = 15432
    mosquitto_port: int = 11883
    timescale_port: int = 15433
    start_timeout_s: float = 90.0


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = "qilu"
    partitions: int = 6
    client_id: str = "qilu"


class DatabaseSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 15432
    name: str = "qilu"
    user: str = "postgres"
    password: SecretStr = SecretStr(DEV_DB_PASSWORD)
    mode: StorageMode = StorageMode.AUTO
    pool_min: int = 1
    pool_max: int = 4
    # The TimescaleDB test engine crashes on protocol messages over ~64 KB: keep it small there.
    max_rows_per_statement: int = 0  # 0 = unlimited (binary COPY)

    def conninfo(self, *, dbname: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=dbname or self.name,
            user=self.user,
            password=self.password.get_secret_value(),
            sslmode="disable" if self.host in ("127.0.0.1", "localhost") else "prefer",
            application_name="qilu",
        )


class IngestSettings(BaseModel):
    group_id: str = "qilu-ingest"
    max_batch_records: int = 500
    poll_timeout_ms: int = 200
    metrics_port: int = 9101
    # readings whose timestamp is this far in the future (or before 2000) are dead-lettered
    max_future_skew_s: float = 300.0


class AgentSettings(BaseModel):
    agent_id: str = ""
    batch_max_readings: int = 500
    batch_max_delay_s: float = 1.0
    metrics_port: int = 9102


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    coverage_cache_s: float = 2.0


class Settings(BaseSettings):
    """All settings of one process. Build once with :func:`load`."""

    model_config = SettingsConfigDict(
        env_prefix="QILU_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    env: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if (
            self.env is not Environment.DEVELOPMENT
            and self.db.password.get_secret_value() == DEV_DB_PASSWORD
        ):
            raise ValueError(
                "db.password: the development default is refused outside development; "
                "set QILU_DB__PASSWORD"
            )
        return self


def load(**overrides: object) -> Settings:
    """Build the settings from the environment (and keyword overrides), or raise ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        raise ConfigError(key, err["msg"]) from exc
