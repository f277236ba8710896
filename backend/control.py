"""The control path to the execution gateway, shared by the CLI and the API.

A ``Control`` (``kill.engage``, ``kill.release``, ``order.cancel`` …) goes on ``ctl:commands``
and the gateway answers with a ``ControlAck`` on ``ctl:acks``; when Redis is unreachable (or
always, with ``via="db"``) it is written as a ``control_requests`` row instead, and the row,
filled in by the gateway, is the answer. ``send`` picks the path and says which it took.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from common import streams
from common.bus import connect
from common.config import CommonSettings
from common.messages import Control, ControlAck, decode_as, encode

__all__ = ["VIAS", "ControlOutcome", "make_control", "send", "send_via_bus", "send_via_db", "trading_states"]

VIAS = ("auto", "bus", "db")
Failure = Literal["", "no_answer", "unreachable"]


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    """What became of one command: the gateway's ``ack``, or None and why (``failure``, ``error``).

    ``path`` is ``bus`` or ``database`` (with ``: <why>`` when the bus was tried first and
    Redis did not answer). ``failure`` is ``no_answer`` (the gateway did not answer in time)
    or ``unreachable`` (neither Redis nor, on the database path, the database answered)."""

    ack: ControlAck | None
    path: str
    error: str = ""
    failure: Failure = ""

    @property
    def via(self) -> str:
        """The path without its explanation: ``bus`` or ``database``."""
        return self.path.split(":", 1)[0]


def make_control(command: str, reason: str, scope: str, actor: str, args: dict[str, str] | None = None) -> Control:
    """A new ``Control`` with a fresh request id, stamped now."""
    return Control(
        request_id=uuid.uuid4().hex,
        command=command,
        scope=scope,
        reason=reason,
        actor=actor,
        args=args or {},
        ts=time.time_ns(),
    )


async def send_via_bus(redis_url: str, req: Control, timeout_s: float) -> ControlAck | None:
    """``req`` on ``ctl:commands``; the gateway's ack, or None after ``timeout_s``. Raises if Redis is unreachable."""
    r = connect(redis_url, socket_connect_timeout=3)
    try:
        last = await r.xrevrange(streams.CONTROL_ACKS, count=1)
        cursor = last[0][0] if last else b"0-0"
        await r.xadd(streams.CONTROL, {b"d": encode(req)}, maxlen=100_000, approximate=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            resp = await r.xread({streams.CONTROL_ACKS: cursor}, count=100, block=200)
            for _stream, items in resp or []:
                for eid, fields in items:
                    cursor = eid
                    try:
                        ack = decode_as(fields.get(b"d", b""), ControlAck)
                    except Exception:  # noqa: BLE001, S112 - someone else's garbage is not our answer
                        continue
                    if ack.request_id == req.request_id:
                        return ack
        return None
    finally:
        await r.aclose()


def send_via_db(db_url: str, req: Control, timeout_s: float) -> ControlAck | None:
    """``req`` as a ``control_requests`` row; its result once the gateway handled it, or None.

    Needs only the database. Unanswered within ``timeout_s`` (no gateway running), the row is
    withdrawn so that a gateway started later does not carry out a stale command."""
    from common.db import make_engine
    from execution.store import control_result, submit_control, withdraw_control

    eng = make_engine(db_url)
    try:
        submit_control(eng, req)
        deadline = time.monotonic() + timeout_s
        while True:
            row = control_result(eng, req.request_id)
            if row is not None and row["ts_handled"] is not None:
                break
            if time.monotonic() >= deadline:
                if withdraw_control(eng, req.request_id):
                    return None
                row = control_result(eng, req.request_id)  # handled while we gave up: the answer stands
                break
            time.sleep(0.02)
    finally:
        eng.dispose()
    assert row is not None
    return ControlAck(request_id=req.request_id, service="execution", ok=bool(row["ok"]), state=row["state"] or "",
                      detail=row["detail"] or "", ts=int(row["ts_handled"]))


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__


def send(common: CommonSettings, req: Control, via: str = "auto", timeout_s: float = 5.0) -> ControlOutcome:
    """Send ``req`` by the bus (``via="bus"``), the database (``"db"``) or the bus with the database
    as fallback when Redis is unreachable (``"auto"``). Blocks up to about ``timeout_s``;
    call it from a thread, not from a running event loop."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {VIAS}, not {via!r}")
    why = ""
    if via in ("auto", "bus"):
        try:
            ack = asyncio.run(send_via_bus(common.redis_url, req, timeout_s))
            return ControlOutcome(ack, "bus", "" if ack else "no answer from the execution gateway",
                                  "" if ack else "no_answer")
        except (OSError, RedisError) as e:
            if via == "bus":
                return ControlOutcome(None, "bus", f"redis unreachable: {e}", "unreachable")
            why = f"redis unreachable ({_first_line(e)})"
    path = "database" + (f": {why}" if why else "")
    import sqlalchemy as sa  # only on the database path: importing it costs the bus path ~0.1 s

    try:
        ack = send_via_db(common.db_url, req, timeout_s)
    except sa.exc.SQLAlchemyError as e:
        return ControlOutcome(None, path, f"database error: {_first_line(e)}", "unreachable")
    if ack is None:
        return ControlOutcome(None, path, "no answer from the execution gateway (request withdrawn)", "no_answer")
    return ControlOutcome(ack, path)


def trading_states(engine: Any) -> list[dict[str, Any]]:
    """Every scope's persisted trading state (``trading_state`` rows), by scope. Raises ``SQLAlchemyError``."""
    import sqlalchemy as sa

    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT scope, state, reason, actor, changed_at FROM trading_state ORDER BY scope")
        ).all()
    return [{"scope": r[0], "state": r[1], "reason": r[2] or "", "actor": r[3] or "",
             "changed_at": int(r[4]) if r[4] is not None else None} for r in rows]
