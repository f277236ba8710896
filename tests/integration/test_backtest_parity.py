"""Backtest / live parity: the same ticks and settings give the same orders and fills.

The live side is the real pipeline (four processes, Redis, a database) replaying the ticks
with ``--lockstep``; the backtest runs the same services' code in process
(``backend.backtest``). Settings that only the live side's wall clock could make matter are
set so that they never do (docs/backtests.md, "Parity"):

- the account refresh: no periodic refresh during the run and a settle window longer than the
  run, so the strategy engine sizes from its fill-derived context on both sides (a live refresh
  lands at a wall-clock moment, the backtest's at a market-time one);
- context staleness and the expiry of intents in flight: longer than the run;
- the gateway's message throttles and automatic kill triggers: off (they count wall-clock
  seconds live, market-time seconds in a backtest).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from backend.backtest import run_backtest
from backend.backtest.runner import tick_source
from common import streams
from common.messages import ExecutionReport, decode_as
from tick_replay.formats.canonical import write_canonical

from .harness import Pipeline, open_risk_env

pytestmark = pytest.mark.integration

LEAN = "quantconnect_lean/equity_tick/"


def parity_env(home: Path) -> dict[str, str]:
    env = {
        "AITRADER_SE_REFRESH_S": "3600",
        "AITRADER_SE_FILL_SETTLE_S": "600",
        "AITRADER_SE_STALE_AFTER_S": "86400",
        "AITRADER_SE_PENDING_TTL_S": "86400",
        "AITRADER_REPLAY_BATCH_MAX": "256",
    }
    env.update(open_risk_env(home, triggers_off=True, max_orders_per_sec=1_000_000,
                             max_messages_per_sec=1_000_000))
    return env


def _orders_and_fills(reports: list[ExecutionReport]) -> tuple[dict[str, list], dict[str, list]]:
    """Per symbol: the orders (id, side, qty) in the order first reported, and the fills (exec id, qty, price)."""
    orders: dict[str, list] = {}
    fills: dict[str, list] = {}
    seen: set[str] = set()
    for r in reports:
        if r.client_order_id not in seen:
            seen.add(r.client_order_id)
            orders.setdefault(r.symbol, []).append((r.client_order_id, int(r.side), r.order_qty, r.status.name
                                                    if r.reason else "", r.reason))
        if r.last_qty > 0:
            fills.setdefault(r.symbol, []).append((r.exec_id, r.last_qty, r.last_px, r.fee))
    return orders, fills


def _live(redis_url: str, database_url: str, home: Path, env: dict[str, str], tick_file: Path) -> list[ExecutionReport]:
    with Pipeline(redis_url, database_url, home, extra_env=env) as p:
        p.start()
        p.replay(str(tick_file), "--lockstep")
        rep = p.report(wait_idle=120)
        assert rep["idle"], rep["consumer_groups"]
        assert rep["dead_letters"] == 0
        r = p.redis()
        reports = [decode_as(f[b"d"], ExecutionReport) for _id, f in r.xrange(streams.EXEC_EVENTS)]
        codes = p.stop()
    assert codes == {s: 0 for s in codes}, codes
    return reports


def _check_parity(tmp_path: Path, redis_url: str, database_url: str, ticks: list, env_: pytest.MonkeyPatch) -> None:
    # A model detector resolves its model in the registry of the process's environment: the live side's
    # database (nothing promoted), not whatever the developer's default home holds (e.g. the demo's model).
    env_.setenv("DATABASE_URL", database_url)
    env_.setenv("AITRADER_MODEL_STORE", str(tmp_path / "models"))
    tick_file = tmp_path / "ticks.csv"
    write_canonical(tick_file, ticks)
    env = parity_env(tmp_path / "cfg")
    live = _live(redis_url, database_url, tmp_path / "live", env, tick_file)
    bt = run_backtest([str(tick_file)], overrides=env)
    assert bt.ticks == len(ticks)
    assert not bt.dead_letters and not bt.controls
    live_orders, live_fills = _orders_and_fills(live)
    bt_orders, bt_fills = _orders_and_fills(bt.reports)
    assert sum(map(len, live_orders.values())) > 5, "the slice must trade for the comparison to mean anything"
    assert sum(map(len, live_fills.values())) > 0
    for sym in sorted(set(live_orders) | set(bt_orders)):
        assert bt_orders.get(sym, []) == live_orders.get(sym, []), sym
        assert bt_fills.get(sym, []) == live_fills.get(sym, []), sym
    # the account both ended with
    cash = Decimal(bt.equity[-1][2]).quantize(Decimal("0.01"))
    live_cash = Decimal(1_000_000) - sum((r.last_qty * r.last_px * (1 if int(r.side) > 0 else -1) + r.fee)
                                         for r in live if r.last_qty > 0)
    assert abs(cash - live_cash) <= Decimal("0.02")


def test_backtest_gives_the_live_pipelines_orders_and_fills_on_synthetic_ticks(redis_url, database_url, tmp_path,
                                                                               monkeypatch):
    ticks, _ = tick_source(synthetic=30_000, symbols=4, seed=11)
    _check_parity(tmp_path, redis_url, database_url, list(ticks), monkeypatch)


def test_backtest_gives_the_live_pipelines_orders_and_fills_on_real_ticks(redis_url, database_url, tmp_path,
                                                                          shared_data, monkeypatch):
    files = [str(shared_data / LEAN / f) for f in ("20131007_ibm_Trade_Tick.csv.gz", "20131007_ibm_Quote_Tick.csv.gz")]
    ticks, _ = tick_source(files, max_ticks=30_000)
    _check_parity(tmp_path, redis_url, database_url, list(ticks), monkeypatch)
