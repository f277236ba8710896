"""``/ws``: the pipeline live over one WebSocket, fanned out from one Redis reader per process.

Protocol (docs/api.md, "WebSocket"). Browsers cannot set headers on a WebSocket, so the
access token comes as the ``token`` query parameter or in the first message
``{"token": "...", "channels": [...]}`` (within ``AUTH_TIMEOUT_S``). Channels: ``ticks``,
``signals``, ``orders``, ``fills``, ``pnl``, ``heartbeats``, ``alerts`` (query ``channels=a,b``
or the first message; later ``{"subscribe": [...]}`` / ``{"unsubscribe": [...]}``). Every
message to the client is ``{"channel": ..., "data": ...}``; the first is ``{"channel":
"system", "data": {"type": "welcome", ...}}``.

Close codes: 4400 a bad message or unknown channel, 4401 no, a bad or an expired token (the
socket is closed when the token expires: reconnect with a fresh one), 4403 a channel above the
caller's role, 4408 too slow, 1011 the database could not check the token.

A slow client. Each client has one writer, its sender task; uvicorn's ``send`` waits while the
socket's write buffer is above its high-water mark (64 KiB), so a client that stops reading
blocks its sender once the kernel's socket buffers and that buffer are full. The client is
dropped (4408) when its queue holds ``AITRADER_API_WS_CLIENT_QUEUE`` messages or when one send
has waited ``AITRADER_API_WS_SEND_TIMEOUT_S``: it leaves the hub at once (nothing more is
encoded for it), and the close frame goes out behind what its socket already holds, so a client
that reads again within ``CLOSE_TIMEOUT_S`` sees 4408; after that the socket is closed without it.

``Hub``: one per app. One task ``XREAD``s ``md:ticks:{*}``, ``pe:signals``, ``ex:events`` and
``sys:alerts`` from their ends and publishes to the subscribed clients; each message is
encoded once and put on every subscriber's bounded queue without waiting, so a slow client is
dropped and never blocks the others. Ticks are coalesced per symbol and flushed
``AITRADER_API_WS_TICK_RATE_HZ`` times a second (the latest of each symbol). Heartbeats (the
services' health keys) every second and P&L (``backend.views.positions``: the run report's
accounting, with the gateway's marks) every ``AITRADER_API_WS_PNL_INTERVAL_S`` are computed
only while someone listens, the P&L sent only when it changed. The P&L carries the UTC day's start
(``day_start``: the first equity any API instance computed that day, kept in Redis under
``pnl:day_start:<day>``) and ``today_pnl``, the equity now less it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from backend import views
from backend.api.deps import ApiContext, Caller, authenticate_token
from backend.api.errors import ApiError
from backend.api.users import ROLE_RANK
from common import streams
from common.bus import DATA_FIELD, BusUnavailable, connect
from common.messages import (
    DecodeError,
    ExecutionReport,
    Heartbeat,
    Signal,
    TickBatch,
    TickType,
    decode,
    decode_as,
)

__all__ = ["AUTH_TIMEOUT_S", "CHANNEL_ROLES", "CLOSE_BAD_REQUEST", "CLOSE_FORBIDDEN", "CLOSE_TIMEOUT_S",
           "CLOSE_TOO_SLOW", "CLOSE_UNAUTHORIZED", "Hub", "router"]

log = logging.getLogger(__name__)

CHANNEL_ROLES = {"ticks": "viewer", "signals": "viewer", "orders": "viewer", "fills": "viewer", "pnl": "viewer",
                 "heartbeats": "viewer", "alerts": "viewer"}
CLOSE_BAD_REQUEST, CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN, CLOSE_TOO_SLOW = 4400, 4401, 4403, 4408
CLOSE_INTERNAL = 1011
AUTH_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 10.0  # how long a close frame may wait behind a slow client's unread data
HEARTBEAT_PERIOD_S = 1.0
_READ_BLOCK_MS = 1000
_READ_COUNT = 1000
_enc = msgspec.json.Encoder()


class ClientError(Exception):
    """The client broke the protocol: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]  # a close reason is at most 123 bytes


def _fields(msg: msgspec.Struct) -> dict[str, Any]:
    # Wire structs are array-like; clients get objects (decimals as exact strings, enums as values).
    return msgspec.to_builtins({f: getattr(msg, f) for f in msg.__struct_fields__ if f != "v"})


def _tick(t: Any) -> dict[str, Any]:
    return {"symbol": t.symbol, "type": "trade" if t.type is TickType.TRADE else "quote", "price": t.price,
            "size": t.size, "bid": t.bid, "bid_size": t.bid_size, "ask": t.ask, "ask_size": t.ask_size,
            "side": t.side, "seq": t.seq, "ts_event": t.ts_event}


def _report(r: ExecutionReport) -> dict[str, Any]:
    out = _fields(r)
    out["side"] = "BUY" if r.side > 0 else "SELL"
    return out


def _signal(entry_id: bytes, s: Signal) -> dict[str, Any]:
    out = _fields(s)
    out["id"] = entry_id.decode()
    out["side"] = "BUY" if s.side > 0 else "SELL"
    return out


def _exact(v: Any) -> Any:
    return views.fmt_decimal(v) if isinstance(v, Decimal) else v


class _Client:
    __slots__ = ("caller", "channels", "dropped", "queue", "sender")

    def __init__(self, caller: Caller, channels: set[str], size: int) -> None:
        self.caller = caller
        self.channels = channels
        self.queue: asyncio.Queue[str] = asyncio.Queue(size)
        self.dropped = False
        self.sender: asyncio.Task | None = None


class Hub:
    """The process's one reader of the pipeline's streams and its fan-out to WebSocket clients."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.clients: set[_Client] = set()
        self.dropped = 0  # clients closed as too slow since start
        self.pending_ticks: dict[str, dict[str, Any]] = {}
        self._redis: Any = None
        self._tasks: list[asyncio.Task] = []
        self.last_pnl = ""  # the last pnl message sent
        self.day_start: dict[str, Any] | None = None  # today's start-of-day equity (UTC), from Redis
        self.reading = asyncio.Event()  # set once the reader knows where each stream ends

    # -- clients ------------------------------------------------------------------------
    def add(self, client: _Client) -> None:
        self.clients.add(client)
        self.catch_up(client)
        if not self._tasks:
            self._redis = connect(self.ctx.common.redis_url, socket_connect_timeout=2)
            s = self.ctx.settings
            self._tasks = [
                asyncio.create_task(self._guard(self._read, "read"), name="ws.read"),
                asyncio.create_task(self._guard(self._every(1.0 / s.ws_tick_rate_hz, self._flush_ticks), "ticks"),
                                    name="ws.ticks"),
                asyncio.create_task(self._guard(self._every(HEARTBEAT_PERIOD_S, self._heartbeats), "heartbeats"),
                                    name="ws.heartbeats"),
                asyncio.create_task(self._guard(self._every(s.ws_pnl_interval_s, self._pnl), "pnl"), name="ws.pnl"),
            ]

    def remove(self, client: _Client) -> None:
        self.clients.discard(client)

    def listening(self, channel: str) -> bool:
        return any(channel in c.channels for c in self.clients)

    def publish(self, channel: str, data: Any) -> None:
        """Queue one message for every subscriber of ``channel``; a subscriber whose queue is full is dropped."""
        subs = [c for c in self.clients if channel in c.channels]
        if not subs:
            return
        text = _enc.encode({"channel": channel, "data": data}).decode()
        for c in subs:
            try:
                c.queue.put_nowait(text)
            except asyncio.QueueFull:
                self.drop(c, "its queue filled")
                if c.sender is not None:
                    c.sender.cancel()  # the socket's handler sees it and closes with CLOSE_TOO_SLOW

    def drop(self, c: _Client, why: str) -> None:
        """Take a client that reads too slowly out of the fan-out; its handler closes it with 4408."""
        c.dropped = True
        self.clients.discard(c)
        self.dropped += 1
        log.warning("ws: %s dropped as too slow (%s): %d messages waiting", c.caller.username, why, c.queue.qsize())

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.reading.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- the pipeline -------------------------------------------------------------------
    async def _guard(self, body: Any, what: str) -> None:
        """Run ``body`` for ever; Redis or the database failing costs a pause, never the task."""
        backoff = 0.2
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the outermost loop of this task decides: pause, retry
                level = logging.WARNING if isinstance(e, BusUnavailable) else logging.ERROR
                log.log(level, "ws %s: %s: %s; retrying in %.1fs", what, type(e).__name__, e, backoff,
                        exc_info=level == logging.ERROR)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _every(self, period_s: float, fn: Any) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(period_s)
                await fn()

        return loop

    async def _ends(self, names: list[str]) -> dict[str, bytes]:
        """The last id of each stream (new entries only are sent), ``0-0`` for one that does not exist yet."""
        ids = {}
        for s in names:
            last = await self._redis.xrevrange(s, count=1)
            ids[s] = last[0][0] if last else b"0-0"
        return ids

    async def _read(self) -> None:
        ticks = [streams.ticks_stream(i) for i in range(self.ctx.common.shards)]
        ids = await self._ends([*ticks, streams.SIGNALS, streams.EXEC_EVENTS, streams.ALERTS])
        self.reading.set()
        while True:
            # one read never fills more than half a client's queue by itself
            count = max(1, min(_READ_COUNT, self.ctx.settings.ws_client_queue // 2))
            resp = await self._redis.xread(ids, count=count, block=_READ_BLOCK_MS)
            for stream, entries in resp or ():
                name = stream.decode()
                for entry_id, fields in entries:
                    ids[name] = entry_id
                    try:
                        self._dispatch(name, entry_id, fields.get(DATA_FIELD, b""))
                    except DecodeError:
                        continue  # the consumers dead-letter it; the live view skips it

    def _dispatch(self, stream: str, entry_id: bytes, data: bytes) -> None:
        if stream.startswith(streams.TICKS_PREFIX):
            if self.listening("ticks"):
                for t in decode_as(data, TickBatch).ticks:
                    self.pending_ticks[t.symbol] = _tick(t)
        elif stream == streams.SIGNALS:
            if self.listening("signals"):
                self.publish("signals", _signal(entry_id, decode_as(data, Signal)))
        elif stream == streams.EXEC_EVENTS:
            if self.listening("orders") or self.listening("fills"):
                rep = _report(decode_as(data, ExecutionReport))
                self.publish("orders", rep)
                if Decimal(rep["last_qty"]) > 0:
                    self.publish("fills", rep)
        elif stream == streams.ALERTS and self.listening("alerts"):
            msg = decode(data)
            self.publish("alerts", {"kind": type(msg).__name__, **_fields(msg)})

    async def _flush_ticks(self) -> None:
        pending, self.pending_ticks = self.pending_ticks, {}
        for tick in pending.values():
            self.publish("ticks", tick)

    async def _heartbeats(self) -> None:
        if not self.listening("heartbeats"):
            return
        keys = [k async for k in self._redis.scan_iter(match=streams.health_key("*", "*"), count=1000)]
        now = time.time_ns()
        out = []
        for raw in (await self._redis.mget(keys)) if keys else []:
            if not raw:
                continue  # expired between the scan and the read
            hb = decode_as(raw, Heartbeat)
            out.append({"service": hb.service, "instance": hb.instance, "status": hb.status, "detail": hb.detail,
                        "age_s": round((now - hb.ts) / 1e9, 3), "counters": hb.counters})
        self.publish("heartbeats", sorted(out, key=lambda h: (h["service"], h["instance"])))

    async def _pnl(self) -> None:
        # Computed while someone listens; and once the hub runs, at least once each UTC day, so the day's
        # start is taken within an interval of midnight even when no panel is open then.
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if not self.listening("pnl") and self.day_start is not None and self.day_start["day"] == today:
            return
        marks = {k.decode(): Decimal(v.decode()) for k, v in (await self._redis.hgetall(streams.MARKS)).items()}
        rows = await asyncio.to_thread(views.positions, self.ctx.engine, marks)
        realized = sum((r["realized_pnl"] for r in rows), Decimal(0))
        fees = sum((r["fees"] for r in rows), Decimal(0))
        unrealized = sum((r["unrealized_pnl"] or Decimal(0) for r in rows), Decimal(0))
        equity = realized - fees + unrealized
        start = await self._day_start(today, equity)
        data = {"realized_pnl": _exact(realized - fees), "realized_pnl_before_fees": _exact(realized),
                "fees": _exact(fees), "unrealized_pnl": _exact(unrealized), "equity": _exact(equity),
                "day_start": start, "today_pnl": _exact(equity - Decimal(start["equity"])),
                "positions": [{k: _exact(v) for k, v in r.items()} for r in rows]}
        text = _enc.encode({"channel": "pnl", "data": data}).decode()
        if text != self.last_pnl:
            self.last_pnl = text
            self.publish("pnl", data)

    async def _day_start(self, day: str, equity: Decimal) -> dict[str, Any]:
        """The day's start-of-day equity: the first this API (or another instance) computed on UTC ``day``,
        kept in Redis (``pnl:day_start:<day>``, set once) so every browser and a restarted API agree."""
        if self.day_start is not None and self.day_start["day"] == day:
            return self.day_start
        key = streams.pnl_day_start_key(day)
        mine = {"day": day, "equity": _exact(equity), "at_ns": time.time_ns()}
        await self._redis.set(key, _enc.encode(mine), nx=True, ex=3 * 86_400)
        raw = await self._redis.get(key)
        try:
            start = msgspec.json.decode(raw or b"")
            Decimal(start["equity"])
            if start.get("day") != day or not isinstance(start.get("at_ns"), int):
                raise ValueError(start)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, ArithmeticError):
            log.warning("ws: %s held %r, not a day start: replaced", key, (raw or b"")[:80])
            await self._redis.set(key, _enc.encode(mine), ex=3 * 86_400)
            start = mine
        self.day_start = start
        return start

    def catch_up(self, client: _Client) -> None:
        """A new pnl subscriber gets the current P&L at once (it is sent again only when it changes)."""
        if "pnl" in client.channels and self.last_pnl:
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(self.last_pnl)


# -- the socket ---------------------------------------------------------------------------
def _channels(value: Any, caller: Caller) -> set[str]:
    if isinstance(value, str):
        value = [c.strip() for c in value.split(",") if c.strip()]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ClientError(CLOSE_BAD_REQUEST, "channels must be a list of names")
    unknown = [c for c in value if c not in CHANNEL_ROLES]
    if unknown:
        raise ClientError(CLOSE_BAD_REQUEST, f"unknown channel {unknown[0][:40]!r}")
    above = [c for c in value if ROLE_RANK[caller.role] < ROLE_RANK[CHANNEL_ROLES[c]]]
    if above:
        raise ClientError(CLOSE_FORBIDDEN, f"channel {above[0]} needs the {CHANNEL_ROLES[above[0]]} role")
    return set(value)


async def _receive_json(ws: WebSocket) -> dict[str, Any]:
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    try:
        obj = msgspec.json.decode(msg.get("text") or msg.get("bytes") or b"")
    except msgspec.DecodeError:
        raise ClientError(CLOSE_BAD_REQUEST, "messages must be JSON objects") from None
    if not isinstance(obj, dict):
        raise ClientError(CLOSE_BAD_REQUEST, "messages must be JSON objects")
    return obj


async def _authenticate(ws: WebSocket, ctx: ApiContext) -> tuple[Caller, int, Any]:
    token = ws.query_params.get("token")
    channels: Any = ws.query_params.get("channels")
    if not token:
        try:
            first = await asyncio.wait_for(_receive_json(ws), AUTH_TIMEOUT_S)
        except TimeoutError:
            raise ClientError(CLOSE_UNAUTHORIZED, "no token: send ?token= or {\"token\": ...} first") from None
        token = first.get("token")
        channels = first.get("channels", channels)
        if not isinstance(token, str) or not token:
            raise ClientError(CLOSE_UNAUTHORIZED, "the first message must carry the access token")
    try:
        caller, exp = await asyncio.to_thread(authenticate_token, ctx, token)
    except ApiError as e:
        raise ClientError(CLOSE_UNAUTHORIZED if e.status == 401 else CLOSE_INTERNAL, e.message) from None
    return caller, exp, channels


async def _send(ws: WebSocket, client: _Client, hub: Hub, timeout_s: float) -> None:
    """The client's one writer: a send that waits ``timeout_s`` for the socket drops the client."""
    while True:
        text = await client.queue.get()
        try:
            async with asyncio.timeout(timeout_s):
                await ws.send_text(text)  # waits while uvicorn's write buffer is above its high-water mark
        except TimeoutError:
            hub.drop(client, f"a send waited {timeout_s:g} s")
            return


async def _listen(ws: WebSocket, client: _Client, hub: Hub) -> None:
    while True:
        msg = await _receive_json(ws)
        if "subscribe" in msg:
            new = _channels(msg["subscribe"], client.caller) - client.channels
            client.channels |= new
            if "pnl" in new:
                hub.catch_up(client)
        elif "unsubscribe" in msg:
            client.channels -= _channels(msg["unsubscribe"], client.caller)
        else:
            raise ClientError(CLOSE_BAD_REQUEST, "expected {\"subscribe\": [...]} or {\"unsubscribe\": [...]}")


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state != WebSocketState.DISCONNECTED:
        # A slow client's close frame waits behind its unread data: not for ever.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT_S)


router = APIRouter()


@router.websocket("/ws")
async def live(ws: WebSocket) -> None:
    ctx: ApiContext = ws.app.state.ctx
    hub: Hub = ws.app.state.hub
    await ws.accept()
    try:
        caller, exp, channels = await _authenticate(ws, ctx)
        client = _Client(caller, _channels(channels or [], caller), ctx.settings.ws_client_queue)
    except ClientError as e:
        await _close(ws, e.code, e.reason)
        return
    except WebSocketDisconnect:
        return
    hub.add(client)
    with contextlib.suppress(TimeoutError):  # Redis down: the welcome says so, the reader keeps trying
        await asyncio.wait_for(hub.reading.wait(), 2.0)
    await ws.send_text(_enc.encode({"channel": "system", "data": {
        "type": "welcome", "user": caller.username, "role": caller.role, "channels": sorted(client.channels),
        "expires_at": exp, "tick_rate_hz": ctx.settings.ws_tick_rate_hz, "live": hub.reading.is_set()}}).decode())
    client.sender = asyncio.create_task(_send(ws, client, hub, ctx.settings.ws_send_timeout_s), name="ws.send")
    listener = asyncio.create_task(_listen(ws, client, hub), name="ws.listen")
    expiry = asyncio.create_task(asyncio.sleep(max(0.0, exp - time.time())), name="ws.expiry")
    code, reason = 1000, ""
    try:
        done, _ = await asyncio.wait({client.sender, listener, expiry}, return_when=asyncio.FIRST_COMPLETED)
        if client.dropped:
            code, reason = CLOSE_TOO_SLOW, "too slow: your queue filled; reconnect"
        elif expiry in done:
            code, reason = CLOSE_UNAUTHORIZED, "token expired: reconnect with a fresh one"
        elif listener in done and isinstance(listener.exception(), ClientError):
            code, reason = listener.exception().code, listener.exception().reason  # type: ignore[union-attr]
    finally:
        hub.remove(client)
        for t in (client.sender, listener, expiry):
            t.cancel()
        await asyncio.gather(client.sender, listener, expiry, return_exceptions=True)
        await _close(ws, code, reason)
