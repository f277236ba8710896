"""Strategy switches that survive a restart: the ``strategy_switches`` table and its audit rows.

``aitrader strategies enable|disable NAME --reason R`` writes the row (and an
``audit_log`` row, in one transaction) and then sends a ``Control`` ``strategy.enable`` /
``strategy.disable`` (scope ``strategy:<name>``) on ``ctl:commands``; the running strategy
engine applies it at once and acks on ``ctl:acks``. On start the engine reads every row
over the file's ``enabled`` (``load_switches``). If the database cannot be read then, it
falls back to the last switches it published in Redis (``se:strategy_state``) and says
so in its heartbeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["STRATEGY_COMMANDS", "load_switches", "save_switch", "switch_rows"]

STRATEGY_COMMANDS = ("strategy.enable", "strategy.disable")


def _sqlite_missing(url: str) -> bool:
    """A SQLite URL whose file does not exist: nothing was ever persisted (and reading must not create it)."""
    if not url.startswith("sqlite:///"):
        return False
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return path not in ("", ":memory:") and not Path(path).exists()


def switch_rows(engine: Any) -> list[dict[str, Any]]:
    """Every persisted switch, by name. Raises ``SQLAlchemyError`` (e.g. the table is missing)."""
    import sqlalchemy as sa

    from common.db import StrategySwitch

    with engine.connect() as c:
        rows = c.execute(sa.select(StrategySwitch).order_by(StrategySwitch.name)).all()
    return [
        {"name": r.name, "enabled": bool(r.enabled), "actor": r.actor, "reason": r.reason,
         "request_id": r.request_id, "ts": int(r.ts)}
        for r in rows
    ]


def load_switches(db_url: str) -> dict[str, bool]:
    """``{name: enabled}`` of the persisted switches ({} when the SQLite file does not exist yet)."""
    if _sqlite_missing(db_url):
        return {}
    from common.db import make_engine

    eng = make_engine(db_url)
    try:
        return {r["name"]: r["enabled"] for r in switch_rows(eng)}
    finally:
        eng.dispose()


def save_switch(engine: Any, name: str, enabled: bool, *, actor: str, reason: str, request_id: str,
                ts: int, before: bool | None) -> None:
    """Write (upsert) one switch and its audit row in one transaction."""
    from sqlalchemy.orm import Session

    from common.db import AuditLog, StrategySwitch

    with Session(engine) as s, s.begin():
        row = s.get(StrategySwitch, name)
        if row is None:
            s.add(StrategySwitch(name=name, enabled=enabled, actor=actor, reason=reason, request_id=request_id,
                                 ts=ts))
        else:
            row.enabled, row.actor, row.reason, row.request_id, row.ts = enabled, actor, reason, request_id, ts
        s.add(AuditLog(ts=ts, actor=actor[:64], action="strategy.enable" if enabled else "strategy.disable",
                       entity="strategy", entity_id=name[:128],
                       detail={"request_id": request_id, "reason": reason, "before": before, "after": enabled}))
