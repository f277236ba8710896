"""scripts/scale.sh on a real Redis and database: several pattern engines split the shards (each tick
handled once, each shard's group read by its one owner), job workers added and removed, and
scripts/stop_pipeline.sh stopping the extra instances."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
import redis

from common import streams

from .harness import ROOT, free_port

pytestmark = pytest.mark.integration

COMMITTED = re.compile(r'^aitrader_service_committed_total\{name="ticks",service="pattern_engine"\} ([0-9.e+]+)$',
                       re.MULTILINE)


def _run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=timeout)


def _status(env) -> dict[str, list[dict[str, str]]]:
    out = _run(["scripts/scale.sh", "status"], env)
    assert out.returncode == 0, out.stderr
    found: dict[str, list[dict[str, str]]] = {}
    for line in out.stdout.splitlines():
        svc = line.split()[0]
        found.setdefault(svc, []).append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return found


def _committed(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = COMMITTED.search(text)
    return float(m.group(1)) if m else 0.0


def test_scale_pattern_engines_over_shards_and_job_workers(redis_url, database_url, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(AITRADER_HOME=str(home), REDIS_URL=redis_url, DATABASE_URL=database_url,
               AITRADER_PYTHON=sys.executable, AITRADER_SHARDS="4", AITRADER_INSTANCE="scaletest",
               AITRADER_PE_METRICS_PORT=str(free_port()), AITRADER_JOBS_METRICS_PORT="0",
               AITRADER_MCP_METRICS_PORT="0", AITRADER_EX_METRICS_PORT="0", AITRADER_SE_METRICS_PORT="0",
               AITRADER_STOP_TIMEOUT="20")
    assert _run(["scripts/run_migrations.sh"], env).returncode == 0
    too_many = _run(["scripts/scale.sh", "pattern_engine", "5"], env)
    assert too_many.returncode == 1 and "AITRADER_SHARDS=4" in too_many.stderr
    try:
        up = _run(["scripts/scale.sh", "pattern_engine", "3"], env)
        assert up.returncode == 0, up.stderr[-3000:]
        engines = {e["AITRADER_INSTANCE"]: e for e in _status(env)["pattern_engine"]}
        # engine i owns shards i, i+3, ...: every shard exactly once
        assert {k: v["AITRADER_PE_SHARDS"] for k, v in engines.items()} == {
            "scaletest-pe0": "0,3", "scaletest-pe1": "1", "scaletest-pe2": "2"}
        ports = {k: int(v["AITRADER_PE_METRICS_PORT"]) for k, v in engines.items()}
        assert len(set(ports.values())) == 3

        n = 8000
        rep = _run([sys.executable, "-m", "backend.cli", "replay", "--synthetic-ticks", str(n), "--symbols", "16",
                    "--speed", "max", "--json", "--no-progress"], env)
        assert rep.returncode == 0, rep.stderr[-3000:]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = {k: _committed(p) for k, p in ports.items()}
            if sum(counts.values()) >= n:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # a tick handled twice would show up as more than n
        counts = {k: _committed(p) for k, p in ports.items()}
        assert sum(counts.values()) == n, counts
        assert all(c > 0 for c in counts.values()), counts

        r = redis.Redis.from_url(redis_url)
        try:
            owner = {0: "scaletest-pe0", 3: "scaletest-pe0", 1: "scaletest-pe1", 2: "scaletest-pe2"}
            for shard, name in owner.items():
                stream = streams.ticks_stream(shard)
                consumers = {c["name"].decode(): c for c in r.xinfo_consumers(stream, streams.GROUP_PATTERN)}
                assert set(consumers) == {name}, (stream, consumers)
                assert consumers[name]["pending"] == 0
        finally:
            r.close()

        # two engines, each with a standby twin on its shards: 4 processes, the twins read nothing
        up = _run(["scripts/scale.sh", "pattern_engine", "2", "--standby"], env)
        assert up.returncode == 0, up.stderr[-3000:]
        engines = {e["AITRADER_INSTANCE"]: e for e in _status(env)["pattern_engine"]}
        assert {k: (v["AITRADER_PE_SHARDS"], v["AITRADER_PE_STANDBY"]) for k, v in engines.items()} == {
            "scaletest-pe0": ("0,2", "true"), "scaletest-pe1": ("1,3", "true"),
            "scaletest-pe0-b": ("0,2", "true"), "scaletest-pe1-b": ("1,3", "true")}
        ports = {k: int(v["AITRADER_PE_METRICS_PORT"]) for k, v in engines.items()}
        r = redis.Redis.from_url(redis_url)
        try:
            leases = {k: r.get(streams.pattern_lease_key(sh)) for k, sh in (("0,2", [0, 2]), ("1,3", [1, 3]))}
        finally:
            r.close()
        holders = {v.decode() for v in leases.values() if v}
        assert len(holders) == 2 and {h.removesuffix("-b") for h in holders} == {"scaletest-pe0", "scaletest-pe1"}
        rep = _run([sys.executable, "-m", "backend.cli", "replay", "--synthetic-ticks", str(n), "--symbols", "16",
                    "--seed", "9", "--speed", "max", "--json", "--no-progress"], env)
        assert rep.returncode == 0, rep.stderr[-3000:]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and sum(_committed(p) for p in ports.values()) < n:
            time.sleep(0.5)
        time.sleep(1.0)
        counts = {k: _committed(p) for k, p in ports.items()}
        assert sum(counts.values()) == n and all(counts[k] == 0 for k in engines if k not in holders), counts

        # job workers: two, then back to one
        two = _run(["scripts/scale.sh", "worker", "2"], env)
        assert two.returncode == 0, two.stderr[-3000:]
        workers = _status(env)["backend.jobs.worker"]
        assert len(workers) == 2
        for inst in ("scaletest", "scaletest-w1"):
            ping = _run([sys.executable, "-m", "backend.jobs.worker", "--check"], {**env, "AITRADER_INSTANCE": inst})
            assert ping.returncode == 0, (inst, ping.stdout, ping.stderr[-2000:])
        one = _run(["scripts/scale.sh", "worker", "1"], env)
        assert one.returncode == 0, one.stderr[-3000:]
        assert len(_status(env)["backend.jobs.worker"]) == 1
        assert not (home / "pids" / "backend.jobs.worker@1.pid").exists()
    finally:
        stop = _run(["scripts/stop_pipeline.sh", "--keep-redis"], env)
    assert stop.returncode == 0, stop.stderr[-3000:]
    assert not list((home / "pids").glob("*.pid"))
    for i in (1, 2):
        assert "stop requested" in (home / "logs" / f"pattern_engine@{i}.log").read_text()


def test_two_engines_in_one_group_split_the_ticks_once_each(redis_url, database_url, tmp_path):
    """What docs/scaling.md warns about: engines sharing a shard's group each get a part of the stream — every
    tick handled exactly once overall, but no engine sees all of a symbol's ticks (so per-symbol features
    would be wrong); hence scale.sh gives every shard one owner."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(AITRADER_HOME=str(home), REDIS_URL=redis_url, DATABASE_URL=database_url, AITRADER_SHARDS="1",
               AITRADER_READ_COUNT="4", PYTHONUNBUFFERED="1")
    home.mkdir()
    assert _run([sys.executable, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"], env).returncode == 0
    ports = {name: free_port() for name in ("shared-a", "shared-b")}
    procs = {}
    try:
        for name, port in ports.items():
            e = {**env, "AITRADER_INSTANCE": name, "AITRADER_PE_METRICS_PORT": str(port)}
            procs[name] = subprocess.Popen([sys.executable, "-m", "pattern_engine"], cwd=ROOT, env=e,
                                           stdout=(home / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        for name in ports:
            deadline = time.monotonic() + 60
            while _run([sys.executable, "-m", "pattern_engine", "--check", "--self"],
                       {**env, "AITRADER_INSTANCE": name}).returncode != 0:
                assert procs[name].poll() is None and time.monotonic() < deadline, (home / f"{name}.log").read_text()
                time.sleep(0.5)
        n = 6000
        rep = _run([sys.executable, "-m", "backend.cli", "replay", "--synthetic-ticks", str(n), "--symbols", "2",
                    "--speed", "max", "--batch-max", "8", "--json", "--no-progress"], env)
        assert rep.returncode == 0, rep.stderr[-3000:]
        deadline = time.monotonic() + 60
        while sum(_committed(p) for p in ports.values()) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1.0)
        counts = {name: _committed(p) for name, p in ports.items()}
        assert sum(counts.values()) == n, counts  # once each
        assert all(0 < c < n for c in counts.values()), counts  # but split: neither saw every tick of a symbol
        r = redis.Redis.from_url(redis_url)
        try:
            names = {c["name"].decode() for c in r.xinfo_consumers(streams.ticks_stream(0), streams.GROUP_PATTERN)}
        finally:
            r.close()
        assert names == set(ports)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(20)
