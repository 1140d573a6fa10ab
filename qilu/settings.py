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
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qilu.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DB_PASSWORD = "postgres"  # noqa: S105 - the development default, refused outside development
DEV_JWT_SECRET = "qilu-development-jwt-secret-not-for-production"  # noqa: S105 - refused by
# the API outside development (api.app.check_settings)


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
    # the SASL/SCRAM listener edge agents use (docs/adr/0010); 0 = kafka_port + 2
    kafka_agent_port: int = 0
    kafka_version: str = "4.3.1"
    kafka_heap_mb: int = 512
    # a folder made by `qilu pki init` + `qilu pki issue` (broker.pem): the agents' listener
    # is then SASL_SSL with that certificate instead of SASL_PLAINTEXT (docs/services.md)
    kafka_agent_tls_dir: Path | None = None
    postgres_port: int = 15432
    mosquitto_port: int = 11883
    timescale_port: int = 15433
    prometheus_port: int = 19090
    start_timeout_s: float = 90.0
    # the cluster profile (`qilu services up --profile cluster`, docs/services.md): three
    # Kafka brokers, each a KRaft controller too, one per loopback address, same ports
    cluster_hosts: tuple[str, str, str] = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
    cluster_kafka_port: int = 29092
    cluster_kafka_controller_port: int = 29093
    cluster_kafka_agent_port: int = 29094
    # ... and PostgreSQL: a primary and a streaming replica managed by Patroni, which keeps
    # its leader lock in a three-member etcd quorum (docs/adr/0017-postgres-failover.md)
    cluster_etcd_hosts: tuple[str, str, str] = ("127.0.0.31", "127.0.0.32", "127.0.0.33")
    cluster_etcd_port: int = 22379
    cluster_etcd_peer_port: int = 22380
    cluster_pg_hosts: tuple[str, str] = ("127.0.0.21", "127.0.0.22")
    cluster_pg_port: int = 25432
    cluster_patroni_port: int = 28008

    @model_validator(mode="after")
    def _derive_agent_port(self) -> ServicesSettings:
        if not self.kafka_agent_port:
            self.kafka_agent_port = self.kafka_port + 2
        return self


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = "qilu"
    partitions: int = 6
    client_id: str = "qilu"
    # the SASL/SCRAM listener as edge agents reach it: what `qilu agents provision` prints
    agent_bootstrap: str = "127.0.0.1:19094"
    # `qilu agents`: create/rotate/delete each agent's SCRAM user and ACLs on the broker
    manage_agent_credentials: bool = True
    # how agents reach the agents' listener: SASL_SSL (TLS, the broker verified against
    # agent_ssl_cafile, the CA of `qilu pki`) or SASL_PLAINTEXT (loopback and private links
    # only; production refuses to provision agents for it: stream.provisioning.require_agent_tls).
    # What `qilu agents provision` writes into each agent's TOML
    agent_security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    agent_ssl_cafile: str = ""
    # replicas of each topic `qilu topics` creates; -1 = the brokers' default.replication.factor
    # (1 on the single node, 3 with min.insync.replicas=2 in the cluster profile)
    replication_factor: int = Field(default=-1, ge=-1)

    @field_validator("replication_factor")
    @classmethod
    def _no_zero_replicas(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 replicas: use -1 (the brokers' default) or 1 and more")
        return value


class DatabaseSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 15432
    name: str = "qilu"
    user: str = "postgres"
    password: SecretStr = SecretStr(DEV_DB_PASSWORD)
    mode: StorageMode = StorageMode.AUTO
    pool_min: int = 1
    pool_max: int = 4
    # the ingest's pool gives up reconnecting after this long and starts again with the next
    # write (psycopg_pool's own backoff doubles to 16 s and more: after a failover the new
    # primary would wait for it; docs/adr/0017-postgres-failover.md)
    pool_reconnect_s: float = Field(default=5.0, gt=0)
    # The TimescaleDB test engine crashes on protocol messages over ~64 KB: keep it small there.
    max_rows_per_statement: int = 0  # 0 = unlimited (binary COPY)
    # libpq's target_session_attrs: with several hosts ("127.0.0.21,127.0.0.22"), writers say
    # "read-write" (whichever is the primary now), readers may say "prefer-standby"; "" = any
    target_session_attrs: str = Field(
        default="",
        pattern=r"^(|any|read-write|read-only|primary|standby|prefer-standby)$",
    )

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
            **(
                {"target_session_attrs": self.target_session_attrs}
                if self.target_session_attrs
                else {}
            ),
        )


class StorageSettings(BaseModel):
    """Retention and the maintenance schedule (docs/storage.md)."""

    raw_retention_days: int = Field(default=30, ge=1)  # readings
    rollup_1m_retention_days: int = Field(default=90, ge=1)
    rollup_1h_retention_days: int = Field(default=730, ge=1)  # readings_1h and site_liveness_1h
    partitions_ahead_hours: int = Field(default=48, ge=2)  # postgres mode
    # postgres mode: rollup refresh cycle; both modes: how often today's coverage_daily rows
    # (the snapshot storage.coverage.latest serves) are recomputed
    refresh_interval_s: float = Field(default=60.0, gt=0)
    coverage_snapshot_interval_s: float = Field(default=30.0, gt=0)
    coverage_rebuild_min_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="The incremental coverage models (the API's refresher, the maintenance "
        "loop) rebuild after a registry change no sooner than the longer of this and 20 times "
        "their previous build's duration after it; liveness still moves them every "
        "computation. 0 = rebuild at once (docs/adr/0018-incremental-coverage.md)",
    )
    # run the maintenance (partitions, rollups, coverage snapshot) inside `qilu ingest` too
    maintain_in_ingest: bool = True
    # dead-letter summary minutes (deadletter_summary) older than this are deleted by the
    # maintenance pass; the dead-letter topic keeps its records by its own retention
    deadletter_retention_days: int = Field(default=30, ge=1)


class IngestSettings(BaseModel):
    group_id: str = "qilu-ingest"
    max_batch_records: int = 500
    poll_timeout_ms: int = 200
    metrics_port: int = 9101
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus scrapes from elsewhere
    # readings whose timestamp is this far in the future (or before 2000) are dead-lettered
    max_future_skew_s: float = 300.0
    # per-envelope agent signatures (docs/adr/0010): off only for replaying trusted archives
    authenticate: bool = True
    # how often the agent registry (keys, revocations, sites) is checked for changes
    agents_refresh_s: float = Field(default=2.0, gt=0)
    # static group membership (KIP-345): a restarted process with the same id gets its
    # partitions back at once instead of after the session timeout (45 s); "" = dynamic
    # membership. One id per process, stable across its restarts (docs/faults.md)
    group_instance_id: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,249}$")
    # the ingest's Kafka clients (consumer, dead-letter producer) and a broker that goes
    # silent, cut off the network without closing its connections (docs/faults.md):
    # - request_timeout_ms: how long a request may wait for its answer. Longer than the
    #   controllers take to fence a silent broker (the cluster profile's 4 s session plus a
    #   heartbeat): until then an offset commit (acks=all on __consumer_offsets) waits for
    #   the ISR to shrink, a healthy wait that must not time out; kafka-python's 30 s kept
    #   the data waiting that long behind a metadata request sent to the silent broker
    request_timeout_ms: int = Field(default=6_000, ge=1_000, le=300_000)
    #   (ingest.broker_silence_ms, kafka-python's TCP_USER_TIMEOUT, is gone since the ingest's
    #   clients are confluent-kafka's, docs/adr/0020: the request timeout closes a silent
    #   broker's connections)
    # - connect_timeout_ms: a connection attempt (TCP and the Kafka handshake) to a broker
    #   that does not answer is given up after this long, at most request_timeout_ms
    #   (librdkafka's socket.connection.setup.timeout.ms; with kafka-python it doubled on
    #   each failure up to request_timeout_ms).
    #   kafka-python's 10 s, up to 30 s, held the ingest that long on a cut-off broker that
    #   metadata still named, before its fencing: as the group's coordinator, the offset
    #   commit waited on the attempt
    connect_timeout_ms: int = Field(default=1_000, ge=100, le=300_000)
    # fault injection for the fault suite (docs/faults.md), off by default: pause this long
    # after each database commit, before the offset commit, so a kill can land in between
    failpoint_after_db_commit_s: float = Field(default=0.0, ge=0)
    # the poll loop's watchdog (docs/operations.md): no progress for this long (no records
    # polled, not caught up, not waiting out a handled database or broker outage) logs
    # every thread's stack and exits with code 70 so the service manager restarts the
    # ingest. Above the longest legitimate step: a batch's flush, whose statements each
    # time out after 60 s, and the dead letters' 30 s acknowledgement wait. 0 = off
    stall_timeout_s: float = Field(default=180.0, ge=0)
    # coalesced liveness (docs/adr/0008-ingest-write-path.md): a device's last_seen is
    # written at most once per its period, always in a sink transaction: at once with its
    # batch when not written within the period, else held for the first transaction after it
    # (on its own when nothing was polled; all of it when the ingest stops). The period is an
    # eighth of the device kind's liveness window (expected interval, qilu/devices.py: 3.75 s
    # for a transformer, 15 s for a charging pile), at most this many seconds. A crash loses
    # what is held, never a reading. 0 = with every batch
    liveness_flush_s: float = Field(default=30.0, ge=0, le=120)


class AgentSettings(BaseModel):
    agent_id: str = ""
    batch_max_readings: int = 500
    batch_max_delay_s: float = 1.0
    metrics_port: int = 9102
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus scrapes from elsewhere
    # where agent changes (provision, revoke, the province) rewrite the agents' Prometheus
    # file_sd targets; None: nowhere (`qilu agents targets` writes it on demand). `qilu run`
    # sets it to the file the local Prometheus reads (docs/services.md)
    targets_file: Path | None = None
    # where `qilu agent province` (the simulated agents of `qilu run`) keeps their buffers;
    # None: <services.state_dir>/agents. A second platform on the same servers (a private
    # database and topic prefix, e.g. a test) sets its own so the two never share a buffer
    province_dir: Path | None = None


class ApiSettings(BaseModel):
    """The HTTP API (docs/api.md): access control, limits, the background coverage snapshot."""

    host: str = "127.0.0.1"
    port: int = 8080
    # HTTPS served by the API itself (uvicorn), both or neither; behind a reverse proxy that
    # terminates TLS leave them unset (docs/api.md, "HTTPS")
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # the coverage snapshot is recomputed in the background every this many seconds
    coverage_cache_s: float = Field(default=2.0, gt=0)
    lag_refresh_s: float = Field(default=10.0, gt=0)  # Kafka consumer lag for the status page
    # bearer JWTs: HMAC key ("" = JWTs refused), one fixed algorithm, issuer and audience
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "qilu"
    jwt_audience: str = "qilu-api"
    jwt_leeway_s: float = Field(default=0.0, ge=0)
    # scopes of requests without credentials; unset = coverage:read in development, else none
    anonymous_scopes: list[Literal["coverage:read", "telemetry:read"]] | None = None
    status_public: bool = True  # the status page at / and its data need no key
    key_cache_s: float = Field(default=2.0, ge=0)  # a revoked key stops working within this
    rate_per_s: float = Field(default=50.0, gt=0)  # per key (or per address when anonymous)
    rate_burst: float = Field(default=100.0, ge=1)
    max_request_bytes: int = Field(default=65_536, ge=0)
    cors_origins: list[str] = Field(default_factory=list)  # empty = CORS off
    page_max: int = Field(default=1000, ge=1)
    export_max_days: float = Field(default=31.0, gt=0)
    export_concurrency: int = Field(default=2, ge=1)

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if 0 < len(v.get_secret_value().encode()) < 32:
            raise ValueError("an HMAC key needs at least 32 bytes (RFC 7518 3.2); empty = no JWTs")
        return v


DEV_TCEC102_SECRET_KEY = "cWlsdS1kZXZlbG9wbWVudC10Y2VjMTAyLWtleS0wMDA="  # noqa: S105 - refused
# outside development by the processes that use it (interconnect.tcec102.secrets.box)


class Tcec102Settings(BaseModel):
    """T/CEC 102 operator interconnection (docs/adr/0015-tcec102.md): served by the API."""

    enabled: bool = True
    path_prefix: str = "/evcs/v1"
    # the endpoint's URL as operators reach it (behind the proxy, with its public host name),
    # shown by `qilu operators add/rotate`; empty: http://<api.host>:<api.port><path_prefix>
    public_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    # base64 of 32 bytes: encrypts the operators' stored secrets (AES-GCM) and keys the
    # bearer tokens of query_token. Changing it makes every stored operator secret unreadable.
    secret_key: SecretStr = SecretStr(DEV_TCEC102_SECRET_KEY)
    # the platform's own OperatorID when it calls operators (its organisation code)
    platform_operator_id: str = Field(default="QILU00000", pattern=r"^[0-9A-Za-z]{9}$")
    token_lifetime_s: int = Field(default=7200, ge=60)
    # a request whose TimeStamp is further than this from our clock is refused (4003)
    timestamp_tolerance_s: float = Field(default=300.0, gt=0)
    max_request_bytes: int = Field(default=65_536, ge=1024)
    # per operator, counted after its request's signature was checked
    rate_per_s: float = Field(default=500.0, gt=0)
    rate_burst: float = Field(default=1000.0, ge=1)
    # per client IP address, before anything is parsed (an unauthenticated flood)
    ip_rate_per_s: float = Field(default=5000.0, gt=0)
    ip_rate_burst: float = Field(default=10_000.0, ge=1)
    # dead letters of callers we cannot identify (unknown OperatorID, garbage): at most this
    # many a second (bursts of 10), the rest only counted (qilu_operator_dead_letters_dropped)
    unidentified_dead_letters_per_s: float = Field(default=1.0, gt=0)
    # answer -1 (busy, retry later) when more pushes than this wait for Kafka's
    # acknowledgement, when Kafka did not acknowledge within produce_timeout_s, when a request
    # waited longer than max_wait_s before it was decided, or while the event loop lags more
    # than max_loop_lag_s (the process is overloaded: answering late helps nobody)
    max_in_flight: int = Field(default=2000, ge=1)
    produce_timeout_s: float = Field(default=5.0, gt=0)
    max_wait_s: float = Field(default=2.0, gt=0)
    max_loop_lag_s: float = Field(default=0.5, gt=0)
    # how often the operator directory (keys, connectors) is reloaded from the database
    refresh_s: float = Field(default=5.0, gt=0)


class BackupSettings(BaseModel):
    """pgBackRest for the platform's PostgreSQL cluster (ops/backup.py, `qilu backup`,
    docs/operations.md). Paths left empty are derived from the services state dir."""

    stanza: str = Field(default="qilu", pattern=r"^[A-Za-z0-9_-]+$")
    home: Path | None = None  # config, logs, locks (empty: <services.state_dir>/pgbackrest)
    repo_path: Path | None = None  # the local repository (empty: <home>/repo)
    # further repository options for pgbackrest.conf, e.g. {"repo1-type": "s3", ...};
    # secrets go in PGBACKREST_* environment variables, never here
    repo_options: dict[str, str] = Field(default_factory=dict)
    pg_data_dir: Path | None = None  # the cluster to back up (empty: the services cluster)
    pg_socket_dir: Path | None = None  # its unix socket dir (empty: the services cluster's)
    retention_full: int = Field(default=2, ge=1)  # full backups kept (and their WAL)
    retention_diff: int = Field(default=6, ge=1)  # differential backups kept
    full_every_h: float = Field(default=168.0, gt=0)  # `qilu backup schedule`: weekly full
    diff_every_h: float = Field(default=24.0, gt=0)  # and a daily differential
    archive_timeout_s: int = Field(default=60, ge=1)  # a WAL segment at least this often
    max_archive_lag_s: float = Field(default=120.0, gt=0)  # status/alert: archiving stalled
    max_backup_age_h: float = Field(default=26.0, gt=0)  # status/alert: last backup too old
    process_max: int = Field(default=2, ge=1)
    metrics_port: int = 9104  # `qilu backup schedule` exports its gauges here (0: off)


class GrafanaSettings(BaseModel):
    """Where ``qilu dashboards sync`` pushes, and how that Grafana reaches its data sources."""

    url: str = "http://127.0.0.1:3000"
    token: SecretStr = SecretStr("")  # a service-account token, sent as a bearer token
    timeout_s: float = Field(default=10.0, gt=0)
    # the database as Grafana sees it ("" = QILU_DB__HOST:QILU_DB__PORT), the read-only role
    db_url: str = ""
    db_user: str = "qilu_grafana"
    db_password: SecretStr = SecretStr("")
    prometheus_url: str = "http://127.0.0.1:19090"


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
    storage: StorageSettings = Field(default_factory=StorageSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)
    tcec102: Tcec102Settings = Field(default_factory=Tcec102Settings)

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
