"""Shared pieces of the suggestion tests: a local stand-in for an OpenAI-compatible server, signals, a seeded
mock broker (the real ``MockMcpService`` serving MCP over HTTP, on real Redis)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from common import streams
from common.bus import Publisher, connect
from common.config import CommonSettings, load
from common.messages import Side, Signal, encode, signal_id_for
from mock_mcp.config import McpSettings
from mock_mcp.service import MockMcpService
from tests.unit.mock_mcp.stubs import fill

KEY = "sk-test-CANARY-9f8e7d6c5b4a"


def chat_body(content: str, model: str = "stand-in-1") -> bytes:
    return json.dumps({"id": "c-1", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class LlmStandIn:
    """A real HTTP server on 127.0.0.1 speaking chat completions; answers the scripted ``Reply``s in order
    (a good empty suggestion set once the script runs out) and records every request."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.seen: list[Seen] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                stand_in.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                r = stand_in.script.popleft() if stand_in.script else Reply(200, chat_body(
                    '{"summary": "", "suggestions": []}'))
                if r.delay_s:
                    time.sleep(r.delay_s)
                try:
                    self.send_response(r.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(r.body)))
                    for k, v in r.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(r.body)
                except OSError:
                    pass  # the client gave up (timeout)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def signal(symbol: str, side: Side, strength: float = 2.0, price: float = 100.0, *, seq: int = 1,
           detector: str = "momentum") -> Signal:
    now = time.time_ns()
    return Signal(signal_id=signal_id_for(symbol, now, seq, detector), symbol=symbol, detector=detector, side=side,
                  strength=strength, price=price, tick_seq=seq, ts_event=now, ts_ingest=now, ts_signal=now)


# The seeded account (initial cash 100000): AAA 300 @ 100 (30% of equity: too concentrated), BBB 100 @ 50 marked
# 45 (-10%, and recent signals sell it), DDD 10 @ 20 marked 21 (fine); CCC has only buy signals.
FILLS = [("AAA", "300", "100"), ("BBB", "100", "50"), ("DDD", "10", "20")]
MARKS = {"AAA": "100", "BBB": "45", "DDD": "21"}
EQUITY = Decimal(100000) - 30000 - 5000 - 200 + 300 * 100 + 100 * 45 + 10 * 21


async def seed_signals(redis_url: str) -> None:
    r = connect(redis_url)
    try:
        pub = Publisher(r, 10_000)
        sigs = [signal("BBB", Side.SELL, 3.0, 45.0, seq=i) for i in range(4)]
        sigs += [signal("CCC", Side.BUY, 1.5, 12.5, seq=10 + i, detector=d) for i, d in
                 enumerate(["momentum", "breakout", "momentum", "breakout", "momentum"])]
        await pub.publish([(streams.SIGNALS, encode(s)) for s in sigs])
        await r.xadd(streams.SIGNALS, {b"d": b"\x00garbage"})  # undecodable: counted, skipped
    finally:
        await r.aclose()


@asynccontextmanager
async def seeded_broker(redis_url: str) -> AsyncIterator[MockMcpService]:
    """The mock broker (real MCP over HTTP on a free port) with the fills above applied and the marks set."""
    r = connect(redis_url)
    try:
        pub = Publisher(r, 10_000)
        await pub.publish([(streams.EXEC_EVENTS, encode(fill(symbol=s, side=Side.BUY, qty=q, px=p, exec_id=f"e-{s}",
                                                              coid=f"co-{s}")))
                           for s, q, p in FILLS])
        await r.hset(streams.MARKS, mapping=MARKS)
    finally:
        await r.aclose()
    common = load(CommonSettings, redis_url=redis_url, initial_cash="100000", block_ms=5, heartbeat_s=0.2)
    svc = MockMcpService(common, load(McpSettings, port=0))
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(500):
            if svc.http.started and len(svc.account.applied) >= len(FILLS):
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("mock_mcp did not start")
        yield svc
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 15)


def seed_sync(redis_url: str) -> None:
    """The fills above on ex:events and the marks (synchronously), for a broker process started after."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        for s, q, p in FILLS:
            r.xadd(streams.EXEC_EVENTS, {b"d": encode(fill(symbol=s, side=Side.BUY, qty=q, px=p, exec_id=f"e-{s}",
                                                           coid=f"co-{s}"))})
        r.hset(streams.MARKS, mapping=MARKS)
    finally:
        r.close()


@contextmanager
def mock_mcp_process(redis_url: str, home: Path) -> Iterator[str]:
    """``python -m mock_mcp`` as its own process (seeded first with ``seed_sync``); yields its MCP URL."""
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_") and k not in ("REDIS_URL",
                                                                                                "DATABASE_URL")}
    env.update(REDIS_URL=redis_url, AITRADER_MCP_PORT=str(port), AITRADER_INITIAL_CASH="100000",
               AITRADER_HOME=str(home), AITRADER_INSTANCE="suggest-test", AITRADER_HEARTBEAT_S="0.2",
               PYTHONPATH=str(ROOT))
    log = (home / "mock_mcp.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mock_mcp"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mock_mcp exited {proc.returncode}: {(home / 'mock_mcp.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("mock_mcp did not listen within 30 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def broker_tool_calls(redis_url: str) -> dict[str, int]:
    """The tool calls the broker process has counted, from its latest heartbeat (health key)."""
    import redis

    from common.messages import Heartbeat, decode_as

    r = redis.Redis.from_url(redis_url)
    try:
        raw = r.get(streams.health_key("mock_mcp", "suggest-test"))
    finally:
        r.close()
    hb = decode_as(raw, Heartbeat)
    return {k.removeprefix("tool_calls."): v for k, v in hb.counters.items() if k.startswith("tool_calls.")}
