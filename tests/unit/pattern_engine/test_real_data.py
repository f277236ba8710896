"""Real market data (../shared/data): finite features and batch-independent signals."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.messages import Tick, TickType
from pattern_engine.engine import PatternEngine
from pattern_engine.kernel import N_FEATURES
from pattern_engine.pattern_config import load_pattern_config
from tests.unit.pattern_engine.stubs import run, stable

pytestmark = pytest.mark.data


def _ns(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


def btcusdt(data) -> list[Tick]:
    """Binance BTC/USDT spot trades and best bid/offer (46 s), merged in time order."""
    base = data / "nautilus_trader" / "crypto"
    rows = []
    for t in pq.read_table(base / "binance_btcusdt-trades.parquet").to_pylist():
        side = -1 if t["buyer_maker"] == "True" else 1  # buyer is maker -> seller aggressed
        rows.append((_ns(t["timestamp"]), 0,
                     {"type": TickType.TRADE, "price": t["price"], "size": t["quantity"], "side": side}))
    for q in pq.read_table(base / "binance_btcusdt-quotes.parquet").to_pylist():
        rows.append((_ns(q["timestamp"]), 1, {"type": TickType.QUOTE, "bid": q["bid"], "bid_size": q["bid_size"],
                                              "ask": q["ask"], "ask_size": q["ask_size"]}))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [Tick(symbol="BTCUSDT", ts_event=ts, seq=i + 1, **kw) for i, (ts, _, kw) in enumerate(rows)]


def eurusd(data) -> list[Tick]:
    """HistData EUR/USD quotes (no sizes), clock fixed UTC-05:00."""
    est = timezone(timedelta(hours=-5))
    out = []
    with open(data / "nautilus_trader" / "fx_ticks" / "histdata_eurusd_quote_tick_data.csv") as f:
        for i, (stamp, bid, ask, _) in enumerate(csv.reader(f)):
            ts = datetime.strptime(stamp, "%Y%m%d %H%M%S%f").replace(tzinfo=est)
            out.append(Tick(symbol="EURUSD", type=TickType.QUOTE, ts_event=_ns(ts), seq=i + 1,
                            bid=float(bid), ask=float(ask)))
    return out


@pytest.mark.parametrize("source", [btcusdt, eurusd])
def test_real_ticks_give_finite_features_and_batch_independent_signals(shared_data, source):
    ticks = source(shared_data)
    cfg = load_pattern_config()
    one = PatternEngine(cfg)
    by_one = stable(run(one, ticks, batch=1))
    by_256 = stable(run(PatternEngine(cfg), ticks, batch=256))
    assert by_one == by_256
    assert np.isfinite(one.state.F[:1, :N_FEATURES]).all()
    row = one.state.row(ticks[0].symbol)
    assert row["vol"] > 0 and row["ref"] > 0 and row["spread_bps"] > 0
    assert row["low"] <= row["high"]
