"""``GET /signals``: the newest signals of pe:signals, decoded and filtered, against the test Redis db."""

from __future__ import annotations

import socket

import redis
from fastapi.testclient import TestClient

from backend.api import create_app
from backend.api.config import AdminSettings
from common import streams
from common.config import CommonSettings
from common.messages import Side, Signal, encode

from .conftest import PASSWORDS, api_settings


def _signal(i: int, symbol: str, detector: str) -> Signal:
    return Signal(signal_id=f"sg-{i}", symbol=symbol, detector=detector, side=Side.BUY if i % 2 else Side.SELL,
                  strength=1.5, price=100.0 + i, tick_seq=i, ts_event=i, ts_ingest=i, ts_signal=i)


def _seed(redis_url: str, n: int) -> None:
    r = redis.Redis.from_url(redis_url)
    try:
        for i in range(n):
            r.xadd(streams.SIGNALS, {b"d": encode(_signal(i, "AAA" if i % 3 else "BBB",
                                                           "breakout" if i % 2 else "momentum_burst"))})
            if i == 5:
                r.xadd(streams.SIGNALS, {b"d": b"\x93not a signal"})  # skipped, never a 500
    finally:
        r.close()


def test_newest_first_filtered_and_limited(api, redis_url):
    _seed(redis_url, 1200)
    h = api.headers("viewer")
    got = api.client.get("/signals", headers=h).json()
    assert [s["signal_id"] for s in got] == [f"sg-{i}" for i in range(1199, 1149, -1)]  # default 50
    first = got[0]
    assert first["side"] == "BUY" and first["price"] == 1299.0 and first["id"].count("-") == 1
    only = api.client.get("/signals?symbol=BBB&detector=breakout&limit=1000", headers=h).json()
    want = [f"sg-{i}" for i in range(1199, -1, -1) if i % 3 == 0 and i % 2 == 1]
    assert [s["signal_id"] for s in only] == want  # past several pages of 500
    assert api.client.get("/signals?symbol=ZZZ", headers=h).json() == []
    for bad in ("limit=0", "limit=1001", "symbol=a%20b", "detector=" + "x" * 65):
        r = api.client.get(f"/signals?{bad}", headers=h)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad


def test_redis_down_is_503(api_db, clean_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(api_settings(), common=CommonSettings(redis_url=f"redis://127.0.0.1:{port}/0",
                                                           database_url=api_db),
                     admin=AdminSettings(username="admin", password=PASSWORDS["admin"]))
    with TestClient(app) as c:
        tok = c.post("/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]}).json()
        r = c.get("/signals", headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert r.status_code == 503 and "redis unavailable" in r.json()["error"]["message"], r.text
