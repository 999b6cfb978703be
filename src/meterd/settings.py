"""One typed settings tree, read once at start-up from (lowest to highest) defaults, a YAML file,
`METERD_*` environment variables (nested with `__`, e.g. METERD_SERVER__PORT) and command-line flags.

Every field here is documented in docs/settings.md; a test fails when one is not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


def _seconds(value: Any) -> Any:
    """Durations may be given as ISO 8601 (`PT0.2S`) or as a number of seconds, also in text (`0.2`)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


class _Section(BaseModel):
    """A settings section: a misspelt key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address to bind. Loopback by default.")
    port: int = Field(8888, ge=0, le=65535, description="TCP port (OpenMeter's default, 8888).")
    insecure_no_auth: bool = Field(
        False, description="Allow binding a non-loopback address with no API key configured."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted (after gunzip); larger is 413."
    )
    access_log: bool = Field(False, description="Log every HTTP request.")


class StorageSettings(_Section):
    data_dir: Path = Field(Path("meterd-data"), description="Directory holding all embedded-mode data.")
    event_store: str | None = Field(
        None,
        description="ClickHouse DSN for the event store: chdb:///path (in-process, the default "
        "chdb://<data_dir>/events) or http(s)://user:pass@host:8123/db.",
    )
    metadata_url: str | None = Field(
        None,
        description="SQLAlchemy URL for metadata (meters, customers, keys). Default sqlite:///<data_dir>/metadata.db.",
    )

    clickhouse_cluster: str | None = Field(
        None,
        description="Cluster mode with a ClickHouse cluster: the cluster name from the servers' remote_servers "
        "config. The schema is then created ON CLUSTER with Replicated and Distributed tables.",
    )

    min_free_disk_mb: int = Field(
        256,
        ge=0,
        description="Embedded mode: below this much free space in the data directory, ingest answers 503 with "
        "Retry-After and /readyz reports not ready, leaving room for the sink and the event store's merges "
        "(0 turns the check off; a disk that fills up anyway still gets 503s, not damage).",
    )

    def event_store_dsn(self) -> str:
        return self.event_store or f"chdb://{self.data_dir.resolve() / 'events'}"

    def metadata_dsn(self) -> str:
        return self.metadata_url or f"sqlite:///{self.data_dir.resolve() / 'metadata.db'}"

    def journal_path(self) -> Path:
        return self.data_dir.resolve() / "journal.db"


class IngestSettings(_Section):
    dedup_window: Duration = Field(
        timedelta(days=32),
        description="How long an event's (namespace, source, id) is remembered to drop retries "
        "(ISO 8601 duration like P32D, or seconds).",
    )
    max_batch_events: int = Field(10_000, ge=1, description="Most events accepted in one request (413 above).")
    max_queued_events: int = Field(
        200_000,
        ge=100,
        description="Events waiting for the journal's group commit before new requests get 429 + Retry-After.",
    )
    max_commit_events: int = Field(20_000, ge=1, description="Most events written in one journal commit.")
    max_concurrent_requests: int = Field(
        32,
        ge=1,
        description="Ingest requests handled at once (reading, decoding, waiting for the journal); more get 429 + "
        "Retry-After before their body is read, which bounds the latency of the accepted ones under overload.",
    )


class SinkSettings(_Section):
    min_batch: int = Field(5_000, ge=1, description="Flush to the event store once this many events are waiting...")
    max_wait: Duration = Field(
        timedelta(milliseconds=200), description="...or once the oldest waiting event is this old."
    )
    max_batch: int = Field(
        100_000,
        ge=1,
        description="Most events in one event-store insert. In cluster mode also what a sink buffers per "
        "partition while the event store is down or slow: beyond it the partition is paused and Kafka keeps the rest.",
    )
    max_lag_events: int = Field(
        2_000_000,
        ge=1000,
        description="Journal depth (events not yet in the event store) above which ingest answers 503.",
    )


class KafkaSettings(_Section):
    """Cluster mode's ingest journal: API nodes produce events to a Kafka topic, `meterd sink` consumes it."""

    bootstrap_servers: str | None = Field(None, description="Kafka bootstrap servers, `host:port[,host:port...]`.")
    topic: str = Field("meterd.events", min_length=1, description="Topic holding every namespace's events.")
    partitions: int = Field(
        8, ge=1, description="Partitions of the topic when `meterd migrate` creates it (the sinks' parallelism)."
    )
    replication_factor: int = Field(3, ge=1, description="Replicas of the topic when `meterd migrate` creates it.")
    consumer_group: str = Field("meterd-sink", min_length=1, description="Consumer group of the `meterd sink` workers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, with `SASL_PLAINTEXT` or `SASL_SSL`."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_ca_location: Path | None = Field(None, description="CA certificate file (PEM) to verify the brokers.")
    ssl_certificate_location: Path | None = Field(None, description="Client certificate file (PEM), for mutual TLS.")
    ssl_key_location: Path | None = Field(None, description="Client private key file (PEM), for mutual TLS.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client private key.")
    delivery_timeout: Duration = Field(
        timedelta(seconds=30),
        gt=timedelta(0),
        description="How long an ingest request waits for the brokers to acknowledge its events before 503.",
    )
    linger: Duration = Field(
        timedelta(milliseconds=2),
        ge=timedelta(0),
        description="How long the producer waits to fill a batch (latency traded for throughput).",
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties for every client, e.g. `{socket.keepalive.enable: 'true'}`.",
    )

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (self.sasl_mechanism and self.sasl_username):
            raise ValueError("kafka.security_protocol SASL_* needs kafka.sasl_mechanism and kafka.sasl_username")
        return self


class NotificationSettings(_Section):
    worker: bool = Field(True, description="Run the webhook delivery worker inside `meterd serve`.")
    timeout: Duration = Field(
        timedelta(seconds=10),
        gt=timedelta(0),
        description="HTTP timeout of one webhook attempt (connect, and each read or write).",
    )
    max_attempts: int = Field(12, ge=1, le=100, description="Attempts per delivery before it is FAILED.")
    retry_base_delay: Duration = Field(
        timedelta(seconds=10),
        ge=timedelta(0),
        description="Wait after the first failed attempt; it doubles after each further one.",
    )
    retry_max_delay: Duration = Field(timedelta(hours=6), description="Longest wait between two attempts.")
    lease_timeout: Duration = Field(
        timedelta(minutes=5),
        gt=timedelta(0),
        description="An attempt not reported back this long after it started (its process died) is retried.",
    )
    poll_interval: Duration = Field(
        timedelta(seconds=1),
        gt=timedelta(0),
        description="How often the worker looks for due deliveries when not woken.",
    )
    concurrency: int = Field(8, ge=1, le=256, description="Webhook requests in flight at once, per worker.")

    @model_validator(mode="after")
    def _check(self) -> NotificationSettings:
        if self.lease_timeout <= self.timeout:
            raise ValueError("notifications.lease_timeout must be longer than notifications.timeout")
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("notifications.retry_max_delay must not be shorter than retry_base_delay")
        return self


class MeterConfig(_Section):
    """A meter declared in the config file; created at start-up in the default namespace if missing."""

    slug: str
    eventType: str
    aggregation: str
    name: str | None = None
    description: str | None = None
    valueProperty: str | None = None
    groupBy: dict[str, str] = Field(default_factory=dict)
    eventFrom: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="METERD_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    namespace: str = Field("default", description="Namespace used by requests whose API key names none.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys accepted besides those created with `meterd keys create` (comma-separated in "
        "METERD_API_KEYS). Keys from here belong to the default namespace.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    mode: Literal["embedded", "cluster"] = Field(
        "embedded",
        description="`embedded`: one process, one data directory. `cluster`: stateless API nodes, Kafka, "
        "ClickHouse and PostgreSQL (see docs/operations.md).",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    sink: SinkSettings = Field(default_factory=SinkSettings)  # type: ignore[arg-type]
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # type: ignore[arg-type]
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)  # type: ignore[arg-type]
    meters: list[MeterConfig] = Field(default_factory=list, description="Meters provisioned at start-up.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.sink.min_batch > self.sink.max_batch:
            raise ValueError("sink.min_batch must not exceed sink.max_batch")
        if self.mode == "cluster" and (problems := cluster_problems(self)):
            raise ValueError("cluster mode: " + "; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_config_file))
        return tuple(sources)


def cluster_problems(settings: Settings) -> list[str]:
    """What cluster mode lacks in these settings (all of it, so one run of `meterd config validate` tells)."""
    problems = []
    if not settings.kafka.bootstrap_servers:
        problems.append("kafka.bootstrap_servers is required")
    store = settings.storage.event_store or ""
    if not store.startswith(("http://", "https://")):
        problems.append("storage.event_store must be a ClickHouse server, http(s)://user:password@host:8123")
    metadata = settings.storage.metadata_url or ""
    if not metadata.startswith("postgresql"):
        problems.append("storage.metadata_url must be a PostgreSQL URL, postgresql+psycopg://user:password@host/db")
    return problems


_config_file: Path | None = None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings tree. `overrides` are nested dicts from command-line flags (None = not given)."""
    global _config_file
    _config_file = Path(config_file) if config_file else None
    if _config_file is not None and not _config_file.is_file():
        raise FileNotFoundError(f"config file not found: {_config_file}")
    try:
        return Settings(**_prune(overrides))
    finally:
        _config_file = None


def _prune(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _prune(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out
