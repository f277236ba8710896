"""``/ws`` on a real API process (``python -m backend.api``: uvicorn) with a real Redis: token checks and close
codes, each channel fed from its stream, ticks throttled per symbol."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest
import redis
import websockets

from backend.api.security import encode_token
from common import streams
from common.db import make_engine, migrate
from common.messages import (
    ExecutionReport,
    Heartbeat,
    OrdStatus,
    Side,
    Signal,
    Tick,
    TickBatch,
    TickType,
    encode,
)
from tests.conftest import ROOT

from .conftest import PASSWORDS

TICK_RATE = 5.0
QUEUE = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(request, database_url, redis_url, tmp_path):
    """The API as its own process; yields (base URL, JWT secret). Indirect parameters: more settings."""
    from backend.api.users import create_user

    migrate(database_url)
    eng = make_engine(database_url)
    try:
        create_user(eng, "viewer", PASSWORDS["viewer"], "viewer")
    finally:
        eng.dispose()
    port, secret = _free_port(), secrets.token_urlsafe(48)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_") and k not in ("REDIS_URL",
                                                                                                "DATABASE_URL")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, AITRADER_HOME=str(tmp_path), PYTHONPATH=str(ROOT),
               AITRADER_API_PORT=str(port), AITRADER_API_JWT_SECRET=secret, AITRADER_ADMIN_USERNAME="admin",
               AITRADER_ADMIN_PASSWORD=PASSWORDS["admin"], AITRADER_API_WS_TICK_RATE_HZ=str(TICK_RATE),
               AITRADER_API_WS_CLIENT_QUEUE=str(QUEUE))
    env.update(getattr(request, "param", {}))
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "backend.api"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not answer within 30 s"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", secret
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def _token(host: str) -> str:
    r = httpx.post(f"http://{host}/auth/login", json={"username": "viewer", "password": PASSWORDS["viewer"]})
    return r.json()["access_token"]


async def _closed_with(ws) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as e:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return e.value.rcvd.code, e.value.rcvd.reason


async def _next(ws, channel: str) -> object:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["channel"] == channel:
            return msg["data"]


async def test_tokens_and_channels_are_checked_with_close_codes(server):
    host, secret = server
    url = f"ws://{host}/ws"
    good = await asyncio.to_thread(_token, host)
    async with websockets.connect(f"{url}?token=nope") as ws:
        assert await _closed_with(ws) == (4401, "invalid token: Not enough segments")
    expired, _ = encode_token(secret, sub="2", role="viewer", typ="access", fam="f", ttl_s=60,
                              now=int(time.time()) - 120)
    async with websockets.connect(f"{url}?token={expired}") as ws:
        assert await _closed_with(ws) == (4401, "token expired")
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"channels": ["ticks"]}))  # no token in the first message
        assert (await _closed_with(ws))[0] == 4401
    async with websockets.connect(f"{url}?token={good}&channels=ticks,gossip") as ws:
        assert await _closed_with(ws) == (4400, "unknown channel 'gossip'")
    # the token in the first message (a browser's way); then a bad message
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": good, "channels": ["signals"]}))
        welcome = json.loads(await ws.recv())
        assert welcome["channel"] == "system" and welcome["data"]["user"] == "viewer"
        assert welcome["data"]["channels"] == ["signals"]
        await ws.send("[1, 2]")
        assert (await _closed_with(ws))[0] == 4400


async def test_each_channel_carries_its_stream(server, redis_url):
    host, _ = server
    token = await asyncio.to_thread(_token, host)
    r = redis.asyncio.Redis.from_url(redis_url)
    url = f"ws://{host}/ws?token={token}&channels=signals,orders,fills,alerts,heartbeats"
    try:
        async with websockets.connect(url) as ws:
            await ws.recv()  # welcome
            await ws.send(json.dumps({"subscribe": ["pnl"]}))
            pnl = await _next(ws, "pnl")
            assert pnl["positions"] == [] and pnl["realized_pnl"] == "0"
            await r.set(streams.health_key("execution", "h1"),
                        encode(Heartbeat(service="execution", instance="h1", ts=time.time_ns(), status="ok")))
            hbs = await _next(ws, "heartbeats")
            assert [(h["service"], h["instance"], h["status"]) for h in hbs] == [("execution", "h1", "ok")]
            sig = Signal(signal_id="sg-1", symbol="AAA", detector="breakout", side=Side.BUY, strength=2.0,
                         price=101.5, tick_seq=7, ts_event=1, ts_ingest=2, ts_signal=3)
            await r.xadd(streams.SIGNALS, {b"d": encode(sig)})
            got = await _next(ws, "signals")
            assert (got["signal_id"], got["side"], got["price"]) == ("sg-1", "BUY", 101.5)
            D = Decimal
            rep = ExecutionReport(exec_id="e1", client_order_id="co-1", signal_id="sg-1", strategy="s", symbol="AAA",
                                  side=Side.BUY, status=OrdStatus.FILLED, order_qty=D("2"), cum_qty=D("2"),
                                  leaves_qty=D(0), last_qty=D("2"), last_px=D("101.25"), avg_px=D("101.25"),
                                  fee=D("0.1"), ts_event=1, ts_ingest=2, ts_signal=3, ts_intent=4, ts_exec=5)
            await r.xadd(streams.EXEC_EVENTS, {b"d": encode(rep)})
            order = await _next(ws, "orders")
            assert (order["status"], order["last_px"]) == ("FILLED", "101.25")
            assert (await _next(ws, "fills"))["exec_id"] == "e1"
            await r.xadd(streams.ALERTS, {b"d": encode(rep)})
            alert = await _next(ws, "alerts")
            assert alert["kind"] == "ExecutionReport" and alert["exec_id"] == "e1"
    finally:
        await r.aclose()


async def test_ticks_are_throttled_per_symbol_and_the_latest_arrives(server, redis_url):
    host, _ = server
    token = await asyncio.to_thread(_token, host)
    r = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with websockets.connect(f"ws://{host}/ws?token={token}&channels=ticks") as ws:
            await ws.recv()
            received: list[dict] = []

            async def collect() -> None:
                while True:
                    received.append(json.loads(await ws.recv())["data"])

            reader = asyncio.create_task(collect())
            started = time.monotonic()
            n = 300
            for i in range(1, n + 1):  # ~150 ticks/s of AAA, one BBB tick at the start
                ticks = [Tick(symbol="AAA", type=TickType.TRADE, ts_event=i, seq=i, price=100.0 + i, size=1.0)]
                if i == 1:
                    ticks.append(Tick(symbol="BBB", type=TickType.TRADE, ts_event=i, seq=i, price=7.0, size=1.0))
                await r.xadd(streams.ticks_stream(0), {b"d": encode(TickBatch(ticks=ticks))})
                await asyncio.sleep(1 / 150)
            await asyncio.sleep(3 / TICK_RATE)
            elapsed = time.monotonic() - started
            reader.cancel()
            aaa = [t for t in received if t["symbol"] == "AAA"]
            assert 2 <= len(aaa) <= TICK_RATE * elapsed + 2, (len(aaa), elapsed)
            assert aaa[-1]["price"] == 100.0 + n  # the latest is never lost to throttling
            assert [t["price"] for t in received if t["symbol"] == "BBB"] == [7.0]
    finally:
        await r.aclose()


def _raw_ws(host: str, path: str) -> socket.socket:
    """A WebSocket client on a bare socket that reads nothing after the handshake (a receive buffer of 4 KiB)."""
    h, port = host.split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((h, int(port)))
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)  # one byte at a time: nothing after the response is consumed
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _close_code(s: socket.socket, timeout: float) -> int:
    """Read server frames (unmasked) until the close frame; its status code."""
    s.settimeout(timeout)
    f = s.makefile("rb")
    while True:
        b0, b1 = f.read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(f.read(2), "big")
        elif n == 127:
            n = int.from_bytes(f.read(8), "big")
        payload = f.read(n)
        if b0 & 0x0F == 8:
            return int.from_bytes(payload[:2], "big")


def _api_metric(host: str, token: str, name: str) -> float:
    text = httpx.get(f"http://{host}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


@pytest.mark.parametrize("server, why", [
    ({}, "its queue filled"),
    # a queue that never fills: the send that waits 1 s is what drops it
    ({"AITRADER_API_WS_CLIENT_QUEUE": "100000", "AITRADER_API_WS_SEND_TIMEOUT_S": "1"}, "a send waited 1 s"),
], indirect=["server"], ids=["queue", "send-timeout"])
async def test_a_client_that_stops_reading_is_closed_4408_while_a_reading_one_gets_everything(server, why, redis_url,
                                                                                              tmp_path):
    host, _ = server
    token = await asyncio.to_thread(_token, host)
    r = redis.asyncio.Redis.from_url(redis_url)
    slow = await asyncio.to_thread(_raw_ws, host, f"/ws?token={token}&channels=signals")
    sent = 0
    try:
        async with websockets.connect(f"ws://{host}/ws?token={token}&channels=signals") as ws:
            await ws.recv()  # welcome
            got: list[str] = []

            async def read() -> None:
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["channel"] == "signals":
                        got.append(msg["data"]["signal_id"])

            reader = asyncio.create_task(read())
            dropped = 0.0
            # 300-byte messages: the slow socket's buffers (kernel and uvicorn's 64 KiB) fill within a few MB
            while sent < 40_000 and not dropped:
                pipe = r.pipeline(transaction=False)
                for i in range(sent, sent + 500):
                    pipe.xadd(streams.SIGNALS, {b"d": encode(Signal(
                        signal_id=f"sg-{i}", symbol="AAA", detector="breakout", side=Side.BUY, strength=2.0,
                        price=101.5, tick_seq=i, ts_event=1, ts_ingest=2, ts_signal=3))})
                await pipe.execute()
                sent += 500
                await asyncio.sleep(0.05)
                dropped = await asyncio.to_thread(_api_metric, host, token, "aitrader_api_ws_dropped_total")
            assert dropped == 1, f"the silent client was never dropped after {sent} messages"
            # the reading client is still served: everything, in order, including what came after the drop
            for i in range(sent, sent + 100):
                await r.xadd(streams.SIGNALS, {b"d": encode(Signal(
                    signal_id=f"sg-{i}", symbol="AAA", detector="breakout", side=Side.BUY, strength=2.0,
                    price=101.5, tick_seq=i, ts_event=1, ts_ingest=2, ts_signal=3))})
            sent += 100
            deadline = time.monotonic() + 30
            while len(got) < sent and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            reader.cancel()
            assert got == [f"sg-{i}" for i in range(sent)]
            assert await asyncio.to_thread(_api_metric, host, token, "aitrader_api_ws_clients") == 1
        # the silent client, reading at last, finds the close frame behind what its socket held
        assert await asyncio.to_thread(_close_code, slow, 10) == 4408
        assert f"dropped as too slow ({why})" in (tmp_path / "api.log").read_text()
    finally:
        slow.close()
        await r.aclose()


async def test_a_token_in_the_url_never_reaches_the_log(server, tmp_path):
    host, _ = server
    token = await asyncio.to_thread(_token, host)
    async with websockets.connect(f"ws://{host}/ws?token={token}&channels=signals") as ws:
        assert json.loads(await ws.recv())["channel"] == "system"
    async with websockets.connect(f"ws://{host}/ws?channels=signals&token={token}x") as ws:  # refused: 4401
        assert (await _closed_with(ws))[0] == 4401
    await asyncio.to_thread(httpx.get, f"http://{host}/health?access_token={token}")  # any URL, not only /ws
    await asyncio.sleep(0.5)  # the log line of the last request is written after its answer
    log = (tmp_path / "api.log").read_text()
    assert log.count("token=<redacted>") >= 3, log[-2000:]
    assert token not in log and token.split(".")[2] not in log


async def test_pnl_carries_the_days_start_kept_in_redis_for_every_client(server, redis_url):
    """The day's start is the first equity any API computed that UTC day, kept in Redis: a snapshot already
    there (another instance, or this API before a restart) is the one used, and every client (a reload too)
    gets the same start and today's P&L."""
    host, _ = server
    r = redis.asyncio.Redis.from_url(redis_url)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    key = streams.pnl_day_start_key(today)
    earlier = time.time_ns() - 3_600 * 10**9
    await r.set(key, json.dumps({"day": today, "equity": "-12.5", "at_ns": earlier}))
    try:
        starts = []
        for _reload in range(2):
            token = await asyncio.to_thread(_token, host)
            async with websockets.connect(f"ws://{host}/ws?token={token}&channels=pnl") as ws:
                await ws.recv()  # welcome
                pnl = await _next(ws, "pnl")
                starts.append(pnl["day_start"])
                assert pnl["equity"] == "0" and pnl["today_pnl"] == "12.5", pnl
        assert starts == [{"day": today, "equity": "-12.5", "at_ns": earlier}] * 2
        assert json.loads(await r.get(key))["at_ns"] == earlier  # kept, not overwritten
    finally:
        await r.aclose()


async def test_pnl_day_start_is_taken_once_when_none_exists(server, redis_url):
    host, _ = server
    r = redis.asyncio.Redis.from_url(redis_url)
    before = time.time_ns()
    try:
        token = await asyncio.to_thread(_token, host)
        async with websockets.connect(f"ws://{host}/ws?token={token}&channels=pnl") as ws:
            await ws.recv()
            pnl = await _next(ws, "pnl")
        today = time.strftime("%Y-%m-%d", time.gmtime())
        start = pnl["day_start"]
        assert start["day"] == today and start["equity"] == "0" and pnl["today_pnl"] == "0"
        assert before <= start["at_ns"] <= time.time_ns()
        saved = await r.get(streams.pnl_day_start_key(today))
        assert json.loads(saved) == start
        assert 2 * 86_400 < await r.ttl(streams.pnl_day_start_key(today)) <= 3 * 86_400
    finally:
        await r.aclose()
