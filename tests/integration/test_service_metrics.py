"""A service process's own /metrics: scraped over HTTP, checked against what it wrote to Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import streams
from common.latency import LatencyHistogram

from .harness import ROOT, Pipeline, free_port

pytestmark = pytest.mark.integration

PE = streams.GROUP_PATTERN
TICKS = streams.ticks_stream(0)


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(samples: dict, metric: str, **labels: str) -> float:
    return samples[(metric, frozenset({"service": PE, **labels}.items()))]


def _drained(r) -> bool:
    groups = {g["name"]: g for g in r.xinfo_groups(TICKS)}
    g = groups.get(PE.encode())
    return g is not None and g["lag"] == 0 and g["pending"] == 0


def test_pattern_engine_metrics_match_its_stats_hash_and_latency(redis_url, database_url, tmp_path):
    port = free_port()
    with Pipeline(redis_url, database_url, tmp_path / "home",
                  extra_env={"AITRADER_PE_METRICS_PORT": str(port)}) as p:
        p.start(("pattern_engine",))
        p.replay("--synthetic-ticks", "3000", "--symbols", "3", "--speed", "max")
        r = p.redis()
        r.xadd(TICKS, {b"d": b"not a tick batch"})  # one entry for the dead-letter stream
        deadline = time.monotonic() + 60
        while not _drained(r) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _drained(r), p.log(PE)
        time.sleep(1.5)  # a heartbeat (every 0.5 s) after the last batch has saved the histograms
        m = _scrape(port)

        stats = {k.decode(): int(v) for k, v in r.hgetall(streams.stats_key(PE)).items()}
        assert stats["ticks"] == 3000
        for name, n in stats.items():
            assert _value(m, "aitrader_service_committed_total", name=name) == n, name
        assert _value(m, "aitrader_service_dead_letters_total", stream=TICKS) == 1
        assert _value(m, "aitrader_service_acked_total", stream=TICKS) == r.xlen(TICKS)
        assert _value(m, "aitrader_service_consumer_lag", stream=TICKS) == 0
        assert _value(m, "aitrader_service_consumer_pending", stream=TICKS) == 0
        assert _value(m, "aitrader_service_status", status="ok") == 1
        assert _value(m, "aitrader_service_status", status="degraded") == 0
        assert 0 <= _value(m, "aitrader_service_heartbeat_age_seconds") < 5

        assert stats.get("signals", 0) > 0, "the synthetic market gave no signal: nothing to time"
        saved = LatencyHistogram.decode(r.hvals(streams.latency_key("tick_to_signal"))[0])
        assert _value(m, "aitrader_service_latency_seconds_count", stage="tick_to_signal") == saved.count
        p99 = _value(m, "aitrader_service_latency_seconds", stage="tick_to_signal", quantile="0.99")
        assert p99 == saved.percentile(99) / 1e6
        assert p99 >= _value(m, "aitrader_service_latency_seconds", stage="tick_to_signal", quantile="0.5") > 0


def _start(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    return subprocess.run([sys.executable, "-m", "pattern_engine"], env={**base, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", ["abc", "70000", "-1"])
def test_a_bad_metrics_port_fails_the_start_naming_the_key(value, redis_url, tmp_path):
    p = _start({"REDIS_URL": redis_url, "AITRADER_HOME": str(tmp_path), "AITRADER_PE_METRICS_PORT": value})
    assert p.returncode == 2
    assert "AITRADER_PE_METRICS_PORT" in p.stderr


def test_a_metrics_port_in_use_fails_the_start_naming_the_key(redis_url, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        p = _start({"REDIS_URL": redis_url, "AITRADER_HOME": str(tmp_path), "AITRADER_PE_METRICS_PORT": str(busy)})
    assert p.returncode == 2
    assert f"AITRADER_PE_METRICS_PORT: cannot serve metrics on 127.0.0.1:{busy}" in p.stderr
