"""GET /status and GET /metrics against real Redis (the test db) and a real database; JSON access logs.

Heartbeats are put on ``sys:heartbeats`` in the wire format services use (``Service.heartbeat_once``
for a live one; hand-dated ones to place ages exactly on the verdict thresholds under a fake clock)."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from backend import cli
from backend.api import create_app
from backend.api.config import AdminSettings
from backend.api.observability import ACCESS_LOGGER, configure_logging
from backend.status import DEGRADED_S, HEALTHY_S, UNHEALTHY_S, redis_memory, verdict
from common import streams
from common.bus import Consumer, Outputs, connect
from common.config import CommonSettings
from common.messages import Heartbeat, TickBatch, encode
from common.service import Service

from .conftest import PASSWORDS, api_settings

T0 = 1_800_000_000 * 10**9  # the fake clock's now (ns)
S = 10**9


def _hb(r: redis.Redis, service: str, instance: str, ts: int, status: str = "ok", **counters: int) -> None:
    hb = Heartbeat(service=service, instance=instance, ts=ts, status=status, counters=counters, started_at=ts - S)
    r.xadd(streams.HEARTBEATS, {b"d": encode(hb)})


def _status(api, role: str = "viewer") -> dict:
    r = api.client.get("/status", headers=api.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def _metrics(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def rds(redis_url):
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


def test_verdict_thresholds_at_their_boundaries():
    assert (HEALTHY_S, DEGRADED_S, UNHEALTHY_S) == (30.0, 60.0, 300.0)
    assert [verdict(a) for a in (0, 29.999, 30, 59.999, 60, 299.999, 300, 86_400)] == [
        "healthy", "healthy", "degraded", "degraded", "unhealthy", "unhealthy", "dead", "dead"]


def test_status_verdicts_from_heartbeat_age_on_a_fake_clock(api, rds):
    api.client.app.state.status.clock = lambda: T0
    ages_ns = {"a0": 0, "a1": 30 * S - 1, "a2": 30 * S, "a3": 60 * S - 1, "a4": 60 * S, "a5": 300 * S - 1,
               "a6": 300 * S, "a7": 3600 * S}
    for inst, age in sorted(ages_ns.items(), key=lambda kv: -kv[1]):  # oldest first, as time goes
        _hb(rds, "probe", inst, T0 - age, handler_errors=2, batch_failures=1, ticks=9)
    _hb(rds, "pattern_engine", "pe-1", T0 - 45 * S)  # one instance only: its verdict is the service's
    _hb(rds, "execution", "gw-1", T0 - 301 * S)
    st = _status(api)
    assert st["redis"] is None and st["thresholds"] == {"healthy_s": 30.0, "degraded_s": 60.0, "unhealthy_s": 300.0}
    svc = {s["service"]: s for s in st["services"]}
    probe = {i["instance"]: i for i in svc["probe"]["instances"]}
    assert {k: v["verdict"] for k, v in probe.items()} == {
        "a0": "healthy", "a1": "healthy", "a2": "degraded", "a3": "degraded", "a4": "unhealthy",
        "a5": "unhealthy", "a6": "dead", "a7": "dead"}
    assert probe["a2"]["age_s"] == 30.0 and probe["a2"]["last_heartbeat_ns"] == T0 - 30 * S
    assert probe["a0"]["errors"] == 3 and probe["a0"]["counters"]["ticks"] == 9
    assert svc["probe"]["verdict"] == "healthy" and svc["probe"]["errors"] == 24  # best instance; 8 x 3 errors
    assert svc["pattern_engine"]["verdict"] == "degraded"
    assert svc["execution"]["verdict"] == "dead"
    # the core services are listed before any heartbeat of theirs: unknown
    assert svc["strategy_engine"]["verdict"] == "unknown" and svc["strategy_engine"]["instances"] == []
    assert svc["mock_mcp"]["verdict"] == "unknown"

    # time passes (the fake clock) and newer heartbeats arrive: read incrementally from the cursor
    api.client.app.state.status.clock = lambda: T0 + 40 * S
    _hb(rds, "execution", "gw-1", T0 + 40 * S - 10 * S)
    _hb(rds, "strategy_engine", "se-1", T0 + 40 * S - 59 * S)
    svc = {s["service"]: s for s in _status(api)["services"]}
    assert svc["execution"]["verdict"] == "healthy" and svc["execution"]["instances"][0]["age_s"] == 10.0
    assert svc["strategy_engine"]["verdict"] == "degraded"
    assert svc["pattern_engine"]["verdict"] == "unhealthy"  # 85 s now, no newer heartbeat
    assert svc["probe"]["verdict"] == "degraded"  # a0 is 40 s old now


def test_status_sees_a_live_services_heartbeat_lag_and_dead_letters(api, rds, redis_url):
    common = CommonSettings(redis_url=redis_url, database_url=api.db_url)

    async def live() -> None:
        svc = Service(common)
        svc.name, svc.instance = "pattern_engine", "pe-live"
        svc.redis = connect(redis_url)
        svc.count("engine_errors", 2)
        # a consumer on the ticks stream: one garbage entry is dead-lettered, 3 ticks wait undelivered
        c = Consumer(svc.redis, group="pattern_engine", consumer="pe-live", types={"md:ticks:{0}": TickBatch},
                     stats_key=streams.stats_key("pattern_engine"), count=1, block_ms=5, max_deliveries=1)
        await c.start()
        await svc.redis.xadd("md:ticks:{0}", {b"d": b"\xff not a tick batch"})
        batch = await c.read()
        out = Outputs()
        assert c.split(batch, out) == [] and len(out.dead) == 1
        await c.commit(out)
        for _ in range(3):
            await svc.redis.xadd("md:ticks:{0}", {b"d": b"x"})
        await svc.heartbeat_once()
        c.close()
        await svc.redis.aclose()

    asyncio.run(live())
    rds.hincrby(streams.stats_key("execution"), "rejects.MAX_ORDER_QTY", 3)
    st = _status(api)
    pe = next(s for s in st["services"] if s["service"] == "pattern_engine")
    assert pe["verdict"] == "healthy" and [i["instance"] for i in pe["instances"]] == ["pe-live"]
    assert pe["instances"][0]["status"] == "starting" and pe["instances"][0]["errors"] == 2 and pe["errors"] == 2
    assert pe["dead_letters"] == 1 and pe["stats"]["dead_letters"] == 1
    assert {"stream": "md:ticks:{0}", "group": "pattern_engine", "lag": 3, "pending": 0} in st["consumer_groups"]
    assert st["dead_letters"] == {"total": 1, "by_stream": {"md:ticks:{0}": 1}}
    ex = next(s for s in st["services"] if s["service"] == "execution")
    assert ex["stats"] == {"rejects.MAX_ORDER_QTY": 3}

    # the same figures on /metrics, read at scrape time
    text = api.client.get("/metrics", headers=api.headers("viewer")).text
    m = _metrics(text)
    assert m[("aitrader_redis_up", ())] == 1.0
    assert m[("aitrader_dead_letters_total", (("stream", "md:ticks:{0}"),))] == 1.0
    assert m[("aitrader_rejects_total", (("reason", "MAX_ORDER_QTY"),))] == 3.0
    assert m[("aitrader_consumer_lag", (("group", "pattern_engine"), ("stream", "md:ticks:{0}")))] == 3.0
    assert m[("aitrader_pipeline_events_total", (("name", "dead_letters"), ("service", "pattern_engine")))] == 1.0
    assert m[("aitrader_service_errors", (("instance", "pe-live"), ("service", "pattern_engine")))] == 2.0
    assert m[("aitrader_service_health", (("service", "pattern_engine"), ("verdict", "healthy")))] == 1.0
    assert m[("aitrader_service_health", (("service", "execution"), ("verdict", "unknown")))] == 1.0
    rds.hincrby(streams.stats_key("pattern_engine"), "ticks", 1234)
    m = _metrics(api.client.get("/metrics", headers=api.headers("viewer")).text)
    assert m[("aitrader_ticks_processed_total", ())] == 1234.0  # read at each scrape


def test_cli_status_shares_the_code(api, rds, redis_url, monkeypatch, capsys):
    import time

    _hb(rds, "strategy_engine", "se-cli", time.time_ns() - 40 * S)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", api.db_url)
    assert cli.main(["status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    se = next(s for s in st["services"] if s["service"] == "strategy_engine")
    assert se["verdict"] == "degraded" and se["instances"][0]["instance"] == "se-cli"
    assert cli.main(["status"]) == 0
    assert "strategy_engine/se-cli" in capsys.readouterr().out


def test_redis_memory_warns_near_and_at_maxmemory_and_on_an_evicting_policy():
    mib = 2**20
    fine = redis_memory({"used_memory": 10 * mib, "maxmemory": 100 * mib, "maxmemory_policy": "noeviction"})
    assert fine == {"used_bytes": 10 * mib, "max_bytes": 100 * mib, "policy": "noeviction", "used_fraction": 0.1,
                    "warning": None}
    unlimited = redis_memory({"used_memory": 10 * mib, "maxmemory": 0, "maxmemory_policy": "noeviction"})
    assert unlimited["max_bytes"] is None and unlimited["used_fraction"] is None and unlimited["warning"] is None
    near = redis_memory({"used_memory": 92 * mib, "maxmemory": 100 * mib, "maxmemory_policy": "noeviction"})
    assert near["warning"].startswith("redis memory at 92% of maxmemory (100 MiB)")
    full = redis_memory({"used_memory": 100 * mib, "maxmemory": 100 * mib, "maxmemory_policy": "noeviction"})
    assert full["warning"].startswith("redis is full (100 of 100 MiB maxmemory): writes are refused")
    evicting = redis_memory({"used_memory": 1, "maxmemory": 100 * mib, "maxmemory_policy": "allkeys-lru"})
    assert evicting["warning"].startswith("redis maxmemory-policy is allkeys-lru: at maxmemory it may evict")


def test_status_and_the_cli_report_redis_memory(api, rds, redis_url, monkeypatch, capsys):
    st = api.client.get("/status", headers=api.headers("viewer")).json()
    mem = st["redis_memory"]
    assert mem["used_bytes"] > 0 and mem["policy"] == rds.config_get("maxmemory-policy")["maxmemory-policy"]
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", api.db_url)
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["redis_memory"]["used_bytes"] > 0


def _app_without_redis(api_db: str, **kw):
    from fastapi.testclient import TestClient

    common = CommonSettings(redis_url="redis://127.0.0.1:1/0", database_url=api_db)  # nothing listens on port 1
    app = create_app(api_settings(**kw), common=common, admin=AdminSettings(username="admin",
                                                                          password=PASSWORDS["admin"]))
    return TestClient(app, raise_server_exceptions=False)


def test_redis_down_is_200_with_every_service_unknown(api_db, clean_env):
    with _app_without_redis(api_db, metrics_public=True) as client:
        tok = client.post("/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]}).json()
        r = client.get("/status", headers={"Authorization": f"Bearer {tok['access_token']}"})
        assert r.status_code == 200, r.text
        st = r.json()
        assert st["redis"].startswith("redis unavailable") and st["redis_memory"] is None
        assert {s["service"] for s in st["services"]} == {"pattern_engine", "strategy_engine", "execution",
                                                          "mock_mcp"}
        assert all(s["verdict"] == "unknown" and s["instances"] == [] for s in st["services"])
        assert st["consumer_groups"] == [] and st["dead_letters"] == {"total": 0, "by_stream": {}}
        m = client.get("/metrics")
        assert m.status_code == 200
        assert _metrics(m.text)[("aitrader_redis_up", ())] == 0.0


def test_request_metrics_per_route_template_and_status(api):
    h = api.headers("viewer")
    for _ in range(2):
        assert api.client.get("/orders", params={"limit": 5}, headers=h).status_code == 200
    assert api.client.get("/orders", params={"limit": 0}, headers=h).status_code == 422
    assert api.client.get("/no/such/path/123").status_code == 404
    assert api.client.get("/orders").status_code == 401
    m = _metrics(api.client.get("/metrics", headers=h).text)

    def n(route: str, status: str) -> float:
        return m.get(("aitrader_api_requests_total", (("method", "GET"), ("route", route), ("status", status))), 0)

    assert (n("/orders", "200"), n("/orders", "422"), n("/orders", "401")) == (2, 1, 1)
    assert n("<unmatched>", "404") == 1 and n("/no/such/path/123", "404") == 0  # templates, never raw paths
    labels = (("method", "GET"), ("route", "/orders"), ("status", "200"))
    assert m[("aitrader_api_request_duration_seconds_count", labels)] == 2
    assert m[("aitrader_api_request_duration_seconds_sum", labels)] > 0
    assert m[("aitrader_api_request_duration_seconds_bucket", (("le", "+Inf"), *labels))] == 2


def test_metrics_needs_a_token_unless_made_public(make_api):
    private = make_api()
    r = private.client.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert private.client.get("/metrics", headers=private.headers("viewer")).status_code == 200
    op = private.client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert op.get("security")

    public = make_api(metrics_public=True)
    r = public.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "aitrader_api_requests_total" in r.text
    op = public.client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert not op.get("security")
    assert public.client.get("/status").status_code == 401  # /status stays protected


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])


@pytest.mark.parametrize("log_json", [True, False])
def test_json_logs_one_object_per_line_with_request_id_route_status_duration(make_api, restore_logging, log_json):
    buf = io.StringIO()
    configure_logging("INFO", log_json, stream=buf)
    api = make_api(log_json=log_json)
    h = api.headers("viewer")
    r = api.client.get("/orders", params={"symbol": "BTCUSDT"}, headers={**h, "X-Request-ID": "req-42"})
    assert r.status_code == 200
    api.client.get("/nope", headers={"X-Request-ID": "req-43"})
    logging.getLogger("backend.api.test").warning("plain %s", "record", extra={"k": 1})
    lines = [ln for ln in buf.getvalue().splitlines() if ln]
    if not log_json:
        assert lines and not any(ln.startswith("{") for ln in lines)
        assert not any(ACCESS_LOGGER in ln for ln in lines)  # uvicorn's access log does this job
        return
    objs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    access = {o["request_id"]: o for o in objs if o["logger"] == ACCESS_LOGGER}
    a = access["req-42"]
    assert (a["method"], a["route"], a["path"], a["status"], a["level"]) == ("GET", "/orders", "/orders", 200, "INFO")
    assert 0 < a["duration_ms"] < 10_000 and a["ts"].endswith("+00:00")
    assert (access["req-43"]["route"], access["req-43"]["status"]) == ("<unmatched>", 404)
    assert access[next(k for k in access if access[k]["route"] == "/auth/login")]["status"] == 200
    other = next(o for o in objs if o["logger"] == "backend.api.test")
    assert other["message"] == "plain record" and other["k"] == 1 and other["level"] == "WARNING"
    assert not any(PASSWORDS["viewer"] in ln for ln in lines)


def test_status_latency_merges_each_stages_histograms_over_instances(api, rds, redis_url):
    """Two live instances save their histograms with their heartbeats (as every service does); the route merges
    them per stage: count, p50 / p99 / p999 / max in µs and 1-2-5 buckets; a stage none recorded is all zero;
    a saved value that is not a histogram is skipped and counted."""
    common = CommonSettings(redis_url=redis_url, database_url=api.db_url)

    async def live(instance: str, tick_to_signal_us: list[int], tick_to_fill_us: list[int]) -> None:
        svc = Service(common)
        svc.name, svc.instance = "pattern_engine", instance
        svc.redis = connect(redis_url)
        for us in tick_to_signal_us:
            svc.hist("tick_to_signal").record_ns(us * 1000)
        for us in tick_to_fill_us:
            svc.hist("tick_to_fill").record_ns(us * 1000)
        await svc.heartbeat_once()
        await svc.redis.aclose()

    asyncio.run(live("pe-a", [10] * 969 + [3_000] * 30 + [40_000], []))
    asyncio.run(live("pe-b", [12] * 1000, [250, 260]))
    rds.hset(streams.latency_key("tick_to_fill"), "garbage", b"not an hdr histogram")
    r = api.client.get("/status/latency", headers=api.headers("viewer"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["redis"] is None
    st = {s["stage"]: s for s in out["stages"]}
    assert list(st) == ["tick_to_signal", "signal_to_intent", "intent_to_fill", "tick_to_fill"]
    t2s = st["tick_to_signal"]
    assert t2s["count"] == 2000 and t2s["instances"] == 2 and t2s["unreadable"] == 0
    assert t2s["p50"] in (10, 12) and 2_990 <= t2s["p99"] <= 3_010 and 39_000 <= t2s["max"] <= 40_100
    assert 2_990 <= t2s["p999"] <= 3_010  # 1,999 of 2,000 are at most 3 ms; 1,969 at most 12 µs
    assert t2s["buckets"][0] == {"ge_us": 10, "lt_us": 20, "count": 1969}
    assert {"ge_us": 2000, "lt_us": 5000, "count": 30} in t2s["buckets"]
    assert t2s["buckets"][-1] == {"ge_us": 20000, "lt_us": 50000, "count": 1}
    assert sum(b["count"] for b in t2s["buckets"]) == 2000
    assert [b["ge_us"] for b in t2s["buckets"]] == [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]
    t2f = st["tick_to_fill"]
    assert (t2f["count"], t2f["instances"], t2f["unreadable"]) == (2, 1, 1)
    assert t2f["buckets"] == [{"ge_us": 200, "lt_us": 500, "count": 2}]
    assert st["signal_to_intent"] == {"stage": "signal_to_intent", "count": 0, "p50": 0, "p99": 0, "p999": 0, "max": 0,
                                      "instances": 0, "unreadable": 0, "buckets": []}


def test_status_latency_with_redis_down_says_so(api_db, clean_env):
    with _app_without_redis(api_db) as client:
        tok = client.post("/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]}).json()
        r = client.get("/status/latency", headers={"Authorization": f"Bearer {tok['access_token']}"})
        assert r.status_code == 200, r.text
        assert r.json()["stages"] == [] and r.json()["redis"].startswith("redis unavailable")
