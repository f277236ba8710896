"""The gateway's reads and writes of the authoritative database (synchronous SQLAlchemy Core).

All writes of one step go through ``Store.write(changes)`` in one transaction: new and
changed orders, fills (idempotent by ``exec_id``), the trading state, kill-switch events,
audit rows and the outbox rows that report them — and the result of each control request
taken from the database (``control_requests``: the path that works while Redis is down;
``submit_control`` writes one, ``control_result`` reads its answer).
"""

from __future__ import annotations

import time

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from common import db
from execution.order import Order

__all__ = ["Changes", "SchemaMissing", "Snapshot", "Store", "control_result", "is_transient", "submit_control",
           "withdraw_control"]

_orders = db.Order.__table__
_fills = db.Fill.__table__
_state = db.TradingState.__table__
_kill = db.KillSwitchEvent.__table__
_audit = db.AuditLog.__table__
_outbox = db.OutboxMessage.__table__
_controls = db.ControlRequest.__table__
_risk = db.RiskOverride.__table__
_gstate = db.GatewayState.__table__

_CONTROL_RESULT_COLS = ("ts_handled", "ok", "state", "detail")
_ORDER_UPDATE_COLS = ("status", "reject_reason", "cum_qty", "avg_px", "fees", "ts_accepted", "ts_done")


class SchemaMissing(Exception):
    """The database has not been migrated (run ``alembic upgrade head``)."""


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "the database is not reachable right now" (retry)."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass
class Changes:
    """The writes of one transaction."""

    new_orders: dict[str, Order] = field(default_factory=dict)
    changed_orders: dict[str, Order] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    trading_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # scope -> row
    kill_events: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    outbox_delete_upto: int | None = None
    # control_requests rows handled by this transaction: {id, ts_handled, ok, state, detail}
    control_results: list[dict[str, Any]] = field(default_factory=list)
    # gateway_state values written by this transaction, by key
    gateway_state: dict[str, Any] = field(default_factory=dict)
    # risk limit overrides set (the row) or removed (None) by this transaction, by key
    risk_overrides: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def order_changed(self, order: Order) -> None:
        if order.client_order_id not in self.new_orders:
            self.changed_orders[order.client_order_id] = order

    def __bool__(self) -> bool:
        return bool(
            self.new_orders or self.changed_orders or self.fills or self.trading_states or self.kill_events
            or self.audit or self.outbox or self.outbox_delete_upto is not None or self.control_results
            or self.risk_overrides or self.gateway_state
        )


@dataclass
class Snapshot:
    """What the gateway rebuilds its memory from on start."""

    trading_state: dict[str, Any] | None  # the global scope's row
    open_orders: list[Order]
    fills: list[tuple[str, int, Decimal, Decimal, Decimal]]
    outbox_max_seq: int
    recent_ids: list[str]
    trading_states: list[dict[str, Any]] = field(default_factory=list)  # every scope's row
    risk_overrides: dict[str, str] = field(default_factory=dict)  # dotted risk key -> value
    gateway_state: dict[str, Any] = field(default_factory=dict)  # key -> value (JSON)


class Store:
    """Database access of the gateway; one instance per process, no global session."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    # -- reads -------------------------------------------------------------------------
    def check_schema(self) -> None:
        names = set(sa.inspect(self.engine).get_table_names())
        missing = [t for t in ("orders", "fills", "trading_state", "kill_switch_events", "audit_log", "outbox",
                               "control_requests", "risk_overrides", "gateway_state") if t not in names]
        if missing:
            raise SchemaMissing(
                f"database not migrated (missing tables {missing}); run scripts/run_migrations.sh "
                "or `python -m alembic -c alembic.ini upgrade head`"
            )

    def snapshot(self, scope: str, recent_ids: int) -> Snapshot:
        with self.engine.connect() as c:
            states = [dict(r) for r in c.execute(sa.select(_state).order_by(_state.c.scope)).mappings()]
            st = next((r for r in states if r["scope"] == scope), None)
            rows = c.execute(
                sa.select(_orders).where(_orders.c.status.in_(db.OPEN_STATUSES)).order_by(_orders.c.id)
            ).mappings().all()
            counts: dict[str, int] = {}
            if rows:
                cids = [r["client_order_id"] for r in rows]
                for i in range(0, len(cids), 500):
                    q = (
                        sa.select(_fills.c.client_order_id, sa.func.count())
                        .where(_fills.c.client_order_id.in_(cids[i : i + 500]))
                        .group_by(_fills.c.client_order_id)
                    )
                    counts.update({cid: int(n) for cid, n in c.execute(q)})
            fills = [
                (r.symbol, int(r.side), r.qty, r.price, r.fee)
                for r in c.execute(
                    sa.select(_fills.c.symbol, _fills.c.side, _fills.c.qty, _fills.c.price, _fills.c.fee)
                    .order_by(_fills.c.id)
                )
            ]
            max_seq = c.execute(sa.select(sa.func.max(_outbox.c.seq))).scalar() or 0
            overrides = {k: v for k, v in c.execute(sa.select(_risk.c.key, _risk.c.value))}
            gstate = {k: v for k, v in c.execute(sa.select(_gstate.c.key, _gstate.c.value))}
            recent = list(
                c.execute(
                    sa.select(_orders.c.client_order_id).order_by(_orders.c.id.desc()).limit(recent_ids)
                ).scalars()
            )
        return Snapshot(
            trading_state=st,
            open_orders=[Order.from_row(dict(r), counts.get(r["client_order_id"], 0)) for r in rows],
            fills=fills,
            outbox_max_seq=int(max_seq),
            recent_ids=recent[::-1],
            trading_states=states,
            risk_overrides=overrides,
            gateway_state=gstate,
        )

    def existing(self, cids: list[str]) -> dict[str, Order]:
        """The orders of those of ``cids`` that already have an order row (as they are now)."""
        found: dict[str, Order] = {}
        if not cids:
            return found
        with self.engine.connect() as c:
            for i in range(0, len(cids), 500):
                q = sa.select(_orders).where(_orders.c.client_order_id.in_(cids[i : i + 500]))
                for r in c.execute(q).mappings():
                    found[r["client_order_id"]] = Order.from_row(dict(r))
        return found

    def exec_ids(self, cids: list[str]) -> set[str]:
        """The exec ids of the recorded fills of ``cids``."""
        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(cids), 500):
                q = sa.select(_fills.c.exec_id).where(_fills.c.client_order_id.in_(cids[i : i + 500]))
                out.update(c.execute(q).scalars())
        return out

    def outbox_after(self, seq: int) -> list[tuple[int, str, bytes]]:
        with self.engine.connect() as c:
            q = sa.select(_outbox.c.seq, _outbox.c.stream, _outbox.c.payload).where(_outbox.c.seq > seq)
            return [(int(s), st, bytes(p)) for s, st, p in c.execute(q.order_by(_outbox.c.seq))]

    def pending_controls(self, limit: int = 100) -> list[dict[str, Any]]:
        """Control requests not handled yet, oldest first."""
        with self.engine.connect() as c:
            q = sa.select(_controls).where(_controls.c.ts_handled.is_(None)).order_by(_controls.c.id).limit(limit)
            return [dict(r) for r in c.execute(q).mappings()]

    def iter_orders(self) -> Iterator[dict[str, Any]]:
        with self.engine.connect() as c:
            yield from (dict(r) for r in c.execute(sa.select(_orders).order_by(_orders.c.id)).mappings())

    # -- writes ------------------------------------------------------------------------
    def ensure_trading_state(self, row: dict[str, Any]) -> dict[str, Any]:
        """The persisted state of ``row['scope']``, inserting ``row`` when there is none."""
        with self.engine.begin() as c:
            st = c.execute(sa.select(_state).where(_state.c.scope == row["scope"])).mappings().first()
            if st is not None:
                return dict(st)
            c.execute(_state.insert().values(**row))
            return dict(row)

    def _insert_ignore(self, table: sa.Table, key: str) -> Any:
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self._dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - only PostgreSQL and SQLite are supported
            return table.insert()
        return insert(table).on_conflict_do_nothing(index_elements=[key])

    def write(self, ch: Changes) -> None:
        """Apply ``ch`` in one transaction (all of it or none of it)."""
        if not ch:
            return
        with self.engine.begin() as c:
            if ch.new_orders:
                c.execute(_orders.insert(), [o.row() for o in ch.new_orders.values()])
            if ch.changed_orders:
                stmt = (
                    _orders.update()
                    .where(_orders.c.client_order_id == sa.bindparam("b_cid"))
                    .values({k: sa.bindparam(f"b_{k}") for k in _ORDER_UPDATE_COLS})
                )
                rows = []
                for o in ch.changed_orders.values():
                    r = o.row()
                    rows.append({"b_cid": o.client_order_id, **{f"b_{k}": r[k] for k in _ORDER_UPDATE_COLS}})
                c.execute(stmt, rows)
            if ch.fills:
                c.execute(self._insert_ignore(_fills, "exec_id"), ch.fills)
            for row in ch.trading_states.values():
                res = c.execute(
                    _state.update().where(_state.c.scope == row["scope"]).values(
                        {k: v for k, v in row.items() if k != "scope"}
                    )
                )
                if res.rowcount == 0:
                    c.execute(_state.insert().values(**row))
            if ch.kill_events:
                c.execute(_kill.insert(), ch.kill_events)
            if ch.audit:
                c.execute(_audit.insert(), ch.audit)
            if ch.outbox_delete_upto is not None:
                c.execute(_outbox.delete().where(_outbox.c.seq <= ch.outbox_delete_upto))
            if ch.outbox:
                c.execute(_outbox.insert(), ch.outbox)
            for key, value in ch.gateway_state.items():
                c.execute(_gstate.delete().where(_gstate.c.key == key))
                c.execute(_gstate.insert().values(key=key, value=value, ts=time.time_ns()))
            for key, row in ch.risk_overrides.items():
                c.execute(_risk.delete().where(_risk.c.key == key))
                if row is not None:
                    c.execute(_risk.insert().values(**row))
            if ch.control_results:
                stmt = (
                    _controls.update()
                    .where(_controls.c.id == sa.bindparam("b_id"), _controls.c.ts_handled.is_(None))
                    .values({k: sa.bindparam(f"b_{k}") for k in _CONTROL_RESULT_COLS})
                )
                c.execute(stmt, [{f"b_{k}": r[k] for k in ("id", *_CONTROL_RESULT_COLS)} for r in ch.control_results])


# -- control requests through the database (the CLI's side) -------------------------------
def submit_control(engine: Engine, ctl: Any) -> int:
    """Write ``ctl`` (a ``common.messages.Control``) as an unhandled control request; its row id."""
    with engine.begin() as c:
        res = c.execute(_controls.insert().values(
            request_id=ctl.request_id, command=ctl.command, scope=ctl.scope, reason=ctl.reason, actor=ctl.actor,
            args=dict(ctl.args), ts_requested=ctl.ts or 0,
        ))
        return int(res.inserted_primary_key[0])


def withdraw_control(engine: Engine, request_id: str) -> bool:
    """Delete the control request ``request_id`` if no gateway has handled it yet; whether it was."""
    with engine.begin() as c:
        res = c.execute(_controls.delete().where(_controls.c.request_id == request_id,
                                                 _controls.c.ts_handled.is_(None)))
        return res.rowcount > 0


def control_result(engine: Engine, request_id: str) -> dict[str, Any] | None:
    """The control request ``request_id`` as it is now (``ts_handled`` None until the gateway took it)."""
    with engine.connect() as c:
        row = c.execute(sa.select(_controls).where(_controls.c.request_id == request_id)).mappings().first()
        return dict(row) if row is not None else None
