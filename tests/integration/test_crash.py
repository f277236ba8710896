"""Crash safety with real processes (RELIABILITY D1, D2): ``kill -9`` at random points.

D1: the gateway is killed with SIGKILL at random moments of a replay and restarted at
once. The orders in the database (the authority) must be exactly the intents of the run
— 0 lost, 0 duplicate —, no fill recorded twice, every fill's order holding exactly its
fills (cum_qty), and every fill published on ``ex:events``. (The intents themselves may
differ from a run without kills: the strategy engine sizes with the broker's account,
which sees fills later while the gateway is down.)

D2: the pattern and strategy engines are killed the same way: every tick is processed
(the engines' counters, committed in the same transaction as the acks, are exact), every
signal and intent is on its stream once, every intent became one order.

Each test prints its figures: kills, recovery time per kill, lost / duplicate counts.
``AITRADER_CRASH_TICKS`` and ``AITRADER_CRASH_KILLS`` scale them (defaults keep CI short).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from common import streams
from common.db import make_engine
from common.messages import ExecutionReport, OrderIntent, Signal, decode_as

from .harness import ROOT, Pipeline

pytestmark = pytest.mark.integration

TICKS = int(os.environ.get("AITRADER_CRASH_TICKS", "100000"))
KILLS = int(os.environ.get("AITRADER_CRASH_KILLS", "20"))


def _ids(r, stream, typ, attr):
    return [getattr(decode_as(f[b"d"], typ), attr) for _id, f in r.xrange(stream)]


def _db(database_url):
    eng = make_engine(database_url)
    with eng.connect() as c:
        orders = {row.client_order_id: row.status for row in c.execute(sa.text("SELECT client_order_id, status FROM orders"))}
        fills = [row.exec_id for row in c.execute(sa.text("SELECT exec_id FROM fills"))]
        cum = {row.client_order_id: Decimal(str(row.cum_qty))
               for row in c.execute(sa.text("SELECT client_order_id, cum_qty FROM orders"))}
        filled: dict[str, Decimal] = {}
        for row in c.execute(sa.text("SELECT client_order_id, qty FROM fills")):
            filled[row.client_order_id] = filled.get(row.client_order_id, Decimal(0)) + Decimal(str(row.qty))
    # Orders whose cum_qty is not the sum of their fills, and fills without an order.
    mismatched = sum(1 for cid, q in cum.items() if filled.get(cid, Decimal(0)) != q)
    orphans = len(set(filled) - set(cum))
    eng.dispose()
    return orders, fills, mismatched, orphans


def _replay_proc(p: Pipeline) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "replay", "--synthetic-ticks", str(TICKS), "--lockstep",
         "--json", "--no-progress"],
        env=p.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _kill_while_replaying(p: Pipeline, replay: subprocess.Popen, targets: tuple[str, ...], kills: int,
                          seed: int) -> list[float]:
    """SIGKILL a random target at random moments while ``replay`` runs; restart it at once.

    Returns the recovery time of each kill: from the SIGKILL until the restarted service
    reported healthy again."""
    rng = random.Random(seed)
    recoveries: list[float] = []
    while len(recoveries) < kills and replay.poll() is None:
        time.sleep(rng.uniform(0.05, 0.6))
        if replay.poll() is not None:
            break
        svc = rng.choice(targets)
        t0 = time.monotonic()
        p.procs[svc].send_signal(signal.SIGKILL)
        p.procs[svc].wait()
        log = open(p.home / f"{svc}.log", "ab")
        p.procs[svc] = subprocess.Popen([sys.executable, "-m", svc], env=p.env, cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT)
        p.wait_healthy(svc, timeout=90)
        recoveries.append(time.monotonic() - t0)
    return recoveries


def _run(redis_url, database_url, home, targets=(), kills=0, seed=7):
    with Pipeline(redis_url, database_url, home) as p:
        p.start()
        replay = _replay_proc(p)
        recoveries = _kill_while_replaying(p, replay, targets, kills, seed) if targets else []
        out, err = replay.communicate(timeout=900)
        assert replay.returncode == 0, err[-3000:]
        rep = p.report(wait_idle=240)
        r = p.redis()
        got = {
            "signals": _ids(r, streams.SIGNALS, Signal, "signal_id"),
            "intents": _ids(r, streams.INTENTS, OrderIntent, "client_order_id"),
            "events": _ids(r, streams.EXEC_EVENTS, ExecutionReport, "exec_id"),
            "pe_ticks": int(r.hget(streams.stats_key(streams.GROUP_PATTERN), "ticks") or 0),
            "dead": {k.decode(): int(v) for k, v in r.hgetall(streams.DLQ_COUNTS).items()},
        }
        # What each dead letter says (group, reason, deliveries): a failure names its cause.
        got["dead_why"] = [
            {k.decode(): v.decode(errors="replace") for k, v in f.items() if k in (b"group", b"reason", b"deliveries", b"id")}
            for key in got["dead"] for _id, f in r.xrange(streams.dlq_stream(key))
        ]
        codes = p.stop()
    got["orders"], got["fills"], got["mismatched"], got["orphans"] = _db(database_url)
    return got, rep, recoveries, codes


def _dups(ids):
    return sum(n - 1 for n in Counter(ids).values() if n > 1)


def test_gateway_killed_at_random_points_loses_and_duplicates_nothing(redis_url, database_url, tmp_path):
    got, rep, recoveries, codes = _run(redis_url, database_url, tmp_path / "killed", ("execution",), KILLS, seed=1)

    intents = set(got["intents"])
    lost = len(intents - set(got["orders"]))
    extra = len(set(got["orders"]) - intents)
    fill_dups = _dups(got["fills"])
    event_dups = _dups(got["events"])  # at-least-once on the bus: consumers dedupe by exec_id
    print(f"\nD1: {len(recoveries)} kills of the gateway during {TICKS:,} ticks; recovery s: "
          f"min {min(recoveries, default=0):.2f} / median {sorted(recoveries)[len(recoveries) // 2] if recoveries else 0:.2f}"
          f" / max {max(recoveries, default=0):.2f}; intents {len(intents)}, orders {len(got['orders'])}, "
          f"lost {lost}, extra {extra}, duplicate fills {fill_dups}, re-published reports {event_dups}")
    assert len(recoveries) >= min(KILLS, 5), "the replay ended before the gateway could be killed enough times"
    assert codes["execution"] == 0
    assert not got["dead"], got["dead_why"]
    assert _dups(got["intents"]) == 0
    assert lost == 0 and extra == 0
    assert len(intents) > 20, "too few intents to test anything"
    assert fill_dups == 0 and got["mismatched"] == 0 and got["orphans"] == 0
    assert set(got["fills"]) <= set(got["events"])  # every durable fill reached the bus
    assert rep["dead_letters"] == 0


def test_engines_killed_mid_stream_process_everything_once(redis_url, database_url, tmp_path):
    kills = max(3, KILLS // 3)
    got, rep, recoveries, codes = _run(redis_url, database_url, tmp_path / "killed",
                                       ("pattern_engine", "strategy_engine"), kills, seed=2)
    intents = set(got["intents"])
    print(f"\nD2: {len(recoveries)} kills of the pattern / strategy engines during {TICKS:,} ticks; recovery s max "
          f"{max(recoveries, default=0):.2f}; ticks processed {got['pe_ticks']:,}; signals {len(got['signals'])} "
          f"(duplicates {_dups(got['signals'])}); intents {len(got['intents'])} (duplicates {_dups(got['intents'])}); "
          f"orders {len(got['orders'])}")
    assert len(recoveries) >= 3
    assert got["pe_ticks"] == TICKS  # every tick processed exactly once by the counters' account
    assert not got["dead"], got["dead_why"]
    assert _dups(got["signals"]) == 0 and _dups(got["intents"]) == 0
    assert set(got["orders"]) == intents
    assert _dups(got["fills"]) == 0 and got["mismatched"] == 0 and got["orphans"] == 0
    assert all(c == 0 for c in codes.values()), codes
    assert rep["dead_letters"] == 0
