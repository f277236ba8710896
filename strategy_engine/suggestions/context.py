"""The context a suggestion is made from: the broker account over MCP and the recent signals, compact.

Only read tools are ever called (``READ_TOOLS``): ``ReadOnlyBroker`` refuses any other
name, so no path leads from a suggestion to ``place_order``. Recent signals are the last
``max_signals`` entries of ``pe:signals`` (``XREVRANGE``), summarised per symbol.
Numbers are decimal strings (exact), weights and percentages rounded to 4 places. The
digest is the SHA-256 of the context's canonical JSON: the same digest, the same input.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from common import streams
from common.bus import DATA_FIELD
from common.messages import Side, Signal, decode_as
from strategy_engine.account import AccountSnapshot, SnapshotError
from strategy_engine.mcp_client import BrokerError, McpBrokerClient

__all__ = ["READ_TOOLS", "ReadOnlyBroker", "build_context", "compact_account", "digest", "summarise_signals"]

READ_TOOLS = frozenset({"get_profile", "get_margins", "get_positions", "get_holdings"})
MAX_SIGNAL_SYMBOLS = 25
_Q4 = Decimal("0.0001")
ZERO = Decimal(0)


class ReadOnlyBroker:
    """The broker's MCP client, reduced to the read tools."""

    def __init__(self, client: McpBrokerClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"ReadOnlyBroker({self._client!r})"

    async def read(self, tools: Iterable[str]) -> list[Any]:
        names = list(tools)
        bad = [t for t in names if t not in READ_TOOLS]
        if bad:
            raise PermissionError(f"suggestions may only read the account; refused {', '.join(bad)}")
        return await self._client.call_many([(t, {}) for t in names])

    async def account(self) -> dict[str, Any]:
        """The account as the context holds it (``BrokerUnavailable`` / ``BrokerError`` from the client)."""
        margins, positions, holdings = await self.read(("get_margins", "get_positions", "get_holdings"))
        try:
            return compact_account(margins, positions, holdings)
        except SnapshotError as e:
            raise BrokerError(f"{self._client.url}: {e}") from e


def _s(d: Decimal) -> str:
    """Exact, without an exponent or trailing zeros."""
    if d == 0:
        return "0"
    t = format(d.normalize(), "f")
    return t.rstrip("0").rstrip(".") if "." in t else t


def _num(row: Mapping[str, Any], key: str) -> Decimal:
    v = row.get(key)
    if v in (None, ""):
        return ZERO
    d = Decimal(str(v))
    if not d.is_finite():
        raise SnapshotError(f"{key}: not finite")
    return d


def compact_account(margins: Any, positions: Any, holdings: Any) -> dict[str, Any]:
    """Kite-shaped ``get_margins`` / ``get_positions`` / ``get_holdings`` answers → cash, equity and one row
    per symbol (quantity, average price, last price, value, weight of equity, unrealised P&L and %)."""
    snap = AccountSnapshot.from_kite(margins, positions, holdings)  # checks the shapes, computes equity
    per: dict[str, dict[str, Any]] = {}
    rows = [("position", r) for r in (positions or {}).get("net") or []] + [("holding", r) for r in holdings or []]
    for kind, r in rows:
        sym = str(r["tradingsymbol"])
        q = _num(r, "quantity")
        if not q:
            continue
        p = per.setdefault(sym, {"qty": ZERO, "cost": ZERO, "products": set()})
        p["qty"] += q
        p["cost"] += q * _num(r, "average_price")
        p["products"].add(str(r.get("product") or ("CNC" if kind == "holding" else "")))
    out = []
    equity = snap.equity
    for sym in sorted(per):
        p = per[sym]
        q = p["qty"]
        if not q:
            continue
        avg = p["cost"] / q
        last = snap.prices.get(sym, avg)
        value = q * last
        pnl = (last - avg) * q
        cost = abs(q * avg)
        out.append({
            "symbol": sym,
            "quantity": _s(q),
            "average_price": _s(avg.quantize(Decimal("1e-8"))),
            "last_price": _s(last),
            "value": _s(value.quantize(Decimal("0.01"))),
            "weight": _s((abs(value) / equity).quantize(_Q4)) if equity > 0 else None,
            "unrealised_pnl": _s(pnl.quantize(Decimal("0.01"))),
            "unrealised_pct": _s((pnl / cost * 100).quantize(Decimal("0.01"))) if cost else "0",
            "products": sorted(x for x in p["products"] if x),
        })
    out.sort(key=lambda r: (-abs(Decimal(r["value"])), r["symbol"]))
    return {"cash": _s(snap.cash), "available": _s(snap.available), "equity": _s(snap.equity), "positions": out}


def summarise_signals(entries: Iterable[tuple[Any, Mapping[Any, Any]]], now_ns: int) -> dict[str, Any]:
    """``XREVRANGE`` entries of ``pe:signals`` (newest first) → counts per symbol, most active first."""
    read = bad = 0
    per: dict[str, dict[str, Any]] = {}
    for _eid, fields in entries:
        read += 1
        raw = fields.get(DATA_FIELD, fields.get(DATA_FIELD.decode())) if fields else None
        try:
            sig = decode_as(raw, Signal) if isinstance(raw, bytes) else None
        except msgspec.DecodeError:
            sig = None
        if sig is None:
            bad += 1
            continue
        p = per.setdefault(sig.symbol, {"n": 0, "buy": 0, "sell": 0, "det": set(), "sum": 0.0, "max": 0.0,
                                        "last_ts": 0, "last_px": 0.0})
        p["n"] += 1
        p["buy" if sig.side == Side.BUY else "sell"] += 1
        p["det"].add(sig.detector)
        p["sum"] += sig.strength
        p["max"] = max(p["max"], sig.strength)
        if sig.ts_signal >= p["last_ts"]:
            p["last_ts"], p["last_px"] = sig.ts_signal, sig.price
    by_symbol = []
    for sym, p in per.items():
        by_symbol.append({
            "symbol": sym,
            "count": p["n"],
            "buys": p["buy"],
            "sells": p["sell"],
            "net": round((p["buy"] - p["sell"]) / p["n"], 4),  # +1 all buys ... -1 all sells
            "detectors": sorted(p["det"]),
            "mean_strength": round(p["sum"] / p["n"], 4),
            "max_strength": round(p["max"], 4),
            "last_price": p["last_px"],
            "last_age_s": round(max(now_ns - p["last_ts"], 0) / 1e9, 1),
        })
    by_symbol.sort(key=lambda r: (-r["count"], r["symbol"]))
    return {"read": read, "undecodable": bad, "symbols": len(by_symbol), "by_symbol": by_symbol[:MAX_SIGNAL_SYMBOLS]}


async def recent_signals(redis_url: str, limit: int, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """The summary of the last ``limit`` signals; ``{"error": ...}`` when Redis does not answer (signals are
    secondary: a run without them says so in its context)."""
    import redis.asyncio as aioredis

    if limit <= 0:
        return summarise_signals([], time.time_ns())
    r = aioredis.Redis.from_url(redis_url, decode_responses=False, socket_connect_timeout=timeout_s,
                                socket_timeout=timeout_s)
    try:
        entries = await r.xrevrange(streams.SIGNALS, count=limit)
    except Exception as e:  # noqa: BLE001 - any Redis failure leaves the run without signals, said plainly
        return {"error": f"recent signals unavailable: {type(e).__name__}: {str(e)[:200]}", "by_symbol": []}
    finally:
        await r.aclose()
    return summarise_signals(entries, time.time_ns())


async def build_context(broker: ReadOnlyBroker, redis_url: str, max_signals: int) -> dict[str, Any]:
    """The account (required: broker errors propagate) and the recent signals, stamped with the time."""
    account = await broker.account()
    signals = await recent_signals(redis_url, max_signals)
    return {"as_of": datetime.now(UTC).isoformat(timespec="seconds"), "account": account, "signals": signals}


def digest(context: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``context``."""
    return hashlib.sha256(json.dumps(context, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
