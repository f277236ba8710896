"""Read-only views of the authoritative database for operators: orders, fills, positions.

The CLI (``aitrader orders|fills|positions``) prints them; the API reuses the same
functions. Every function takes a SQLAlchemy engine and returns plain dicts whose money
and quantities are ``Decimal`` (exact, as stored). ``open_database`` gives an engine for a
database that exists and is migrated, or raises ``ViewError`` with one line saying why not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from backend.report import positions_from_fills
from common import db

__all__ = [
    "ViewError",
    "fmt_decimal",
    "fmt_ts",
    "list_fills",
    "list_orders",
    "open_database",
    "positions",
    "read_marks",
    "risk_limits",
    "risk_overrides",
]

_orders = db.Order.__table__
_fills = db.Fill.__table__
_ZERO = Decimal(0)
_TABLES = ("orders", "fills", "trading_state", "kill_switch_events", "audit_log")


class ViewError(Exception):
    """The database cannot be read (absent, unreachable or not migrated): one line for the operator."""


def open_database(url: str) -> Engine:
    """An engine for ``url`` once it is known to answer and to hold the schema."""
    u = make_url(db.normalize_url(url))
    if u.get_backend_name() == "sqlite":
        name = u.database or ""
        # Connecting would create an empty file (and its folder): say it is missing instead.
        if name and name != ":memory:" and not name.startswith("file:") and not Path(name).is_file():
            raise ViewError(f"no database at {name}: start the pipeline or run scripts/run_migrations.sh first")
    engine = db.make_engine(url)
    try:
        names = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as e:
        engine.dispose()
        first = str(e.orig if getattr(e, "orig", None) is not None else e).strip().splitlines()
        raise ViewError(f"database unreachable ({u.render_as_string(hide_password=True)}): "
                        f"{first[0] if first else type(e).__name__}") from e
    missing = [t for t in _TABLES if t not in names]
    if missing:
        engine.dispose()
        raise ViewError(f"database not migrated (missing tables {', '.join(missing)}): run scripts/run_migrations.sh")
    return engine


def fmt_decimal(d: Decimal | None) -> str:
    """The exact value without trailing zeros or an exponent ("-" for None)."""
    if d is None:
        return "-"
    if d == _ZERO:
        return "0"
    return format(d.normalize(), "f")


def get_order(engine: Engine, client_order_id: str) -> dict[str, Any] | None:
    """One order by its client order id (as ``list_orders`` shows it), or None."""
    rows = list_orders(engine, client_order_id=client_order_id, limit=1)
    return rows[0] if rows else None


def fmt_ts(ns: int | None) -> str:
    """Nanoseconds since the epoch as UTC ``YYYY-MM-DD HH:MM:SS.mmm`` ("-" for None/0)."""
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _side(v: int) -> str:
    return "BUY" if int(v) > 0 else "SELL"


def _newest(engine: Engine, q: sa.Select, id_col: sa.Column, limit: int | None) -> list[Any]:
    """The rows of ``q``, newest (highest ``id_col``) first, at most ``limit`` (0/None: all)."""
    q = q.order_by(id_col.desc())
    if limit:
        q = q.limit(limit)
    with engine.connect() as c:
        return list(c.execute(q).mappings().all())


def list_orders(
    engine: Engine,
    *,
    open_only: bool = False,
    symbol: str | None = None,
    strategy: str | None = None,
    limit: int | None = 50,
    client_order_id: str | None = None,
) -> list[dict[str, Any]]:
    """Orders, newest first, optionally only open ones / one symbol / one strategy / one client order id."""
    q = sa.select(_orders)
    if client_order_id is not None:
        q = q.where(_orders.c.client_order_id == client_order_id)
    if open_only:
        q = q.where(_orders.c.status.in_(db.OPEN_STATUSES))
    if symbol:
        q = q.where(_orders.c.symbol == symbol)
    if strategy:
        q = q.where(_orders.c.strategy == strategy)
    rows = _newest(engine, q, _orders.c.id, limit)
    return [
        {
            "id": int(r["id"]),
            "client_order_id": r["client_order_id"],
            "signal_id": r["signal_id"],
            "strategy": r["strategy"],
            "symbol": r["symbol"],
            "side": _side(r["side"]),
            "order_type": r["order_type"],
            "tif": r["tif"],
            "qty": r["qty"],
            "limit_price": r["limit_price"],
            "ref_price": r["ref_price"],
            "status": r["status"],
            "reason": r["reject_reason"] or "",
            "cum_qty": r["cum_qty"],
            "leaves_qty": (r["qty"] - r["cum_qty"]) if r["status"] in db.OPEN_STATUSES else _ZERO,
            "avg_px": r["avg_px"],
            "fees": r["fees"],
            "venue": r["venue"],
            "ts_intent": int(r["ts_intent"]),
            "ts_accepted": r["ts_accepted"],
            "ts_done": r["ts_done"],
        }
        for r in rows
    ]


def list_fills(engine: Engine, *, symbol: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
    """Fills, newest first, optionally of one symbol."""
    q = sa.select(_fills, _orders.c.strategy).join(
        _orders, _orders.c.client_order_id == _fills.c.client_order_id
    )
    if symbol:
        q = q.where(_fills.c.symbol == symbol)
    rows = _newest(engine, q, _fills.c.id, limit)
    return [
        {
            "id": int(r["id"]),
            "exec_id": r["exec_id"],
            "client_order_id": r["client_order_id"],
            "strategy": r["strategy"],
            "symbol": r["symbol"],
            "side": _side(r["side"]),
            "qty": r["qty"],
            "price": r["price"],
            "fee": r["fee"],
            "liquidity": r["liquidity"],
            "venue": r["venue"],
            "venue_trade_id": r["venue_trade_id"],
            "ts_exec": int(r["ts_exec"]),
        }
        for r in rows
    ]


def read_marks(redis_url: str, timeout_s: float = 1.0) -> dict[str, Decimal] | None:
    """The gateway's last reference price per symbol (``ex:marks``), or None when Redis does not answer."""
    import redis

    from common import streams

    r = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        raw = r.hgetall(streams.MARKS)
    except (redis.RedisError, OSError):
        return None
    finally:
        r.close()
    return {k.decode(): Decimal(v.decode()) for k, v in raw.items()}


def positions(engine: Engine, marks: dict[str, Decimal] | None = None) -> list[dict[str, Any]]:
    """Per symbol with fills: net qty, average cost, realised P&L (gross of fees), fees, mark, unrealised.

    ``mark`` and ``unrealized_pnl`` are None where no mark is known (``marks`` None: Redis
    unreachable). Average cost and P&L are exact to the database's 10 decimals.
    """
    with engine.connect() as c:
        rows = c.execute(
            sa.select(_fills.c.symbol, _fills.c.side, _fills.c.qty, _fills.c.price, _fills.c.fee)
            .order_by(_fills.c.ts_exec, _fills.c.id)
        ).all()
    book = positions_from_fills([(s, int(side), q, p) for s, side, q, p, _f in rows])
    fees: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for s, _side_, _q, _p, f in rows:
        fees[s] = fees.get(s, _ZERO) + f
        counts[s] = counts.get(s, 0) + 1
    out = []
    for sym in sorted(book):
        p = book[sym]
        mark = (marks or {}).get(sym)
        avg = p.avg_px.quantize(db.AMOUNT_SCALE)
        upnl = None if mark is None else ((mark - p.avg_px) * p.qty).quantize(db.AMOUNT_SCALE)
        out.append({
            "symbol": sym,
            "qty": p.qty,
            "avg_px": avg,
            "realized_pnl": p.realized.quantize(db.AMOUNT_SCALE),
            "fees": fees[sym],
            "fills": counts[sym],
            "mark": mark,
            "unrealized_pnl": upnl,
        })
    return out


# -- risk limits ----------------------------------------------------------------------------
def risk_overrides(engine: Engine) -> list[dict[str, Any]]:
    """The ``risk_overrides`` rows (the limits changed while running), oldest change first."""
    t = db.RiskOverride.__table__
    with engine.connect() as c:
        return [dict(r) for r in c.execute(sa.select(t).order_by(t.c.ts)).mappings()]


def risk_limits(risk_file: Path | str, engine: Engine | None) -> dict[str, Any]:
    """The limits in force: the risk file with the changes stored in the database applied.

    ``changes`` lists those changes (who, when, why); when the database cannot say (``engine``
    None or an error), ``changes_unknown`` says why and the file's limits are shown. Raises
    ``ConfigError`` (naming the key) when the file, or a stored change, is not valid.
    """
    from common.config import ConfigError
    from execution.risk import LIMIT_KEYS, RiskConfig

    base = RiskConfig.load(risk_file)
    rows: list[dict[str, Any]] | None = None
    why = "no database"
    if engine is not None:
        try:
            rows = risk_overrides(engine)
        except sa.exc.SQLAlchemyError as e:
            why = str(e).splitlines()[0][:200]
    try:
        cfg = base.with_overrides({r["key"]: r["value"] for r in rows or []})
    except ConfigError as e:
        raise ConfigError(f"a change stored in the database is not valid: {str(e).splitlines()[0]}") from e
    limits = cfg.as_dict()
    defaults = limits["defaults"]
    return {
        "risk_file": str(risk_file),
        **limits,
        "overrides": {s: [k for k in LIMIT_KEYS if v[k] != defaults[k]] for s, v in limits["symbols"].items()},
        "changes": [{"key": r["key"], "value": r["value"], "actor": r["actor"], "reason": r["reason"],
                     "changed_at": fmt_ts(r["ts"])} for r in rows or []],
        "changes_unknown": None if rows is not None else why,
    }

