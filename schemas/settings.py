"""The one settings tree for tidings: environment (`TIDINGS_…`), an optional config file, defaults.

Built once in `main` and passed down; nothing else reads the environment.
Nested fields use `__` in environment variables, e.g. `TIDINGS_KAFKA__BOOTSTRAP_SERVERS`.
The config file is YAML or TOML, named by `TIDINGS_CONFIG` (or `--config` on the CLI).
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.bounded_json import MAX_BYTES, MAX_DEPTH, MAX_STRING_LENGTH, MAX_VALUES
from schemas.channels import Priority
from schemas.providers import ChannelsSettings
from schemas.settings_base import Frozen
from schemas.smtp import SmtpSettings

__all__ = [
    "CallbacksSettings",
    "CatalogSettings",
    "ChannelsSettings",
    "DecodeLimits",
    "GatewaySettings",
    "GroupSettings",
    "KafkaSettings",
    "LogSettings",
    "ObserveSettings",
    "PostgresSettings",
    "RedisSettings",
    "RouteSettings",
    "RuntimeSettings",
    "SmtpSettings",
    "TidingsSettings",
    "TopicSettings",
    "load_settings",
]


class KafkaSettings(Frozen):
    """Where the brokers are and how clients talk to them."""

    bootstrap_servers: str = "127.0.0.1:19092"
    client_id: str = "tidings"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = Field(default=1, ge=1)

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        return conf


class TopicSettings(Frozen):
    """Topic names and partition counts (partitions bound each stage's parallelism)."""

    events: tuple[str, ...] = ("order.created", "user.registered")
    dispatch_prefix: str = "notification.dispatch."
    status: str = "notification.status"
    dlq: str = "notification.dlq"
    retry_prefix: str = "notification.retry."
    # Recipient changes (compacted, keyed <tenant>/<id>): docs/contracts.md#recipients-topic.
    recipients: str = "tidings.recipients"
    # Triggers (`tidings.notify` events, POST /v1/notify): docs/contracts.md#triggers.
    notify: str = "tidings.notify"
    partitions: int = Field(default=6, ge=1)
    status_partitions: int = Field(default=6, ge=1)

    def dispatch(self, channel: str) -> str:
        """Name of the dispatch topic for `channel`."""
        return f"{self.dispatch_prefix}{channel}"


class GroupSettings(Frozen):
    """Consumer-group names, one per stage: the unit an operator scales."""

    route: str = "tidings-route"
    deliver: str = "tidings-deliver"
    audit: str = "tidings-audit"
    recipients: str = "tidings-recipients"


class PostgresSettings(Frozen):
    """The audit log's database."""

    host: str = "127.0.0.1"
    port: int = 15432
    user: str = "tidings"
    password: SecretStr = SecretStr("tidings")
    database: str = "tidings"
    connect_timeout_s: float = 5.0

    def conninfo(self) -> str:
        """A libpq connection string (contains the password: never log it)."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password.get_secret_value()} dbname={self.database} "
            f"connect_timeout={max(1, int(self.connect_timeout_s))}"
        )


class RedisSettings(Frozen):
    """Hot, losable state: dedup claims, rate limits."""

    url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    socket_timeout_s: float = 2.0


class CatalogSettings(Frozen):
    """Where the rules and templates live."""

    path: Path = Path("examples/catalog")
    # Hot reload from the directory (local use): poll interval in seconds, 0 = off.
    watch_interval_s: float = Field(default=1.0, ge=0)
    # Hot reload for a fleet: follow the compacted topic `tidings catalog publish` writes.
    follow_topic: str | None = None
    follow_key: str = "default"


class DecodeLimits(Frozen):
    """Bounds on one inbound event; an event beyond any is dead-lettered (`invalid_event`).

    Defaults and why: schemas/bounded_json.py. Bytes count the value plus every header.
    """

    max_bytes: int = Field(default=MAX_BYTES, ge=1024)
    max_depth: int = Field(default=MAX_DEPTH, ge=2, le=512)  # le: far below the recursion limit
    max_values: int = Field(default=MAX_VALUES, ge=1)
    max_string_length: int = Field(default=MAX_STRING_LENGTH, ge=1)


class RouteSettings(Frozen):
    """How the route stage treats events no rule listens to, and the bounds on what it decodes."""

    # dlq: an event type no rule knows is a producer mistake worth seeing;
    # skip: shared topics carry types tidings doesn't care about.
    unknown_types: Literal["dlq", "skip"] = "dlq"
    limits: DecodeLimits = DecodeLimits()
    # Rate limits and frequency caps on directory recipients (docs/recipients.md#caps), e.g.
    # {scope: recipient, limit: 10, window: 1d}; checked in Redis once per batch. Parsed and
    # checked when the route stage starts (catalog.caps.parse_caps).
    caps: tuple[dict[str, Any], ...] = ()


class CallbacksSettings(Frozen):
    """The provider-callback HTTP endpoint (Twilio status callbacks → delivered / failed)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=1, le=65535)
    # The base URL as the provider sees it (behind a proxy the Host differs): signatures cover
    # the full public URL. None: http://host:port.
    public_url: str | None = None
    # Whether `tidings run` without --stage includes the callbacks stage.
    enabled: bool = False
    # One-click unsubscribe (RFC 8058) for email to directory recipients: the first secret
    # signs the links, any of them verifies (rotate by prepending). Empty: no List-Unsubscribe
    # header is written, and the endpoint answers 404. At least 32 bytes each.
    unsubscribe_secrets: tuple[SecretStr, ...] = ()
    # A link older than this is refused (403): mail that old has an unsubscribe elsewhere.
    unsubscribe_max_age_days: int = Field(default=365, ge=1, le=3650)

    @field_validator("unsubscribe_secrets")
    @classmethod
    def _long_secrets(cls, v: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for i, secret in enumerate(v):
            if len(secret.get_secret_value().encode()) < 32:
                raise ValueError(
                    f"callbacks.unsubscribe_secrets[{i}] is shorter than 32 bytes: "
                    "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
        return v

    def base_url(self) -> str:
        """The public base URL (no trailing slash) that request paths are appended to."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")


_ATTEMPTS: dict[Priority, int] = {"critical": 10, "high": 8, "normal": 6, "low": 3}


class RuntimeSettings(Frozen):
    """Stage-loop knobs: batch sizes, in-flight bounds, drain limits."""

    batch_size: int = Field(default=500, ge=1)
    poll_timeout_s: float = Field(default=0.2, gt=0)
    max_in_flight: int = Field(default=2000, ge=1)
    # Records of one input topic (one channel's dispatch topic, or one retry tier) in flight:
    # a channel at its bound pauses only its own partitions, so a slow provider cannot fill
    # the whole process's in-flight budget and stall the other channels.
    max_in_flight_per_topic: int = Field(default=1000, ge=1)
    send_concurrency: int = Field(default=64, ge=1)
    # sys.setswitchinterval of a stage process: how long a thread may keep the GIL while
    # another waits for it. Python's 5 ms default makes deliver's I/O thread wait behind its
    # consumer thread after every socket call.
    switch_interval_s: float = Field(default=0.0005, gt=0, le=0.1)
    # gc.set_threshold of a stage process. Python's (700, 10, 10) runs a collection every 700
    # allocations and scans the whole heap (catalog, CEL programs, models) every 70,000: that
    # was ~30% of route's CPU (docs/benchmarks.md). None: Python's defaults.
    gc_thresholds: tuple[int, int, int] | None = (50_000, 20, 20)
    # gc.freeze() of a stage process this long after start, then every gc_refreeze_every_s
    # (O(1)), with a full collection every gc_reclaim_every_s and after a catalog switch
    # (streams/runtime/heap.py): collections walk only what is younger than a refreeze,
    # not the set-up's ~135,000 objects or the gateway's connections (its p99). None: never.
    gc_freeze_after_s: float | None = Field(default=10.0, ge=0)
    gc_refreeze_every_s: float | None = Field(default=1.0, gt=0)
    gc_reclaim_every_s: float | None = Field(default=600.0, gt=0)
    drain_timeout_s: float = Field(default=20.0, gt=0)
    audit_batch_size: int = Field(default=2000, ge=1)
    # deliver: how often it commits its finished prefix (one transaction, outputs + offsets).
    commit_interval_s: float = Field(default=0.1, gt=0)
    # route: a batch keeps filling until this long after the previous commit (0: it takes
    # only what is already fetched). Under load, one transaction per interval instead of one
    # per fetch: each costs the broker a marker on every partition it touched, which at a
    # steady 200 events/s was most of the broker's CPU; when quiet it adds no latency.
    route_commit_interval_s: float = Field(default=0.05, ge=0)
    claim_lease_s: float = Field(default=30.0, gt=0)
    # Retries: full-jitter backoff from this base, parked on retry topics by delay tier.
    retry_backoff_s: float = Field(default=1.0, gt=0)
    retry_tiers_s: tuple[float, ...] = (1.0, 10.0, 60.0, 600.0)
    # Most sends per notification (the first included), by priority.
    max_attempts: dict[Priority, int] = Field(default_factory=lambda: dict(_ATTEMPTS))
    local_dir: Path = Path(".local")
    # Stable member identity (transactional.id, group.instance.id): None takes host name +
    # the lowest free slot under local_dir/members; set it to e.g. a StatefulSet pod name.
    instance_id: str | None = None
    # KIP-345: a restarted member gets its partitions back at once, without waiting out the
    # dead session (6 s) and a rebalance. librdkafka may fence a static member by its own
    # earlier session after a broker restart; the stage then rebuilds its consumer
    # (StageConsumer makes that error impossible to miss). Off: a dynamic member.
    static_membership: bool = True
    # How long Postgres or Redis may stay unreachable before a stage gives up and exits 1;
    # None (the default) rides out any outage. Kafka outages are always ridden out.
    outage_limit_s: float | None = Field(default=None, gt=0)
    # A deliver member's liveness key lives this long without a heartbeat (one a second):
    # a claim whose member is gone is taken over at once instead of after claim_lease_s.
    member_ttl_s: float = Field(default=4.0, ge=2)
    # What a takeover of a claim whose sender died mid-send does, per channel: `resend`
    # (default: same Message-ID / webhook-id, status flagged possible_duplicate) or `skip`
    # (status `unknown`, nothing sent: for channels where a duplicate is worse than a miss).
    ambiguity: dict[str, Literal["resend", "skip"]] = Field(default_factory=dict)

    def ambiguity_for(self, channel: str) -> Literal["resend", "skip"]:
        """The takeover policy of `channel`."""
        return self.ambiguity.get(channel, "resend")


class ObserveSettings(Frozen):
    """Metrics, health and traces (docs/operations.md#metrics-health-and-traces)."""

    # One HTTP server per process: /metrics, /healthz, /readyz. 0 takes any free port;
    # None serves nothing. 9464 is the port Prometheus exporters of OpenTelemetry use.
    host: str = "127.0.0.1"
    port: int | None = Field(default=9464, ge=0, le=65535)
    # Record metrics at all: off only to measure what recording costs (make bench).
    metrics: bool = True
    # /healthz turns 503 when a stage's loop made no progress for this long (a stage
    # waiting out an outage counts as progress: it beats while it waits).
    liveness_bound_s: float = Field(default=60.0, gt=0)
    # How often /readyz's probe checks Kafka, Postgres and Redis (those the stages need).
    probe_interval_s: float = Field(default=5.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    # librdkafka statistics interval: how fresh tidings_consumer_lag is; 0 turns it off.
    lag_interval_s: float = Field(default=5.0, ge=0)
    # OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; None: no tracing.
    otlp_endpoint: str | None = None
    # Share of new traces kept (an incoming traceparent's sampled flag decides for its own).
    trace_sample_ratio: float = Field(default=0.01, ge=0, le=1)
    # Service name in traces; the stage is a span attribute.
    service_name: str = "tidings"


class LogSettings(Frozen):
    """Log lines: text for a terminal, JSON (one object per line) for a collector."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


_CONFIG_FILE: ContextVar[str | None] = ContextVar("tidings_config_file", default=None)


def _config_file_source(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"config file {p} (from TIDINGS_CONFIG or --config) does not exist: "
            "fix the path or unset it"
        )
    text = p.read_text(encoding="utf-8")
    data: Any = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p}: top level must be a mapping, got {type(data).__name__}")
    return data


class GatewaySettings(Frozen):
    """The gateway: tidings' REST API (docs/api.md), `tidings run --stage gateway`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8089, ge=1, le=65535)
    # Whether `tidings run` without --stage includes the gateway stage.
    enabled: bool = False
    # The gateway's event loop: uvloop (C timers and transports: at 10,000 Socket.IO
    # connections p99 12 against 56 ms with asyncio's, docs/benchmarks.md) or asyncio's own.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # A request body larger than this is refused (413) before it is read whole.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Events in one `application/cloudevents-batch+json` request, at most.
    max_batch: int = Field(default=500, ge=1, le=10_000)
    # How long a verified API key is trusted without reading Postgres again: a revoked key
    # keeps working on a running gateway for at most this long.
    key_cache_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    # Per tenant, the HS256 secrets recipient tokens (the inbox's auth) are signed with: the
    # first signs (`tidings tokens sign`), any verifies (rotate by prepending). At least 32
    # bytes each. A tenant without secrets has no inbox API.
    recipient_token_secrets: dict[str, tuple[SecretStr, ...]] = Field(default_factory=dict)
    # Requests per second one API key may make, over all gateway processes (Redis); past it:
    # 429 with Retry-After. 0: no limit.
    rate_limit_per_s: int = Field(default=1000, ge=0, le=1_000_000)
    # Origins a browser may call the API from (CORS), e.g. "https://app.example.com"; empty:
    # none (server-to-server calls need no CORS).
    cors_origins: tuple[str, ...] = ()
    # Per tenant, the EC P-256 public keys (PEM) ES256 recipient tokens verify with: the
    # tenant's backend signs with the private key, which tidings never holds. Any verifies.
    recipient_token_public_keys: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # A recipient token may live at most this long (its `exp` - `iat`).
    recipient_token_max_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    # The Postgres role the gateway queries as (`SET ROLE`), held to row-level security per
    # tenant (migration 0011, docs/operations.md#row-level-security). None: the login's own
    # role, which as the tables' owner row-level security doesn't restrict.
    db_role: str | None = "tidings_gateway"

    @field_validator("recipient_token_secrets")
    @classmethod
    def _long_token_secrets(
        cls, v: dict[str, tuple[SecretStr, ...]]
    ) -> dict[str, tuple[SecretStr, ...]]:
        for tenant, secrets in v.items():
            for i, secret in enumerate(secrets):
                if len(secret.get_secret_value().encode()) < 32:
                    raise ValueError(
                        f"gateway.recipient_token_secrets[{tenant!r}][{i}] is shorter than 32 "
                        "bytes: make one with `python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))'`"
                    )
        return v

    @field_validator("recipient_token_public_keys")
    @classmethod
    def _p256_public_keys(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        for tenant, pems in v.items():
            for i, pem in enumerate(pems):
                where = f"gateway.recipient_token_public_keys[{tenant!r}][{i}]"
                try:
                    key = load_pem_public_key(pem.encode())
                except ValueError as exc:
                    raise ValueError(f"{where} is not a PEM public key ({exc})") from None
                if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                    raise ValueError(
                        f"{where} is not an EC P-256 key (ES256 needs one: `openssl ecparam "
                        "-name prime256v1 -genkey -noout -out key.pem && openssl ec -in key.pem "
                        "-pubout`)"
                    )
        return v


class TidingsSettings(BaseSettings):
    """Every setting of tidings; env `TIDINGS_<SECTION>__<FIELD>` overrides the file."""

    model_config = SettingsConfigDict(
        env_prefix="TIDINGS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        # Errors name the field and the problem, never the value: it may be a key or a token.
        hide_input_in_errors=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    groups: GroupSettings = GroupSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    smtp: SmtpSettings = SmtpSettings()
    channels: ChannelsSettings = ChannelsSettings()
    catalog: CatalogSettings = CatalogSettings()
    route: RouteSettings = RouteSettings()
    callbacks: CallbacksSettings = CallbacksSettings()
    gateway: GatewaySettings = GatewaySettings()
    runtime: RuntimeSettings = RuntimeSettings()
    observe: ObserveSettings = ObserveSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit init args > environment > config file > defaults.
        file_data = _config_file_source(_CONFIG_FILE.get() or os.environ.get("TIDINGS_CONFIG"))
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=file_data),
        )


def load_settings(config_file: str | None = None, **overrides: Any) -> TidingsSettings:
    """Build the settings tree once; raises pydantic.ValidationError or FileNotFoundError."""
    token = _CONFIG_FILE.set(config_file)
    try:
        return TidingsSettings(**overrides)
    finally:
        _CONFIG_FILE.reset(token)
