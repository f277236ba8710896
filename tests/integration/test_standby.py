"""Standby pattern engines (``AITRADER_PE_STANDBY``): several engines share one shard's consumer group, the
lease holder alone reads, and when it dies (SIGKILL) or stops (SIGTERM) another takes over, claiming what it
left pending, so every tick is counted once. Real processes on a real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import redis as redis_lib

from common import streams
from common.messages import TickBatch, encode
from tick_replay.synthetic import synthetic_ticks

from .harness import ROOT, Pipeline, free_port

pytestmark = pytest.mark.integration

LEASE_MS = 1500
KEY = streams.pattern_lease_key([0])


class Engine:
    def __init__(self, p: Pipeline, name: str) -> None:
        self.name, self.port = name, free_port()
        self.log = p.home / f"pe-{name}.log"
        env = {**p.env, "AITRADER_INSTANCE": name, "AITRADER_PE_STANDBY": "true", "AITRADER_PE_LEASE_MS": str(LEASE_MS),
               "AITRADER_PE_METRICS_PORT": str(self.port)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "pattern_engine"], env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def committed(self) -> int:
        for line in self.metrics().splitlines():
            if line.startswith('aitrader_service_committed_total{name="ticks"'):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{self.name} did not serve /metrics: {self.log.read_text()[-3000:]}")


class Feed:
    """Entries of 20 synthetic ticks to md:ticks:{0}, paced, from a thread."""

    def __init__(self, r: redis_lib.Redis, seed: int) -> None:
        self.r, self.ticks = r, list(synthetic_ticks(40_000, 4, seed))
        self.published = 0

    def publish(self, entries: int, pause_s: float = 0.002) -> None:
        for _ in range(entries):
            batch, self.ticks = self.ticks[:20], self.ticks[20:]
            self.r.xadd(streams.ticks_stream(0), {b"d": encode(TickBatch(batch, time.time_ns()))})
            self.published += len(batch)
            time.sleep(pause_s)

    def in_background(self, entries: int) -> threading.Thread:
        t = threading.Thread(target=self.publish, args=(entries,), daemon=True)
        t.start()
        return t


def _wait(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def _drained(r: redis_lib.Redis) -> bool:
    g = {x["name"]: x for x in r.xinfo_groups(streams.ticks_stream(0))}.get(streams.GROUP_PATTERN.encode())
    return g is not None and g["pending"] == 0 and g["lag"] == 0


def _counted(r: redis_lib.Redis) -> int:
    return int(r.hget(streams.stats_key("pattern_engine"), "ticks") or 0)


def test_standby_engines_share_a_shard_group_and_take_over_on_kill_and_on_stop(redis_url, database_url, tmp_path):
    p = Pipeline(redis_url, database_url, tmp_path / "home", {"AITRADER_SHARDS": "1", "AITRADER_HEARTBEAT_S": "0.3"})
    p.migrate()
    r = redis_lib.Redis.from_url(redis_url)
    engines: list[Engine] = []
    try:
        a = Engine(p, "sb-a")
        engines.append(a)
        a.wait_serving()
        _wait(lambda: r.get(KEY) == b"sb-a", 30, "sb-a takes the free lease")
        b = Engine(p, "sb-b")
        engines.append(b)
        b.wait_serving()
        feed = Feed(r, seed=4)
        feed.publish(100)
        _wait(lambda: _drained(r), 60, "sb-a handles the first ticks")
        assert r.get(KEY) == b"sb-a" and b.committed() == 0 and a.committed() == feed.published
        consumers = {c["name"]: c for c in r.xinfo_consumers(streams.ticks_stream(0), streams.GROUP_PATTERN)}
        assert b"sb-b" not in consumers  # the standby never read the group

        # SIGKILL the holder mid-stream: the standby takes over when the lease runs out, claims what it left
        # pending (handled, not committed) and every tick is still counted exactly once.
        pub = feed.in_background(300)
        time.sleep(0.3)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        took = _wait(lambda: r.get(KEY) == b"sb-b", LEASE_MS / 1000 * 3, "sb-b takes the lease after the kill")
        pub.join(60)
        _wait(lambda: _drained(r), 60, "sb-b drains the shard")
        assert _counted(r) == feed.published, (_counted(r), feed.published)
        assert "took the lease" in b.log.read_text()

        # A restarted engine stands by; the holder stopped cleanly hands over at once (it releases the lease).
        a2 = Engine(p, "sb-a")
        engines.append(a2)
        a2.wait_serving()
        time.sleep(LEASE_MS / 1000)
        assert r.get(KEY) == b"sb-b" and a2.committed() == 0
        pub = feed.in_background(200)
        time.sleep(0.3)
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(30) == 0, b.log.read_text()[-3000:]
        handover = _wait(lambda: r.get(KEY) == b"sb-a", LEASE_MS / 1000 * 3, "sb-a takes the released lease")
        pub.join(60)
        _wait(lambda: _drained(r), 60, "sb-a drains the shard")
        assert _counted(r) == feed.published, (_counted(r), feed.published)

        # The holder frozen (SIGSTOP) past its lease: the standby takes over; thawed, the old holder must not
        # commit what it was handling (it is fenced: it could not renew in time) and stands by.
        b2 = Engine(p, "sb-b")
        engines.append(b2)
        b2.wait_serving()
        pub = feed.in_background(300)
        time.sleep(0.3)
        a2.proc.send_signal(signal.SIGSTOP)
        frozen = _wait(lambda: r.get(KEY) == b"sb-b", LEASE_MS / 1000 * 3, "sb-b takes the frozen holder's lease")
        time.sleep(0.5)
        a2.proc.send_signal(signal.SIGCONT)
        pub.join(60)
        _wait(lambda: _drained(r), 60, "sb-b drains the shard")
        _wait(lambda: "standing by" in a2.log.read_text(), 10, "the thawed engine stands by")
        time.sleep(LEASE_MS / 1000)
        assert r.get(KEY) == b"sb-b" and a2.proc.poll() is None
        assert _counted(r) == feed.published, (_counted(r), feed.published)
        print(f"\nstandby: took over {took:.2f}s after the holder was killed (lease {LEASE_MS} ms), "
              f"{handover:.2f}s after it stopped cleanly, {frozen:.2f}s after it froze; "
              f"{feed.published:,} ticks counted once")
    finally:
        for e in engines:
            if e.proc.poll() is None:
                e.proc.send_signal(signal.SIGTERM)
                try:
                    e.proc.wait(30)
                except subprocess.TimeoutExpired:
                    e.proc.kill()
        r.close()
