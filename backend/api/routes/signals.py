"""``GET /signals`` (viewer and up): the pattern engine's recent signals, read from ``pe:signals``.

The stream is the record (signals are not stored in the database): it holds the last
``AITRADER_STREAM_MAXLEN`` entries or so. Entries are read newest first, decoded with the
wire decoder; an entry that does not decode as a ``Signal`` is skipped (it was dead-lettered
downstream). With a filter, at most ``SCAN_LIMIT`` entries are looked at, so a filter that
matches nothing recent answers quickly with fewer rows than asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError
from backend.api.schemas import NAME_PATTERN, SYMBOL_PATTERN
from common import streams
from common.bus import DATA_FIELD, BusUnavailable, connect
from common.messages import DecodeError, Signal, decode_as

__all__ = ["SCAN_LIMIT", "SignalOut", "router"]

SCAN_LIMIT = 20_000  # entries looked at per request when filtering
_PAGE = 500

router = APIRouter(tags=["signals"])


class SignalOut(BaseModel):
    id: str = Field(description="the entry's id in pe:signals (milliseconds-sequence)")
    signal_id: str
    symbol: str
    detector: str
    side: Literal["BUY", "SELL"]
    strength: float = Field(description="the detector's score")
    price: float = Field(description="reference price at detection (last trade or mid)")
    volatility: float = Field(description="per-tick realised volatility at detection (price units)")
    tick_seq: int
    ts_event: int = Field(description="exchange time of the tick that caused it (ns since the epoch)")
    ts_ingest: int
    ts_signal: int = Field(description="when the pattern engine emitted it (ns since the epoch)")
    model_id: str
    model_version: str


def _out(entry_id: bytes, s: Signal) -> dict[str, Any]:
    return {"id": entry_id.decode(), "signal_id": s.signal_id, "symbol": s.symbol, "detector": s.detector,
            "side": "BUY" if s.side > 0 else "SELL", "strength": s.strength, "price": s.price,
            "volatility": s.volatility, "tick_seq": s.tick_seq, "ts_event": s.ts_event, "ts_ingest": s.ts_ingest,
            "ts_signal": s.ts_signal, "model_id": s.model_id, "model_version": s.model_version}


async def recent_signals(redis_url: str, *, symbol: str | None, detector: str | None, limit: int) -> list[dict]:
    """The newest ``limit`` signals matching the filters (``BusUnavailable`` when Redis does not answer)."""
    r = connect(redis_url, socket_connect_timeout=2, socket_timeout=5)
    out: list[dict[str, Any]] = []
    scanned = 0
    top = "+"
    try:
        while len(out) < limit and scanned < SCAN_LIMIT:
            page = _PAGE if (symbol or detector) else min(_PAGE, limit - len(out))
            entries = await r.xrevrange(streams.SIGNALS, max=top, min="-", count=page)
            if not entries:
                break
            for entry_id, fields in entries:
                scanned += 1
                try:
                    s = decode_as(fields.get(DATA_FIELD, b""), Signal)
                except DecodeError:
                    continue
                if (symbol is None or s.symbol == symbol) and (detector is None or s.detector == detector):
                    out.append(_out(entry_id, s))
                    if len(out) == limit:
                        break
            top = "(" + entries[-1][0].decode()
            if len(entries) < page:
                break
    finally:
        await r.aclose()
    return out


@router.get("/signals", response_model=list[SignalOut], responses={503: {"description": "Redis unreachable"}},
            summary="Recent signals from pe:signals, newest first (viewer)")
async def signals(
    _caller: Annotated[Caller, Depends(require("viewer"))],
    ctx: Annotated[ApiContext, Depends(context)],
    symbol: Annotated[str | None, Query(pattern=SYMBOL_PATTERN, max_length=64, description="only this symbol")] = None,
    detector: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=64,
                                          description="only this detector")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many signals, newest first")] = 50,
) -> list[dict[str, Any]]:
    try:
        return await recent_signals(ctx.common.redis_url, symbol=symbol, detector=detector, limit=limit)
    except BusUnavailable as e:
        raise ApiError(503, f"redis unavailable: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") \
            from e
