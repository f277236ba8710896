"""The authoritative database: SQLAlchemy 2 models, engine and session helpers, migrations.

Money and quantities are exact decimals (``Amount``: NUMERIC(28, 10) on PostgreSQL); event
times are int64 nanoseconds (``ts_*``) plus a ``created_at`` wall-clock column. The schema
changes only through Alembic (``alembic/versions``); ``migrate(url)`` runs it from code.

Services get an engine from ``make_engine(url)`` and sessions from ``session_factory``; there
is no global session.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    func,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ALEMBIC_INI",
    "AMOUNT_SCALE",
    "JOB_FINAL",
    "JOB_STATUSES",
    "MODEL_STATES",
    "OPEN_STATUSES",
    "ORDER_STATUSES",
    "ROLES",
    "ROOT",
    "TRADING_STATES",
    "Amount",
    "AuditLog",
    "Backtest",
    "Base",
    "BrokerToken",
    "ControlRequest",
    "Fill",
    "Job",
    "KillSwitchEvent",
    "Model",
    "Order",
    "OutboxMessage",
    "RefreshToken",
    "SuggestionRun",
    "TradingState",
    "User",
    "alembic_config",
    "downgrade",
    "make_engine",
    "migrate",
    "normalize_url",
    "session_factory",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ALEMBIC_INI = ROOT / "alembic.ini"

AMOUNT_SCALE = Decimal("1e-10")  # NUMERIC(28, 10): 18 integer digits, 10 decimals
_AMOUNT_LIMIT = Decimal("1e18")

# Mirrors common.messages.OrdStatus (kept literal so the schema does not move with the code).
ORDER_STATUSES = (
    "PENDING_NEW",
    "ACCEPTED",
    "PARTIALLY_FILLED",
    "FILLED",
    "PENDING_CANCEL",
    "CANCELLED",
    "REJECTED",
    "EXPIRED",
)
OPEN_STATUSES = ("PENDING_NEW", "ACCEPTED", "PARTIALLY_FILLED", "PENDING_CANCEL")
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
ROLES = ("viewer", "trader", "admin")  # API roles, least to most privileged
MODEL_STATES = ("registered", "promoted", "retired", "deleted")  # pattern_engine.ml.registry
JOB_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
JOB_FINAL = ("completed", "failed", "cancelled")

# Deterministic constraint names: downgrades and PostgreSQL/SQLite diffs need them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Amount(TypeDecorator):
    """An exact decimal: NUMERIC(28, 10) on PostgreSQL, text on SQLite.

    SQLite's NUMERIC affinity silently turns decimals into binary floats, so there the
    value is stored as its canonical string. Values are quantized to 10 decimals on the way
    in on every dialect, so both give back the same ``Decimal``. Do not sort or sum Amount
    columns in SQL on SQLite (they are strings there); do accounting in Python.
    """

    impl = Numeric(28, 10)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(28, 10, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("Amount columns take Decimal (or int / str), never float")
        try:
            d = value if isinstance(value, Decimal) else Decimal(value)
            if not d.is_finite() or abs(d) >= _AMOUNT_LIMIT:
                raise ValueError(f"amount out of range for NUMERIC(28, 10): {value!r}")
            d = d.quantize(AMOUNT_SCALE)
        except InvalidOperation as e:
            raise ValueError(f"not a decimal amount: {value!r}") from e
        return str(d) if dialect.name == "sqlite" else d

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


# BIGINT ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
ID = BigInteger().with_variant(Integer(), "sqlite")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _in(col: str, values: tuple[str, ...]) -> str:
    return f"{col} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base; ``Base.metadata`` is the target of Alembic autogenerate."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Order(Base):
    """One order as the gateway knows it; written before the order is routed to a venue."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    signal_id: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(64), index=True)
    symbol: Mapped[str] = mapped_column(String(64), index=True)
    side: Mapped[int] = mapped_column(SmallInteger)  # +1 buy, -1 sell
    order_type: Mapped[str] = mapped_column(String(16))
    tif: Mapped[str] = mapped_column(String(8))
    qty: Mapped[Decimal] = mapped_column(Amount())
    limit_price: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)
    ref_price: Mapped[Decimal] = mapped_column(Amount())
    status: Mapped[str] = mapped_column(String(20), index=True)
    reject_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cum_qty: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    avg_px: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    fees: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    venue: Mapped[str] = mapped_column(String(32))
    tick_seq: Mapped[int] = mapped_column(BigInteger)
    ts_event: Mapped[int] = mapped_column(BigInteger)
    ts_ingest: Mapped[int] = mapped_column(BigInteger)
    ts_signal: Mapped[int] = mapped_column(BigInteger)
    ts_intent: Mapped[int] = mapped_column(BigInteger)
    ts_accepted: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ts_done: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_utcnow, onupdate=_utcnow, server_default=func.now()
    )
    stop_price: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)  # STOP trigger (0002)

    __table_args__ = (
        CheckConstraint("side IN (1, -1)", name="side"),
        CheckConstraint(_in("status", ORDER_STATUSES), name="status"),
    )


class Fill(Base):
    """One execution against an order; idempotent by ``exec_id``."""

    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    exec_id: Mapped[str] = mapped_column(String(96), unique=True)
    venue_trade_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_order_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("orders.client_order_id", ondelete="RESTRICT"), index=True
    )
    symbol: Mapped[str] = mapped_column(String(64), index=True)
    side: Mapped[int] = mapped_column(SmallInteger)
    qty: Mapped[Decimal] = mapped_column(Amount())
    price: Mapped[Decimal] = mapped_column(Amount())
    fee: Mapped[Decimal] = mapped_column(Amount())
    liquidity: Mapped[str] = mapped_column(String(8), default="taker")
    venue: Mapped[str] = mapped_column(String(32))
    ts_exec: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())

    __table_args__ = (CheckConstraint("side IN (1, -1)", name="side"),)


class TradingState(Base):
    """The persisted trading state of one scope (global, strategy:<name>, symbol:<SYM>): ACTIVE, REDUCING or HALTED."""

    __tablename__ = "trading_state"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="")
    changed_at: Mapped[int] = mapped_column(BigInteger)  # ns since the epoch

    __table_args__ = (CheckConstraint(_in("state", TRADING_STATES), name="state"),)


class KillSwitchEvent(Base):
    """Every engage / reduce / release of a trading state that changed it."""

    __tablename__ = "kill_switch_events"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())

    __table_args__ = (CheckConstraint("action IN ('engage', 'reduce', 'release')", name="action"),)


class AuditLog(Base):
    """Who did what to which entity, when (append-only)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class OutboxMessage(Base):
    """A bus message written in the same transaction as the state change it reports.

    The gateway publishes it in its bus commit and records the highest published ``seq``
    in Redis in that same commit; on start (or after a failed commit) rows above that mark
    are published again, so no report is lost between the database and the bus.
    """

    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    stream: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())


class ControlRequest(Base):
    """A control command written to the database instead of the bus (``ctl:commands``).

    The gateway polls unhandled rows (``ts_handled`` NULL), applies each exactly as the
    same command from the bus and fills in the result (``ok``, ``state``, ``detail``,
    ``ts_handled``) in the transaction that makes its effects durable: the row is the
    command's acknowledgement. This path needs only the database, not Redis (0004).
    """

    __tablename__ = "control_requests"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    command: Mapped[str] = mapped_column(String(64))  # as Control.command: kill.engage, order.cancel, ...
    scope: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="")
    args: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ts_requested: Mapped[int] = mapped_column(BigInteger)  # ns since the epoch
    ts_handled: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class RiskOverride(Base):
    """A risk limit changed while running (``aitrader risk set``, ``PUT /risk``), applied over the risk file.

    One row per dotted key of the file (``global.max_open_orders``,
    ``symbols.BTCUSDT.max_order_qty``, ...); the gateway applies every row over the file on
    start and writes / deletes rows in the transaction that acknowledges the change. The
    history of changes is in ``audit_log`` (0005).
    """

    __tablename__ = "risk_overrides"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    ts: Mapped[int] = mapped_column(BigInteger)  # ns since the epoch


class StrategySwitch(Base):
    """A strategy switched on or off while running (``aitrader strategies enable|disable``).

    One row per strategy name; the strategy engine applies every row over
    ``config/strategies.yml``'s ``enabled`` on start. The history is in ``audit_log`` (0008).
    """

    __tablename__ = "strategy_switches"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    ts: Mapped[int] = mapped_column(BigInteger)  # ns since the epoch


class GatewayState(Base):
    """Small pieces of the gateway's memory that must survive a restart, by key (JSON values).

    ``kill_triggers.baselines``: the daily-loss trigger's equity at the UTC day start and the
    drawdown trigger's peak, so that a restart does not forgive the day's loss (0005).
    """

    __tablename__ = "gateway_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    ts: Mapped[int] = mapped_column(BigInteger)  # ns since the epoch, last written


class User(Base):
    """A user of the API with one role (viewer < trader < admin); the password as an argon2 hash (0006)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())

    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)


class RefreshToken(Base):
    """One refresh token the API issued, by its ``jti`` (0006).

    Every token descends from one login: its ``family_id``. A token is single use (``used_at``
    set when it is exchanged); presenting a used one again revokes the whole family
    (``revoked_at``), as does a logout. Times are ns since the epoch.
    """

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issued_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Model(Base):
    """One version of a model bundle in the registry (``pattern_engine/ml/registry.py``, 0007).

    ``version`` counts 1, 2, 3 ... per ``name``; ``path`` is the bundle directory relative to the
    model store (``<name>/<version>``); ``metadata_`` is the stored copy's full ``model.json``.
    At most one row per name is ``promoted`` (a partial unique index). ``reason`` is the reason
    of the last state change; every change is also an ``audit_log`` row (entity ``model``).
    """

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(255))
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64), default="")
    features: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())
    created_by: Mapped[str] = mapped_column(String(64))
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    promoted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retired_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        CheckConstraint(_in("state", MODEL_STATES), name="state"),
        CheckConstraint("version >= 1", name="version"),
        UniqueConstraint("name", "version"),
        # at most one promoted version per name; also the index of the engine's promoted(name) poll
        Index("uq_models_promoted_name", "name", unique=True,
              sqlite_where=text("state = 'promoted'"), postgresql_where=text("state = 'promoted'")),
    )


class BrokerToken(Base):
    """A broker session token, encrypted at rest (``common/broker_tokens.py``, 0008).

    One row per (``broker``, ``account_id``): the broker's name in settings and the login
    identity (the api key). ``ciphertext`` is AES-256-GCM (12-byte random nonce, then the
    ciphertext and tag) with associated data binding it to broker, account and expiry;
    ``key_id`` names the key (a fingerprint, not the key), which lives outside the database.
    Times are ns since the epoch; ``rotated_at`` is the last re-login.
    """

    __tablename__ = "broker_tokens"

    broker: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    rotated_at: Mapped[int] = mapped_column(BigInteger)
class Job(Base):
    """One job and where it stands (0010, 0011): the row is the job's truth.

    ``kind`` (column ``type``): ``suggestion``, ``backtest``, ``train``, ... ; ``status`` queued →
    running → completed | failed | cancelled; ``payload`` what to do, ``result`` what came out,
    ``progress`` 0..1 with a note; ``task_id`` the task queue's id, ``worker`` who runs it and
    ``heartbeat_at`` its lease (a running job whose lease lapsed lost its worker); ``attempts``;
    ``cancel_requested`` asks a running job to stop; ``parent_id`` the sweep that fanned it out.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column("type", String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    progress_note: Mapped[str] = mapped_column(String(256), default="", server_default="")
    task_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    worker: Mapped[str] = mapped_column(String(128), default="", server_default="")
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ID, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)

    __table_args__ = (CheckConstraint(_in("status", JOB_STATUSES), name="status"),)


class Backtest(Base):
    """One backtest (0011): its files and config, status, metrics, and where its equity curve and
    trades are stored (Parquet); ``job_id`` when it ran as a job (null when run by the CLI in process)."""

    __tablename__ = "backtests"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    job_id: Mapped[int | None] = mapped_column(ID, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True,
                                               index=True)
    status: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128), default="", server_default="")
    files: Mapped[list[str]] = mapped_column(JSON)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    config_digest: Mapped[str] = mapped_column(String(64), default="", server_default="")
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timeseries_path: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    trades_path: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    ticks: Mapped[int] = mapped_column(ID, default=0, server_default="0")
    orders: Mapped[int] = mapped_column(ID, default=0, server_default="0")
    fills: Mapped[int] = mapped_column(ID, default=0, server_default="0")
    duration_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    error: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (CheckConstraint(_in("status", JOB_STATUSES), name="status"),)


class SuggestionRun(Base):
    """One suggestion run: the prompt, who asked, the provider and model, the context sent (and its SHA-256)
    and the validated suggestions; its job row says whether it finished (0008). Advice only."""

    __tablename__ = "suggestions"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    prompt: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128), default="")
    context_digest: Mapped[str] = mapped_column(String(64), default="")
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    suggestions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, server_default=func.now())
    created_by: Mapped[str] = mapped_column(String(64))


# -- engine and sessions -------------------------------------------------------------------
def normalize_url(url: str) -> str:
    """``postgres://`` / ``postgresql://`` → ``postgresql+psycopg://`` (psycopg 3); others unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=5000")
        # WAL: readers (API, report) never block the gateway's writes.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def make_engine(url: str, **kw: Any) -> Engine:
    """An engine for ``url``: SQLite with WAL + foreign keys, or PostgreSQL through psycopg 3."""
    u = make_url(normalize_url(url))
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kw.pop("connect_args", {}) or {})
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(u, connect_args=connect_args, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kw.setdefault("pool_pre_ping", True)
    if u.get_backend_name() == "postgresql":
        connect_args = dict(kw.pop("connect_args", {}) or {})
        connect_args.setdefault("connect_timeout", 5)  # a dead database must not hang a service
        kw["connect_args"] = connect_args
    return create_engine(u, **kw)


def session_factory(engine: Engine) -> sessionmaker:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


# -- migrations ------------------------------------------------------------------------------
def alembic_config(url: str) -> Any:
    """An Alembic ``Config`` for the repository's migrations, targeting ``url`` (any cwd)."""
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(ROOT / "alembic").replace("%", "%%"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logging"] = False  # the caller owns logging
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the latest)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at ``url`` to ``revision`` (default: empty schema)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)
